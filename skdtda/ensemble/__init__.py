"""Seed ensembles: a skorch net trained under many random seeds."""

from ._fingerprint import TrainingFingerprint, check_same_training_data, fingerprint
from ._seed_ensemble import SeedEnsembleClassifier, SeedEnsembleRegressor

__all__ = ["SeedEnsembleClassifier", "SeedEnsembleRegressor", "TrainingFingerprint",
           "check_same_training_data", "fingerprint"]
