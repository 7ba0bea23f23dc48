"""Dense curvature of the mean training loss: the exact Hessian or GGN as a ``(P, P)`` matrix.

The matrix is built once per member and factored in float64 at the first
solve: by Cholesky for the first damping it is solved with (25x faster than an
eigendecomposition at P = 2400), and through one eigendecomposition, shared by
every :meth:`~EigenCurvature.with_damping` copy, for any other damping, for the
pseudo-inverse (``damping=0``) and for indefinite matrices. Meant for small
models (P up to a few thousand).
"""

import torch

from .._inputs import n_rows
from ._base import FlatCurvature
from ._terms import GAUSS_NEWTON, HESSIAN
from ._tridiagonal import TridiagonalForms

__all__ = ["EigenCurvature"]


class _Factors:
    """A dense ``H`` and its factorisations, shared by an :class:`EigenCurvature`
    and its :meth:`~EigenCurvature.with_damping` copies.

    ``H`` itself is held until the first factorisation replaces it (the same
    memory): a Cholesky factor of ``H + d I`` for the first damping ``d``
    solved with, or an eigendecomposition; ``H`` is rebuilt from the Cholesky
    factor when an eigendecomposition is needed later.
    """

    def __init__(self, matrix, copy=True):
        pending = matrix.double()
        if copy and pending is matrix:  # symmetrised and factored in place below
            pending = pending.clone()
        self.pending = _symmetrised(pending)  # symmetric, float64, once
        self.cholesky = None  # (damping, lower factor of H + damping I)
        self.eigen = None  # (eigenvalues, eigenvectors) of H

    def matrix(self):
        """``H``, symmetric, float64: a new tensor."""
        if self.pending is not None:
            return self.pending.clone()
        if self.cholesky is not None:
            damping, factor = self.cholesky
            matrix = factor @ factor.T
            matrix.diagonal().sub_(damping)
            return matrix
        values, vectors = self.eigen
        return (vectors * values) @ vectors.T

    def factor(self, damping):
        """Factor ``H + damping I``: Cholesky if nothing is factored yet and it is
        positive definite, else the eigendecomposition (once)."""
        if self.cholesky is not None and self.cholesky[0] == damping:
            return
        if self.cholesky is None and self.eigen is None and damping > 0:
            # shifted in place (H is dropped once factored): no copy of H
            diagonal = self.pending.diagonal()
            kept = diagonal.clone()
            diagonal.add_(damping)
            factor, info = torch.linalg.cholesky_ex(self.pending)
            if int(info) == 0:
                self.cholesky, self.pending = (damping, factor), None
                return
            diagonal.copy_(kept)
            self.eigen, self.pending = torch.linalg.eigh(self.pending), None
            return
        if self.eigen is None:
            self.eigen = torch.linalg.eigh(self.matrix())
            self.pending = None


def _symmetrised(matrix, block=256):
    """``(M + M^T) / 2`` in place, block by block (each pair of blocks read once, in
    cache: 7x faster than the transposed add at P = 2410), a matrix already
    symmetric left as it is to rounding: the same tensor."""
    d = len(matrix)
    for i in range(0, d, block):
        k = min(i + block, d)
        diagonal = matrix[i:k, i:k]
        diagonal.copy_((diagonal + diagonal.T) / 2)
        for j in range(k, d, block):
            m = min(j + block, d)
            mean = (matrix[i:k, j:m] + matrix[j:m, i:k].T) / 2
            matrix[i:k, j:m] = mean
            matrix[j:m, i:k] = mean.T
    return matrix


