"""Influence of training rows on measurements, per seed of an ensemble."""

from ._damping import SPREAD_FACTOR
from ._transformer import InfluenceTransformer
from .unrolled import UnrolledInfluence, unrolled_response

__all__ = ["InfluenceTransformer", "SPREAD_FACTOR", "UnrolledInfluence", "unrolled_response"]
