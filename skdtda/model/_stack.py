"""Plain Linear/activation stacks: modules that the batched trainer and the
unrolled replay run by hand (batched matrix products, written-out gradients)."""

from torch import nn

from ..nets import MLP

__all__ = ["plain_stack"]

# Elementwise activations: they act on a (n_members, batch, features) stack as
# they act on one member's (batch, features).
_ELEMENTWISE = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish,
    nn.Hardsigmoid, nn.LogSigmoid,
)


def plain_stack(module):
    """The layers of a plain Linear/activation stack, in order, or None.

    ``module`` is an ``nn.Sequential`` or :class:`skdtda.nets.MLP` whose
    children (nested ``nn.Sequential`` flattened) are ``nn.Linear``, elementwise
    activations and ``nn.Dropout(p=0)`` only.
    """
    if type(module) not in (nn.Sequential, MLP):
        return None
    layers = []
    for child in module.children():
        if type(child) is nn.Sequential:
            inner = plain_stack(child)
            if inner is None:
                return None
            layers.extend(inner)
        elif type(child) is nn.Linear or isinstance(child, _ELEMENTWISE) or (
                type(child) is nn.Dropout and child.p == 0):
            layers.append(child)
        else:
            return None
    return layers
