"""The exact curvature of the mean training loss, term by term: the Hessian or
the generalised Gauss-Newton (GGN), as a dense ``(P, P)`` matrix of the mean
(:func:`dense_hessian`, :func:`dense_ggn`) and as each row's own term
``U_k S_k U_k^T`` (:data:`HESSIAN` and :data:`GAUSS_NEWTON`, what the single-row
Newton correction takes out). Meant for small models (P up to a few thousand).
"""

import torch
from torch.func import hessian, jacrev, vmap

from .._inputs import n_rows, per_row_tree
from .._loops import chunks
from ..exceptions import UnsupportedOperationError, unsupported_ops
from ..model.layers import gram_sum

__all__ = ["GAUSS_NEWTON", "HESSIAN", "dense_ggn", "dense_hessian", "ggn_rows",
           "jacobian_problem"]


def dense_hessian(member, X, y, chunk=512):
    """Hessian of the mean training loss at the member's parameters, (P, P) float64.

    Reverse over reverse (no forward-mode AD, which torch lacks for some ops).
    """
    X, y = member.tensors(X, y)
    total = torch.zeros(member.n_params, member.n_params, dtype=torch.float64)
    for rows in chunks(n_rows(X), chunk):
        with unsupported_ops("the exact Hessian"):
            h = jacrev(jacrev(member.mean_loss))(member.theta, X[rows], y[rows]).detach()
        total += h.double() * (rows.stop - rows.start)
    return total / n_rows(X)


def _row_jacobians(member, X):
    """Per-row Jacobians of the member's outputs, (n, outputs, P): ``vmap`` of
    ``jacrev``, with the transform's failures named."""
    X, add_row_axis = per_row_tree(X)

    def out_one(theta, x):
        return member.outputs(theta, add_row_axis(x))[0].reshape(-1)

    with unsupported_ops("the exact Gauss-Newton"):
        return vmap(jacrev(out_one), in_dims=(None, 0))(member.theta, X)


def jacobian_problem(member, X):
    """Why the per-row Jacobians that the exact Gauss-Newton is built from cannot
    be taken, as an :class:`UnsupportedOperationError`; None when they run (tried
    on two rows)."""
    try:
        _row_jacobians(member, member.tensors(X[:2], [0] * min(n_rows(X), 2))[0])
    except UnsupportedOperationError as exc:
        return exc
    return None


def ggn_rows(member, X, y, chunk=256, drop_null=False):
    """Yield ``R_n^T J_n`` for chunks of training rows, float64 of shape (rows * C, P).

    ``J_n`` is the Jacobian of sample ``n``'s output with respect to the
    parameters and ``R_n`` a root of the Hessian of its loss with respect to
    that output (:meth:`skdtda.model.FunctionalMember.output_hessian_roots`), so that the
    rows of all chunks stacked, ``U``, give the GGN as ``U^T U / N``.
    ``drop_null=True`` leaves out the directions of the output space where every
    row's loss Hessian of the chunk vanishes (softmax cross-entropy: the all-ones
    direction, so C = K - 1): ``U^T U`` is unchanged, ``U`` has fewer rows.
    """
    X, y = member.tensors(X, y)
    for rows in chunks(n_rows(X), chunk):
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
    # one triangle (BLAS syrk) accumulated over the chunks and mirrored once, and no
    # null output direction (softmax: K - 1 rows a sample): 1.2-1.3x faster on the
    # digits MLP (P = 2410), the same sum to 2e-15
    total = gram_sum(ggn_rows(member, X, y, chunk, drop_null=True))
    return total.div_(n_rows(X))


class _Terms:
    """One kind of exact curvature term: the mean over rows as a dense matrix, and
    each row's own term as ``U_k S_k U_k^T``."""

    def mean(self, member, X, y):
        """The mean term over the rows ``X, y``: (P, P) float64."""
        raise NotImplementedError

    def rows(self, member, X, y):
        """Each row's own term as ``U_k S_k U_k^T``: ``U`` (n, r, P) float64 and
        the signs ``S`` (n, r)."""
        raise NotImplementedError

    def row_width(self, member, X):
        """Vectors of P numbers held per training row while a row's term is taken
        out (its gradient, ``U_k`` and ``H~^{-1} U_k``)."""
        raise NotImplementedError


class _HessianTerms(_Terms):
    """``curvature="exact"``: the Hessian of each row's loss."""

    def mean(self, member, X, y):
        return dense_hessian(member, X, y)

    def rows(self, member, X, y):
        """The row's loss Hessian, eigendecomposed, keeping the eigenpairs above
        rounding (``|lambda| > P eps max |lambda|``); rows of lower rank are padded
        with zero columns (which change nothing). ``O(P^3)`` per row: meant for
        the small models ``"exact"`` is for."""
        X, y = member.tensors(X, y)
        X, add_row_axis = per_row_tree(X)

        def loss_one(theta, x, target):
            return member.loss_fn(member.net, member.outputs(theta, add_row_axis(x)),
                                  target[None])[0]

        with unsupported_ops("the exact per-row Hessian"):
            hess = vmap(hessian(loss_one), in_dims=(None, 0, 0))(member.theta, X, y).detach()
        lam, vec = torch.linalg.eigh(hess.double())
        tol = member.n_params * torch.finfo(torch.float64).eps * lam.abs().amax(dim=1,
                                                                                keepdim=True)
        big = lam.abs() > tol
        rank = max(int(big.sum(dim=1).max()), 1)
        order = torch.argsort(lam.abs(), dim=1, descending=True)[:, :rank]
        lam = torch.gather(lam, 1, order)
        vec = torch.gather(vec, 2, order[:, None, :].expand(-1, vec.shape[1], -1))
        keep = torch.gather(big, 1, order)
        lam = torch.where(keep, lam, torch.zeros_like(lam))
        U = (vec * lam.abs().sqrt()[:, None, :]).transpose(1, 2)  # (n, r, P)
        signs = torch.where(lam < 0, -1.0, 1.0).to(torch.float64)
        return U, signs

    def row_width(self, member, X):
        return member.n_params  # the row's (P, P) Hessian


class _GaussNewtonTerms(_Terms):
    """``curvature="ggn"``: each row's ``J_k^T H_k J_k``."""

    def mean(self, member, X, y):
        return dense_ggn(member, X, y)

    def rows(self, member, X, y):
        """``U_k = R_k^T J_k`` (r = the number of outputs), ``S = +1``."""
        U = torch.cat(list(ggn_rows(member, X, y)))
        U = U.reshape(n_rows(X), -1, member.n_params)
        return U, torch.ones(U.shape[:2], dtype=torch.float64, device=U.device)

    def row_width(self, member, X):
        return 2 * member.n_outputs(X) + 2


#: The terms of ``curvature="exact"`` and of ``curvature="ggn"``.
HESSIAN = _HessianTerms()
GAUSS_NEWTON = _GaussNewtonTerms()
