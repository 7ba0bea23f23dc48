"""The curvature of the kept rows, for one Newton step past first-order influence.

Member ``s`` trains on ``L(theta) = (1/N) sum_i l_i(theta) + P_n(theta) + P_f(theta)``
with ``P_n`` the L2 terms normalised with the losses (an ``L2Penalty`` with
``normalised=True``) and ``P_f`` the fixed ones (optimizer weight decay, a
non-normalised penalty). Removing a set ``S`` leaves ``N' = N - |S|`` rows and
the objective ``(1/N') sum_{i not in S} l_i + (N/N') P_n + P_f``, whose curvature is

    H_keep = (1/N') sum_{i not in S} G_i + (N/N') D_n + D_f + damping I

(``G_i`` one row's Gauss-Newton term, or its Hessian with ``curvature="exact"``;
``D_n``, ``D_f`` the diagonals of the L2 terms). One Newton step from the
trained parameters moves them by ``H_keep^{-1} (1/N') sum_{i in S} (g_i - c)``
(``c`` the centre of ``retraining=``: ``gbar``, or ``-grad P_f`` for the same epochs),
exact when the objective is quadratic. First-order influence is the same with
``H_keep -> H`` and ``N' -> N``.

:func:`kept_curvature` refits a backend to ``H_keep`` for one set (one new
factorisation); :func:`tilde_curvature` and :func:`woodbury_solve` give the
single-row case, where ``H_keep(k) = H~ - U_k S_k U_k^T / N'`` is a rank-``C``
update of ``H~ = (N/N') (H_data + D_n) + D_f + damping I`` (``N' = N - 1``).
"""

import copy

import torch
from torch.func import hessian, vmap

from ..exceptions import unsupported_ops
from ._cg import CGCurvature
from ._dense import EigenCurvature, dense_ggn, dense_hessian, ggn_rows
from ._kernel import KernelCurvature
from ._kfac import KroneckerCurvature

__all__ = ["NEWTON_ROWS", "NEWTON_SETS", "kept_curvature", "row_factors", "tilde_curvature",
           "woodbury_solve"]

#: Curvatures whose single-row Newton correction is a low-rank (Woodbury) update.
NEWTON_ROWS = ("exact", "ggn")
#: Curvatures that can be refitted to the kept rows of a removal set.
NEWTON_SETS = ("exact", "ggn", "kfac", "ekfac", "cg")


def _scaled_member(member, scale):
    """The member with its normalised penalty scaled by ``scale`` (a shallow copy)."""
    if member.penalty is None or not member.penalty_normalised or scale == 1:
        return member
    scaled = copy.copy(member)
    scaled.penalty = member.penalty * scale
    return scaled


def _kernel_diagonal(member, damping, scale):
    """The kernel form's ``D = (damping + wd) I + penalty`` with a normalised penalty
    scaled by ``scale``: ``(shift, diagonal or None)``."""
    shift = float(damping) + member.weight_decay
    if member.penalty is None:
        return shift, None
    penalty = member.penalty.double() * (scale if member.penalty_normalised else 1.0)
    return shift, penalty + shift


def _check_kind(kind):
    if kind not in NEWTON_SETS:
        raise ValueError(f"correction='newton' needs a curvature that can be refitted to the "
                         f"kept rows ({', '.join(map(repr, NEWTON_SETS))}), got {kind!r}")


def kept_curvature(kind, solver, member, X, y, keep, damping, matrix=None):
    """The backend ``kind`` refitted to ``H_keep``, the curvature of the rows ``keep``.

    Parameters
    ----------
    kind : str
        The resolved curvature (``"exact"``, ``"ggn"``, ``"kfac"``, ``"ekfac"``, ``"cg"``).
    solver : object
        The member's fitted solver for all rows (from :func:`fit_curvature`).
    member : FunctionalMember
    X, y : arrays
        All training rows and their net targets.
    keep : ndarray of bool of shape (n_train,)
        The kept rows.
    damping : float
        As fitted (a fixed term: not rescaled).
    matrix : tensor, default=None
        The dense solver's ``matrix()``, when already rebuilt (many sets, one
        member); not modified.

    Returns
    -------
    solver : object
        A solver of the same kind for ``H_keep``. Cost: dense, the removed rows'
        Gauss-Newton (or Hessian) terms, ``|S| C P^2``, one ``P^3`` product to
        recover the stored matrix from its factor, and a new Cholesky factor;
        kernel, a new ``(M', M')`` Gram matrix and its factor; K-FAC/EK-FAC, the
        factors (and EK-FAC's eigenvalues) refitted over the kept rows; CG, a
        solver over the kept rows.
    """
    _check_kind(kind)
    n, n_kept = len(keep), int(keep.sum())
    scale = n / n_kept
    removed = ~keep
    if isinstance(solver, EigenCurvature):
        fixed = member.fixed_diagonal()
        data = solver.matrix() if matrix is None else matrix.clone()
        data.diagonal().sub_(fixed)  # (H_data + D_n): the part normalised by N
        if removed.any():
            build = dense_hessian if kind == "exact" else dense_ggn
            data.mul_(n).sub_(build(member, X[removed], y[removed]) * int(removed.sum()))
            data.div_(n_kept)  # (1/N') sum_kept G_i + (N/N') D_n
        data.diagonal().add_(fixed)
        return EigenCurvature(data, damping)
    if isinstance(solver, KernelCurvature):
        rows = torch.as_tensor(keep, device=solver.factor.device)[solver.sample_of_row]
        shift, diagonal = _kernel_diagonal(member, damping, scale)
        return KernelCurvature.from_factor(solver.factor[rows] * scale ** 0.5, shift, diagonal,
                                           solver.sample_of_row[rows])
    if isinstance(solver, CGCurvature):
        return CGCurvature(_scaled_member(member, scale), X[keep], y[keep], damping,
                           maxiter=solver.maxiter, tol=solver.tol, chunk=solver.chunk)
    if isinstance(solver, KroneckerCurvature):
        return KroneckerCurvature(_scaled_member(member, scale), X[keep], y[keep], damping,
                                  corrected=solver.corrected, samples=solver.samples,
                                  chunk=solver.chunk)
    raise ValueError(f"correction='newton' cannot refit a {type(solver).__name__}; use "
                     f"curvature in {NEWTON_SETS}")


