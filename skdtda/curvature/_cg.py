"""Matrix-free (GGN + damping I)^{-1} v by conjugate gradients.

For models too large to store a dense curvature: each solve runs CG on
``(G + (damping + weight decay) I) x = v`` with exact Gauss-Newton-vector
products ``G v = mean_n J_n^T H_n J_n v``, batched over all right-hand sides.
``J v`` comes from reverse over reverse (the transpose of the linear map
``u -> J^T u``), not forward-mode AD, which torch lacks for some ops
(``nn.MultiheadAttention``'s fused kernel, ``nn.EmbeddingBag``).
The GGN is positive semi-definite, so CG converges for any positive damping.
"""

import warnings

import torch
from sklearn.exceptions import ConvergenceWarning
from torch.func import vjp, vmap

from .._inputs import n_rows
from .._loops import chunks
from ..exceptions import unsupported_ops
from ._base import FlatCurvature

__all__ = ["CGCurvature"]


class CGCurvature(FlatCurvature):
    """Conjugate-gradient inverse of the damped GGN for one member.

    The damping enters only the solves: :meth:`with_damping` is a number.

    Parameters
    ----------
    member : FunctionalMember
    X, y : arrays
        Training rows and their net targets.
    damping : float
        Must be positive (CG needs a positive-definite system).
    maxiter : int, default=100
        Iterations per solve.
    tol : float, default=1e-6
        Stop when every residual norm is below ``tol`` times its right-hand side's.
    chunk : int, default=1024
        Training rows per product pass.
    """

    newton_sets = True
    options = ("maxiter", "tol", "chunk")

    def __init__(self, member, X, y, damping, maxiter=100, tol=1e-6, chunk=1024):
        self.member, self.maxiter, self.tol, self.chunk = member, maxiter, tol, chunk
        self._damp(damping)
        X, y = member.tensors(X, y)
        self.chunks = []
        for rows in chunks(n_rows(X), chunk):
            Xc, yc = X[rows], y[rows]
            with torch.no_grad():
                outputs = member.outputs(member.theta, Xc)
            self.chunks.append((Xc, member.output_hessians(outputs, yc).to(member.dtype)))
        self.n = n_rows(X)
        self.n_iter_ = 0

    @classmethod
    def fit(cls, name, member, X, y, damping, **options):
        """Conjugate gradients on the member's GGN (``name="cg"``); ``options`` are
        ``maxiter``, ``tol`` and ``chunk``."""
        return cls(member, X, y, damping, **options)

    def _damp(self, damping):
        self.damping = damping
        self.shift = damping + self.member.weight_decay
        if self.shift <= 0 and not _penalised_everywhere(self.member):
            raise ValueError("curvature='cg' needs damping > 0 (or weight decay): the GGN of "
                             "a net is singular")

    def ggn_product(self, V):
        """``G v`` for each row of ``V`` (m, P), float64."""
        member = self.member
        V = V.to(member.dtype)
        total = torch.zeros(V.shape, dtype=torch.float64, device=V.device)
        for Xc, h_out in self.chunks:
            def f(theta):
                return member.outputs(theta, Xc).reshape(n_rows(Xc), -1)

            with unsupported_ops("curvature='cg'"):
                out, pullback = vjp(f, member.theta)
                # J v: the pullback u -> J^T u is linear; its own pullback is J
                _, push = vjp(lambda u: pullback(u)[0], torch.zeros_like(out))
                jv = vmap(lambda v: push(v)[0])(V)  # (m, n, K)
                hjv = torch.einsum("nkl,mnl->mnk", h_out, jv)
                total += vmap(lambda u: pullback(u)[0])(hjv).detach().double()
        return total / self.n

    def mean_eigenvalue(self, probes=16):
        """``trace / P`` of the GGN with weight decay and penalty, without the damping:
        a Hutchinson estimate from ``probes`` Rademacher products (fixed seed)."""
        member = self.member
        generator = torch.Generator().manual_seed(0)
        signs = torch.randint(0, 2, (probes, member.n_params), generator=generator)
        V = (2 * signs - 1).double().to(member.theta.device)
        trace = float((V * self.ggn_product(V)).sum()) / probes
        if member.penalty is not None:
            trace += float(member.penalty.double().sum())
        return trace / member.n_params + member.weight_decay

    def with_damping(self, damping):
        """The same GGN products with another damping (it enters only the solves)."""
        other = self._copy()
        other._damp(damping)
        return other

    def kept(self, X, y, keeps):
        """CG: a solver over the kept rows of each set."""
        for keep in keeps:
            yield CGCurvature(self.member.with_penalty_scaled(len(keep) / int(keep.sum())),
                              X[keep], y[keep], self.damping, maxiter=self.maxiter,
                              tol=self.tol, chunk=self.chunk)

    def solve(self, vectors):
        """``(G + shift I)^{-1} v`` for each row of ``vectors`` (m, P), by batched CG."""
        b = vectors.double()
        x = torch.zeros_like(b)
        r = b.clone()
        p = r.clone()
        rs = (r * r).sum(dim=1)
        norm_b = rs.clamp_min(torch.finfo(torch.float64).tiny)
        target = (self.tol ** 2) * rs
        for iteration in range(self.maxiter):
            if bool((rs <= target).all()):
                break
            Ap = self.ggn_product(p) + self.shift * p
            if self.member.penalty is not None:
                Ap += self.member.penalty * p
            alpha = rs / (p * Ap).sum(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
            x += alpha[:, None] * p
            r -= alpha[:, None] * Ap
            rs_new = (r * r).sum(dim=1)
            p = r + (rs_new / rs.clamp_min(torch.finfo(torch.float64).tiny))[:, None] * p
            rs = rs_new
        self.n_iter_ = iteration + 1 if self.maxiter else 0
        if bool((rs > target).any()):
            worst = float((rs / norm_b).max().sqrt())
            warnings.warn(
                f"curvature='cg' stopped after maxiter={self.maxiter} iterations with a "
                f"relative residual up to {worst:.2g} (tol={self.tol}); raise "
                "curvature_options={'maxiter': ...} or the damping",
                ConvergenceWarning, stacklevel=3)
        return x


def _penalised_everywhere(member):
    return member.penalty is not None and bool((member.penalty > 0).all())