class EigenCurvature(FlatCurvature):
    """``(H + damping I)^{-1}`` of a dense symmetric H.

    A positive-definite ``H + damping I`` is factored by Cholesky (25x faster
    than an eigendecomposition at P = 2400) for the first damping solved
    with; every other damping of the same H (:meth:`with_damping`), an
    indefinite Hessian and ``damping=0`` go through one eigendecomposition of
    H, computed once and shared.

    Parameters
    ----------
    matrix : tensor of shape (P, P)
        Symmetric curvature of the mean training loss, regularisation included.
    damping : float
        Added to every eigenvalue. ``damping=0`` gives the pseudo-inverse: the
        eigen-directions with ``|lambda| <= P * eps * max |lambda|`` (the null
        space) are dropped, the limit of the paper's Theorem 2.
    terms : object, default=None
        How the matrix was built from the training rows (the Hessian or the
        GGN of :mod:`skdtda.curvature._terms`): ``correction="newton"`` takes
        rows' terms out. None for a matrix given as is.
    member : FlatMember, default=None
        The member it was built for (needed by ``solve_rows`` and
        ``correction="newton"``).
    copy : bool, default=True
        False hands ``matrix`` over where it is float64 (it is symmetrised and
        factored in place, no copy of ``P^2`` numbers is made): for a matrix built
        for this curvature alone.
    """

    newton_sets = True
    newton_rows = True

    def __init__(self, matrix, damping, terms=None, member=None, copy=True):
        self.damping = damping
        self.terms, self.member = terms, member
        self._factors = _Factors(matrix, copy=copy)
        self._inverse = None  # 1 / (eigenvalues + damping), on the eigen path

    @classmethod
    def fit(cls, name, member, X, y, damping):
        """The dense Hessian (``name="exact"``) or GGN (``"ggn"``) of the member's
        mean training loss, with its weight decay and penalty."""
        terms = HESSIAN if name == "exact" else GAUSS_NEWTON
        matrix = terms.mean(member, X, y)
        matrix.diagonal().add_(member.weight_decay)
        if member.penalty is not None:
            matrix.diagonal().add_(member.penalty.to(matrix.dtype))
        return cls(matrix, damping, terms, member, copy=False)

    def factorise(self):
        """Factor ``H + damping I`` now (Cholesky or the shared eigendecomposition)."""
        factors = self._factors
        factors.factor(self.damping)
        if self._cholesky() is not None or self._inverse is not None:
            return
        shifted = factors.eigen[0] + self.damping
        if self.damping == 0:
            tol = len(shifted) * torch.finfo(torch.float64).eps * shifted.abs().max()
            inverse = torch.where(shifted.abs() > tol, 1 / shifted, torch.zeros_like(shifted))
        else:
            if (shifted.abs() < 1e-12 * shifted.abs().max()).any():
                raise ValueError(
                    f"damping={self.damping} cancels an eigenvalue of the curvature "
                    f"({-self.damping:.3g}); the Hessian of a non-convex net has negative "
                    "eigenvalues: use curvature='ggn' or another damping")
            inverse = 1 / shifted
        self._inverse = inverse

    def _cholesky(self):
        """The Cholesky factor of ``H + damping I``, where that is how it was factored."""
        cholesky = self._factors.cholesky
        return cholesky[1] if cholesky is not None and cholesky[0] == self.damping else None

    @property
    def cholesky(self):
        """Lower Cholesky factor of ``H + damping I`` where this damping is solved
        through one; None before the first solve, and on the eigendecomposition."""
        return self._cholesky()

    def matrix(self):
        """The symmetric ``H`` (without the damping), (P, P) float64, a new tensor:
        only one factorisation is stored, so once factored it is rebuilt from the
        factor (one ``P^3`` product)."""
        return self._factors.matrix()

    def mean_eigenvalue(self):
        """``trace(H) / P``, regularisation included, damping not."""
        factors = self._factors
        if factors.pending is not None:
            return float(torch.diagonal(factors.pending).double().mean())
        if factors.cholesky is not None:
            damping, factor = factors.cholesky
            return float(factor.pow(2).sum()) / len(factor) - damping
        return float(factors.eigen[0].mean())

    def with_damping(self, damping):
        """The same H with another damping: a copy sharing its factorisations (the
        first damping solved with gets a Cholesky factor, any other one the
        shared eigendecomposition)."""
        return self._copy(damping=damping, _inverse=None)

    def _scoring_eigen(self):
        """A float32 eigendecomposition of H made for scoring candidates and not kept
        (2.4x faster than float64 at P = 2410; the correlations that candidates are
        scored by do not move with float32 rounding; the fitted solver keeps its
        float64 factor): float64 ``(values, vectors)``."""
        values, vectors = torch.linalg.eigh(self.matrix().float())
        return values.double(), vectors.double()

    def solve_dampings(self, blocks, dampings):
        """The one block solved at each damping through one float32
        eigendecomposition of H (:meth:`_scoring_eigen`)."""
        (flat,) = blocks
        values, vectors = self._scoring_eigen()
        rotated = flat.double() @ vectors
        return [[(rotated / (values + damping)) @ vectors.T] for damping in dampings]

    def bilinear_dampings(self, left, right, dampings):
        """H reduced once to tridiagonal form in float32 (:class:`TridiagonalForms`:
        3.3x faster than the eigendecomposition path at P = 2410), both sides rotated once,
        then a tridiagonal solve per damping; made for this call and not kept."""
        (flat,), (other,) = left, right
        forms = TridiagonalForms(self.matrix())
        return forms.forms(flat.reshape(len(flat), -1).T, other.T, dampings)

    def solve(self, vectors):
        """``(H + damping I)^{-1} v`` for rows ``v`` of ``vectors`` (n, P)."""
        self.factorise()
        cholesky = self._cholesky()
        if cholesky is not None:
            return torch.cholesky_solve(vectors.double().T, cholesky).T
        q = self._factors.eigen[1]
        return ((vectors.double() @ q) * self._inverse) @ q.T

    def kept(self, X, y, keeps):
        """Dense: the removed rows' terms taken out of the stored H (``|S| C P^2``,
        one ``P^3`` product to recover H from its factor, for all sets), then a
        new Cholesky factor per set."""
        self._check_terms()
        member = self.member
        fixed = member.fixed_diagonal()
        matrix = self.matrix()
        n = n_rows(X)
        for keep in keeps:
            removed = ~keep
            n_kept = int(keep.sum())
            data = matrix.clone()
            data.diagonal().sub_(fixed)  # (H_data + D_n): the part normalised by N
            data.mul_(n).sub_(self.terms.mean(member, X[removed], y[removed])
                              * int(removed.sum()))
            data.div_(n_kept)  # (1/N') sum_kept G_i + (N/N') D_n
            data.diagonal().add_(fixed)
            yield EigenCurvature(data, self.damping, self.terms, member, copy=False)

    def rescaled(self, n_train, n_removed=1):
        """Dense: H rebuilt from its factor and rescaled, with a new factor."""
        self._check_terms()
        fixed = self.member.fixed_diagonal()
        data = self.matrix()
        data.diagonal().sub_(fixed)
        data.mul_(n_train / (n_train - n_removed))
        data.diagonal().add_(fixed)
        return EigenCurvature(data, self.damping, self.terms, self.member, copy=False)

    def row_factors(self, X, y):
        """The rows' Hessians (``"exact"``) or Gauss-Newton terms (``"ggn"``)."""
        self._check_terms()
        return self.terms.rows(self.member, X, y)

    def row_width(self, X):
        """P for the Hessian (a row's ``(P, P)`` term), ``2 C + 2`` for the GGN."""
        self._check_terms()
        return self.terms.row_width(self.member, X)

    def _check_terms(self):
        if self.terms is None or self.member is None:
            raise ValueError("correction='newton' needs the rows the dense curvature was built "
                             "from; this EigenCurvature was given its matrix as is")
