"""K-FAC and EK-FAC curvature of the GGN, for stacks of Linear layers.

For each Linear layer with inputs ``a_n`` (bias folded in as a trailing 1) the
exact GGN block is ``mean_n sum_c vec(g_nc a_n^T) vec(g_nc a_n^T)^T``, where
``g_nc`` back-propagates column ``c`` of a square root of sample ``n``'s output
Hessian to the layer's pre-activation (the "type-2", exact-label-free
factorisation). K-FAC approximates the block by ``A (x) G`` with
``A = mean_n a_n a_n^T`` and ``G = mean_n sum_c g_nc g_nc^T``; EK-FAC keeps
K-FAC's eigenbases and refits the eigenvalues to the exact block's diagonal in
that basis (George et al., 2018). Blocks of different layers are independent
(block-diagonal), and all solves happen in the eigenbases:
``(Q_G (x) Q_A) diag(1 / (Lambda + damping)) (Q_G (x) Q_A)^T``.

Written here rather than taken from a library because it reads the plain
Linear/activation structure that the seed ensembles' batched path already
recognises, and needs nothing beyond torch.
"""

import torch
from torch import nn

from ..ensemble._batched import _plain_stack

__all__ = ["KroneckerCurvature", "kfac_supported_reason"]


def kfac_supported_reason(member):
    """Why K-FAC cannot run on this member, or None."""
    if _plain_stack(member.module) is None:
        return ("K-FAC/EK-FAC need a module that is a plain stack of Linear layers and "
                "elementwise activations (e.g. skdtda.nets.MLP); use curvature='ggn' or "
                "'cg' for this module")
    return None


