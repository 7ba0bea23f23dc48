"""Inverse-curvature backends: solve (H + damping I)^{-1} g per ensemble member.

- ``"auto"``: the exact GGN where it is cheap, else EK-FAC, else CG (see
  :func:`resolve_curvature`);
- ``"exact"``: the Hessian of the mean training loss (dense, small models);
- ``"ggn"``: the exact generalised Gauss-Newton (positive semi-definite): a dense
  ``(P, P)`` matrix, or its kernel (Woodbury) form on an ``(N (K-1), N (K-1))``
  matrix when the training rows times outputs are fewer than the parameters
  (:func:`fit_curvature`, :class:`KernelCurvature`);
- ``"kfac"`` / ``"ekfac"``: Kronecker-factored GGN and its eigenvalue-corrected form
  over every supported layer (Linear, Conv1d/2d, Embedding/Bag) wherever it
  sits in the module, the other parameters held fixed;
- ``"cg"``: conjugate gradients with exact GGN-vector products (matrix-free);
- ``"identity"``: H = I, a gradient dot product.
"""

import logging

from ._cg import CGCurvature
from ._dense import EigenCurvature, IdentityCurvature, dense_ggn, dense_hessian, jacobian_problem
from ._kernel import KernelCurvature
from ._kfac import KroneckerCurvature

__all__ = ["CGCurvature", "CURVATURES", "EigenCurvature", "IdentityCurvature", "KernelCurvature",
           "KroneckerCurvature", "LAYERED", "dense_ggn", "dense_hessian", "fit_curvature",
           "resolve_curvature", "solve_blocks", "solve_grads"]

CURVATURES = ("auto", "exact", "ggn", "kfac", "ekfac", "cg", "identity")
#: Curvatures that work layer by layer (per-layer blocks, supported layers only).
LAYERED = ("kfac", "ekfac")

# "auto" takes the dense GGN up to this many parameters and this many multiply-adds
# (N * K * P^2, the product that builds it): about a second per seed on one core.
_AUTO_MAX_PARAMS = 4096
_AUTO_MAX_MACS = 2.5e10


def resolve_curvature(kind, member, X, damping=None):
    """The backend ``kind`` stands for: itself, or the choice ``"auto"`` makes.

    ``"auto"`` takes the exact GGN (``"ggn"``) when building it costs at most
    2.5e10 multiply-adds, about a second per seed on one core: in its dense
    form ``n_train * n_outputs * n_params**2`` with ``n_params <= 4096``, or,
    with a positive damping and ``n_train * n_outputs < n_params``, in its
    kernel form ``(n_train * n_outputs)**2 * n_params`` with
    ``n_train * n_outputs <= 4096`` (few rows, a wide net); otherwise EK-FAC
    over every supported layer (Linear, Conv1d/2d, Embedding/Bag, wherever
    they sit). On digits (docs/influence.md) the exact GGN predicts
    leave-one-out retraining far better than EK-FAC (correlation 0.86
    against 0.60): worth its cost where the cost is small. A module whose
    ops the exact GGN's per-row Jacobians (``vmap`` of ``jacrev``) cannot
    run, such as torch's GRU, gets EK-FAC over its supported layers (tried
    on two rows; logged). Conjugate gradients are never chosen: they are
    taken only when asked for.

    Parameters
    ----------
    kind : str
    member : FunctionalMember
        A flat member over all parameters.
    X : ndarray of shape (n_train, ...)
        The training rows (their number and the output size set the cost).
    damping : float, default=None
        The damping the curvature will get; the kernel form needs it positive
        (None: only the dense form is considered).

    Returns
    -------
    kind : str
    """
    if kind != "auto":
        return kind
    n_outputs = member.n_outputs(X)
    n_params = member.n_params
    rows = len(X) * n_outputs  # of the kernel form's system (at most: null directions drop)
    cheap = (n_params <= _AUTO_MAX_PARAMS and len(X) * n_outputs * n_params**2 <= _AUTO_MAX_MACS
             or (damping is not None and damping > 0 and rows < n_params
                 and rows <= _AUTO_MAX_PARAMS and rows**2 * n_params <= _AUTO_MAX_MACS))
    problem = jacobian_problem(member, X) if cheap else None
    if cheap and problem is None:
        return "ggn"
    if member.supported_layers(X[:8]):
        if problem is not None:
            logging.getLogger("skdtda").info(
                "curvature='auto' takes EK-FAC although the exact GGN would be cheap: %s",
                problem)
        return "ekfac"
    if problem is not None:
        raise problem
    raise ValueError(
        f"curvature='auto': {type(member.module).__name__} has {n_params} parameters, too "
        "many for the dense Gauss-Newton, and no layer that EK-FAC factors (Linear, "
        "Conv1d/2d, Embedding/Bag); pass curvature='cg' (matrix-free, slow) explicitly")


