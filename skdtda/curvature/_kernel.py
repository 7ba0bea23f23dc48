"""Exact damped GGN inverse in kernel (Woodbury) form, for models with more parameters
than training rows times outputs.

With ``U`` the ``(M, P)`` stack of ``R_n^T J_n / sqrt(N)`` over the training rows
(``M = N * C``, C the rank of each row's output-space loss Hessian: K - 1 for
softmax cross-entropy over K classes), the GGN of the mean loss is ``G = U^T U``
and the push-through (Woodbury) identity gives, for ``c > 0``,

    (U^T U + c I)^{-1} v = (v - U^T (U U^T + c I)^{-1} U v) / c.

Building ``U U^T`` costs ``M^2 P`` multiply-adds and its Cholesky factor
``M^3 / 3``, against ``M P^2`` and ``P^3 / 3`` for the dense ``(P, P)`` GGN, so
it is the cheaper form whenever ``M < P``. Memory: ``U`` is ``M x P`` float64
(``8 M P`` bytes: 13 MB for 400 rows of 3 classes, M = 800, and 2019
parameters) and the Gram matrix ``M x M``; the dense form holds ``P x P``.
"""

import torch

from ._dense import ggn_rows

__all__ = ["KernelCurvature"]


class KernelCurvature:
    """``(G + (damping + weight decay) I)^{-1}`` of the exact GGN through the ``(M, M)`` kernel.

    The same solve as ``EigenCurvature(dense_ggn(...) + weight_decay I, damping)``
    to floating-point rounding, at a cost set by ``M = N * C`` instead of the
    number of parameters ``P`` (see the module's docstring).

    Parameters
    ----------
    member : FunctionalMember
    X, y : arrays
        Training rows and their net targets.
    damping : float
        Added to the GGN with the optimizer's weight decay; the sum must be
        positive (the identity divides by it).
    chunk : int, default=256
        Training rows per Jacobian pass.

    Attributes
    ----------
    factor : tensor of shape (M, P)
        ``U``, float64.
    sample_of_row : tensor of int of shape (M,)
        The training row of each row of ``U``.
    cholesky : tensor of shape (M, M)
        Lower Cholesky factor of ``U U^T + c I``.
    shift : float
        ``c = damping + weight decay``.
    """

    def __init__(self, member, X, y, damping, chunk=256, defer=False):
        self.damping = float(damping)
        self.shift = float(damping) + member.weight_decay
        # the diagonal D = c I + penalty: (U^T U + D)^{-1} v
        #   = D^{-1} v - D^{-1} U^T (I + U D^{-1} U^T)^{-1} U D^{-1} v
        self.diagonal = None
        if member.penalty is not None:
            self.diagonal = member.penalty.double() + self.shift
        smallest = self.shift if self.diagonal is None else float(self.diagonal.min())
        if smallest <= 0:
            raise ValueError(f"the kernel form of the GGN needs damping + weight decay > 0 "
                             f"on every parameter, got {smallest}")
        blocks = list(ggn_rows(member, X, y, chunk, drop_null=True))
        # which training row each row of U belongs to (C may differ between chunks)
        sample_of_row = torch.cat([
            torch.arange(start, min(start + chunk, len(X))).repeat_interleave(
                len(block) // (min(start + chunk, len(X)) - start))
            for start, block in zip(range(0, len(X), chunk), blocks)])
        self.factor = torch.cat(blocks) / len(X) ** 0.5
        self.sample_of_row = sample_of_row.to(self.factor.device)
        self.cholesky = None  # deferred: factorise() after set_damping()
        if not defer:
            self.factorise()

    def factorise(self):
        """Build and factor the Gram matrix for the current damping, if not done yet."""
        if self.cholesky is None:
            self._factorise(self.factor, self.sample_of_row)

    def _factorise(self, factor, sample_of_row):
        self.factor = factor
        self.sample_of_row = sample_of_row.to(factor.device)
        if self.diagonal is None:
            gram = self.factor @ self.factor.T
            gram.diagonal().add_(self.shift)
        else:
            gram = (self.factor / self.diagonal) @ self.factor.T
            gram.diagonal().add_(1.0)
        self.cholesky = torch.linalg.cholesky(gram)

    @classmethod
    def from_factor(cls, factor, shift, diagonal, sample_of_row):
        """The solver of ``U^T U + D`` for a given ``U`` (``factor``) and ``D`` (``shift``
        times I, or ``diagonal``): a refactorisation of the ``(M, M)`` Gram matrix
        (``correction="newton"``: the kept rows' ``U``, rescaled)."""
        self = cls.__new__(cls)
        self.shift, self.diagonal = shift, diagonal
        self.damping = None  # not separable from the shift here
        self._factorise(factor, sample_of_row)
        return self

    def mean_eigenvalue(self):
        """``trace(G + D) / P`` less the damping: ``(||U||_F^2 + trace D) / P - damping``."""
        n_params = self.factor.shape[1]
        diagonal = self.shift if self.diagonal is None else float(self.diagonal.mean())
        return float(self.factor.pow(2).sum()) / n_params + diagonal - self.damping

    def set_damping(self, damping):
        """Refactor for a new damping: one ``(M, M)`` Gram matrix and its Cholesky factor
        (nothing while deferred)."""
        change = float(damping) - self.damping
        self.damping, self.shift = float(damping), self.shift + change
        if self.diagonal is not None:
            self.diagonal = self.diagonal + change
        if self.cholesky is not None:  # else factorise() does it
            self.cholesky = None
            self.factorise()

    def solve(self, vectors):
        """``(G + D)^{-1} v`` for rows ``v`` of ``vectors`` (n, P), float64, with
        ``D = c I`` plus the member's parameter-wise penalty, if any."""
        v = vectors.double()
        if self.diagonal is not None:
            v = v / self.diagonal
            kernel_side = torch.cholesky_solve(self.factor @ v.T, self.cholesky)
            return v - (self.factor.T @ kernel_side).T / self.diagonal
        kernel_side = torch.cholesky_solve(self.factor @ v.T, self.cholesky)
        return (v - (self.factor.T @ kernel_side).T) / self.shift
