"""Turning a curvature name into a fitted backend."""

import logging

from .._inputs import n_rows
from ._cg import CGCurvature
from ._dense import EigenCurvature
from ._identity import IdentityCurvature
from ._kernel import KernelCurvature
from ._kfac import KroneckerCurvature
from ._pcg import PCGCurvature
from ._terms import jacobian_problem

__all__ = ["AUTO_ALL_COLUMNS", "AUTO_COLUMN_MACS", "AUTO_MAX_MACS", "AUTO_MAX_PARAMS",
           "BACKENDS", "CURVATURES", "KRONECKER", "LAYERED", "NEWTON_ROWS", "NEWTON_SETS",
           "auto_options", "fit_curvature", "resolve_curvature", "solve_blocks",
           "solve_grads"]

#: The backend class of each curvature name (``"ggn"``: the dense form; its kernel
#: form is :class:`KernelCurvature`, see :func:`fit_curvature`). A new backend is a
#: module with a :class:`~skdtda.curvature.Curvature` subclass, listed here.
BACKENDS = {"exact": EigenCurvature, "ggn": EigenCurvature, "kfac": KroneckerCurvature,
            "ekfac": KroneckerCurvature, "cg": CGCurvature, "pcg": PCGCurvature,
            "identity": IdentityCurvature}
CURVATURES = ("auto", *BACKENDS)
#: Curvatures that work layer by layer (per-layer blocks, supported layers only).
LAYERED = tuple(name for name, backend in BACKENDS.items() if backend.layered)
#: Curvatures that are Kronecker-factored (their eigenvalues squeezed towards their mean:
#: ``damping="auto"`` gives them less damping); ``"pcg"`` is layered but solves the
#: exact GGN.
KRONECKER = tuple(name for name, backend in BACKENDS.items() if backend.kronecker)
#: Curvatures whose single-row Newton correction is a low-rank (Woodbury) update.
NEWTON_ROWS = tuple(name for name, backend in BACKENDS.items() if backend.newton_rows)
#: Curvatures that can be refitted to the kept rows of a removal set.
NEWTON_SETS = tuple(name for name, backend in BACKENDS.items() if backend.newton_sets)

#: ``"auto"`` takes the dense GGN up to this many parameters (the kernel form up to
#: this many rows times outputs) ...
AUTO_MAX_PARAMS = 4096
#: ... and this many multiply-adds (``N * K * P^2``, the product that builds it):
#: a few seconds per seed on one core. Raised from 2.5e10 on 2026-12-06 on the choice
#: recipes of benchmarks/recipes.py: it takes the exact GGN (kernel form) for the
#: 6,058-parameter digits CNN on 300 rows (4.4e10), whose mean-LDS rose from 0.30 with
#: EK-FAC to 0.39 (0.45 at a smaller damping) for 2.5 s a seed instead of 0.02 s.
AUTO_MAX_MACS = 1e11
#: Where ``"auto"`` takes EK-FAC, it builds the factors from every column of each
#: row's output-Hessian root (``samples=None``, one backward pass per output, as the
#: exact GGN it stands in for) up to this many outputs, instead of ``samples="auto"``'s
#: one random combination beyond two. Chosen 2026-12-07 against retraining (not the
#: exact GGN's scores) on six EK-FAC recipes of benchmarks/recipes.py (5-10 classes):
#: higher on 14 of 18 LOO / mean-LDS / variance-LDS cells at the rule's damping, mean
#: +0.013; scored once on three held-out ones (7-12 outputs): higher on 7 of 9, mean
#: +0.010, and the default within 0.03 of the best fixed damping on as many cells
#: (7 of 9 either way); on three fresh ones after adoption (3-16 outputs): higher on 8
#: of 9, mean +0.014. docs/benchmarks.md, "EK-FAC's output-Hessian columns".
AUTO_ALL_COLUMNS = 16
#: ... while those passes cost at most this many multiply-adds: ``n_train *
#: n_outputs`` times one row's products through the traced layers
#: (:meth:`~skdtda.model.LayerTracer.row_macs`), about a second a member on one core
#: (measured 2026-12-08: the digits CNN on 1000 rows, 2.9e8, 0.25 s a member more;
#: the digits transformer, 1.4e9, 1.4 s more, so it keeps one combination). The
#: recipes above lie at 6e7-1.6e8.
AUTO_COLUMN_MACS = 1e9


def auto_options(member, X, options=None):
    """The curvature options ``"auto"`` fits EK-FAC with: ``options`` with
    ``samples=None`` (every output-Hessian column) where ``samples`` is not given,
    the outputs are at most :data:`AUTO_ALL_COLUMNS` and the passes cost at most
    :data:`AUTO_COLUMN_MACS`; ``options`` unchanged otherwise.

    Parameters
    ----------
    member : LayeredMember
        The member EK-FAC is fitted to (its tracer counts the products).
    X : array
        The training rows.
    options : dict or None
        The options asked for (``curvature_options``).

    Returns
    -------
    options : dict or None

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklearn.datasets import load_iris
    >>> from skorch import NeuralNetClassifier
    >>> from skdtda.curvature import auto_options
    >>> from skdtda.model import functional_member
    >>> X, y = load_iris(return_X_y=True)
    >>> X = X.astype(np.float32)
    >>> module = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(),
    ...                              torch.nn.Linear(16, 3))
    >>> net = NeuralNetClassifier(module, criterion=torch.nn.CrossEntropyLoss, max_epochs=1,
    ...                           train_split=None, verbose=0).fit(X, y)
    >>> member = functional_member(net, "loss", "classifier", layered=True, probe_X=X[:8])
    >>> member.tracer.row_macs()  # (4 + 1) * 16 + (16 + 1) * 3
    131
    >>> auto_options(member, X)  # 150 rows * 3 outputs * 131: every column
    {'samples': None}
    >>> auto_options(member, X, {"samples": 1})  # an explicit choice stands
    {'samples': 1}
    """
    if options is not None and "samples" in options:
        return options
    tracer = member.tracer
    n_outputs = member.n_outputs(X)
    if (tracer is None or n_outputs > AUTO_ALL_COLUMNS
            or n_rows(X) * n_outputs * tracer.row_macs() > AUTO_COLUMN_MACS):
        return options
    return {**(options or {}), "samples": None}