def fit_curvature(kind, member, X, y, damping, options=None, defer=False):
    """Fit the inverse-curvature backend ``kind`` for one member.

    Returns an object with ``solve(vectors)`` giving ``(H + damping I)^{-1} v``
    for each row ``v`` of ``vectors`` (shape (n, P)), or, for the layered
    backends, ``solve_blocks(blocks)`` on per-layer blocks, with H the
    curvature of the member's **mean** training loss plus its optimizer's
    weight decay. ``options`` go to the backend (``maxiter`` and ``tol`` for
    ``"cg"``; ``samples`` for ``"kfac"``/``"ekfac"``; ``form`` for ``"ggn"``).

    ``"ggn"`` takes its kernel form (:class:`KernelCurvature`, the same solve
    to rounding) when ``n_train * n_outputs < n_params`` and ``damping > 0``,
    the dense form otherwise (``damping=0`` is the pseudo-inverse, which only
    the dense form gives); ``options={"form": "dense"}`` or ``{"form": "kernel"}`` forces one.
    ``defer=True`` leaves the dense matrix or the kernel form's Gram matrix
    unfactored until its ``factorise()``, so that a damping chosen from the
    curvature's trace (``damping="auto"``) costs no refactoring.
    """
    options = dict(options or {})
    if kind == "cg":
        unknown = sorted(set(options) - {"maxiter", "tol", "chunk"})
        if unknown:
            raise ValueError(f"curvature='cg' takes curvature_options 'maxiter', 'tol' and "
                             f"'chunk', got {unknown}")
        return CGCurvature(member, X, y, damping, **options)
    if kind in LAYERED:
        unknown = sorted(set(options) - {"samples"})
        if unknown:
            raise ValueError(f"curvature={kind!r} takes curvature_options 'samples', got "
                             f"{unknown}")
        return KroneckerCurvature(member, X, y, damping, corrected=kind == "ekfac",
                                  samples=options.get("samples", "auto"))
    form = options.pop("form", "auto") if kind == "ggn" else "auto"
    if options:
        raise ValueError(f"curvature={kind!r} takes no curvature_options, got {sorted(options)}")
    if form not in ("auto", "dense", "kernel"):
        raise ValueError(f"form={form!r} must be 'auto', 'dense' or 'kernel'")
    if kind == "identity":
        return IdentityCurvature()
    import torch

    if kind == "ggn" and form == "auto" and damping > 0:
        form = "kernel" if len(X) * member.n_outputs(X) < member.n_params else "dense"
    if kind == "ggn" and form == "kernel":
        return KernelCurvature(member, X, y, damping, defer=defer)
    matrix = dense_hessian(member, X, y) if kind == "exact" else dense_ggn(member, X, y)
    matrix += member.weight_decay * torch.eye(len(matrix), dtype=matrix.dtype)
    if member.penalty is not None:
        matrix.diagonal().add_(member.penalty.to(matrix.dtype))
    return EigenCurvature(matrix, damping, defer=defer)


def solve_blocks(curvature, blocks):
    """``(H + damping I)^{-1}`` applied to gradient blocks (layered or one flat block)."""
    if hasattr(curvature, "solve_blocks"):
        return curvature.solve_blocks(blocks)
    (flat,) = blocks
    return [curvature.solve(flat)]


def solve_grads(curvature, member, fn_name, X, y):
    """``(H + damping I)^{-1}`` applied to the member's per-row gradients of
    ``fn_name`` (``"loss"`` or ``"measurement"``) on ``X, y``, as blocks; a
    Kronecker-factored backend rotates them from the layers' patches."""
    if hasattr(curvature, "solve_rows"):
        return curvature.solve_rows(fn_name, X, y)
    return solve_blocks(curvature, member.grads(fn_name, X, y))
