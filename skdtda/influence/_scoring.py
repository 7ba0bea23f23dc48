"""Scoring a fitted InfluenceTransformer chunk by chunk: first order, and one Newton step.

For member ``s``, query ``q`` and training row ``k`` the first-order score is

    delta_sqk = (1/N) grad m_q(theta_s)^T (H_s + damping I)^{-1} (g_k - c_s),

computed by solving the query gradients once per query chunk and taking their
products with each chunk of training gradients; the full ``(n_seeds, n_query,
n_train)`` array is never held. ``correction="newton"`` re-solves with the
curvature of the kept rows (:mod:`skdtda.curvature._newton`): single rows by a
low-rank update of each row's own term (:meth:`Scoring.newton_rows`), sets by a
refit per member and set (:meth:`Scoring.newton_shifts`).

Memory stays within two budgets, whatever the number of rows, queries and
parameters: the solved query gradients held at once (:data:`SOLUTION_BUDGET`)
and one chunk of training gradients (:data:`GRADIENT_BUDGET`).
"""

import numpy as np
import torch

from .._inputs import n_rows
from .._loops import chunks, progress
from ..curvature import woodbury_solve
from ..curvature._kfac import _rotated_rows, _sandwich
from ..model import measure_all
from ..model.layers import DensePatches, SparsePatches, one_patch_per_row

__all__ = ["GRADIENT_BUDGET", "LowRank", "Projected", "SOLUTION_BUDGET", "Scoring", "query_chunk",
           "row_chunk"]

#: Bytes of solved query gradients held at once (all members, or one member and the
#: query chunk's responses when scored member by member).
SOLUTION_BUDGET = 256 * 2**20
#: Bytes of one training chunk's per-row gradient blocks.
GRADIENT_BUDGET = 128 * 2**20
#: Bytes of the float64 copy of solved queries taken for their products with the centre.
_OFFSET_CHUNK_BYTES = 16 * 2**20


