"""Inverse-curvature backends: solve (H + damping I)^{-1} g per ensemble member.

- ``"exact"``: the Hessian of the mean training loss (dense, small models);
- ``"ggn"``: the exact generalised Gauss-Newton (dense, positive semi-definite);
- ``"kfac"`` / ``"ekfac"``: Kronecker-factored GGN and its eigenvalue-corrected form
  for stacks of Linear layers;
- ``"cg"``: conjugate gradients with exact GGN-vector products (matrix-free);
- ``"identity"``: H = I, a gradient dot product.
"""

from ._cg import CGCurvature
from ._dense import EigenCurvature, IdentityCurvature, dense_ggn, dense_hessian
from ._kfac import KroneckerCurvature, kfac_supported_reason

__all__ = ["CGCurvature", "CURVATURES", "EigenCurvature", "IdentityCurvature", "KroneckerCurvature",
           "dense_ggn", "dense_hessian", "fit_curvature", "kfac_supported_reason"]

CURVATURES = ("exact", "ggn", "kfac", "ekfac", "cg", "identity")


def fit_curvature(kind, member, X, y, damping, options=None):
    """Fit the inverse-curvature backend ``kind`` for one member.

    Returns an object with ``solve(vectors)`` giving ``(H + damping I)^{-1} v``
    for each row ``v`` of ``vectors`` (shape (n, P)), with H the curvature of
    the member's **mean** training loss plus its optimizer's weight decay.
    ``options`` go to the backend (``maxiter`` and ``tol`` for ``"cg"``).
    """
    options = dict(options or {})
    if kind == "cg":
        return CGCurvature(member, X, y, damping, **options)
    if options:
        raise ValueError(f"curvature={kind!r} takes no curvature_options, got {sorted(options)}")
    if kind == "identity":
        return IdentityCurvature()
    if kind in ("kfac", "ekfac"):
        reason = kfac_supported_reason(member)
        if reason is not None:
            raise ValueError(f"curvature={kind!r}: {reason}")
        return KroneckerCurvature(member, X, y, damping, corrected=kind == "ekfac")
    import torch

    matrix = dense_hessian(member, X, y) if kind == "exact" else dense_ggn(member, X, y)
    matrix += member.weight_decay * torch.eye(len(matrix), dtype=matrix.dtype)
    return EigenCurvature(matrix, damping)
