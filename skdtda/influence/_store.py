"""What every query needs of the training rows, computed once at fit (``precompute=``).

A first-order score is ``delta_sqk = (1/N) v_sq^T (g_sk - c_s)``, with ``v_sq``
the solved query gradient and ``g_sk`` training row ``k``'s loss gradient
under member ``s``. ``g_sk`` depends neither on the query nor on the damping,
so a fitted transformer can hold it and answer each query with the query's own
gradient, one solve and the products, instead of a forward and backward pass
over every training row of every member.

Held in the form that is exact and smallest, block by block (the blocks of the
member's per-row gradients, see :mod:`skdtda.model`):

* ``"factors"``: a layer whose per-row gradient is ``sum_t g_t a_t^T`` over
  ``T`` dense patches (Linear layers: ``T = 1`` on single vectors, the positions
  of a sequence; convolutions: the unfolded patches) keeps ``a`` (``T x in``, the
  bias column included) and ``g`` (``T x out``) per row when ``T (in + out)`` is
  less than ``in x out``;
* ``"dense"``: every other block keeps the row's gradient block itself (a layer
  with more patches than that, one-hot embedding patches, and the one
  ``(n, P)`` block of a flat member: the dense curvatures);
* with a curvature on a subspace (EK-FAC/K-FAC with
  ``curvature_options={"subspace": k}``), the compressed store: each layer
  keeps the row's gradient in its ``k_out x k_in`` kept directions, as
  ``"rotated"`` factors (each patch's input and output gradient rotated,
  ``Q_A^T a_t`` and ``Q_G^T g_t``: ``T (k_in + k_out)`` numbers) or, where
  that is larger (many patches), ``"projected"``, the block
  ``Q_G^T (sum_t g_t a_t^T) Q_A`` itself (``k_out k_in`` numbers). Both depend
  on the member's eigenbases, so the record names the curvature and its
  options too.

All are exact for the curvature they serve, so scores with and without the store
agree to rounding.
With ``memory=`` the arrays are ``.npy`` files, memory-mapped; the folder is
named by a hash of what the store depends on (the training rows' fingerprint,
each member's parameters, the blocks' layout) and holds a record of it, checked
when the store is read back.
"""

import logging
import os
import shutil
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.utils.parallel import Parallel, delayed

from .._inputs import n_rows
from .._loops import chunks, progress
from ..curvature._kfac import _rotated_rows
from ..model import LayeredMember
from ..model.layers import DensePatches, SparsePatches
from ._scoring import LowRank, Projected

__all__ = ["BLOCK_BUDGET", "PRODUCT_BUDGET", "STORE_BUDGET", "STORE_VERSION", "StoreUnavailable",
           "TrainingStore", "store_folder"]

logger = logging.getLogger("skdtda")

#: Default bound on a store's size, bytes (``precompute_budget``).
STORE_BUDGET = 2**30
#: Bytes of the temporaries of one product of solved queries with stored rows.
PRODUCT_BUDGET = 64 * 2**20
#: Bytes of one block of float64 scores (all members), beyond ``batch_size`` rows.
BLOCK_BUDGET = 128 * 2**10
#: Bumped whenever the files' layout changes: an older store is then refused.
STORE_VERSION = 1
_RECORD = "store.pkl"


class StoreUnavailable(ValueError):
    """The store cannot be built for this model or within the budget (the message
    says why)."""


def _layout(member, X, y, solver=None):
    """Each block's stored form, from the gradients of two rows: a list of
    ``("factors", T, in, out)``, ``("dense", size)`` or (a solver on a subspace)
    ``("rotated", T, k_in, k_out)`` or ``("projected", k_out, k_in)``."""
    rows = slice(0, min(2, n_rows(X)))
    if not isinstance(member, LayeredMember):
        return [("dense", member.n_params)]
    patches, gs = member.grad_patches("loss", X[rows], y[rows])
    out = []
    for p, g in zip(patches, gs):
        width = g.shape[-1]
        if isinstance(p, DensePatches) and p.n_pos * (p.size + width) < p.size * width:
            out.append(("factors", p.n_pos, p.size, width))
        else:
            out.append(("dense", p.row_grads(g)[0].numel()))
    if solver is None or solver.subspace is None:
        return out
    # on a subspace, each layer's rows in its kept directions: the rotated patches
    # or the projected block, whichever is smaller (both are smaller than the raw form)
    for i, ((q_g, q_a), spec, p) in enumerate(zip(solver.bases(), member.layers, patches)):
        k_out, k_in = q_g.shape[1], spec.shape[1] if q_a is None else q_a.shape[1]
        forms = [("projected", k_out, k_in)]
        if isinstance(p, (DensePatches, SparsePatches)):  # not one-hot patches
            forms.append(("rotated", p.n_pos, k_in, k_out))
        out[i] = min(forms, key=lambda form: row_numbers([form]))
    return out


