"""Registry of the layer kinds that attribution sees in factored form.

Each supported layer's parameter gradient is a sum of products of its per-row
patches and output gradients: what Kronecker-factored curvature and the
factored scoring work on (:class:`~skdtda.model.LayeredMember`). Attribution
walks the module (``named_modules()``) and keeps the layers whose kind is
registered here; parameters anywhere else (LayerNorm/BatchNorm affine
parameters, positional embeddings, free ``nn.Parameter``s, the raw projections
of ``nn.MultiheadAttention``) are held fixed. Supporting a new kind of layer
means adding one module with a :class:`LayerKind` subclass and listing it in
``KINDS``.
"""

from torch import nn

from ._base import (SPARSE_DENSITY, DensePatches, LayerKind, SparsePatches, accumulate, gram,
                    gram_sum, one_patch_per_row, patches_of)
from ._conv import ConvKind
from ._embedding import EmbeddingKind, OneHotPatches
from ._linear import LinearKind

__all__ = ["DensePatches", "KINDS", "LayerKind", "LayerSpec", "OneHotPatches", "SPARSE_DENSITY",
           "SparsePatches", "accumulate", "find_layers", "gram", "gram_sum", "one_patch_per_row",
           "patches_of", "selected_parameters"]

KINDS = (LinearKind(), ConvKind(), EmbeddingKind())

# Why parameters of some well-known modules are held fixed (for the report).
_FIXED_REASONS = {
    nn.MultiheadAttention: ("its fused projections (in_proj_weight, out_proj) run inside "
                            "F.multi_head_attention_forward, not as Linear modules; attention "
                            "written with nn.Linear projections is attributed"),
    nn.LayerNorm: "normalisation affine parameters are not Kronecker-factored",
    nn.GroupNorm: "normalisation affine parameters are not Kronecker-factored",
}


def _free_parameter_reason(name, module):
    """For a module of the user's own class (not torch's) that holds parameters
    itself: ``reason(parameter name)``, saying that it is a free parameter, or that
    the class overrides the ``forward`` of a supported layer. None for torch's own
    modules, whose class is the reason."""
    cls = type(module)
    if cls.__module__.split(".")[0] == "torch":
        return None
    where = f"module {name!r}" if name else "the model itself"
    for kind in KINDS:
        for t in kind.types:
            if isinstance(module, t):
                return lambda n: (f"{cls.__name__} ({where}) overrides {t.__name__}.forward, "
                                  "so it is not seen as a supported layer")
    return lambda n: (f"a free parameter: {n!r} is registered directly on {cls.__name__} "
                      f"({where}), not inside a supported layer (Linear, Conv1d/2d, "
                      "Embedding/Bag)")


def _kind_of(module):
    for kind in KINDS:
        for t in kind.types:
            # the class's own forward: a subclass that overrides it is unknown
            if isinstance(module, t) and type(module).forward is t.forward:
                return kind
    return None


class LayerSpec:
    """One attributed layer: its module, kind, parameters and block shape."""

    def __init__(self, name, module, kind, param_names):
        self.name, self.module, self.kind = name, module, kind
        self.param_names = param_names
        self.shape = kind.block_shape(module)
        self.size = self.shape[0] * self.shape[1]

    def __repr__(self):
        return f"LayerSpec({self.name!r}, {type(self.module).__name__}, block={self.shape})"


def _selected(name, module, modules):
    if modules is None:
        return True
    for m in modules:
        if isinstance(m, str):
            if name == m or name.startswith(m + "."):
                return True
        elif isinstance(module, m):
            return True
    return False


def _normalise(modules):
    if modules is None:
        return None
    if isinstance(modules, (str, type)):
        return [modules]
    modules = list(modules)
    for m in modules:
        if not isinstance(m, (str, type)):
            raise ValueError(f"modules= takes module names or classes, got {m!r}")
    return modules


