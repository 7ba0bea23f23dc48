"""K-FAC and EK-FAC curvature of the GGN, layer by layer, for any module.

For an attributed layer with per-row patches ``a_nt`` (bias folded in as a
trailing 1) and back-propagated output-Hessian roots ``g_nct`` (column ``c``
of a square root of row ``n``'s output Hessian, pushed back to the layer's
outputs at patch ``t``: the "type-2", label-free factorisation), the exact GGN
block is ``mean_n sum_c vec(G_nc) vec(G_nc)^T`` with
``G_nc = sum_t g_nct a_nt^T``. K-FAC approximates it by ``A (x) G`` with
``A = mean_{n,t} a a^T`` and ``G = mean_n sum_{c,t} g g^T`` (for Linear
layers on single vectors this is the classical K-FAC; for convolutions and
sequences it is K-FAC-expand, Grosse & Martens 2016, Eschenhagen et al. 2023).
EK-FAC keeps K-FAC's eigenbases and refits the eigenvalues to the exact
block's diagonal in that basis (George et al., 2018). Blocks of different
layers are independent (block-diagonal), and every solve happens in the
eigenbases: ``(Q_G (x) Q_A) diag(1 / (Lambda + damping)) (Q_G (x) Q_A)^T``.

The layers come from walking the module (:mod:`skdtda.model.layers`) and
their inputs and output gradients from forward hooks
(:class:`skdtda.model.LayerTracer`), so nested containers, residual blocks and
custom ``forward`` methods need nothing special.

Written here rather than taken from curvlinops: its K-FAC is a linear operator
on flat parameter vectors; the factored scoring here needs the factors and
eigenbases per layer, in the member's dtype, and per-row gradient blocks from
the same hooks (docs/architectures.md has the measurement).
"""

import logging
from numbers import Integral

import torch

from .._inputs import n_rows
from .._loops import chunks
from ..model import LayeredMember
from ..model.layers import DensePatches, accumulate, gram, one_patch_per_row
from ._base import Curvature

__all__ = ["DIAGONAL_INPUT_ABOVE", "KroneckerCurvature"]

logger = logging.getLogger("skdtda")

_BLOCK_BUDGET = 128 * 2**20
#: A layer with more inputs than this (bias column included) keeps only the diagonal
#: of its input factor. A full factor of 8192 inputs holds 0.5 GiB in float64 and
#: its eigendecomposition takes minutes on one core (docs/influence.md, "Wide
#: inputs"); one of a 50k-word vocabulary would hold 20 GiB.
DIAGONAL_INPUT_ABOVE = 8192


