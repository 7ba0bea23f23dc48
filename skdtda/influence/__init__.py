"""Influence of training rows on measurements, per seed of an ensemble."""

from ._transformer import InfluenceTransformer
from .unrolled import UnrolledInfluence, unrolled_response

__all__ = ["InfluenceTransformer", "UnrolledInfluence", "unrolled_response"]
