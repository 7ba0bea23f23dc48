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

Every backend that can (:class:`~skdtda.curvature.Curvature`, ``newton_sets``)
refits itself to ``H_keep`` for each set (``kept``: one new factorisation per
set). The single-row case, where ``H_keep(k) = H~ - U_k S_k U_k^T / N'`` is a
rank-``C`` update of ``H~ = (N/N') (H_data + D_n) + D_f + damping I``
(``N' = N - 1``), takes the backend rescaled (``rescaled``), each row's own term
(``row_factors``) and :func:`woodbury_solve` (``newton_rows``: the dense and
kernel forms of the exact curvatures).
"""

import torch

__all__ = ["woodbury_solve"]


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
