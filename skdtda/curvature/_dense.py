"""Dense curvature of the mean training loss: exact Hessian, exact GGN, identity.

Each backend builds a ``(P, P)`` matrix once per member, factors it in float64
(Cholesky, or an eigendecomposition for the pseudo-inverse and for indefinite
matrices) and then solves ``(H + damping I)^{-1} g`` for any number of vectors.
Meant for small models (P up to a few thousand).
"""

import torch
from torch.func import jacrev, vmap

from ..exceptions import UnsupportedOperationError, unsupported_ops

__all__ = ["EigenCurvature", "IdentityCurvature", "dense_hessian", "dense_ggn", "ggn_rows"]


def _chunks(n, size):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def dense_hessian(member, X, y, chunk=512):
    """Hessian of the mean training loss at the member's parameters, (P, P) float64.

    Reverse over reverse (no forward-mode AD, which torch lacks for some ops).
    """
    X, y = member.tensors(X, y)
    total = torch.zeros(member.n_params, member.n_params, dtype=torch.float64)
    for rows in _chunks(len(X), chunk):
        with unsupported_ops("the exact Hessian"):
            h = jacrev(jacrev(member.mean_loss))(member.theta, X[rows], y[rows]).detach()
        total += h.double() * (rows.stop - rows.start)
    return total / len(X)


def _row_jacobians(member, X):
    """Per-row Jacobians of the member's outputs, (n, outputs, P): ``vmap`` of
    ``jacrev``, with the transform's failures named."""
    def out_one(theta, x):
        return member.outputs(theta, x[None])[0].reshape(-1)

    with unsupported_ops("the exact Gauss-Newton"):
        return vmap(jacrev(out_one), in_dims=(None, 0))(member.theta, X)


def jacobian_problem(member, X):
    """Why the per-row Jacobians that the exact Gauss-Newton is built from cannot
    be taken, as an :class:`UnsupportedOperationError`; None when they run (tried
    on two rows)."""
    try:
        _row_jacobians(member, member.tensors(X[:2], [0] * min(len(X), 2))[0])
    except UnsupportedOperationError as exc:
        return exc
    return None


def ggn_rows(member, X, y, chunk=256, drop_null=False):
    """Yield ``R_n^T J_n`` for chunks of training rows, float64 of shape (rows * C, P).

    ``J_n`` is the Jacobian of sample ``n``'s output with respect to the
    parameters and ``R_n`` a root of the Hessian of its loss with respect to
    that output (:meth:`FunctionalMember.output_hessian_roots`), so that the
    rows of all chunks stacked, ``U``, give the GGN as ``U^T U / N``.
    ``drop_null=True`` leaves out the directions of the output space where every
    row's loss Hessian of the chunk vanishes (softmax cross-entropy: the all-ones
    direction, so C = K - 1): ``U^T U`` is unchanged, ``U`` has fewer rows.
    """
    X, y = member.tensors(X, y)
    for rows in _chunks(len(X), chunk):
        jac = _row_jacobians(member, X[rows]).detach().double()
        with torch.no_grad():
            outputs = member.outputs(member.theta, X[rows])
        root = member.output_hessian_roots(outputs, y[rows])
        if drop_null:
            root = _drop_null_columns(root)
        # J^T H J = (R^T J)^T (R^T J): one large product instead of a 3-way contraction
        yield torch.einsum("nkc,nkp->ncp", root, jac).reshape(-1, member.n_params)


def _drop_null_columns(root):
    """A root ``R'`` with ``R' R'^T = R R^T`` and no column that is null on every row."""
    # R = W S V^T gives R R^T = (W S)(W S)^T; singular values come in descending order.
    # A column with s^2 <= eps * s_max^2 adds below the float rounding of R R^T.
    left, singular, _ = torch.linalg.svd(root, full_matrices=False)
    tol = torch.finfo(root.dtype).eps ** 0.5 * singular[:, :1]
    keep = max(int((singular > tol).sum(dim=1).max()), 1)
    return left[:, :, :keep] * singular[:, None, :keep]