def row_numbers(layout):
    """Numbers stored per training row for one member's ``layout``."""
    return sum(b[1] * (b[2] + b[3]) if b[0] in ("factors", "rotated") else
               b[1] * b[2] if b[0] == "projected" else b[1] for b in layout)


def _shapes(layout, n):
    """The arrays of each block: ``[[shape, ...] per block]``."""
    return [[(n, b[1], b[2]), (n, b[1], b[3])] if b[0] in ("factors", "rotated") else
            [(n, b[1] * b[2])] if b[0] == "projected" else [(n, b[1])] for b in layout]


def _describe(layout):
    forms = [b[0] for b in layout]
    return ", ".join(f"{forms.count(f)} {f}"
                     for f in ("factors", "dense", "rotated", "projected") if f in forms)


class TrainingStore:
    """Every member's loss gradients of the training rows, in stored form.

    Parameters
    ----------
    arrays : list of list of list of array
        Per member, per block, the arrays of :func:`_shapes` (tensors in memory,
        or memory-mapped ndarrays).
    layouts : list of list of tuple
        Per member, each block's form.
    folder : Path or None
        Where the arrays are kept on disk, if they are.
    """

    def __init__(self, arrays, layouts, folder=None):
        self.arrays, self.layouts, self.folder = arrays, layouts, folder

    def __getstate__(self):
        # a store on disk is pickled by reference (its folder), not its contents
        if self.folder is None:
            return vars(self)
        return {"arrays": None, "layouts": self.layouts, "folder": self.folder}

    def __setstate__(self, state):
        vars(self).update(state)
        if self.arrays is None:
            self.arrays = _open(self.folder, self.layouts)

    @property
    def nbytes(self):
        return int(sum(a.numel() * a.element_size() if torch.is_tensor(a) else a.nbytes
                       for member in self.arrays for block in member for a in block))

    # -- building -------------------------------------------------------------------------
    @classmethod
    def plan(cls, members, X, y, solvers=None):
        """Each member's layout, and the store's size in bytes (``solvers``: each
        member's curvature, which a subspace's projected rows depend on)."""
        solvers = solvers or [None] * len(members)
        layouts = [_layout(m, X, y, c) for m, c in zip(members, solvers)]
        n = n_rows(X)
        size = sum(row_numbers(layout) * n * m.theta.element_size()
                   for layout, m in zip(layouts, members))
        return layouts, size

    @classmethod
    def build(cls, members, X, y, layouts, chunk, folder=None, record=None, n_jobs=None,
              verbose=0, solvers=None):
        """Compute every member's stored rows, in ``folder`` (memory-mapped files,
        written under a temporary name and renamed when complete) or in memory.

        Members are independent jobs of joblib (``n_jobs``, any backend: processes,
        or a Dask cluster whose workers see ``folder``), each a pass over the rows
        in chunks of ``chunk``; a bar over them under ``verbose``."""
        n = n_rows(X)
        partial = None
        if folder is not None:
            partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        jobs = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_member_rows)(s, member, X, y, layout, chunk, partial, solver)
            for s, (member, layout, solver) in enumerate(
                zip(members, layouts, solvers or [None] * len(members))))
        arrays = []
        with progress(len(members), f"precompute: storing {n} training rows", "seed",
                      verbose) as bar:
            for blocks in jobs:
                arrays.append(blocks)
                bar.update()
        if partial is None:
            return cls(arrays, layouts)
        joblib.dump(record, partial / _RECORD)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
        return cls.load(folder, layouts, record)

    @classmethod
    def load(cls, folder, layouts, record):
        """The store kept in ``folder``, memory-mapped; refused (``ValueError``) where
        its record differs from ``record``."""
        kept = joblib.load(folder / _RECORD)
        _check_record(folder, kept, record)
        return cls(_open(folder, layouts), layouts, folder)

    # -- scoring --------------------------------------------------------------------------
    def row_chunk(self, n_queries, n_members, itemsize, batch_size):
        """Training rows per product: ``batch_size`` or as many more as keep the
        chunk's float64 scores of every member within :data:`BLOCK_BUDGET` (a block
        of few queries then covers many rows: fewer, larger products), and never so
        many that the temporaries of the widest block pass :data:`PRODUCT_BUDGET`."""
        widest = max(_temporary(b) for layout in self.layouts for b in layout)
        scores = max(batch_size, BLOCK_BUDGET // (n_members * n_queries * 8))
        return int(max(1, min(scores, PRODUCT_BUDGET // (n_queries * widest * itemsize))))

    def response(self, s, solved, t_rows):
        """``sum over blocks of v_q^T g_k`` for the solved queries ``solved`` (one
        flattened ``(nq, size)`` block per block of the member) and the training
        rows ``t_rows`` of member ``s``: an ``(nq, nt)`` tensor."""
        total = None
        for v, form, parts in zip(solved, self.layouts[s], self.arrays[s]):
            rows = [_take(a, t_rows, v.device) for a in parts]
            part = _product(v, form, rows)
            total = part if total is None else total.add_(part)
        return total


    def diagonal(self, s, solved, t_rows):
        """``v_k^T g_k`` row by row, for solved gradients ``solved`` of the training
        rows ``t_rows`` themselves (flattened blocks, one row each): an ``(nt,)``
        tensor."""
        total = None
        for v, form, parts in zip(solved, self.layouts[s], self.arrays[s]):
            rows = [_take(a, t_rows, v.device).to(v.dtype) for a in parts]
            v, form = _raw(v, form)
            if form[0] in ("dense", "projected"):
                part = (v * rows[0]).sum(dim=1)
            else:
                _, n_pos, size, width = form
                a, g = rows
                # g_t^T V a_t summed over the row's patches
                Va = torch.bmm(v.reshape(len(v), width, size), a.transpose(1, 2))
                part = (Va * g.transpose(1, 2)).sum(dim=(1, 2))
            total = part if total is None else total.add_(part)
        return total


def _open(folder, layouts):
    """The arrays kept in ``folder``, memory-mapped read-only."""
    return [[[np.load(folder / f"m{s}_b{b}_{i}.npy", mmap_mode="r")
              for i in range(len(shapes))]
             for b, shapes in enumerate(_shapes(layout, 0))]
            for s, layout in enumerate(layouts)]


def _temporary(form):
    """Numbers per query and training row that a block's product holds at once."""
    if form[0] in ("dense", "projected"):
        return 1
    _, n_pos, size, width = form
    return n_pos * min(size, width)


def _take(array, rows, device):
    if torch.is_tensor(array):
        return array[rows].to(device)
    return torch.from_numpy(np.array(array[rows])).to(device)


def _product(v, form, rows):
    """``v_q^T g_k`` of one block for every query and row, (nq, nt); ``v`` is
    flattened blocks, a :class:`LowRank` or a :class:`Projected`."""
    v, form = _raw(v, form)
    if form[0] == "projected":
        return v @ rows[0].to(v.dtype).T
    if isinstance(v, LowRank):  # rank-R queries (query_rank=)
        if form[0] != "factors":
            return _product(v.dense(), form, rows)
        _, n_pos, size, width = form
        a, g = rows
        av = a.reshape(-1, size).to(v.V.dtype) @ v.V.reshape(-1, size).T
        return v.response(av.reshape(len(a), n_pos, -1), g.reshape(len(g), n_pos, width))
    if form[0] == "dense":
        (dense,) = rows
        return v @ dense.to(v.dtype).T
    _, n_pos, size, width = form
    a, g = (r.to(v.dtype) for r in rows)
    nq, nt = v.shape[0], a.shape[0]
    a, g = a.reshape(nt * n_pos, size), g.reshape(nt * n_pos, width)
    S = v.reshape(nq, width, size)
    if nq * min(size, width) * 2 >= size * width:
        # many queries: the patches' outer products once (nt x out x in numbers), then
        # one product, rather than nq x nt x min(out, in) elementwise numbers
        if n_pos == 1:  # an outer product a row (faster elementwise than batched)
            block = g[:, :, None] * a[:, None, :]
        else:
            block = torch.bmm(g.reshape(nt, n_pos, width).transpose(1, 2),
                              a.reshape(nt, n_pos, size))
        return v @ block.reshape(nt, -1).T
    # g_t^T S a_t: one product over the larger side, then each patch's dot product
    # over the smaller one as a batched product (2x faster than multiply-and-sum)
    if size <= width:
        left = g @ S.transpose(0, 1).reshape(width, nq * size)  # (nt T, nq in)
        out = torch.bmm(left.reshape(-1, nq, size), a[:, :, None])[:, :, 0]
    else:
        left = a @ S.reshape(nq * width, size).T  # (nt T, nq out)
        out = torch.bmm(left.reshape(-1, nq, width), g[:, :, None])[:, :, 0]
    if n_pos > 1:
        out = out.reshape(nt, n_pos, nq).sum(dim=1)
    return out.T


def _raw(v, form):
    """Solved queries and a stored form as the products take them: a
    :class:`Projected` against rows kept in its eigenbases is its flat ``W``, and
    rotated factors are factors of ``(k_in, k_out)`` patches; against rows kept
    otherwise it is rotated back."""
    if not isinstance(v, Projected):
        if form[0] in ("projected", "rotated"):
            raise ValueError("a store of projected rows scores only queries solved on the "
                             "same subspace")
        return v, form
    if form[0] == "rotated":
        return v.flat(), ("factors", *form[1:])
    return (v.flat(), form) if form[0] == "projected" else (v.dense(), form)


def _member_rows(s, member, X, y, layout, chunk, partial, solver=None):
    """Member ``s``'s stored rows, per block the arrays of :func:`_shapes`: tensors,
    or (``partial``: a folder) ``.npy`` files written there, flushed, and None
    returned (the caller opens the finished folder)."""
    n = n_rows(X)
    blocks = []
    for b, shapes in enumerate(_shapes(layout, n)):
        if partial is None:
            blocks.append([torch.empty(shape, dtype=member.dtype) for shape in shapes])
        else:
            dtype = torch.empty(0, dtype=member.dtype).numpy().dtype
            blocks.append([np.lib.format.open_memmap(
                partial / f"m{s}_b{b}_{i}.npy", mode="w+", dtype=dtype, shape=shape)
                for i, shape in enumerate(shapes)])
    for t in chunks(n, chunk):
        for block, parts in zip(blocks, _stored_rows(member, X[t], y[t], layout, solver)):
            for array, part in zip(block, parts):
                if tuple(part.shape[1:]) != tuple(array.shape[1:]):
                    raise StoreUnavailable(
                        f"a layer's per-row gradient has shape {tuple(part.shape[1:])} "
                        f"for some rows and {tuple(array.shape[1:])} for others")
                if torch.is_tensor(array):
                    array[t] = part.detach().to("cpu", member.dtype)
                else:
                    array[t] = part.detach().cpu().numpy()
    if partial is None:
        return blocks
    for block in blocks:
        for array in block:
            array.flush()
    return None


def _stored_rows(member, X, y, layout=None, solver=None):
    """The rows' loss gradients in stored form: per block, the list of arrays."""
    if not isinstance(member, LayeredMember):
        return [member.grads("loss", X, y)]
    patches, gs = member.grad_patches("loss", X, y)
    out = []
    for i, (p, g) in enumerate(zip(patches, gs)):
        width = g.shape[-1]
        form = None if layout is None else layout[i][0]
        if form == "projected":
            q_g, q_a = solver.bases()[i]
            rotated = _rotated_rows(p, g.to(q_g.dtype), q_g, q_a)
            out.append([rotated.reshape(len(rotated), -1)])
        elif form == "rotated":
            q_g, q_a = solver.bases()[i]
            out.append([p.rotated(q_a).to(q_g.dtype), g.to(q_g.dtype) @ q_g])
        elif isinstance(p, DensePatches) and p.n_pos * (p.size + width) < p.size * width:
            out.append([p.a, g])
        else:
            block = p.row_grads(g)
            out.append([block.reshape(len(block), -1)])
    return out


def _check_record(folder, kept, record):
    """Refuse a store built for other training rows, members or blocks."""
    what = {"version": "the store's file format", "fingerprint": "the training rows",
            "parameters": "the members' parameters", "layout": "the attributed blocks",
            "curvature": "the curvature its projected rows were rotated by"}
    for key, words in what.items():
        a, b = kept.get(key), record.get(key)
        same = (a == b) if key != "parameters" else list(a or []) == list(b or [])
        if not same:
            detail = (f" (stored for {a!r}, this fit has {b!r})" if key == "fingerprint"
                      else "")
            raise ValueError(
                f"the precomputed store in {folder} was built for other data or settings: "
                f"{words} differ{detail}. Delete that folder, or pass another memory=")


def store_folder(parent, record):
    """Where the store of ``record`` lives under ``parent`` (``skdtda-store`` in the
    ``memory=`` location): a folder named by the record's hash."""
    return Path(parent) / joblib.hash(record)
