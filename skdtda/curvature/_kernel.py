"""Exact damped GGN inverse in kernel (Woodbury) form, for models with more parameters
than training rows times outputs.

With ``U`` the ``(M, P)`` stack of ``R_n^T J_n / sqrt(N)`` over the training rows
(``M = N * C``, C the rank of each row's output-space loss Hessian: K - 1 for
softmax cross-entropy over K classes), the GGN of the mean loss is ``G = U^T U``
and the push-through (Woodbury) identity gives, for ``c > 0``,

    (U^T U + c I)^{-1} v = (v - U^T (U U^T + c I)^{-1} U v) / c.

Building ``U U^T`` costs ``M^2 P`` multiply-adds and its Cholesky factor
``M^3 / 3``, against ``M P^2`` and ``P^3 / 3`` for the dense ``(P, P)`` GGN, so
it is the cheaper form whenever ``M < P``. Rows of ``U`` that together carry at most
:data:`NEGLIGIBLE` of the damping (training rows fitted closely) are left out first.
The first damping solved with gets
that Cholesky factor; any other (:meth:`KernelCurvature.with_damping`) solves
through one eigendecomposition ``U U^T = W Lambda W^T``, shared by every copy:
``(U U^T + c I)^{-1} = W (Lambda + c)^{-1} W^T`` for any ``c``. A
parameter-wise penalty ``D`` enters the Gram matrix as ``U D^{-1} U^T``, which a
new damping changes as a whole: there each damping factors its own.

Memory: ``U`` is ``M x P`` float64 (``8 M P`` bytes: 13 MB for 400 rows of 3
classes, M = 800, and 2019 parameters) and the Gram matrix ``M x M``; the dense
form holds ``P x P``.
"""

import torch

from .._inputs import n_rows
from .._loops import chunks
from ._base import FlatCurvature
from ..model.layers import gram_sum
from ._terms import GAUSS_NEWTON, ggn_rows
from ._tridiagonal import TridiagonalForms

__all__ = ["KernelCurvature"]


#: Rows of ``U`` whose terms ``u u^T`` sum to at most this multiple of the damping (plus
#: weight decay) in trace are left out, the smallest first: the GGN moves by at most that
#: in norm, and a solve by at most that relative to itself (1e-7: below the float32
#: rounding of the Jacobians, whose solves differ from float64 ones by about 7e-7 on the
#: digits MLP; at 1/31.6 of the damping, a calibration's smallest candidate, 3e-6). Rows
#: of well-fitted training rows (a softmax near one-hot) carry almost nothing: on the
#: digits CNN of benchmarks/recipes.py 9-28% of each member's rows go, and the rule's
#: curvatures take 22 s instead of 30 s (docs/benchmarks.md).
NEGLIGIBLE = 1e-7


def _significant(factor, sample_of_row, bound):
    """``(factor, sample_of_row)`` without the rows of smallest norm whose squared norms
    sum to at most ``bound`` (at least one row kept), where that leaves out at least
    5% of them (fewer are not worth a copy of ``U``: 1% on a CNN trained with Adam
    cost 2-4 s more than it saved over 16 members)."""
    norms = torch.linalg.vector_norm(factor, dim=1).square_()  # no (M, P) temporary
    order = torch.argsort(norms)
    total = torch.cumsum(norms[order], 0)
    dropped = min(int(torch.searchsorted(total, torch.tensor([bound], dtype=total.dtype,
                                                             device=total.device),
                                         right=True)), len(norms) - 1)
    if dropped < 0.05 * len(norms):  # too few to pay for the copy (2-4 s over 16 members)
        return factor, sample_of_row
    keep = torch.sort(order[dropped:]).values
    return factor[keep], sample_of_row[keep]


