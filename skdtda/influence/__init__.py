"""Influence of training rows on measurements, per seed of an ensemble."""

from ._transformer import InfluenceTransformer

__all__ = ["InfluenceTransformer"]