class KroneckerCurvature:
    """K-FAC (``corrected=False``) or EK-FAC (``corrected=True``) for one member.

    Parameters
    ----------
    member : FunctionalMember
    X, y : arrays
        Training rows and their net targets.
    damping : float
        Added to every (corrected) eigenvalue, with the weight decay.
    corrected : bool
        Refit the eigenvalues (EK-FAC).
    chunk : int
        Rows per pass, bounding memory.
    """

    def __init__(self, member, X, y, damping, corrected, chunk=512):
        self.member = member
        self.damping = damping
        layers = _plain_stack(member.module)
        names = {id(p): name for name, p in member.module.named_parameters()}
        offsets, start = {}, 0
        for name, size in zip(member.names, member.sizes):
            offsets[name] = (start, start + size)
            start += size
        if not layers or type(layers[0]) is not nn.Linear:
            raise ValueError("K-FAC/EK-FAC need the module to start with a Linear layer")
        # Each Linear layer with the activations that follow it.
        self.linears = []
        for layer in layers:
            if type(layer) is nn.Linear:
                self.linears.append({
                    "layer": layer, "after": nn.Sequential(),
                    "weight": offsets[names[id(layer.weight)]],
                    "bias": None if layer.bias is None else offsets[names[id(layer.bias)]],
                })
            else:
                self.linears[-1]["after"].append(layer)
        X, y = member.tensors(X, y)
        n = len(X)
        A = [None] * len(self.linears)
        G = [None] * len(self.linears)
        # The passes run in the member's dtype (float32 nets: 2x faster); each
        # chunk's products are summed, and the factors decomposed, in float64.
        for rows in range(0, n, chunk):
            inputs, pseudo = self._pass(X[rows:rows + chunk], y[rows:rows + chunk])
            for i, (a, g) in enumerate(zip(inputs, pseudo)):
                g2 = g.reshape(-1, g.shape[-1])
                a_t, g_t = (a.T @ a).double(), (g2.T @ g2).double()
                A[i] = a_t if A[i] is None else A[i] + a_t
                G[i] = g_t if G[i] is None else G[i] + g_t
        self.factors = []
        for a_sum, g_sum in zip(A, G):
            lam_a, q_a = torch.linalg.eigh(a_sum / n)
            lam_g, q_g = torch.linalg.eigh(g_sum / n)
            self.factors.append({"q_a": q_a, "q_g": q_g,
                                 "eig": lam_g.clamp_min(0)[:, None] * lam_a.clamp_min(0)})
        if corrected:
            dtype = member.dtype
            sums = [torch.zeros_like(f["eig"]) for f in self.factors]
            bases = [(f["q_g"].to(dtype), f["q_a"].to(dtype)) for f in self.factors]
            for rows in range(0, n, chunk):
                inputs, pseudo = self._pass(X[rows:rows + chunk], y[rows:rows + chunk])
                for i, (a, g) in enumerate(zip(inputs, pseudo)):
                    q_g, q_a = bases[i]
                    g_rot = (g @ q_g).pow(2).sum(dim=1)  # (n, out)
                    a_rot = (a @ q_a).pow(2)  # (n, in+1)
                    sums[i] += (g_rot.T @ a_rot).double()
            for f, total in zip(self.factors, sums):
                f["eig"] = total / n
        self._cast = {torch.float64: self.factors}

    def _pass(self, X, y):
        """Layer inputs (bias column appended) and back-propagated output-Hessian roots."""
        member = self.member
        with torch.no_grad():
            h = X
            inputs, pre_acts = [], []
            for spec in self.linears:
                layer = spec["layer"]
                inputs.append(torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], dim=1)
                              if layer.bias is not None else h)
                z = h @ layer.weight.detach().T
                if layer.bias is not None:
                    z = z + layer.bias.detach()
                pre_acts.append(z)
                h = spec["after"](z)
            outputs = member.outputs(member.theta, X)
            root = member.output_hessian_roots(outputs, y).to(X.dtype)
            g = root.transpose(1, 2)  # (n, C, K): column c of the root, per sample
            pseudo = [None] * len(self.linears)
            for i in range(len(self.linears) - 1, -1, -1):
                pseudo[i] = g
                if i:
                    g = g @ self.linears[i]["layer"].weight.detach()
                    after = self.linears[i - 1]["after"]
                    g = g * _derivative(after, pre_acts[i - 1])[:, None, :]
        return inputs, pseudo

    def _factors(self, dtype):
        if dtype not in self._cast:
            self._cast[dtype] = [{key: value.to(dtype) for key, value in f.items()}
                                 for f in self.factors]
        return self._cast[dtype]

    def solve(self, vectors):
        """``(G_kfac + (damping + weight decay) I)^{-1} v`` for rows of ``vectors`` (n, P).

        In the vectors' dtype: float32 gradients of a float32 net are rotated
        and scaled in float32 (the eigen-decompositions themselves are float64).
        """
        if vectors.dtype not in (torch.float32, torch.float64):
            vectors = vectors.double()
        out = torch.empty_like(vectors)
        shift = self.damping + self.member.weight_decay
        for spec, f in zip(self.linears, self._factors(vectors.dtype)):
            w0, w1 = spec["weight"]
            out_dim, in_dim = spec["layer"].weight.shape
            block = vectors[:, w0:w1].reshape(-1, out_dim, in_dim)
            if spec["bias"] is not None:
                b0, b1 = spec["bias"]
                block = torch.cat([block, vectors[:, b0:b1, None]], dim=2)
            rotated = _sandwich(f["q_g"].T, block, f["q_a"])
            denom = f["eig"] + shift
            if shift == 0:
                safe = denom > denom.max() * 1e-12
                rotated = torch.where(safe, rotated / torch.where(safe, denom, 1), 0)
            else:
                rotated = rotated / denom
            block = _sandwich(f["q_g"], rotated, f["q_a"].T)
            out[:, w0:w1] = block[:, :, :in_dim].reshape(len(vectors), -1)
            if spec["bias"] is not None:
                out[:, b0:b1] = block[:, :, in_dim]
        return out


def _sandwich(left, blocks, right):
    """``left @ B @ right`` for every matrix B of ``blocks`` (n, o, i), as two 2-D
    products (a broadcast batched product of small float64 matrices is ~10x slower)."""
    n, o, i = blocks.shape
    out = (blocks.reshape(n * o, i) @ right).reshape(n, o, -1)
    k = out.shape[2]
    out = left @ out.transpose(0, 1).reshape(o, n * k)
    return out.reshape(-1, n, k).transpose(0, 1)


def _derivative(act, z):
    """Derivative of an elementwise activation (chain) at its input ``z``."""
    with torch.enable_grad():
        z = z.detach().requires_grad_()
        (d,) = torch.autograd.grad(act(z).sum(), z)
    return d
