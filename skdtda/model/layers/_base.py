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

Patches of one position per row that are mostly zeros (a first layer on sparse
rows: TF-IDF, bag of words) are kept as a sparse matrix
(:class:`SparsePatches`), so the input factor ``sum a a^T`` and the rotations
``a Q_A`` cost what the nonzeros cost, not rows x inputs x inputs.
"""

import warnings

import numpy as np
import torch
from scipy import sparse
from scipy.linalg import blas

__all__ = ["DensePatches", "LayerKind", "SPARSE_DENSITY", "SparsePatches", "accumulate", "gram",
           "gram_sum", "one_patch_per_row", "patches_of"]

#: Single-position patches with at most this fraction of nonzeros are kept sparse.
#: On one core, 512 rows of 5001 inputs (float32): the input factor's sum costs
#: 0.003 s sparse against 1-1.8 s dense at density 0.005, and the rotation by a
#: 5001 x 5001 eigenbasis 0.26 s against 1.3 s; at 0.05 the rotation costs the same
#: both ways (docs/benchmarks.md, "Sparse input end to end").
SPARSE_DENSITY = 0.02

_SYRK = {torch.float32: blas.ssyrk, torch.float64: blas.dsyrk}
_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


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
    return gram_sum([rows])


def gram_sum(blocks, outer=False):
    """``sum_b b^T b`` over 2-D tensors ``blocks`` of one width (``outer=True``:
    ``b b^T`` of each, for blocks of one height), symmetric.

    On the CPU, BLAS's ``?syrk`` accumulates one triangle over the blocks and it
    is mirrored once at the end (a blocked copy: 4x faster than adding a
    transposed triangle at P = 2410). Elsewhere, and for dtypes BLAS lacks, the
    general product; blocks of mixed kinds (a float64 block after float32 ones, a
    block that needs gradients) continue the sum by the general product.

    Examples
    --------
    >>> import torch
    >>> from skdtda.model.layers import gram_sum
    >>> gram_sum([torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])])
    tensor([[10., 14.],
            [14., 20.]])
    >>> gram_sum([torch.tensor([[1.0], [2.0]])], outer=True)
    tensor([[1., 2.],
            [2., 4.]])
    """
    total = None
    for rows in blocks:
        blas = (rows.device.type == "cpu" and rows.dtype in _SYRK and not rows.requires_grad
                and (total is None or isinstance(total, np.ndarray)
                     and total.dtype == _NUMPY[rows.dtype]))
        if not blas:  # the general product (a triangle so far is mirrored first)
            if isinstance(total, np.ndarray):
                total = _mirrored(total).to(rows.device, rows.dtype)
            product = rows @ rows.T if outer else rows.T @ rows
            total = product if total is None else total + product
            continue
        # a C-ordered (n, d) array is a Fortran-ordered (d, n) one, a: syrk's a a^T
        # (trans=0) is rows^T rows and a^T a (trans=1) is rows rows^T, with no copy
        a = rows.contiguous().numpy().T
        if total is None:
            total = _SYRK[rows.dtype](1.0, a, trans=int(outer))
        else:
            total = _SYRK[rows.dtype](1.0, a, trans=int(outer), beta=1.0, c=total,
                                      overwrite_c=1)
    if total is None:
        raise ValueError("gram_sum needs at least one block")
    return _mirrored(total) if isinstance(total, np.ndarray) else total


def _mirrored(upper, block=256):
    """The symmetric tensor whose upper triangle is that of the Fortran-ordered
    ``upper`` (syrk's output; the other triangle is not read)."""
    lower = torch.from_numpy(upper.T)  # C-ordered, the same triangle as its lower one
    out = lower.clone()
    d = len(out)
    for i in range(0, d, block):
        j = min(i + block, d)
        out[i:j, j:] = lower[j:, i:j].T
        diagonal = out[i:j, i:j]
        diagonal.copy_(diagonal.tril() + diagonal.tril(-1).T)
    return out


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

    def input_diagonal(self):
        """The diagonal of :meth:`input_sum`, (in,), without forming the matrix."""
        a = self.a.reshape(-1, self.size)
        return (a * a).sum(dim=0)

    def row_grads(self, g):
        """``sum_t g_nt a_nt^T`` for every row: (n, out, in); ``g`` is (n, T, out)."""
        if self.n_pos == 1:
            return g[:, 0, :, None] * self.a[:, 0, None, :]
        return torch.bmm(g.transpose(1, 2), self.a)

    def rotated(self, q):
        """``a @ q`` for every patch, (n, T, k); ``q=None`` is the identity."""
        return self.a if q is None else self.a @ q

    def grad_sum(self, g):
        """``sum_n sum_t g_nt a_nt^T``: the rows' gradient blocks summed, (out, in),
        without forming them."""
        return g.reshape(-1, g.shape[-1]).T @ self.a.reshape(-1, self.size).to(g.dtype)

    def concat(self, other):
        if isinstance(other, SparsePatches):
            other = other.dense()
        return DensePatches(torch.cat([self.a, other.a], dim=1))


class SparsePatches:
    """Patches of one position per row, mostly zeros: ``csr``, a torch sparse CSR
    tensor of shape ``(n, in)`` (bias column included).

    Its products with dense matrices cost what its nonzeros cost; only
    :meth:`row_grads` (a dense ``(n, out, in)`` block, as for dense patches) and
    :meth:`dense` densify, one chunk of rows at a time.
    """

    n_pos = 1

    def __init__(self, csr):
        self.csr = csr
        self.n, self.size = csr.shape

    def count(self):
        return self.n

    def input_sum(self):
        """``sum a a^T`` over rows, float64, as a coalesced sparse COO tensor (in, in)
        (add it to a dense total with :func:`accumulate`)."""
        csr = self.csr
        if csr.device.type == "cpu":
            # SciPy's sparse product: 3-5x faster than torch's for these shapes on one core
            m = sparse.csr_matrix(
                (csr.values().double().numpy(), csr.col_indices().numpy(),
                 csr.crow_indices().numpy()), shape=csr.shape)
            out = (m.T @ m).tocoo()
            index = torch.from_numpy(np.vstack([out.row, out.col]).astype(np.int64))
            return torch.sparse_coo_tensor(index, torch.from_numpy(out.data), out.shape,
                                           is_coalesced=True, check_invariants=False)
        coo = csr.to_sparse_coo().double()
        return torch.sparse.mm(coo.t(), coo).coalesce()

    def input_diagonal(self):
        """The diagonal of :meth:`input_sum`, (in,) float64, at the cost of the nonzeros."""
        values = self.csr.values().double()
        out = torch.zeros(self.size, dtype=torch.float64, device=values.device)
        return out.index_add_(0, self.csr.col_indices(), values * values)

    def row_grads(self, g):
        """``g_n a_n^T`` for every row: (n, out, in); ``g`` is (n, 1, out)."""
        return g[:, 0, :, None] * self.csr.to_dense().to(g.dtype)[:, None, :]

    def grad_sum(self, g):
        """``sum_n g_n a_n^T``, (out, in), at the cost of the nonzeros."""
        return (self.csr.t().to(g.dtype) @ g[:, 0].contiguous()).T

    def rotated(self, q):
        """``a @ q`` for every row, (n, 1, k); ``q=None`` is the identity."""
        if q is None:
            return self.csr.to_dense()[:, None]
        return (self.csr @ q.to(self.csr.dtype).contiguous())[:, None]

    def dense(self):
        """The same patches as :class:`DensePatches`."""
        return DensePatches(self.csr.to_dense()[:, None])

    def concat(self, other):
        return self.dense().concat(other)


def patches_of(a):
    """Patches ``a`` of shape ``(n, T, in)``: :class:`SparsePatches` for one position
    per row with at most :data:`SPARSE_DENSITY` nonzeros, else :class:`DensePatches`."""
    if (a.shape[1] == 1 and a.numel() and not a.requires_grad
            and int(torch.count_nonzero(a)) <= SPARSE_DENSITY * a.numel()):
        with warnings.catch_warnings():  # torch calls its sparse CSR layout beta
            warnings.filterwarnings("ignore", "Sparse CSR tensor support", UserWarning)
            return SparsePatches(a[:, 0].to_sparse_csr())
    return DensePatches(a)


def one_patch_per_row(patches):
    """Whether ``patches`` hold one dense or sparse patch per row (a Linear layer on
    vectors): then a row's gradient block ``g a^T`` factors, and products with it
    can go through ``a`` first."""
    return isinstance(patches, (DensePatches, SparsePatches)) and patches.n_pos == 1


def accumulate(total, part):
    """``total + part`` for a dense ``total`` (or None) and a dense or sparse COO
    ``part``; a sparse part is added in place, at the cost of its nonzeros."""
    if not part.is_sparse:
        return part if total is None else total + part
    if total is None:
        total = torch.zeros(part.shape, dtype=part.dtype, device=part.device)
    index = part.indices()
    total.view(-1).index_add_(0, index[0] * part.shape[1] + index[1],
                              part.values().to(total.dtype))
    return total


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
