"""Seed ensembles: a skorch net trained under many random seeds.

The estimators, and what their consumers (influence, retraining) read from a
fitted one: the members as nets, the targets in the nets' form, each member's
starting point, the training data's fingerprint.
"""

from ._batched import unsupported_reason
from ._fingerprint import TrainingFingerprint, check_same_training_data, fingerprint
from ._fitted import (initial_members, input_dtype, member_nets, net_input, net_targets,
                      query_targets)
from ._pipeline import (ATTRIBUTED, fit_preprocessing, is_attributed_model,
                        is_fitted_pipeline, row_labels, split_pipeline)
from ._retrain import QueryMeasurement, load_array, retrain_sets, save_array
from ._rows import check_rows, rows_as_given
from ._seed_ensemble import SeedEnsembleClassifier, SeedEnsembleRegressor, initialize_member

__all__ = ["ATTRIBUTED", "QueryMeasurement", "SeedEnsembleClassifier", "SeedEnsembleRegressor",
           "TrainingFingerprint", "check_rows", "check_same_training_data", "fingerprint",
           "fit_preprocessing", "initial_members", "initialize_member", "input_dtype",
           "is_attributed_model", "is_fitted_pipeline", "load_array", "member_nets",
           "net_input", "net_targets", "query_targets", "retrain_sets", "row_labels",
           "rows_as_given", "save_array", "split_pipeline", "unsupported_reason"]