def resolve_curvature(kind, member, X, damping=None):
    """The curvature ``kind`` stands for: itself, or the choice ``"auto"`` makes.

    ``"auto"`` takes the exact GGN (``"ggn"``) when building it costs at most
    :data:`AUTO_MAX_MACS` multiply-adds, a few seconds per seed on one core: in
    its dense form ``n_train * n_outputs * n_params**2`` with ``n_params`` at
    most :data:`AUTO_MAX_PARAMS`, or, with a positive damping and
    ``n_train * n_outputs < n_params``, in its kernel form
    ``(n_train * n_outputs)**2 * n_params`` with ``n_train * n_outputs`` at most
    :data:`AUTO_MAX_PARAMS` (few rows, a wide net); otherwise EK-FAC
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
        A curvature name of :data:`CURVATURES`.
    member : FlatMember or None
        A flat member over all parameters (only ``"auto"`` looks at it).
    X : ndarray of shape (n_train, ...)
        The training rows (their number and the output size set the cost).
    damping : float, default=None
        The damping the curvature will get; the kernel form needs it positive
        (None: only the dense form is considered).

    Returns
    -------
    curvature : str
        The name of the curvature to fit.
    """
    if kind != "auto":
        return kind
    n_outputs = member.n_outputs(X)
    n_params = member.n_params
    rows = n_rows(X) * n_outputs  # of the kernel form's system (at most: null directions drop)
    cheap = (n_params <= AUTO_MAX_PARAMS and n_rows(X) * n_outputs * n_params**2 <= AUTO_MAX_MACS
             or (damping is not None and damping > 0 and rows < n_params
                 and rows <= AUTO_MAX_PARAMS and rows**2 * n_params <= AUTO_MAX_MACS))
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


def fit_curvature(kind, member, X, y, damping, options=None):
    """Fit the inverse-curvature backend of the curvature named ``kind`` for one member.

    Returns a :class:`Curvature`: ``solve_blocks(blocks)`` gives
    ``(H + damping I)^{-1} v`` for gradient blocks in the member's layout
    (``solve(vectors)`` too for the flat backends), with H the curvature of the
    member's **mean** training loss plus its optimizer's weight decay and its
    penalty. Nothing is factored before the first solve, so
    ``with_damping`` after a look at ``mean_eigenvalue()`` costs no
    refactorisation. ``options`` go to the backend (``maxiter``, ``tol`` and
    ``chunk`` for ``"cg"``; ``samples``, ``layer_damping`` and
    ``diagonal_input_above`` for ``"kfac"``/``"ekfac"``; all four for
    ``"pcg"``; ``form``
    for ``"ggn"``).

    ``"ggn"`` takes its kernel form (:class:`KernelCurvature`, the same solve
    to rounding) when ``n_train * n_outputs < n_params`` and ``damping > 0``,
    the dense form otherwise (``damping=0`` is the pseudo-inverse, which only
    the dense form gives); ``options={"form": "dense"}`` or ``{"form": "kernel"}``
    forces one.
    """
    options = dict(options or {})
    form = options.pop("form", "auto") if kind == "ggn" else None
    backend = BACKENDS[kind]
    unknown = sorted(set(options) - set(backend.options))
    if unknown and backend.options:
        raise ValueError(f"curvature={kind!r} takes curvature_options "
                         f"{_listed(backend.options)}, got {unknown}")
    if unknown:
        raise ValueError(f"curvature={kind!r} takes no curvature_options, got {unknown}")
    if kind == "ggn":
        if form not in ("auto", "dense", "kernel"):
            raise ValueError(f"form={form!r} must be 'auto', 'dense' or 'kernel'")
        if form == "auto" and damping > 0:
            form = "kernel" if n_rows(X) * member.n_outputs(X) < member.n_params else "dense"
        if form == "kernel":
            backend = KernelCurvature
    return backend.fit(kind, member, X, y, damping, **options)


def _listed(names):
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def solve_blocks(curvature, blocks):
    """``(H + damping I)^{-1}`` applied to gradient blocks (layered or one flat
    block): ``curvature.solve_blocks(blocks)``."""
    return curvature.solve_blocks(blocks)


def solve_grads(curvature, member, fn_name, X, y):
    """``(H + damping I)^{-1}`` applied to the member's per-row gradients of
    ``fn_name`` (``"loss"`` or ``"measurement"``) on ``X, y``, as blocks:
    ``curvature.solve_rows(fn_name, X, y)`` of the member it was fitted to (a
    Kronecker-factored backend rotates them from the layers' patches)."""
    return curvature.solve_rows(fn_name, X, y)
