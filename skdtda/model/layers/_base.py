"""What every supported kind of layer tells Kronecker-factored curvature and scoring.

A layer maps per-row inputs to per-row outputs through a weight that acts on
"patches": a Linear layer on each position's feature vector, a convolution on
each unfolded patch, an embedding on each token's one-hot vector. For row
``n`` with patches ``a_nt`` (shape ``(in,)``, a trailing 1 for the bias) and
output gradients ``g_nt`` (shape ``(out,)``), the gradient of the layer's
parameters, laid out as one ``(out, in)`` block, is ``sum_t g_nt a_nt^T``.
That block is all K-FAC/EK-FAC and the factored scoring need; each kind only
says how to get ``a`` from the layer's input, how its parameters map to the
block, and whether its input factor is diagonal (one-hot inputs).
"""

import torch
from scipy.linalg import blas

__all__ = ["DensePatches", "LayerKind", "gram"]

_SYRK = {torch.float32: blas.ssyrk, torch.float64: blas.dsyrk}


def gram(rows):
    """``rows^T rows`` for a 2-D tensor: the sum of the outer products of its rows.

    On the CPU this is BLAS's symmetric rank-k update (``?syrk``, through SciPy),
    which computes one triangle: 1.6-2x faster than the general product for the
    K-FAC factors of a ResNet (one core, float32, 16k-256k rows of 288-1152
    inputs). Elsewhere, and for dtypes BLAS lacks, the general product.

    Examples
    --------
    >>> import torch
    >>> from skdtda.model.layers import gram
    >>> rows = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> gram(rows)
    tensor([[10., 14.],
            [14., 20.]])
    """
    if rows.device.type != "cpu" or rows.dtype not in _SYRK or rows.requires_grad:
        return rows.T @ rows
    # a C-ordered (n, d) array is a Fortran-ordered (d, n) one: syrk's A A^T of it
    # is rows^T rows, with no copy
    upper = torch.from_numpy(_SYRK[rows.dtype](1.0, rows.contiguous().numpy().T, trans=0))
    return upper.triu() + upper.triu(1).T


class DensePatches:
    """Patches as a dense tensor ``a`` of shape ``(n, T, in)``."""

    def __init__(self, a):
        self.a = a
        self.n, self.n_pos, self.size = a.shape

    def count(self):
        return self.n * self.n_pos

    def input_sum(self):
        """``sum a a^T`` over rows and positions, shape (in, in)."""
        return gram(self.a.reshape(-1, self.size))

    def row_grads(self, g):
        """``sum_t g_nt a_nt^T`` for every row: (n, out, in); ``g`` is (n, T, out)."""
        if self.n_pos == 1:
            return g[:, 0, :, None] * self.a[:, 0, None, :]
        return torch.bmm(g.transpose(1, 2), self.a)

    def concat(self, other):
        return DensePatches(torch.cat([self.a, other.a], dim=1))


class LayerKind:
    """Base class: one kind of layer (Linear, Conv2d, Embedding, ...).

    Subclasses set ``types`` and implement the methods below. ``batch_axis``
    is the axis of the layer's input that indexes rows (found by probing, see
    :class:`skdtda.model.LayerTracer`).
    """

    #: module classes this kind handles (their own ``forward``, not a subclass's)
    types = ()
    #: the input factor of one-hot inputs is diagonal (no eigendecomposition)
    diagonal_input = False

    def unsupported_reason(self, module):
        """Why this module is held fixed although its class is known, or None."""
        return None

    def parameters(self, module):
        """``[(attribute, parameter)]`` that the block covers, in block order."""
        params = [("weight", module.weight)]
        if getattr(module, "bias", None) is not None:
            params.append(("bias", module.bias))
        return params

    def block_shape(self, module):
        """``(out, in)`` of the parameter block (``in`` counts the bias column)."""
        raise NotImplementedError

    def patches(self, module, args, kwargs, batch_axis):
        """Per-row patches of the call ``module(*args, **kwargs)``: a
        :class:`DensePatches` of shape ``(n, T, in)`` (bias column included) or
        another object with the same methods."""
        raise NotImplementedError

    def output_grads(self, module, g, batch_axis):
        """Per-row output gradients: shape ``(n, T, out)``, aligned with ``patches``."""
        raise NotImplementedError

    def to_params(self, module, block):
        """Split blocks ``(n, out, in)`` into the parameters' shapes, ``[(n, *shape)]``."""
        raise NotImplementedError


def move_batch_first(t, batch_axis):
    return t if batch_axis == 0 else t.movedim(batch_axis, 0)
