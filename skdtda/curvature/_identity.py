"""H = I: influence as a plain gradient dot product (the TracIn-like baseline)."""

from ._base import FlatCurvature

__all__ = ["IdentityCurvature"]


class IdentityCurvature(FlatCurvature):
    """H = I: influence as a plain gradient dot product (the TracIn-like baseline).

    It stands for no curvature: the damping is recorded but not used, and it
    has no mean eigenvalue.

    Parameters
    ----------
    damping : float, default=None
        Recorded only.
    member : FunctionalMember, default=None
        The member whose gradients :meth:`solve_rows` takes.
    """

    def __init__(self, damping=None, member=None):
        self.damping, self.member = damping, member

    @classmethod
    def fit(cls, name, member, X, y, damping):
        """The identity (``name="identity"``); nothing to fit."""
        return cls(damping, member)

    def mean_eigenvalue(self):
        """None: the identity sets no curvature scale (``damping="auto"`` keeps
        ``1 / tau``)."""
        return None

    def with_damping(self, damping):
        """The identity again, recording ``damping``."""
        return self._copy(damping=damping)

    def solve(self, vectors):
        """The vectors themselves, float64."""
        return vectors.double()
