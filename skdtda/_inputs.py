"""The rows a net is fed, in every form skdtda accepts, and what every layer does with them.

A skorch net takes one array, a scipy sparse CSR matrix, a dict of arrays (one
per argument of the module's ``forward``) or a torch ``Dataset`` of
``(x, y)`` items. The ensembles, the influence estimators, the retraining
ground truth and the pruner index rows, hash them, cut them into chunks and
turn them into tensors; these helpers do that once for every form, so no
layer above needs to know which form it holds:

- :class:`MultiInput`: a dict of arrays (or tensors) whose ``len`` is the
  number of rows and whose integer, slice or index-array keys select rows;
- :class:`SparseRows`: a CSR matrix seen from torch: indexing rows gives a
  dense tensor of only those rows, so no chunked computation ever densifies
  the whole matrix;
- :func:`n_rows`, :func:`take_rows`, :func:`as_tensors`, :func:`module_call`
  and :func:`per_row_tree`, which accept every form.

A ``Dataset`` is read once, item by item, into arrays
(:func:`read_dataset`): rows are its items in index order.
"""

from collections.abc import Mapping

import numpy as np
import torch
from scipy import sparse

__all__ = ["MultiInput", "SparseRows", "as_tensors", "is_dataset", "module_call", "n_rows",
           "per_row_tree", "read_dataset", "take_rows"]


class MultiInput(dict):
    """Rows of a module with several ``forward`` arguments: one array per argument.

    A ``dict`` (skorch passes its items to ``forward`` as keyword arguments)
    whose ``len`` is the number of rows, and whose non-string keys select rows
    of every array: ``inputs[3:7]`` and ``inputs[[0, 5]]`` are ``MultiInput``
    again, ``inputs["tokens"]`` is one argument's array.
    """

    def __getitem__(self, key):
        if isinstance(key, str):
            return dict.__getitem__(self, key)
        return MultiInput({name: value[key] for name, value in self.items()})

    def __len__(self):
        return len(next(iter(self.values()))) if dict.__len__(self) else 0

    @property
    def shape(self):
        """``(n_rows,)``: the rows; each argument has its own trailing shape."""
        return (len(self),)

    def copy(self):
        return MultiInput(dict.items(self))

    def __repr__(self):
        parts = ", ".join(f"{name!r}: {tuple(value.shape)} {value.dtype}"
                          for name, value in self.items())
        return f"MultiInput({{{parts}}})"


class SparseRows:
    """A CSR matrix as torch sees it: rows are densified only when selected.

    ``rows[3:7]`` or ``rows[index_array]`` is a dense tensor of those rows in
    ``dtype`` on ``device``; :meth:`dense` densifies everything (only for a
    handful of rows).

    Parameters
    ----------
    matrix : scipy.sparse CSR matrix of shape (n_rows, n_features)
    dtype : torch.dtype
    device : torch.device or str
    """

    def __init__(self, matrix, dtype, device):
        self.matrix = sparse.csr_matrix(matrix)
        self.dtype, self.device = dtype, device

    def __len__(self):
        return self.matrix.shape[0]

    @property
    def shape(self):
        return self.matrix.shape

    def __getitem__(self, rows):
        if torch.is_tensor(rows):
            rows = rows.cpu().numpy()
        if isinstance(rows, (int, np.integer)):
            return self[slice(int(rows), int(rows) + 1)][0]
        shape = None
        if isinstance(rows, np.ndarray) and rows.ndim > 1:  # (members, batch) on the batched path
            shape, rows = rows.shape, rows.reshape(-1)
        block = torch.from_numpy(self.matrix[rows].toarray()).to(device=self.device,
                                                                   dtype=self.dtype)
        return block if shape is None else block.reshape(shape + block.shape[1:])

    def dense(self):
        return self[:]

    def sparse_rows(self, rows):
        """Rows as a torch sparse CSR tensor (for products with a first layer)."""
        block = self.matrix[rows]
        return torch.sparse_csr_tensor(
            torch.from_numpy(block.indptr.astype(np.int64)),
            torch.from_numpy(block.indices.astype(np.int64)),
            torch.from_numpy(block.data).to(self.dtype), size=block.shape, device=self.device)


