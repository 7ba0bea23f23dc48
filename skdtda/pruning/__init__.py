"""Influence-based data pruning: a sampler and a meta-estimator."""

from ._estimator import PrunedEstimator
from ._pruner import DataPruner

__all__ = ["DataPruner", "PrunedEstimator"]