class _Gram:
    """``U`` and the factorisations of its Gram matrix, shared by a
    :class:`KernelCurvature` and its :meth:`~KernelCurvature.with_damping` copies."""

    def __init__(self, factor, sample_of_row):
        self.factor = factor
        self.sample_of_row = sample_of_row.to(factor.device)
        self.cholesky = None  # (shift, lower factor of U U^T + shift I), no penalty
        self.eigen = None  # (eigenvalues, eigenvectors) of U U^T, no penalty


class KernelCurvature(FlatCurvature):
    """``(G + (damping + weight decay) I)^{-1}`` of the exact GGN through the ``(M, M)`` kernel.

    The same solve as ``EigenCurvature(dense_ggn(...) + weight_decay I, damping)``
    to floating-point rounding (within :data:`NEGLIGIBLE` of itself where rows that
    carry almost nothing are left out), at a cost set by ``M = N * C`` instead of
    the number of parameters ``P`` (see the module's docstring).

    Parameters
    ----------
    member : FlatMember
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
    cholesky : tensor of shape (M, M) or None
        Lower Cholesky factor of ``U U^T + c I`` (with a penalty,
        ``I + U D^{-1} U^T``) where this damping is solved through one; None
        before the first solve, and where it goes through the shared
        eigendecomposition.
    shift : float
        ``c = damping + weight decay``.
    """

    newton_sets = True
    newton_rows = True

    def __init__(self, member, X, y, damping, chunk=256):
        blocks = list(ggn_rows(member, X, y, chunk, drop_null=True))
        # which training row each row of U belongs to (C may differ between chunks)
        sample_of_row = torch.cat([
            torch.arange(rows.start, rows.stop).repeat_interleave(
                len(block) // (rows.stop - rows.start))
            for rows, block in zip(chunks(n_rows(X), chunk), blocks)])
        self.member = member
        factor = torch.cat(blocks)
        del blocks  # U is held once
        factor, sample_of_row = _significant(
            factor.div_(n_rows(X) ** 0.5), sample_of_row,
            NEGLIGIBLE * (float(damping) + member.weight_decay))
        self._gram = _Gram(factor, sample_of_row)
        self._damp(damping, member.penalty)

    @classmethod
    def fit(cls, name, member, X, y, damping):
        """The kernel form of the exact GGN (``name="ggn"``) of the member."""
        return cls(member, X, y, damping)

    @classmethod
    def from_factor(cls, factor, shift, diagonal, sample_of_row):
        """The solver of ``U^T U + D`` for a given ``U`` (``factor``) and ``D`` (``shift``
        times I, or ``diagonal``): a refactorisation of the ``(M, M)`` Gram matrix
        (``correction="newton"``: the kept rows' ``U``, rescaled). Its damping is
        not separable from the shift (None)."""
        self = cls.__new__(cls)
        self._gram = _Gram(factor, sample_of_row)
        self.damping, self.penalty = None, None
        self.shift, self.diagonal = shift, diagonal
        self._cholesky = None
        return self

    def _damp(self, damping, penalty):
        """Set ``D = (damping + weight decay) I + penalty`` (a new Gram matrix)."""
        self.damping, self.penalty = float(damping), penalty
        self.shift = float(damping) + self.member.weight_decay
        # the diagonal D = c I + penalty: (U^T U + D)^{-1} v
        #   = D^{-1} v - D^{-1} U^T (I + U D^{-1} U^T)^{-1} U D^{-1} v
        self.diagonal = None if penalty is None else penalty.double() + self.shift
        smallest = self.shift if self.diagonal is None else float(self.diagonal.min())
        if smallest <= 0:
            raise ValueError(f"the kernel form of the GGN needs damping + weight decay > 0 "
                             f"on every parameter, got {smallest}")
        self._cholesky = None  # of I + U D^{-1} U^T, with a penalty

    @property
    def factor(self):
        return self._gram.factor

    @property
    def sample_of_row(self):
        return self._gram.sample_of_row

    @property
    def cholesky(self):
        return self._cholesky if self.diagonal is not None else self._shared_cholesky()

    def factorise(self):
        """Factor the Gram matrix for this damping now (see the module's docstring)."""
        gram = self._gram
        if self.diagonal is not None:
            if self._cholesky is None:
                # (U D^-1/2)(U D^-1/2)^T by one triangle (syrk): 1.7-1.9x faster than the
                # general product (U / D) U^T at M = 2700, P = 3610-9610, the same to 1e-14
                matrix = gram_sum([gram.factor * self.diagonal.rsqrt()], outer=True)
                matrix.diagonal().add_(1.0)
                self._cholesky = torch.linalg.cholesky(matrix)
        elif gram.cholesky is None and gram.eigen is None:
            matrix = gram_sum([gram.factor], outer=True)
            matrix.diagonal().add_(self.shift)
            gram.cholesky = (self.shift, torch.linalg.cholesky(matrix))
        elif self._shared_cholesky() is None and gram.eigen is None:
            gram.eigen = torch.linalg.eigh(gram_sum([gram.factor], outer=True))

    def _shared_cholesky(self):
        cholesky = self._gram.cholesky
        return cholesky[1] if cholesky is not None and cholesky[0] == self.shift else None

    def _kernel_solve(self, rhs):
        """``(U U^T + c I)^{-1} rhs`` (no penalty) or ``(I + U D^{-1} U^T)^{-1} rhs``."""
        self.factorise()
        if self.diagonal is not None:
            return torch.cholesky_solve(rhs, self._cholesky)
        cholesky = self._shared_cholesky()
        if cholesky is not None:
            return torch.cholesky_solve(rhs, cholesky)
        values, vectors = self._gram.eigen
        return vectors @ ((vectors.T @ rhs) / (values + self.shift)[:, None])

    def mean_eigenvalue(self):
        """``trace(G + D) / P`` less the damping: ``(||U||_F^2 + trace D) / P - damping``."""
        n_params = self.factor.shape[1]
        diagonal = self.shift if self.diagonal is None else float(self.diagonal.mean())
        return (float(torch.linalg.vector_norm(self.factor)) ** 2 / n_params + diagonal
                - self.damping)

    def with_damping(self, damping):
        """The same GGN with another damping, sharing ``U``: without a penalty, a
        solve through the shared eigendecomposition of ``U U^T`` (or the first
        Cholesky factor, if that damping was the first solved with); with one, a
        new ``(M, M)`` Gram matrix and its factor."""
        other = self._copy()
        other._damp(damping, self.penalty)
        return other

    def _scoring_eigen(self):
        """A float32 eigendecomposition of ``U U^T`` (its Gram matrix formed in float32
        too), made for scoring candidates and not kept (the fitted solver keeps its
        float64 factor): float64 ``(values, vectors)``."""
        values, vectors = torch.linalg.eigh(gram_sum([self.factor.float()], outer=True))
        return values.double(), vectors.double()

    def solve_dampings(self, blocks, dampings):
        """The one block solved at each damping. Without a parameter-wise penalty,
        through one float32 eigendecomposition of ``U U^T`` (:meth:`_scoring_eigen`):
        ``(U^T U + c I)^{-1} v = (v - U^T W (Lambda + c)^{-1} W^T U v) / c``.
        With one, each damping's own Gram matrix."""
        if self.penalty is not None:
            return super().solve_dampings(blocks, dampings)
        (flat,) = blocks
        v = flat.double()
        factor = self.factor
        values, vectors = self._scoring_eigen()
        rotated = vectors.T @ (factor @ v.T)
        out = []
        for damping in dampings:
            shift = float(damping) + self.member.weight_decay
            kernel_side = vectors @ (rotated / (values + shift)[:, None])
            out.append([(v - (factor.T @ kernel_side).T) / shift])
        return out

    def bilinear_dampings(self, left, right, dampings):
        """Without a parameter-wise penalty, both sides pushed through ``U`` once and
        ``U U^T`` (formed in float32) reduced once to tridiagonal form
        (:class:`TridiagonalForms`): ``a^T (U^T U + c I)^{-1} b = (a^T b - (U a)^T
        (U U^T + c I)^{-1} (U b)) / c``, a tridiagonal solve per damping instead of a
        ``(P, M)`` product per damping and row; made for this call and not kept.
        With a parameter-wise penalty, ``U^T U`` plus the penalty (formed in float32)
        reduced once to tridiagonal form, where that costs less than a Gram matrix
        and its factor per damping (``P^2 M + 4 P^3`` against ``d (2 M^2 P + M^3)``
        for ``d`` dampings: at M = 2700 and P = 3610, 13 dampings, 2.5 s against
        14 s); else, those."""
        (flat,), (other,) = left, right
        a, b = flat.double().reshape(len(flat), -1), other.double()
        factor = self.factor
        if self.penalty is not None:
            # D = (d + wd) I + penalty: the dampings share no (M, M) matrix, but they
            # shift one (P, P) matrix U^T U + penalty + wd I, reduced once where that
            # is cheaper than a Gram matrix and a factor per damping
            rows, n_params = factor.shape
            if n_params ** 2 * rows + 4 * n_params ** 3 > len(dampings) * (
                    2 * rows ** 2 * n_params + rows ** 3):
                return super().bilinear_dampings(left, right, dampings)
            matrix = gram_sum([factor.float()])
            matrix.diagonal().add_((self.diagonal - self.damping).to(matrix.dtype))
            return TridiagonalForms(matrix).forms(a.T, b.T, dampings)
        forms = TridiagonalForms(gram_sum([factor.float()], outer=True))
        shifts = [float(damping) + self.member.weight_decay for damping in dampings]
        direct = a @ b.T
        return [(direct - form) / shift
                for form, shift in zip(forms.forms(factor @ a.T, factor @ b.T, shifts), shifts)]

    def solve(self, vectors):
        """``(G + D)^{-1} v`` for rows ``v`` of ``vectors`` (n, P), float64, with
        ``D = c I`` plus the member's parameter-wise penalty, if any."""
        v = vectors.double()
        factor = self.factor
        if self.diagonal is not None:
            v = v / self.diagonal
            kernel_side = self._kernel_solve(factor @ v.T)
            return v - (factor.T @ kernel_side).T / self.diagonal
        kernel_side = self._kernel_solve(factor @ v.T)
        return (v - (factor.T @ kernel_side).T) / self.shift

    def _scaled_diagonal(self, scale):
        """``(shift, diagonal)`` of ``D = (damping + wd) I + penalty`` with the
        member's normalised penalty scaled by ``scale``."""
        member = self.member
        shift = float(self.damping) + member.weight_decay
        if member.penalty is None:
            return shift, None
        penalty = member.penalty.double() * (scale if member.penalty_normalised else 1.0)
        return shift, penalty + shift

    def kept(self, X, y, keeps):
        """Kernel: the kept rows' part of ``U``, rescaled, and a new ``(M', M')``
        Gram matrix and factor per set."""
        n = n_rows(X)
        for keep in keeps:
            scale = n / int(keep.sum())
            rows = torch.as_tensor(keep, device=self.factor.device)[self.sample_of_row]
            yield KernelCurvature.from_factor(self.factor[rows] * scale ** 0.5,
                                              *self._scaled_diagonal(scale),
                                              self.sample_of_row[rows])

    def rescaled(self, n_train, n_removed=1):
        """Kernel: ``U`` rescaled, and a new Gram matrix and factor."""
        scale = n_train / (n_train - n_removed)
        return KernelCurvature.from_factor(self.factor * scale ** 0.5,
                                           *self._scaled_diagonal(scale), self.sample_of_row)

    def row_factors(self, X, y):
        """The rows' Gauss-Newton terms ``U_k = R_k^T J_k``."""
        return GAUSS_NEWTON.rows(self.member, X, y)

    def row_width(self, X):
        """``2 C + 2``."""
        return GAUSS_NEWTON.row_width(self.member, X)
