"""Inverse-curvature backends: solve (H + damping I)^{-1} g per ensemble member.

- ``"auto"``: the exact GGN where it is cheap, else EK-FAC, else CG (see
  :func:`resolve_curvature`);
- ``"exact"``: the Hessian of the mean training loss (dense, small models);
- ``"ggn"``: the exact generalised Gauss-Newton (positive semi-definite): a dense
  ``(P, P)`` matrix, or its kernel (Woodbury) form on an ``(N (K-1), N (K-1))``
  matrix when the training rows times outputs are fewer than the parameters
  (:func:`fit_curvature`, :class:`KernelCurvature`);
- ``"kfac"`` / ``"ekfac"``: Kronecker-factored GGN and its eigenvalue-corrected form
  for stacks of Linear layers;
- ``"cg"``: conjugate gradients with exact GGN-vector products (matrix-free);
- ``"identity"``: H = I, a gradient dot product.
"""

from ._cg import CGCurvature
from ._dense import EigenCurvature, IdentityCurvature, dense_ggn, dense_hessian
from ._kernel import KernelCurvature
from ._kfac import KroneckerCurvature, kfac_supported_reason

__all__ = ["CGCurvature", "CURVATURES", "EigenCurvature", "IdentityCurvature", "KernelCurvature",
           "KroneckerCurvature",
           "dense_ggn", "dense_hessian", "fit_curvature", "kfac_supported_reason",
           "resolve_curvature"]

CURVATURES = ("auto", "exact", "ggn", "kfac", "ekfac", "cg", "identity")

# "auto" takes the dense GGN up to this many parameters and this many multiply-adds
# (N * K * P^2, the product that builds it): about a second per seed on one core.
_AUTO_MAX_PARAMS = 4096
_AUTO_MAX_MACS = 2.5e10


def resolve_curvature(kind, member, X):
    """The backend ``kind`` stands for: itself, or the choice ``"auto"`` makes.

    ``"auto"`` takes the exact GGN (``"ggn"``) when building it costs at most
    2.5e10 multiply-adds (``n_train * n_outputs * n_params**2``, about a
    second per seed on one core) and ``n_params <= 4096``; otherwise EK-FAC
    for plain Linear/activation stacks and CG for any other module. On
    digits (docs/influence.md) the exact GGN predicts leave-one-out
    retraining far better than EK-FAC (correlation 0.86 against 0.60): worth
    its cost where the cost is small.

    Parameters
    ----------
    kind : str
    member : FunctionalMember
    X : ndarray of shape (n_train, ...)
        The training rows (their number and the output size set the cost).

    Returns
    -------
    kind : str
    """
    if kind != "auto":
        return kind
    import torch

    with torch.no_grad():
        n_outputs = member.outputs(member.theta, member.tensors(X[:1], [0])[0])[0].numel()
    n_params = member.n_params
    if n_params <= _AUTO_MAX_PARAMS and len(X) * n_outputs * n_params**2 <= _AUTO_MAX_MACS:
        return "ggn"
    return "ekfac" if kfac_supported_reason(member) is None else "cg"


def fit_curvature(kind, member, X, y, damping, options=None):
    """Fit the inverse-curvature backend ``kind`` for one member.

    Returns an object with ``solve(vectors)`` giving ``(H + damping I)^{-1} v``
    for each row ``v`` of ``vectors`` (shape (n, P)), with H the curvature of
    the member's **mean** training loss plus its optimizer's weight decay.
    ``options`` go to the backend (``maxiter`` and ``tol`` for ``"cg"``;
    ``form`` for ``"ggn"``).

    ``"ggn"`` takes its kernel form (:class:`KernelCurvature`, the same solve
    to rounding) when ``n_train * n_outputs < n_params`` and ``damping > 0``,
    the dense form otherwise (``damping=0`` is the pseudo-inverse, which only
    the dense form gives); ``options={"form": "dense"}`` or ``{"form": "kernel"}`` forces one.
    """
    options = dict(options or {})
    if kind == "cg":
        return CGCurvature(member, X, y, damping, **options)
    form = options.pop("form", "auto") if kind == "ggn" else "auto"
    if options:
        raise ValueError(f"curvature={kind!r} takes no curvature_options, got {sorted(options)}")
    if form not in ("auto", "dense", "kernel"):
        raise ValueError(f"form={form!r} must be 'auto', 'dense' or 'kernel'")
    if kind == "identity":
        return IdentityCurvature()
    if kind in ("kfac", "ekfac"):
        reason = kfac_supported_reason(member)
        if reason is not None:
            raise ValueError(f"curvature={kind!r}: {reason}")
        return KroneckerCurvature(member, X, y, damping, corrected=kind == "ekfac")
    import torch

    if kind == "ggn" and form == "auto" and damping > 0:
        with torch.no_grad():
            n_outputs = member.outputs(member.theta, member.tensors(X[:1], [0])[0])[0].numel()
        form = "kernel" if len(X) * n_outputs < member.n_params else "dense"
    if kind == "ggn" and form == "kernel":
        return KernelCurvature(member, X, y, damping)
    matrix = dense_hessian(member, X, y) if kind == "exact" else dense_ggn(member, X, y)
    matrix += member.weight_decay * torch.eye(len(matrix), dtype=matrix.dtype)
    return EigenCurvature(matrix, damping)
