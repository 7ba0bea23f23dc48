"""``nn.Linear``: patches are the input's feature vectors at every position (kept
sparse where one position per row is mostly zeros, see
:func:`~skdtda.model.layers.patches_of`)."""

import torch
from torch import nn

from ._base import LayerKind, move_batch_first, patches_of

__all__ = ["LinearKind"]


def _with_ones(a, bias):
    if not bias:
        return a
    return torch.cat([a, torch.ones(a.shape[:-1] + (1,), dtype=a.dtype, device=a.device)],
                     dim=-1)


class LinearKind(LayerKind):
    """A Linear layer on inputs ``(..., in)``: every leading position but the row's
    is a patch (a sequence of tokens shares the weight, like conv patches)."""

    types = (nn.Linear,)

    def block_shape(self, module):
        out_dim, in_dim = module.weight.shape
        return out_dim, in_dim + (module.bias is not None)

    def patches(self, module, args, kwargs, batch_axis):
        x = move_batch_first(args[0], batch_axis)
        a = x.reshape(x.shape[0], -1, x.shape[-1])
        return patches_of(_with_ones(a, module.bias is not None))

    def output_grads(self, module, g, batch_axis):
        g = move_batch_first(g, batch_axis)
        return g.reshape(g.shape[0], -1, g.shape[-1])

    def to_params(self, module, block):
        in_dim = module.weight.shape[1]
        parts = [block[:, :, :in_dim]]
        if module.bias is not None:
            parts.append(block[:, :, in_dim])
        return parts
