"""``nn.Embedding`` / ``nn.EmbeddingBag``: a Linear layer on one-hot (count) inputs.

An embedding lookup ``W[i]`` is ``W^T e_i``: a Linear map of the one-hot vector
``e_i``, with the weight stored transposed, ``(vocabulary, dim)``. Its patches
are kept sparse (row, position, token, weight); the input factor
``mean a a^T`` of one-hot patches is diagonal (token counts), so K-FAC needs
no eigendecomposition on that side. A bag (``EmbeddingBag``, mode ``"sum"``
or ``"mean"``) is one patch: the bag's count vector (divided by its length
for ``"mean"``), whose input factor is approximated by its diagonal.
"""

import torch
from torch import nn

from ._base import LayerKind, move_batch_first

__all__ = ["EmbeddingKind", "OneHotPatches"]


class OneHotPatches:
    """Sparse patches: patch ``(row, pos)`` has weight ``value`` on input ``token``."""

    def __init__(self, rows, pos, tokens, values, n, n_pos, size):
        self.rows, self.pos, self.tokens, self.values = rows, pos, tokens, values
        self.n, self.n_pos, self.size = n, n_pos, size

    def count(self):
        return self.n * self.n_pos

    def input_sum(self):
        """Diagonal of ``sum a a^T`` over rows and positions, shape (in,)."""
        out = torch.zeros(self.size, dtype=self.values.dtype, device=self.values.device)
        return out.index_add_(0, self.tokens, self.values ** 2)

    input_diagonal = input_sum

    def grad_sum(self, g):
        """``sum_n sum_t g_nt a_nt^T``, (out, in), at the cost of the patches."""
        out = torch.zeros(self.size, g.shape[-1], dtype=g.dtype, device=g.device)
        out.index_add_(0, self.tokens, g[self.rows, self.pos] * self.values[:, None].to(g.dtype))
        return out.T

    def row_grads(self, g):
        """``sum_t g_nt a_nt^T`` for every row: (n, out, in); ``g`` is (n, T, out)."""
        out_dim = g.shape[-1]
        buf = torch.zeros(self.n * self.size, out_dim, dtype=g.dtype, device=g.device)
        src = g[self.rows, self.pos] * self.values[:, None].to(g.dtype)
        buf.index_add_(0, self.rows * self.size + self.tokens, src)
        return buf.view(self.n, self.size, out_dim).transpose(1, 2)

    def concat(self, other):
        return OneHotPatches(
            torch.cat([self.rows, other.rows]), torch.cat([self.pos, other.pos + self.n_pos]),
            torch.cat([self.tokens, other.tokens]), torch.cat([self.values, other.values]),
            self.n, self.n_pos + other.n_pos, self.size)


class EmbeddingKind(LayerKind):
    types = (nn.Embedding, nn.EmbeddingBag)
    diagonal_input = True

    def unsupported_reason(self, module):
        if module.max_norm is not None:
            return "max_norm renormalises the weight in place"
        if isinstance(module, nn.EmbeddingBag) and module.mode == "max":
            return "mode='max' (not a linear map of the bag)"
        if module.sparse:
            return "sparse=True gradients"
        return None

    def parameters(self, module):
        return [("weight", module.weight)]

    def block_shape(self, module):
        vocab, dim = module.weight.shape
        return dim, vocab

    def patches(self, module, args, kwargs, batch_axis):
        x = args[0]
        vocab = module.weight.shape[0]
        dtype = module.weight.dtype
        if isinstance(module, nn.EmbeddingBag):
            offsets = args[1] if len(args) > 1 else kwargs.get("offsets")
            weights = args[2] if len(args) > 2 else kwargs.get("per_sample_weights")
            if x.ndim == 2:
                n, length = x.shape
                rows = torch.arange(n, device=x.device).repeat_interleave(length)
            else:
                if offsets is None:
                    raise ValueError("EmbeddingBag with 1-D input needs offsets")
                n = len(offsets) - int(module.include_last_offset)
                ends = torch.cat([offsets[1:n], torch.tensor([len(x)], device=x.device)])
                rows = torch.arange(n, device=x.device).repeat_interleave(ends - offsets[:n])
            tokens = x.reshape(-1).long()
            values = (torch.ones(len(tokens), dtype=dtype, device=x.device) if weights is None
                      else weights.reshape(-1).to(dtype))
            if module.padding_idx is not None:
                values = values * (tokens != module.padding_idx)
            if module.mode == "mean":
                sizes = torch.bincount(rows, minlength=n).clamp_min(1).to(dtype)
                values = values / sizes[rows]
            pos = torch.zeros_like(rows)
            return OneHotPatches(rows, pos, tokens, values, n, 1, vocab)
        x = move_batch_first(x, batch_axis)
        n = x.shape[0]
        tokens = x.reshape(n, -1).long()
        n_pos = tokens.shape[1]
        rows = torch.arange(n, device=x.device).repeat_interleave(n_pos)
        pos = torch.arange(n_pos, device=x.device).repeat(n)
        tokens = tokens.reshape(-1)
        values = torch.ones(len(tokens), dtype=dtype, device=x.device)
        if module.padding_idx is not None:
            values = values * (tokens != module.padding_idx)  # the padding row is never trained
        return OneHotPatches(rows, pos, tokens, values, n, n_pos, vocab)

    def output_grads(self, module, g, batch_axis):
        if isinstance(module, nn.EmbeddingBag):
            return g[:, None, :]
        g = move_batch_first(g, batch_axis)
        return g.reshape(g.shape[0], -1, g.shape[-1])

    def to_params(self, module, block):
        return [block.transpose(1, 2)]