def tilde_curvature(kind, solver, member, n_train, damping, n_removed=1):
    """``H~ = (N/N') (H_data + D_n) + D_f + damping I`` for ``N' = N - n_removed``: the
    curvature of all rows rescaled to the kept count, before the rows' own terms
    are taken out (:func:`woodbury_solve`). One new factorisation per member."""
    if kind not in NEWTON_ROWS:
        raise ValueError(f"the single-row Newton correction needs curvature in {NEWTON_ROWS} "
                         f"(a low-rank update of each row's own term), got {kind!r}")
    n_kept = n_train - n_removed
    scale = n_train / n_kept
    if isinstance(solver, EigenCurvature):
        fixed = member.fixed_diagonal()
        data = solver.matrix()
        data.diagonal().sub_(fixed)
        data.mul_(scale)
        data.diagonal().add_(fixed)
        return EigenCurvature(data, damping)
    if isinstance(solver, KernelCurvature):
        shift, diagonal = _kernel_diagonal(member, damping, scale)
        return KernelCurvature.from_factor(solver.factor * scale ** 0.5, shift, diagonal,
                                           solver.sample_of_row)
    raise ValueError(f"the single-row Newton correction cannot rescale a "
                     f"{type(solver).__name__}")


def row_factors(kind, member, X, y):
    """Each row's own curvature term as ``U_k S_k U_k^T``: ``U`` (n, r, P) float64
    and the signs ``S`` (n, r).

    ``"ggn"``: ``U_k = J_k^T R_k`` (r = the number of outputs), ``S = +1``.
    ``"exact"``: the row's loss Hessian, eigendecomposed, keeping the eigenpairs
    above rounding (``|lambda| > P eps max |lambda|``); rows of lower rank are
    padded with zero columns (which change nothing). ``O(P^3)`` per row: meant
    for the small models ``"exact"`` is for.
    """
    if kind == "ggn":
        U = torch.cat(list(ggn_rows(member, X, y)))
        U = U.reshape(len(X), -1, member.n_params)
        return U, torch.ones(U.shape[:2], dtype=torch.float64, device=U.device)
    X, y = member.tensors(X, y)

    def loss_one(theta, x, target):
        return member.loss_fn(member.net, member.outputs(theta, x[None]), target[None])[0]

    with unsupported_ops("the exact per-row Hessian"):
        hess = vmap(hessian(loss_one), in_dims=(None, 0, 0))(member.theta, X, y).detach()
    lam, vec = torch.linalg.eigh(hess.double())
    tol = member.n_params * torch.finfo(torch.float64).eps * lam.abs().amax(dim=1, keepdim=True)
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


def woodbury_solve(tilde, U, signs, vectors, n_kept):
    """``(H~ - U_k S_k U_k^T / N')^{-1} v_k`` for each row ``k``: ``r + 1`` solves a row.

    ``(A - U S U^T / N')^{-1} = A^{-1} + A^{-1} U (N' S - U^T A^{-1} U)^{-1} U^T A^{-1}``.

    Parameters
    ----------
    tilde : solver of ``H~``
    U : tensor of shape (n, r, P)
    signs : tensor of shape (n, r)
    vectors : tensor of shape (n, P)
    n_kept : int
        ``N'``.

    Returns
    -------
    solved : tensor of shape (n, P), float64
    """
    n, r, p = U.shape
    v = vectors.double()
    x = tilde.solve(v)
    W = tilde.solve(U.reshape(n * r, p)).reshape(n, r, p)
    middle = n_kept * torch.diag_embed(signs) - torch.einsum("nrp,nsp->nrs", U, W)
    c = torch.einsum("nrp,np->nr", W, v)
    z = torch.linalg.solve(middle, c)
    return x + torch.einsum("nrp,nr->np", W, z)