def is_dataset(X):
    """Whether ``X`` is a torch ``Dataset`` (skorch's other input type)."""
    return isinstance(X, torch.utils.data.Dataset)


def n_rows(X):
    """Number of rows of any input form (``len`` is ambiguous for a sparse matrix)."""
    if sparse.issparse(X):
        return X.shape[0]
    return len(X)


def take_rows(X, rows):
    """Rows ``rows`` (indices, a boolean mask or a slice) of any input form, in the same
    form: pandas objects keep their index, a sparse matrix stays sparse."""
    if isinstance(X, Mapping) and not isinstance(X, MultiInput):
        X = MultiInput(X)
    if hasattr(X, "iloc"):
        return X.iloc[rows]
    if isinstance(rows, np.ndarray) and rows.dtype == bool:
        rows = np.flatnonzero(rows)
    if isinstance(X, (list, tuple)):  # raw documents for a vectorizer
        picked = X[rows] if isinstance(rows, slice) else [X[i] for i in np.asarray(rows)]
        return type(X)(picked) if isinstance(X, tuple) else picked
    return X[rows]


def read_dataset(dataset):
    """The items of a torch ``Dataset`` of ``(x, y)`` pairs as arrays.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        A map-style dataset (``len`` and integer indexing) whose items are
        ``(x, y)``: ``x`` an array or tensor, or a dict of them (one per
        forward argument), ``y`` a number, an array or a tensor.

    Returns
    -------
    X : ndarray of shape (n_rows, ...) or MultiInput
        The ``x`` of every item, stacked in index order.
    y : ndarray of shape (n_rows, ...)
        The ``y`` of every item, stacked in index order.
    """
    try:
        n = len(dataset)
    except TypeError:
        raise TypeError(
            f"a torch Dataset must have a length (a map-style dataset); "
            f"{type(dataset).__name__} has none") from None
    if n == 0:
        raise ValueError(f"the torch Dataset {type(dataset).__name__} is empty")
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(
                f"the torch Dataset's items must be (x, y) pairs, as skorch's are; item {i} of "
                f"{type(dataset).__name__} is a {type(item).__name__}"
                + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else ""))
        xs.append(item[0])
        ys.append(_numpy(item[1]))
    if isinstance(xs[0], Mapping):
        X = MultiInput({name: np.stack([_numpy(x[name]) for x in xs]) for name in xs[0]})
    else:
        X = np.stack([_numpy(x) for x in xs])
    return X, np.stack(ys)


def _numpy(value):
    if torch.is_tensor(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def as_tensors(X, dtype, device):
    """Any input form as torch: a tensor, a :class:`MultiInput` of tensors, or a
    :class:`SparseRows`. Floating point arrays take ``dtype``; integer arrays (token
    ids for an embedding) stay integer."""
    if isinstance(X, SparseRows):
        return X
    if sparse.issparse(X):
        return SparseRows(X, dtype, device)
    if isinstance(X, Mapping):
        return MultiInput({name: as_tensors(value, dtype, device)
                           for name, value in X.items()})
    X = torch.as_tensor(np.asarray(X) if not torch.is_tensor(X) else X, device=device)
    return X.to(dtype) if torch.is_floating_point(X) else X


def module_call(call, X):
    """``call(args, kwargs)`` with the rows ``X`` as the module's ``forward`` takes
    them: a mapping as keyword arguments, a sparse matrix densified, else one
    positional argument."""
    if isinstance(X, Mapping):
        return call((), dict(X.items()))
    if isinstance(X, SparseRows):
        X = X.dense()
    return call((X,), {})


def per_row_tree(X):
    """``X`` as ``torch.func.vmap`` maps over it (a plain dict for several arguments),
    and the function that adds a row axis back to one mapped row."""
    if isinstance(X, Mapping):
        return dict(X.items()), lambda x: MultiInput({k: v[None] for k, v in x.items()})
    if isinstance(X, SparseRows):
        X = X.dense()
    return X, lambda x: x[None]
