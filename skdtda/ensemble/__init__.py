"""Seed ensembles: a skorch net trained under many random seeds."""

from ._seed_ensemble import SeedEnsembleClassifier, SeedEnsembleRegressor

__all__ = ["SeedEnsembleClassifier", "SeedEnsembleRegressor"]