def row_chunk(numbers_per_row, itemsize, batch_size):
    """Training rows per chunk: ``batch_size``, fewer where the chunk's per-row
    numbers would pass :data:`GRADIENT_BUDGET`."""
    return max(1, min(batch_size, GRADIENT_BUDGET // (numbers_per_row * itemsize)))


def query_chunk(n_params, itemsize, n_members, n_rows, batch_size=None):
    """Query rows per chunk, and whether members are scored one at a time.

    Every training chunk's gradients are computed once per query chunk, so
    fewer, larger query chunks save that work. While the solved query
    gradients of *all* members fit :data:`SOLUTION_BUDGET` for at least
    ``batch_size`` queries, a chunk holds as many queries as fit, and each
    training chunk is scored for all members at once (nothing grows with the
    number of training rows), and so it does whenever that holds more queries
    than the other way. Otherwise (large nets, many seeds, few training rows;
    or ``batch_size=None``), members are scored one at a time: only one
    member's solved gradients are held (``n_params`` numbers of ``itemsize``
    bytes a query), and the chunk's responses over ``n_rows`` training rows,
    ``n_members * n_rows`` float64 a query, stay within the same budget (at
    100k rows and 16 members, 20 queries a chunk, each chunk a pass over
    every row of every member).
    """
    per_query = n_params * itemsize
    per_response = n_members * max(n_rows, 1) * 8
    one_member = max(1, min(SOLUTION_BUDGET // per_query, SOLUTION_BUDGET // per_response))
    if batch_size is not None:
        all_members = SOLUTION_BUDGET // (n_members * per_query)
        if all_members >= min(batch_size, one_member):
            return all_members, False
    return one_member, True


class Scoring:
    """The scores of fitted members against their training rows, chunk by chunk.

    Parameters
    ----------
    members : list of FunctionalMember
    solvers : list of Curvature
        Each member's fitted inverse curvature.
    centres : list of list of tensor
        Each member's ``c_s``, in the blocks of its gradients.
    X_train, y_train : arrays
        The training rows in the nets' form.
    batch_size : int
        Training rows per chunk, at most.
    verbose : int, default=0
        A progress bar over blocks of queries x training rows.
    store : TrainingStore, default=None
        The training rows' loss gradients, stored at fit (``precompute=``): then
        first-order scores take them from it instead of a pass over the rows.
    query_rank : int, default=None
        First-order scores of queries (:meth:`first_order`) with each layer's
        solved query gradient replaced by its best rank-``query_rank``
        approximation (:class:`LowRank`); None is exact.
    """

    def __init__(self, members, solvers, centres, X_train, y_train, batch_size, verbose=0,
                 store=None, query_rank=None):
        self.members, self.solvers, self.centres = members, solvers, centres
        self.store, self.query_rank = store, query_rank
        self.X_train, self.y_train = X_train, y_train
        self.n_train = n_rows(X_train)
        self.batch_size, self.verbose = batch_size, verbose
        lead = members[0]
        self.train_chunk = row_chunk(lead.n_params, lead.theta.element_size(), batch_size)

    def _query_chunk(self):
        lead = self.members[0]
        return query_chunk(lead.n_params, lead.theta.element_size(), len(self.members),
                           self.n_train, self.batch_size)

    # -- first order ----------------------------------------------------------------------
    def first_order(self, X, y):
        """Yield (query rows, train rows, m (S, nq), delta (S, nq, nt)) chunk by chunk."""
        q_size, by_member = self._query_chunk()
        n_blocks = -(-n_rows(X) // q_size) * -(-self.n_train // self._rows_per_block(
            min(q_size, n_rows(X))))
        with progress(n_blocks, f"scoring {n_rows(X)} queries x {self.n_train} rows", "block",
                      self.verbose) as bar:
            for block in self._first_order(X, y, q_size, by_member):
                bar.update()
                yield block

    def _rows_per_block(self, n_queries):
        """Training rows per block: the gradient chunk, or with a store as many rows
        as keep the products' temporaries within its budget."""
        if self.store is None:
            return self.train_chunk
        lead = self.members[0]
        return self.store.row_chunk(n_queries, len(self.members), lead.theta.element_size(),
                                    self.batch_size)

    def _first_order(self, X, y, q_size, by_member):
        members = list(zip(self.members, self.solvers, self.centres))
        for q_rows in chunks(n_rows(X), q_size):
            Xq, yq = X[q_rows], y[q_rows]
            measured = measure_all(self.members, Xq, yq)
            t_size = self._rows_per_block(n_rows(Xq))
            if by_member:
                delta = np.empty((len(members), n_rows(Xq), self.n_train))
                for s, (member, solver, centre) in enumerate(members):
                    solved, offset = _solve_queries(member, solver, centre, Xq, yq,
                                                    self.query_rank)
                    for t_rows in chunks(self.n_train, t_size):
                        delta[s, :, t_rows] = self._train_response(s, solved, offset, t_rows)
                for t_rows in chunks(self.n_train, t_size):
                    yield q_rows, t_rows, measured, delta[:, :, t_rows]
                continue
            solved = [_solve_queries(member, solver, centre, Xq, yq, self.query_rank)
                      for member, solver, centre in members]
            for t_rows in chunks(self.n_train, t_size):
                delta = np.stack([self._train_response(s, sol, offset, t_rows)
                                  for s, (sol, offset) in enumerate(solved)])
                yield q_rows, t_rows, measured, delta

    def _train_response(self, s, solved, offset, t_rows):
        """``delta`` of member ``s``'s solved queries for training rows ``t_rows``,
        (nq, nt) float64, summed over the attributed layers' blocks: from the store
        where there is one, else from the rows' gradients (through sparse inputs
        first where a layer's patches are sparse)."""
        if self.store is not None:
            total = self.store.response(s, solved, t_rows)
        else:
            X, y = self.X_train[t_rows], self.y_train[t_rows]
            total = None
            for part in _responses(self.members[s], solved, X, y):
                total = part if total is None else total.add_(part)
        return total.double().sub_(offset[:, None]).cpu().numpy() / self.n_train

    def mean_over_queries(self, X, y):
        """First-order change of each member's *mean* measurement over the queries
        ``X, y`` when each training row is removed: ``(n_members, n_train)``.

        The mean is linear, so the solved query gradients are summed (in float64,
        query chunk by query chunk) and scored against the training rows once:
        the cost of one query, whatever their number.
        """
        n_query = n_rows(X)
        q_size = self._query_chunk()[0]
        out = np.empty((len(self.members), self.n_train))
        for s, (member, solver, centre) in enumerate(zip(self.members, self.solvers,
                                                         self.centres)):
            total, offset = None, 0.0
            for q_rows in chunks(n_query, q_size):
                solved = _solve(solver, X[q_rows], y[q_rows])
                sums = [v.summed() if isinstance(v, Projected)
                        else v.double().reshape(len(v), -1).sum(dim=0, keepdim=True)
                        for v in solved]
                total = sums if total is None else [a + b for a, b in zip(total, sums)]
            offset = float(sum(_offsets(v, m)[0] for v, m in zip(total, centre)))
            mean = [(v / n_query).to(member.dtype) for v in total]
            offset = torch.tensor([offset / n_query], dtype=torch.float64)
            for t_rows in chunks(self.n_train, self._rows_per_block(1)):
                out[s, t_rows] = self._train_response(s, mean, offset.to(member.device),
                                                      t_rows)[0]
        return out

    def self_influence(self):
        """First-order change of each training row's own measurement when that row
        is removed: ``(n_members, n_train)``, the diagonal of the training rows
        scored as queries, in one pass over them (no ``n_train x n_train`` block):
        the curvature's ``self_products`` (in the eigenbasis for K-FAC and EK-FAC),
        or, with a store and a curvature without a cheap form, each row's solved
        measurement gradient against its stored loss gradient."""
        out = np.empty((len(self.members), self.n_train))
        for s, (member, solver, centre) in enumerate(zip(self.members, self.solvers,
                                                         self.centres)):
            for t in chunks(self.n_train, self.train_chunk):
                Xt, yt = self.X_train[t], self.y_train[t]
                if solver.cheap_self_products or self.store is None:
                    total = solver.self_products(Xt, yt, centre)
                else:
                    solved, offset = _solve_queries(member, solver, centre, Xt, yt)
                    total = self.store.diagonal(s, solved, t).double() - offset
                out[s, t] = total.cpu().numpy() / self.n_train
        return out

    # -- one Newton step ------------------------------------------------------------------
    def newton_rows(self, X, y, rows=None):
        """Single-row Newton: yield (query rows, positions in ``rows``, m, delta).

        For each training row ``k`` (all rows, or ``rows``),
        ``delta_sk = (1/N') grad m^T (H~ - U_k S_k U_k^T / N')^{-1} (g_k - c_s)``
        with ``N' = N - 1``: per member and query chunk one new factorisation
        (``H~``), per training row ``r + 1`` solves (``r`` = the rank of the
        row's curvature term: its outputs).
        """
        rows = np.arange(self.n_train) if rows is None else np.asarray(rows)
        lead = self.members[0]
        # solved in float64, member by member
        q_size = query_chunk(lead.n_params, 8, len(self.members), len(rows))[0]
        # a training row holds its gradient, U_k and H~^{-1} U_k (r = outputs) or, with
        # "exact", its (P, P) Hessian
        width = self.solvers[0].row_width(self.X_train)
        t_size = row_chunk(width * lead.n_params, 8, self.batch_size)
        n_kept = self.n_train - 1
        members = list(zip(self.members, self.solvers, self.centres))
        for q_rows in chunks(n_rows(X), q_size):
            Xq, yq = X[q_rows], y[q_rows]
            measured = measure_all(self.members, Xq, yq)
            delta = np.empty((len(members), n_rows(Xq), len(rows)))
            for s, (member, solver, (centre,)) in enumerate(members):
                tilde = solver.rescaled(self.n_train)
                query = member.per_sample_grads("measurement", Xq, yq).double()
                for t in chunks(len(rows), t_size):
                    Xt, yt = self.X_train[rows[t]], self.y_train[rows[t]]
                    v = member.per_sample_grads("loss", Xt, yt).double() - centre
                    U, signs = solver.row_factors(Xt, yt)
                    solved = woodbury_solve(tilde, U, signs, v, n_kept)
                    delta[s, :, t] = (query @ solved.T).cpu().numpy() / n_kept
                del tilde
            for t in chunks(len(rows), t_size):
                yield q_rows, t, measured, delta[:, :, t]

    def newton_shifts(self, X, y, masks):
        """Set Newton: (n_sets, n_seeds, n_query) predicted changes, each set re-solved
        with the curvature of its kept rows (one refactorisation per member and set)."""
        shifts = np.zeros((len(masks), len(self.members), n_rows(X)))
        q_size = self._query_chunk()[0]
        sets = [i for i, mask in enumerate(masks) if mask.any()]
        for s, (member, solver, centre) in enumerate(zip(self.members, self.solvers,
                                                         self.centres)):
            refits = solver.kept(self.X_train, self.y_train, (~masks[i] for i in sets))
            for i, kept in zip(sets, refits):
                removed = np.flatnonzero(masks[i])
                n_kept = self.n_train - len(removed)
                total = None
                for t in chunks(len(removed), self.train_chunk):
                    blocks = member.grads("loss", self.X_train[removed[t]],
                                          self.y_train[removed[t]])
                    sums = [b.double().sum(dim=0) for b in blocks]
                    total = sums if total is None else [a + b for a, b in zip(total, sums)]
                v = [t - len(removed) * m for t, m in zip(total, centre)]
                step = kept.solve_blocks([b[None] for b in v])
                step = [b.double().reshape(-1) for b in step]
                for q_rows in chunks(n_rows(X), q_size):
                    query = member.grads("measurement", X[q_rows], y[q_rows])
                    change = sum(g.double().reshape(len(g), -1) @ b for g, b in zip(query, step))
                    shifts[i, s, q_rows] = change.cpu().numpy() / n_kept
        return shifts


def _responses(member, solved, X, y):
    """Per gradient block, the products (nq, nt) of the solved queries with the
    training rows' loss gradients.

    A layer with one patch per row (a Linear layer on vectors) has the gradient
    block ``g a^T``, so ``<S, g a^T> = g^T (S a)``: the product goes through the
    input ``a`` first, at the cost of its nonzeros when it is sparse (a first
    layer on TF-IDF rows), and no ``(rows, out, in)`` block is formed."""
    if not hasattr(member, "grad_patches"):
        grads = member.grads("loss", X, y)
        return [s @ g.reshape(len(g), -1).T for s, g in zip(solved, grads)]
    patches, gs = member.grad_patches("loss", X, y)
    parts = []
    for i, (s, p, g) in enumerate(zip(solved, patches, gs)):
        if isinstance(s, Projected):
            parts.append(s.response(p, g))
            continue
        if isinstance(s, LowRank):
            if isinstance(p, (DensePatches, SparsePatches)):  # products through a
                parts.append(s.response(p.rotated(s.by_input()), g))
                continue
            s = s.dense()
        n_query, out = len(s), g.shape[-1]
        if one_patch_per_row(p) and n_query <= p.size:
            through_a = p.rotated(_input_major(s, out, p, solved, i))[:, 0]
            parts.append((through_a.reshape(-1, n_query, out) * g[:, 0, None, :].to(s.dtype))
                         .sum(dim=-1).T)
        else:
            block = p.row_grads(g)
            parts.append(s @ block.reshape(len(block), -1).T)
    return parts


class _SolvedQueries(list):
    """One member's solved query gradients: a list of flattened blocks (nq, out * in)
    (or :class:`LowRank`) that :func:`_input_major` may turn into (nq, out, in)
    views of input-major copies (the same numbers, laid out for sparse products),
    made once per query chunk instead of once per chunk of training rows."""


def _input_major(s, out, patches, solved, i):
    """The solved queries ``s = solved[i]`` of one layer as ``(in, nq * out)``, the
    right operand of ``a @ S^T`` for a layer with one patch ``a`` per row.

    Dense patches take the transposed view (BLAS reads either layout). A sparse
    CSR product reads one row of its dense operand per nonzero, so sparse patches
    take a contiguous copy, which a :class:`_SolvedQueries` keeps in place of the
    flat block for its next chunks of training rows: one copy per query chunk,
    and no more memory than the flat block. Made per chunk, the copy was the cost
    of scoring wide sparse inputs: at 20k inputs, 100 queries and 32 outputs, a
    256 MB transposition (0.19 s on one core) per chunk of about 50 rows, against
    0.011 s for the sparse product of 100 rows (docs/benchmarks.md, "Sparse input
    end to end")."""
    by_input = s.reshape(len(s) * out, -1).T
    if by_input.is_contiguous() or not isinstance(patches, SparsePatches):
        return by_input
    by_input = by_input.to(patches.csr.dtype).contiguous()
    if (isinstance(solved, _SolvedQueries) and solved[i] is s
            and by_input.dtype == s.dtype):
        solved[i] = by_input.T.reshape(len(s), out, -1)  # a view: the flat block is freed
    return by_input


def _solve(solver, X, y):
    """The measurement gradients of rows ``X, y`` solved by ``solver``: per block
    ``(n, ...)`` tensors, or :class:`Projected` where the solver keeps a subspace
    (then nothing is rotated back out of its eigenbases)."""
    if solver.subspace is None:
        return solver.solve_rows("measurement", X, y)
    solved = solver.solve_projected(solver.project_rows("measurement", X, y))
    return [Projected(w, q_g, q_a) for w, (q_g, q_a) in zip(solved, solver.bases())]


def _offsets(v, c):
    """``v_q^T c`` for every solved query ``q`` of one block, float64 ``(nq,)``."""
    if isinstance(v, Projected):
        return v.centre_products(c)
    return _row_products(v.reshape(len(v), -1), c.reshape(-1).to(v.device, torch.float64))


def _solve_queries(member, solver, centre, Xq, yq, rank=None):
    """One member's solved query gradients (flattened blocks, :class:`LowRank`
    where ``rank`` is given and pays, or :class:`Projected` for a solver on a
    subspace) and their products with the centre ``c_s``."""
    solved = _solve(solver, Xq, yq)
    if rank is not None:  # never with a subspace (fit refuses both)
        solved = [LowRank.truncate(s, rank) if s.dim() == 3 else s for s in solved]
    flat = [s if isinstance(s, Projected) else s.dense() if isinstance(s, LowRank)
            else s.reshape(n_rows(Xq), -1) for s in solved]
    # the offset of the approximated queries where they are: their scores then
    # still sum to zero over the rows when c_s is the rows' mean gradient
    offset = sum(_offsets(f, m) for f, m in zip(flat, centre))
    # The products with training gradients run in the member's dtype (2x
    # faster, half the memory for float32 nets), whatever the solve's.
    return _SolvedQueries([s.to(member.dtype) if isinstance(s, LowRank) else f.to(member.dtype)
                           for s, f in zip(solved, flat)]), offset


def _row_products(rows, v):
    """``rows @ v`` in float64, a chunk of rows at a time: a float64 copy of a whole
    block of float32 solved queries would hold twice their bytes (512 MB for 40
    queries of a 50k-input layer with 32 outputs), more than any other temporary
    of scoring."""
    size = max(1, _OFFSET_CHUNK_BYTES // (8 * max(rows.shape[1], 1)))
    parts = [rows[c].double() @ v for c in chunks(len(rows), size)]
    return torch.cat(parts) if parts else rows.new_zeros(0, dtype=torch.float64)


def _truncated_svd(M, rank, oversample=8, n_iter=2):
    """The leading ``rank`` singular triplets of each matrix of ``M`` (batch,
    out, in), by randomized subspace iteration (Halko, Martinsson & Tropp 2011)
    with a fixed seed: ``n_iter`` power iterations on ``rank + oversample``
    columns, then an exact SVD of the small projected matrix. 4x faster than
    a full batched SVD of 128 x 129 blocks; on the solved queries' fast-falling
    spectra its error is the optimum's to 1e-6 relative."""
    k = min(rank + oversample, *M.shape[1:])
    generator = torch.Generator(device=M.device).manual_seed(0)
    omega = torch.randn(M.shape[2], k, generator=generator, dtype=M.dtype, device=M.device)
    Q = torch.linalg.qr(M @ omega).Q
    Mt = M.transpose(1, 2)
    for _ in range(n_iter):
        Q = torch.linalg.qr(M @ torch.linalg.qr(Mt @ Q).Q).Q
    u, S, Vh = torch.linalg.svd(Q.transpose(1, 2) @ M, full_matrices=False)
    return (Q @ u[:, :, :rank]), S[:, :rank], Vh[:, :rank]


class LowRank:
    """Solved query gradients of one layer in rank-``R`` form (``query_rank=``).

    A layer's solved query gradient ``S_q`` is an ``(out, in)`` block; its best
    rank-``R`` approximation (truncated SVD, :func:`_truncated_svd`) is
    ``sum_r u_qr v_qr^T``, and its
    product with a training row's gradient ``sum_t g_t a_t^T`` (``T`` patches)
    is then ``sum_t sum_r (u_qr . g_t)(v_qr . a_t)``: ``R (in + out)``
    multiply-adds a patch instead of ``in x out``. On a Linear layer the solved
    gradient of one query is close to rank one (the raw gradient ``g a^T`` is,
    and a Kronecker-factored inverse keeps that up to its damping and
    eigenvalue correction), so a small ``R`` keeps nearly all of it
    (kronfluence's ``query_gradient_rank``).

    Parameters
    ----------
    U : tensor of shape (n_query, R, out)
        The left singular vectors, scaled by the singular values.
    V : tensor of shape (n_query, R, in)
        The right singular vectors.
    """

    def __init__(self, U, V):
        self.U, self.V = U, V
        self._by_input = None

    def by_input(self):
        """``V`` as ``(in, n_query R)``, the right operand of ``a @ V^T``: contiguous
        (a sparse product reads one of its rows per nonzero), made once and kept
        for every chunk of training rows."""
        if self._by_input is None:
            self._by_input = self.V.reshape(-1, self.V.shape[-1]).T.contiguous()
        return self._by_input

    @classmethod
    def truncate(cls, block, rank):
        """The rank-``rank`` form of solved blocks ``(n_query, out, in)``, or the
        blocks themselves where that form would not be smaller."""
        n_query, out, size = block.shape
        if rank * (out + size) >= out * size:
            return block
        U, S, Vh = _truncated_svd(block, rank)
        return cls((U * S[:, None, :]).transpose(1, 2).contiguous(), Vh.contiguous())

    def __len__(self):
        return len(self.U)

    @property
    def device(self):
        return self.U.device

    def to(self, dtype):
        return LowRank(self.U.to(dtype), self.V.to(dtype))

    def dense(self):
        """The approximated blocks, flattened: ``(n_query, out * in)``."""
        return (self.U.transpose(1, 2) @ self.V).reshape(len(self.U), -1)

    def response(self, av, g):
        """Products with training rows, ``(n_query, n_rows)``, from their patches
        rotated by the ``V`` side (``av``, ``(n_rows, T, n_query R)``: the patches
        times ``V`` flattened and transposed) and their output gradients ``g``
        (``(n_rows, T, out)``)."""
        n, n_pos = g.shape[0], g.shape[1]
        out = self.U.shape[2]
        gu = g.reshape(n * n_pos, out).to(self.U.dtype) @ self.U.reshape(-1, out).T
        both = gu.mul_(av.reshape(n * n_pos, -1).to(gu.dtype))
        return both.reshape(n, n_pos, len(self.U), -1).sum(dim=(1, 3)).T


class Projected:
    """Solved query gradients of one layer in a curvature's kept eigenbases
    (``curvature_options={"subspace": k}``): the ``(out, in)`` block
    ``Q_G W_q Q_A^T`` held as ``W_q`` (``(k_out, k_in)``) with the shared bases.

    Its product with a training row's gradient ``sum_t g_t a_t^T`` is
    ``<W_q, sum_t (Q_G^T g_t)(Q_A^T a_t)^T>``: each row is rotated into the
    ``k_out x k_in`` block once, ``T (out k_out + in k_in + k_out k_in)``
    multiply-adds a row, and every query's score is then a product of length
    ``k_out k_in`` (the compressed store keeps the rotated rows themselves).

    Parameters
    ----------
    W : tensor of shape (n_query, k_out, k_in)
    q_g : tensor of shape (out, k_out)
    q_a : tensor of shape (in, k_in) or None
        None: the inputs themselves (a diagonal input factor).
    """

    def __init__(self, W, q_g, q_a):
        self.W, self.q_g, self.q_a = W, q_g, q_a

    def __len__(self):
        return len(self.W)

    def __add__(self, other):
        return Projected(self.W + other.W, self.q_g, self.q_a)

    def __truediv__(self, number):
        return Projected(self.W / number, self.q_g, self.q_a)

    @property
    def device(self):
        return self.W.device

    @property
    def dtype(self):
        return self.W.dtype

    def to(self, dtype):
        return Projected(self.W.to(dtype), self.q_g.to(dtype),
                         None if self.q_a is None else self.q_a.to(dtype))

    def summed(self):
        """The sum over the queries in float64, as one query."""
        return Projected(self.W.double().sum(dim=0, keepdim=True), self.q_g, self.q_a)

    def flat(self):
        """``W`` as ``(n_query, k_out k_in)``."""
        return self.W.reshape(len(self.W), -1)

    def dense(self):
        """The solved blocks rotated back, flattened: ``(n_query, out * in)``."""
        q_a = None if self.q_a is None else self.q_a.T.to(self.W.dtype)
        return _sandwich(self.q_g.to(self.W.dtype), self.W, q_a).reshape(len(self.W), -1)

    def rotate(self, blocks):
        """Blocks ``(n, out, in)`` in the kept eigenbases, ``(n, k_out k_in)``."""
        q_a = None if self.q_a is None else self.q_a.to(self.W.dtype)
        rot = _sandwich(self.q_g.T.to(self.W.dtype), blocks.to(self.W.dtype), q_a)
        return rot.reshape(len(blocks), -1)

    def centre_products(self, centre):
        """``v_q^T c`` for the centre's block ``c``, float64 ``(n_query,)``."""
        c = self.rotate(centre.reshape(1, self.q_g.shape[0], -1).to(self.W.device))
        return (self.flat().double() @ c[0].double())

    def response(self, patches, g):
        """Products with training rows from their patches and output gradients,
        ``(n_query, n_rows)``."""
        q_a = None if self.q_a is None else self.q_a.to(self.W.dtype)
        rot = _rotated_rows(patches, g.to(self.W.dtype), self.q_g.to(self.W.dtype), q_a)
        return self.flat() @ rot.reshape(len(rot), -1).T
