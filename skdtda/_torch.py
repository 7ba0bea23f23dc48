"""torch helpers shared by the ensembles and the influence code."""

from torch.func import functional_call

__all__ = ["call_with_parameters"]


def call_with_parameters(module, params, args, kwargs=None):
    """``module(*args, **kwargs)`` with the parameters ``params`` (names as
    ``module.named_parameters()`` gives them) in place of its own.

    ``torch.func.functional_call`` leaves a module broken when one submodule is
    registered under two names (``self.head2 = self.head``): it saves the first
    name's original, swaps it, then saves the already-swapped tensor as the
    second name's "original" and restores that, so the module keeps the
    passed-in tensor (under ``vmap``, a tensor that escaped the transform).
    Here each distinct submodule gets each of its own parameters once, and a
    parameter tied between two submodules (``b.weight = a.weight``) is given to
    both, with torch's own tying turned off.
    """
    index = {id(p): name for name, p in module.named_parameters()}
    swapped = {}
    for prefix, sub in module.named_modules():  # each distinct submodule once
        for name, p in sub.named_parameters(recurse=False):
            key = index[id(p)]
            if key in params:
                swapped[f"{prefix}.{name}" if prefix else name] = params[key]
    return functional_call(module, swapped, args, kwargs, tie_weights=False)