class KroneckerCurvature(Curvature):
    """K-FAC (``corrected=False``) or EK-FAC (``corrected=True``) for one member.

    The damping enters only the solves: :meth:`with_damping` is a number.

    Parameters
    ----------
    member : LayeredMember
    X, y : arrays
        Training rows and their net targets.
    damping : float
        Added to every (corrected) eigenvalue, with the weight decay.
    corrected : bool
        Refit the eigenvalues (EK-FAC).
    samples : "auto", int or None
        None: every column of each row's output-Hessian root (the exact GGN's
        factors, one backward pass per output). An int: that many random
        combinations of the columns per row (unbiased, ``samples`` backward
        passes). ``"auto"``: every column for at most
        :data:`~skdtda.model.AUTO_EXACT_COLUMNS` outputs, else one
        combination.
    layer_damping : {"uniform", "relative"}, default="uniform"
        ``"uniform"``: every layer takes ``damping``. ``"relative"``: layer ``l``
        takes ``damping * m_l / m``, with ``m_l`` its own mean eigenvalue and
        ``m`` the mean over all attributed parameters (so the damping averages to
        ``damping`` over the parameters): layers whose curvature is on another
        scale (a CNN's convolutions and its head) are damped in proportion.
        kronfluence's rule, 0.1 x each layer's mean eigenvalue, is
        ``"relative"`` at 0.1 x :meth:`mean_eigenvalue`.
    chunk : int
        Rows per pass, bounding memory.
    diagonal_input_above : int or None, default=DIAGONAL_INPUT_ABOVE
        A layer with more inputs than this (bias column included; any kind:
        Linear, convolution) keeps only the diagonal of its input factor ``A``:
        its Kronecker basis is ``Q_G (x) I``, with no ``(in, in)`` matrix and
        no eigendecomposition of it, and EK-FAC refits the eigenvalues in that
        basis as in the full one. Each such layer is logged (logger
        ``"skdtda"``) and listed in ``diagonal_inputs``. None: every factor
        full; 0: every factor diagonal. Embeddings are diagonal regardless
        (one-hot inputs make it exact).

    Attributes
    ----------
    diagonal_inputs : dict
        ``{layer name: reason}`` for the layers whose input factor was kept
        diagonal because of ``diagonal_input_above``.
    """

    layered = True
    kronecker = True
    newton_sets = True
    cheap_self_products = True
    options = ("samples", "layer_damping", "diagonal_input_above", "subspace")

    def __init__(self, member, X, y, damping, corrected, samples="auto", chunk=512,
                 layer_damping="uniform", diagonal_input_above=DIAGONAL_INPUT_ABOVE,
                 subspace=None):
        if not isinstance(member, LayeredMember):
            raise ValueError("KroneckerCurvature needs a LayeredMember")
        if layer_damping not in ("uniform", "relative"):
            raise ValueError(f"layer_damping={layer_damping!r} must be 'uniform' or 'relative'")
        if diagonal_input_above is not None and (
                not isinstance(diagonal_input_above, Integral)
                or isinstance(diagonal_input_above, bool) or diagonal_input_above < 0):
            raise ValueError(f"diagonal_input_above={diagonal_input_above!r} must be an int "
                             ">= 0 (the widest input factor kept full) or None")
        if subspace is not None and (not isinstance(subspace, Integral)
                                     or isinstance(subspace, bool) or subspace < 1):
            raise ValueError(f"subspace={subspace!r} must be an int >= 1 (the leading "
                             "eigenvectors kept of each Kronecker factor) or None")
        self.member = member
        self.damping = damping
        self.subspace = subspace
        self.samples, self.layer_damping = samples, layer_damping
        self.diagonal_input_above = diagonal_input_above
        self.corrected, self.chunk = corrected, chunk
        specs = member.layers
        self.diagonal_inputs = {}
        for spec in specs:
            width = spec.shape[1]
            if (not spec.kind.diagonal_input and diagonal_input_above is not None
                    and width > diagonal_input_above):
                self.diagonal_inputs[spec.name] = (
                    f"{width} inputs > diagonal_input_above={diagonal_input_above}: a full "
                    f"input factor would hold {width ** 2 * 8 / 2**30:.2f} GiB (float64) and "
                    "need its eigendecomposition")
        if self.diagonal_inputs and not getattr(member, "_diagonal_logged", False):
            member._diagonal_logged = True  # once per member, not per refit
            for name, reason in self.diagonal_inputs.items():
                logger.info("EK-FAC keeps the input factor of layer %r diagonal: %s",
                            name, reason)
        diagonal = [spec.kind.diagonal_input or spec.name in self.diagonal_inputs
                    for spec in specs]
        X, y = member.tensors(X, y)
        n = n_rows(X)
        # EK-FAC's refit forms per-row blocks of a layer: keep them within 128 MiB
        largest = max(spec.size for spec in specs) * member.theta.element_size()
        chunk = max(1, min(chunk, _BLOCK_BUDGET // largest))
        A = [None] * len(specs)
        G = [None] * len(specs)
        patches_seen = [0] * len(specs)
        # The passes run in the member's dtype (float32 nets: 2x faster); each
        # chunk's products are summed, and the factors decomposed, in float64.
        for rows in chunks(n, chunk):
            patches, columns = self._pass(X, y, rows, seed=0)
            for i, p in enumerate(patches):
                # a sparse first layer's sum is sparse: added at the cost of its nonzeros
                a_t = p.input_diagonal() if diagonal[i] else p.input_sum()
                A[i] = accumulate(A[i], a_t.double())
                patches_seen[i] += p.count()
            for gs in columns:
                for i, g in enumerate(gs):
                    g_t = gram(g.reshape(-1, g.shape[-1])).double()
                    G[i] = g_t if G[i] is None else G[i] + g_t
        self.factors = []
        for diagonal_a, a_sum, g_sum, count in zip(diagonal, A, G, patches_seen):
            a_mean = a_sum / count
            if diagonal_a:
                lam_a, q_a = a_mean, None
            else:
                lam_a, q_a = _leading(*torch.linalg.eigh(a_mean), subspace)
            lam_g, q_g = _leading(*torch.linalg.eigh(g_sum / n), subspace)
            # K-FAC-expand: A is a mean over patches, G a sum over them per row
            self.factors.append({"q_a": q_a, "q_g": q_g,
                                 "eig": lam_g.clamp_min(0)[:, None] * lam_a.clamp_min(0)})
        if corrected:
            self._correct(X, y, chunk)
        # A parameter-wise penalty D enters as diag(Q^T D Q), its exact diagonal in
        # each layer's eigenbasis: sum_{o,a} D[o, a] Q_G[o, i]^2 Q_A[a, j]^2.
        self.penalty = [None] * len(self.factors)
        if member.penalty is not None:
            for i, (f, d) in enumerate(zip(self.factors, member.to_blocks(member.penalty))):
                out = f["q_g"].double().pow(2).T @ d
                if f["q_a"] is not None:
                    out = out @ f["q_a"].double().pow(2)
                self.penalty[i] = out.to(f["eig"].dtype)
        # each layer's share of the damping: its mean eigenvalue over the overall mean
        sums = [float(f["eig"].double().sum()) + (0.0 if p is None else float(p.double().sum()))
                for f, p in zip(self.factors, self.penalty)]
        # a layer's mean over all its parameters (not only a subspace's block)
        sizes = [spec.size for spec in specs]
        overall = sum(sums) / sum(sizes)
        self.layer_scale = [1.0 if layer_damping == "uniform" or not overall > 0
                            else (total / size) / overall for total, size in zip(sums, sizes)]
        # Kept in the member's dtype only: for a float32 net of 1M parameters and 16
        # seeds the float64 eigenbases alone would hold about a GiB.
        self.factors = [{key: None if value is None else value.to(member.dtype)
                         for key, value in f.items()} for f in self.factors]

    def _correct(self, X, y, chunk):
        """EK-FAC: the exact GGN diagonal in each layer's Kronecker eigenbasis."""
        member = self.member
        dtype = member.dtype
        sums = [torch.zeros_like(f["eig"]) for f in self.factors]
        bases = [(f["q_g"].to(dtype), None if f["q_a"] is None else f["q_a"].to(dtype))
                 for f in self.factors]
        for rows in chunks(n_rows(X), chunk):
            patches, columns = self._pass(X, y, rows, seed=1)
            single = [one_patch_per_row(p) for p in patches]
            rotated_a = [p.rotated(q_a)[:, 0].pow(2) if one else None
                         for p, one, (_, q_a) in zip(patches, single, bases)]
            for_rows = [None] * len(patches)
            for gs in columns:
                for i, (p, g) in enumerate(zip(patches, gs)):
                    q_g, q_a = bases[i]
                    if single[i]:
                        # one patch per row: (Q_G^T g a^T Q_A)^2 = (Q_G^T g)^2 (Q_A^T a)^2
                        g_rot = (g[:, 0] @ q_g).pow(2)
                        for_rows[i] = g_rot if for_rows[i] is None else for_rows[i] + g_rot
                    else:
                        rot = _rotated_rows(p, g, q_g, q_a)
                        # the sum of squares over rows as one contraction: 2x faster
                        # than pow(2).sum(0) on a (113, 128, 1153) float32 chunk
                        sums[i] += torch.einsum("nij,nij->ij", rot, rot).double()
            for i, one in enumerate(single):
                if one:
                    sums[i] += (for_rows[i].T @ rotated_a[i]).double()
        for f, total in zip(self.factors, sums):
            f["eig"] = total / n_rows(X)

    def _pass(self, X, y, rows, seed):
        """Patches and pseudo-gradients of one chunk of rows; sampled combinations are
        drawn from a generator seeded by the pass and the chunk (same fit, same numbers)."""
        generator = None
        if self.samples is not None:  # "auto" may sample too
            generator = torch.Generator().manual_seed(seed * 1_000_003 + rows.start)
        return self.member.tracer.pseudo_grads(X[rows], y[rows], samples=self.samples,
                                               generator=generator)

    @classmethod
    def fit(cls, name, member, X, y, damping, samples="auto", layer_damping="uniform",
            diagonal_input_above=DIAGONAL_INPUT_ABOVE, subspace=None):
        """K-FAC (``name="kfac"``) or EK-FAC (``"ekfac"``) of the member."""
        return cls(member, X, y, damping, corrected=name == "ekfac", samples=samples,
                   layer_damping=layer_damping, diagonal_input_above=diagonal_input_above,
                   subspace=subspace)

    def mean_eigenvalue(self):
        """``trace / P`` of the Kronecker curvature (the refitted eigenvalues for EK-FAC)
        with the weight decay and penalty, without the damping."""
        total = sum(float(f["eig"].double().sum()) for f in self.factors)
        total += sum(float(p.double().sum()) for p in self.penalty if p is not None)
        return total / self.member.n_params + self.member.weight_decay

    def with_damping(self, damping):
        """The same factors with another damping (it enters only the solves)."""
        return self._copy(damping=damping)

    def kept(self, X, y, keeps):
        """K-FAC/EK-FAC: the factors (and EK-FAC's eigenvalues) refitted over the
        kept rows of each set."""
        for keep in keeps:
            yield KroneckerCurvature(self.member.with_penalty_scaled(len(keep) / int(keep.sum())),
                                     X[keep], y[keep], self.damping, corrected=self.corrected,
                                     samples=self.samples, chunk=self.chunk,
                                     layer_damping=self.layer_damping,
                                     diagonal_input_above=self.diagonal_input_above,
                                     subspace=self.subspace)

    def solve_blocks(self, blocks):
        """``(G_kfac + (damping + weight decay) I + penalty)^{-1} v`` for per-layer blocks
        ``[(n, out, in)]``, in the member's dtype (float32 gradients of a float32
        net are rotated and scaled in float32; the decompositions were float64)."""
        return self._solve_rotated([
            _sandwich(f["q_g"].T, block.to(f["q_g"].dtype), f["q_a"])
            for block, f in zip(blocks, self.factors)])

    def solve_rows(self, fn_name, X, y):
        """:meth:`solve_blocks` of the member's per-row gradients of ``fn_name``
        (``"loss"`` or ``"measurement"``) on rows ``X, y``, rotated into the
        eigenbases from their patches: a row's ``Q_G^T (sum_t g_t a_t^T) Q_A`` is
        ``sum_t (Q_G^T g_t)(Q_A^T a_t)^T``, cheaper than rotating its ``(out, in)``
        block when it has fewer patches than outputs (the deep layers of a CNN)."""
        patches, gs = self.member.grad_patches(fn_name, X, y)
        return self._solve_rotated([
            _rotated_rows(p, g.to(f["q_g"].dtype), f["q_g"], f["q_a"])
            for p, g, f in zip(patches, gs, self.factors)])

    def project_rows(self, fn_name, X, y):
        """The member's per-row gradients of ``fn_name`` on rows ``X, y`` rotated into
        each layer's eigenbases, ``Q_G^T (sum_t g_t a_t^T) Q_A``, and not rotated
        back: per layer ``(n, k_out, k_in)`` (all directions without ``subspace``).
        With ``subspace`` this is the gradient's coordinates on the kept block."""
        patches, gs = self.member.grad_patches(fn_name, X, y)
        return [_rotated_rows(p, g.to(f["q_g"].dtype), f["q_g"], f["q_a"])
                for p, g, f in zip(patches, gs, self.factors)]

    def solve_projected(self, rotated_blocks):
        """Blocks in the eigenbases (:meth:`project_rows`) divided by the damped
        eigenvalues, still in the eigenbases: :meth:`solve_blocks` without the
        rotation back. ``<solved, project_rows(...)>`` summed over the layers is
        ``v^T (G + shift)^{-1} g``. The blocks are divided in place where the
        dtypes allow: pass fresh ones."""
        return list(self._divided(rotated_blocks))

    def bases(self):
        """Per layer ``(Q_G, Q_A)``, the kept eigenvectors (``Q_A`` None for a diagonal
        input factor: the inputs themselves)."""
        return [(f["q_g"], f["q_a"]) for f in self.factors]

    def self_products(self, X, y, centre):
        """``grad m_k^T (G + shift)^{-1} (g_k - c)`` for every row ``k`` of ``X, y``
        (``m`` the measurement, ``g`` the loss, ``c`` the centre's ``(out, in)``
        blocks): ``(n,)`` float64, each row scored against itself.

        Computed in the eigenbases, where the inverse is a division: both
        gradients are rotated in from their patches and nothing is rotated back
        (what :meth:`solve_rows` spends most of its time on). With one patch a
        row, ``Q_G^T g a^T Q_A`` is ``u w^T`` and the product is
        ``(u_m * u_l)^T D^{-1} (w * w) - u_m^T (C~ * D^{-1}) w``: two products
        with an ``(out, in)`` matrix a row instead of rotating its block back.
        """
        member = self.member
        patches, g_loss = member.grad_patches("loss", X, y)
        g_meas = (g_loss if member.measure_fn is member.loss_fn
                  else member.grad_patches("measurement", X, y)[1])
        total = None
        for p, gl, gm, f, inverse, c in zip(patches, g_loss, g_meas, self.factors,
                                            self._inverses(), centre):
            q_g, q_a = f["q_g"], f["q_a"]
            dtype = q_g.dtype
            c_rot = _sandwich(q_g.T, c[None].to(dtype), q_a)[0]
            if one_patch_per_row(p):
                w = p.rotated(q_a)[:, 0].to(dtype)
                u_m, u_l = gm[:, 0].to(dtype) @ q_g, gl[:, 0].to(dtype) @ q_g
                part = (((u_m * u_l) @ inverse) * (w * w)).sum(dim=1)
                part -= ((u_m @ (c_rot * inverse)) * w).sum(dim=1)
            else:
                m_rot = _rotated_rows(p, gm.to(dtype), q_g, q_a)
                l_rot = _rotated_rows(p, gl.to(dtype), q_g, q_a)
                part = (m_rot * inverse * (l_rot - c_rot)).sum(dim=(1, 2))
            total = part.double() if total is None else total + part.double()
        return total

    def _denominators(self):
        """Per layer, the damped eigenvalues in the eigenbasis, (out, in), and where an
        undamped eigenvalue may vanish (no damping, weight decay or penalty floor)
        the mask of those kept (None otherwise): the others are dropped, not divided by."""
        for f, penalty, scale in zip(self.factors, self.penalty, self.layer_scale):
            shift = self.damping * scale + self.member.weight_decay
            denom = f["eig"] + shift
            floor = shift
            if penalty is not None:
                denom = denom + penalty.to(denom.dtype)
                floor = shift + float(penalty.min())
            yield denom, (denom > denom.max() * 1e-12 if floor == 0 else None)

    def _inverses(self):
        """Per layer, the inverse of :meth:`_denominators`, zero where one is dropped."""
        return [1 / denom if safe is None else torch.where(safe, 1 / torch.where(safe, denom, 1), 0)
                for denom, safe in self._denominators()]

    def _divided(self, rotated_blocks):
        """Blocks already in the eigenbases divided by the damped eigenvalues, layer by
        layer (in place where the dtypes allow: the blocks are the caller's own
        temporaries)."""
        for rotated, (denom, safe) in zip(rotated_blocks, self._denominators()):
            if safe is not None:
                yield torch.where(safe, rotated / torch.where(safe, denom, 1), 0)
            elif rotated.dtype == torch.promote_types(rotated.dtype, denom.dtype):
                # every caller passes fresh blocks: dividing in place holds one block
                # less at the solve's peak (256 MB for 40 queries of a 50k-input layer)
                yield rotated.div_(denom)
            else:
                yield rotated / denom

    def _solve_rotated(self, rotated_blocks):
        """Divide blocks already in the eigenbases by the damped eigenvalues
        (:meth:`_divided`), rotate back."""
        return [_sandwich(f["q_g"], divided, None if f["q_a"] is None else f["q_a"].T)
                for divided, f in zip(self._divided(rotated_blocks), self.factors)]


def _leading(values, vectors, k):
    """The ``k`` eigenpairs of largest eigenvalue of an ascending ``eigh`` (all for
    ``k=None`` or a factor of at most ``k``)."""
    if k is None or k >= len(values):
        return values, vectors
    return values[-k:], vectors[:, -k:]


def _rotated_rows(patches, g, q_g, q_a):
    """``Q_G^T (sum_t g_nt a_nt^T) Q_A`` for every row ``n``: (n, out, in).

    From the patches when that is cheaper (``sum_t (Q_G^T g_t)(Q_A^T a_t)^T``:
    always for one patch a row, and for few patches of many inputs); else from
    the row's ``(out, in)`` gradient block. One-hot patches (``q_a`` None, a
    diagonal input factor) take the block; one patch a row with a diagonal input
    factor is ``(Q_G^T g) a^T``."""
    if one_patch_per_row(patches):
        return (g[:, 0] @ q_g)[:, :, None] * patches.rotated(q_a)[:, 0, None, :]
    if q_a is not None and isinstance(patches, DensePatches):
        if _rotate_patches_first(patches, g.shape[-1], q_g.shape[1], q_a.shape[1]):
            return torch.bmm((g @ q_g).transpose(1, 2), patches.a @ q_a)
    return _sandwich(q_g.T, patches.row_grads(g), q_a)


def _rotate_patches_first(patches, out_dim, k_out=None, k_in=None):
    """Whether rotating each of a row's T patches and gradients into ``k_out`` and
    ``k_in`` directions (then their T outer products) costs less than forming its
    (out, in) gradient block and rotating that (multiply-adds per row)."""
    t, size = patches.n_pos, patches.size
    k_out, k_in = k_out or out_dim, k_in or size
    first = t * (out_dim * k_out + size * k_in + k_out * k_in)
    return first < t * out_dim * size + out_dim * size * k_in + out_dim * k_out * k_in


def _sandwich(left, blocks, right):
    """``left @ B @ right`` for every matrix B of ``blocks`` (n, o, i), as two 2-D
    products (a broadcast batched product of small float64 matrices is ~10x slower);
    ``right=None`` is the identity."""
    n, o, i = blocks.shape
    out = blocks if right is None else (blocks.reshape(n * o, i) @ right).reshape(n, o, -1)
    k = out.shape[2]
    out = left @ out.transpose(0, 1).reshape(o, n * k)
    return out.reshape(-1, n, k).transpose(0, 1)