def dense_ggn(member, X, y, chunk=256):
    """Generalised Gauss-Newton ``mean_n J_n^T H_n J_n`` of the training loss, (P, P) float64.

    ``J_n`` is the Jacobian of sample ``n``'s output with respect to the
    parameters and ``H_n`` the Hessian of its loss with respect to that output
    (``diag(p) - p p^T`` for softmax cross-entropy): positive semi-definite,
    unlike the Hessian of a non-convex net.
    """
    total = torch.zeros(member.n_params, member.n_params, dtype=torch.float64)
    for rotated in ggn_rows(member, X, y, chunk):
        total += rotated.T @ rotated
    return total / len(X)


class EigenCurvature:
    """``(H + damping I)^{-1}`` of a dense symmetric H.

    A positive-definite ``H + damping I`` is factored by Cholesky (25x faster
    than an eigendecomposition at P = 2400); otherwise (an indefinite Hessian,
    or ``damping=0``) by an eigendecomposition.

    Parameters
    ----------
    matrix : tensor of shape (P, P)
        Symmetric curvature of the mean training loss, regularisation included.
    damping : float
        Added to every eigenvalue. ``damping=0`` gives the pseudo-inverse: the
        eigen-directions with ``|lambda| <= P * eps * max |lambda|`` (the null
        space) are dropped, the limit of the paper's Theorem 2.
    """

    def __init__(self, matrix, damping, defer=False):
        self._pending = None
        if defer:  # keep H (the same memory as its factor) until factorise()
            self._pending, self.damping = matrix, damping
            return
        self._factor(matrix, damping)

    def factorise(self):
        """Factor a deferred ``H + damping I`` (after :meth:`set_damping`)."""
        if self._pending is not None:
            matrix, self._pending = self._pending, None
            self._factor(matrix, self.damping)

    def _factor(self, matrix, damping):
        matrix = (matrix.double() + matrix.double().T) / 2
        self.damping = damping
        self.cholesky = None
        if damping > 0:
            shifted = matrix + damping * torch.eye(len(matrix), dtype=matrix.dtype)
            factor, info = torch.linalg.cholesky_ex(shifted)
            if int(info) == 0:
                self.cholesky = factor
                return
        self.eigenvalues, self.eigenvectors = torch.linalg.eigh(matrix)
        shifted = self.eigenvalues + damping
        if damping == 0:
            tol = len(shifted) * torch.finfo(torch.float64).eps * shifted.abs().max()
            inverse = torch.where(shifted.abs() > tol, 1 / shifted, torch.zeros_like(shifted))
        else:
            if (shifted.abs() < 1e-12 * shifted.abs().max()).any():
                raise ValueError(
                    f"damping={damping} cancels an eigenvalue of the curvature "
                    f"({-damping:.3g}); the Hessian of a non-convex net has negative "
                    "eigenvalues: use curvature='ggn' or another damping")
            inverse = 1 / shifted
        self.inverse = inverse

    def matrix(self):
        """The symmetric ``H`` (without the damping) rebuilt from its factor, (P, P)
        float64: nothing but the factor is stored (``correction="newton"`` needs H
        again, once per removal set; it costs one ``P^3`` product)."""
        if self.cholesky is not None:
            matrix = self.cholesky @ self.cholesky.T
            matrix.diagonal().sub_(self.damping)
            return matrix
        q = self.eigenvectors
        return (q * self.eigenvalues) @ q.T

    def mean_eigenvalue(self):
        """``trace(H) / P``, regularisation included, damping not."""
        if self._pending is not None:
            return float(torch.diagonal(self._pending).double().mean())
        if self.cholesky is not None:
            return float(self.cholesky.pow(2).sum()) / len(self.cholesky) - self.damping
        return float(self.eigenvalues.mean())

    def set_damping(self, damping):
        """Refactor ``H + damping I`` for a new damping (one ``P^3`` product to
        rebuild H from its factor, and the factorisation; nothing while deferred)."""
        if self._pending is not None:
            self.damping = damping
            return
        self._factor(self.matrix(), damping)

    def solve(self, vectors):
        """``(H + damping I)^{-1} v`` for rows ``v`` of ``vectors`` (n, P)."""
        if self.cholesky is not None:
            return torch.cholesky_solve(vectors.double().T, self.cholesky).T
        q = self.eigenvectors
        return ((vectors.double() @ q) * self.inverse) @ q.T


class IdentityCurvature:
    """H = I: influence as a plain gradient dot product (the TracIn-like baseline)."""

    def solve(self, vectors):
        return vectors.double()
