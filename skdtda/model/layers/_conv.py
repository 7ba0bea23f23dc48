"""``nn.Conv1d`` / ``nn.Conv2d``: patches are the unfolded receptive fields.

The weight ``(out, C, *kernel)`` acts on each receptive field as a Linear map
of ``C * prod(kernel)`` inputs (Grosse & Martens 2016, "A Kronecker-factored
approximate Fisher matrix for convolution layers"): ``a_nt`` is the unfolded
patch at output position ``t`` (``torch.nn.functional.unfold``), ``g_nt`` the
output gradient there.
"""

from torch import nn
from torch.nn import functional as F

from ._base import DensePatches, LayerKind
from ._linear import _with_ones

__all__ = ["ConvKind"]


class ConvKind(LayerKind):
    types = (nn.Conv1d, nn.Conv2d)

    def unsupported_reason(self, module):
        if module.groups != 1:
            return f"groups={module.groups} (grouped and depthwise convolutions are not factored)"
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} (only zero padding is unfolded)"
        if isinstance(module.padding, str):
            if module.padding == "same" and any(
                    d * (k - 1) % 2 for d, k in zip(module.dilation, module.kernel_size)):
                return "padding='same' with an even kernel (asymmetric padding)"
        return None

    def block_shape(self, module):
        out_dim = module.weight.shape[0]
        return out_dim, module.weight[0].numel() + (module.bias is not None)

    def _as_2d(self, module):
        two = module.weight.ndim == 4
        kernel = module.kernel_size if two else (1,) + tuple(module.kernel_size)
        dilation = module.dilation if two else (1,) + tuple(module.dilation)
        stride = module.stride if two else (1,) + tuple(module.stride)
        if isinstance(module.padding, str):
            if module.padding == "valid":
                padding = (0,) * len(kernel)
            else:  # "same", odd effective kernel: symmetric
                padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel))
        else:
            padding = module.padding if two else (0,) + tuple(module.padding)
        return two, kernel, dilation, padding, stride

    def patches(self, module, args, kwargs, batch_axis):
        x = args[0]
        if batch_axis != 0 or x.ndim != module.weight.ndim:
            raise ValueError(f"{type(module).__name__} without a leading batch axis")
        two, kernel, dilation, padding, stride = self._as_2d(module)
        if not two:
            x = x.unsqueeze(2)
        cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
        return DensePatches(_with_ones(cols.transpose(1, 2), module.bias is not None))

    def output_grads(self, module, g, batch_axis):
        return g.reshape(g.shape[0], g.shape[1], -1).transpose(1, 2)  # (n, T, out)

    def to_params(self, module, block):
        n = block.shape[0]
        size = module.weight[0].numel()
        parts = [block[:, :, :size].reshape((n,) + tuple(module.weight.shape))]
        if module.bias is not None:
            parts.append(block[:, :, size])
        return parts