def find_layers(module, modules=None):
    """The attributed layers of ``module`` and the reasons others are held fixed.

    Parameters
    ----------
    module : torch.nn.Module
    modules : None, str, type or list of them
        None selects every supported layer. A name selects that module and
        every layer inside it (``"encoder"`` selects ``"encoder.0.fc"``); a
        class selects every module of that class.

    Returns
    -------
    specs : list of LayerSpec
        Supported, selected layers, in ``named_modules()`` order.
    fixed : dict
        ``{parameter name: reason}`` for every parameter held fixed.

    Examples
    --------
    >>> from torch import nn
    >>> from skdtda.model.layers import find_layers
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),
    ...                     nn.LayerNorm(16), nn.Linear(16, 3))
    >>> specs, fixed = find_layers(net)
    >>> [(spec.name, spec.shape) for spec in specs]
    [('0', (4, 10)), ('4', (3, 17))]
    >>> sorted(fixed)
    ['3.bias', '3.weight']
    >>> [spec.name for spec in find_layers(net, modules=[nn.Linear])[0]]
    ['4']
    """
    modules = _normalise(modules)
    names = {id(p): n for n, p in module.named_parameters()}
    if modules is not None:
        known = {n for n, _ in module.named_modules()}
        for m in modules:
            if isinstance(m, str) and m not in known:
                raise ValueError(f"modules={m!r} names no submodule of "
                                 f"{type(module).__name__}; its modules are "
                                 f"{sorted(k for k in known if k)[:12]}")
    specs, covered, fixed = [], {}, {}
    for name, sub in module.named_modules():
        own = [(n, p) for n, p in sub.named_parameters(recurse=False)]
        if not own:
            continue
        full = [f"{name}.{n}" if name else n for n, _ in own]
        if not _selected(name, sub, modules):
            for f in full:
                fixed.setdefault(f, "not selected by modules=")
            continue
        kind = _kind_of(sub)
        reason = None
        if kind is None:
            free = _free_parameter_reason(name, sub)
            if free is not None:
                for f in full:
                    fixed[f] = free(f)
                continue
            reason = _FIXED_REASONS.get(type(sub), f"{type(sub).__name__} is not a supported "
                                                   "layer (Linear, Conv1d/2d, Embedding/Bag)")
        else:
            reason = kind.unsupported_reason(sub)
            covered_params = [p for _, p in kind.parameters(sub)]
            extra = [n for n, p in own if all(p is not q for q in covered_params)]
            if reason is None and extra:
                reason = f"extra parameters {extra}"
            if reason is None and any(id(p) in covered for p in covered_params):
                other = covered[next(id(p) for p in covered_params if id(p) in covered)]
                reason = f"its weight is shared with {other!r} (tied weights)"
        if reason is not None:
            for f in full:
                fixed[f] = reason
            continue
        for p in covered_params:
            covered[id(p)] = name
        specs.append(LayerSpec(name, sub, kind, [names[id(p)] for p in covered_params]))
    for n, p in module.named_parameters():
        if id(p) not in covered:
            fixed.setdefault(n, "not inside a supported layer")
    return specs, fixed


def selected_parameters(module, modules=None):
    """The names of the parameters of ``module`` that ``modules`` selects, in
    ``named_parameters()`` order: every parameter for None, else those of the
    selected modules (see :func:`find_layers`), whatever their kind.

    Examples
    --------
    >>> from torch import nn
    >>> from skdtda.model.layers import selected_parameters
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))
    >>> selected_parameters(net, modules=[nn.LayerNorm, "2"])
    ['1.weight', '1.bias', '2.weight', '2.bias']
    """
    every = dict(module.named_parameters())
    if modules is None:
        return list(every)
    chosen = _normalise(modules)
    owner = {id(p): name for name, sub in module.named_modules()
             for p in sub.parameters(recurse=False)}
    subs = dict(module.named_modules())
    names = [n for n, p in every.items()
             if _selected(owner[id(p)], subs[owner[id(p)]], chosen)]
    if not names:
        raise ValueError(f"modules={modules!r} selects no parameter")
    return names
