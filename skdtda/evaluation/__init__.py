"""Evaluation against retraining: ground truth, LDS, leave-one-out, noise ceilings, search.

- :func:`retrain_distributions` retrains a seed ensemble without each removal
  set and measures the queries (the ground truth), resumable through
  ``memory`` and spread over a cluster through joblib.
- :func:`predict_distributions` gives the same samples from an influence.
- :func:`lds` (the paper's Eq. 11, for any discrepancy: the distributional LDS),
  :func:`loo_correlation`, :func:`noise_ceiling`, :func:`bootstrap_ci` and
  :func:`score_report` compare the two.
- :class:`AttributionSearchCV` tunes attribution settings against the ground
  truth, folding over query points with the training rows fixed, and refits the
  best on the training rows; :func:`make_lds_scorer` and :func:`query_folds` are
  the same search by hand with ``GridSearchCV``.
"""

from .._agreement import (bootstrap_ci, distribution_change, lds, loo_correlation,
                          noise_ceiling, score_report)
from ._metrics import predict_distributions
from ._retrain import (Distributions, leave_one_out, random_subsets, removal_masks,
                       retrain_distributions)
from ._search import AttributionSearchCV, make_lds_scorer, query_folds

__all__ = ["AttributionSearchCV", "Distributions", "bootstrap_ci", "distribution_change",
           "lds", "leave_one_out", "loo_correlation", "make_lds_scorer", "noise_ceiling",
           "predict_distributions", "query_folds", "random_subsets", "removal_masks",
           "retrain_distributions", "score_report"]
