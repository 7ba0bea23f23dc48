"""UnrolledInfluence: differentiate through each seed's actual training run."""

from ._estimator import UnrolledInfluence, unrolled_response

__all__ = ["UnrolledInfluence", "unrolled_response"]
