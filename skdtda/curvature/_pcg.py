"""EK-FAC refined by a few conjugate-gradient steps on the exact GGN (``curvature="pcg"``).

EK-FAC agrees with the exact Gauss-Newton only loosely on small nets (its
Kronecker and block-diagonal approximations; docs/benchmarks.md). Preconditioned
conjugate gradients solve ``(G + (damping + weight decay) I + D) x = v``
exactly, given enough steps, with the exact GGN-vector products of
:class:`~skdtda.curvature.CGCurvature` and the fitted EK-FAC of the same member
(its :meth:`~KroneckerCurvature.solve_blocks`, at the same damping) as the
preconditioner ``M``. Each step costs one GGN-vector product per right-hand
side (a forward and two backward passes over the training rows, per query);
``maxiter`` steps interpolate between EK-FAC and the exact GGN.

The parameters are EK-FAC's: the supported layers of a
:class:`~skdtda.model.LayeredMember` (the GGN products are taken with respect
to them, every other parameter held fixed), and the vectors are in its
per-layer block layout. So the preconditioner matches the system, and the
scores are comparable with EK-FAC's.

One step from ``x = 0`` is EK-FAC's solution times a number per right-hand side
(``x_1 = (r^T z / z^T A z) z``, ``z = M^{-1} v``): it cannot change how a query
ranks the training rows. Two or more steps can.
"""

import numbers

import torch

from ._base import Curvature
from ._cg import CGCurvature, _penalised_everywhere
from ._kfac import KroneckerCurvature

__all__ = ["PCGCurvature"]

_TINY = torch.finfo(torch.float64).tiny


class PCGCurvature(Curvature):
    """Preconditioned CG on the exact GGN, EK-FAC as the preconditioner, for one member.

    The damping enters only the solves, of the system and of the preconditioner
    alike: :meth:`with_damping` is a number.

    Parameters
    ----------
    member : LayeredMember
    X, y : arrays
        Training rows and their net targets.
    damping : float
        Must be positive (or the member's weight decay or penalty must be): the
        GGN of a net is singular.
    maxiter : int, default=5
        CG steps per solve, each one GGN-vector product per right-hand side. No
        warning when they run out: truncation is the approximation.
    tol : float, default=0.0
        Stop earlier once every residual norm is below ``tol`` times its
        right-hand side's (0: always ``maxiter`` steps).
    samples : "auto", int or None, default="auto"
        The EK-FAC preconditioner's output-Hessian columns (see
        :class:`KroneckerCurvature`).
    chunk : int, default=1024
        Training rows per GGN product pass.

    Attributes
    ----------
    n_iter_ : int
        Steps taken by the last solve.
    residual_ : float or None
        The largest relative residual norm after the last solve.
    """

    layered = True
    newton_sets = True
    options = ("maxiter", "tol", "samples", "chunk")

    def __init__(self, member, X, y, damping, maxiter=5, tol=0.0, samples="auto", chunk=1024):
        _check_options(maxiter, tol, chunk)
        _check_damping(member, damping)
        self.member, self.maxiter, self.tol = member, maxiter, tol
        self.samples, self.chunk = samples, chunk
        # the exact GGN products over the layered member's parameters (its flat theta)
        self.ggn = CGCurvature(member, X, y, damping, maxiter=maxiter, tol=tol, chunk=chunk)
        self.preconditioner = KroneckerCurvature(member, X, y, damping, corrected=True,
                                                 samples=samples)
        self.damping = damping
        self._index = _block_index(member)
        self.n_iter_, self.residual_ = 0, None

    @classmethod
    def fit(cls, name, member, X, y, damping, **options):
        """EK-FAC-preconditioned CG on the member's exact GGN (``name="pcg"``); ``options``
        are ``maxiter``, ``tol``, ``samples`` and ``chunk``."""
        return cls(member, X, y, damping, **options)

    def mean_eigenvalue(self):
        """``trace / P`` of the GGN with the weight decay and penalty, without the damping:
        EK-FAC's, whose refitted eigenvalues are the exact GGN's diagonal in its eigenbases
        and so sum to the exact trace (unbiased with sampled columns)."""
        return self.preconditioner.mean_eigenvalue()

    def with_damping(self, damping):
        """The same products and preconditioner factors with another damping."""
        _check_damping(self.member, damping)
        return self._copy(damping=damping, ggn=self.ggn.with_damping(damping),
                          preconditioner=self.preconditioner.with_damping(damping))

    def kept(self, X, y, keeps):
        """PCG over the kept rows of each set: both the GGN products and the EK-FAC
        preconditioner refitted to them."""
        for keep in keeps:
            member = self.member.with_penalty_scaled(len(keep) / int(keep.sum()))
            yield PCGCurvature(member, X[keep], y[keep], self.damping, maxiter=self.maxiter,
                               tol=self.tol, samples=self.samples, chunk=self.chunk)

    # -- layouts ----------------------------------------------------------------------------
    def _to_flat(self, blocks):
        """Per-layer blocks ``[(n, out, in)]`` to ``(n, P)`` float64 in ``member.names`` order."""
        n = len(blocks[0])
        flat = torch.zeros(n, self.member.n_params, dtype=torch.float64,
                           device=blocks[0].device)
        for block, (where, index) in zip(blocks, self._index):
            flat[:, index] = block.reshape(n, -1)[:, where].double()
        return flat

    def _to_blocks(self, flat, like):
        """``(n, P)`` to per-layer blocks shaped as ``like``, in ``like``'s dtype."""
        out = []
        for block, (where, index) in zip(like, self._index):
            solved = torch.zeros(block.shape, dtype=torch.float64, device=flat.device)
            solved.reshape(len(flat), -1)[:, where] = flat[:, index]
            out.append(solved.to(block.dtype))
        return out

    def _precondition(self, flat, like):
        return self._to_flat(self.preconditioner.solve_blocks(self._to_blocks(flat, like)))

    # -- solving ----------------------------------------------------------------------------
    def solve_blocks(self, blocks):
        """``(G + (damping + weight decay) I + D)^{-1} v`` for per-layer blocks
        ``[(n, out, in)]``: ``maxiter`` steps of preconditioned CG from 0, batched over
        the rows, in float64 (returned in the blocks' dtype)."""
        b = self._to_flat(blocks)
        x = torch.zeros_like(b)
        r = b.clone()
        z = self._precondition(r, blocks)
        p = z.clone()
        rz = (r * z).sum(dim=1)
        norm_b = (b * b).sum(dim=1).clamp_min(_TINY)
        target = (self.tol ** 2) * norm_b
        steps = 0
        for steps in range(1, self.maxiter + 1):
            Ap = self._product(p)
            alpha = rz / (p * Ap).sum(dim=1).clamp_min(_TINY)
            x += alpha[:, None] * p
            r -= alpha[:, None] * Ap
            rs = (r * r).sum(dim=1)
            if self.tol > 0 and bool((rs <= target).all()):
                break
            if steps == self.maxiter:
                break
            z = self._precondition(r, blocks)
            rz_new = (r * z).sum(dim=1)
            p = z + (rz_new / rz.clamp_min(_TINY))[:, None] * p
            rz = rz_new
        self.n_iter_ = steps
        self.residual_ = float(((r * r).sum(dim=1) / norm_b).max().sqrt()) if steps else 1.0
        return self._to_blocks(x, blocks)

    def _product(self, p):
        """``(G + shift I + D) p`` for rows ``p`` (m, P), float64."""
        out = self.ggn.ggn_product(p) + self.ggn.shift * p
        if self.member.penalty is not None:
            out += self.member.penalty * p
        return out


def _block_index(member):
    """Per layer, where in its ``(out, in)`` block each attributed parameter sits: the
    positions of the flattened block that hold a parameter, and their indices in the
    member's flat ``theta`` (``member.to_blocks`` of ``1..P``; 0 marks none)."""
    numbered = torch.arange(1, member.n_params + 1, dtype=torch.float64,
                            device=member.theta.device)
    out = []
    for block in member.to_blocks(numbered):
        flat = block.reshape(-1)
        where = torch.nonzero(flat > 0).reshape(-1)
        out.append((where, flat[where].long() - 1))
    return out


def _check_damping(member, damping):
    if not damping + member.weight_decay > 0 and not _penalised_everywhere(member):
        raise ValueError(f"curvature='pcg' needs damping > 0 (or weight decay), got "
                         f"damping={damping!r}: the GGN of a net is singular and CG needs a "
                         "positive-definite system")


def _check_options(maxiter, tol, chunk):
    if isinstance(maxiter, bool) or not isinstance(maxiter, numbers.Integral) or maxiter < 1:
        raise ValueError(f"curvature='pcg' takes maxiter, an int >= 1 (CG steps), got "
                         f"{maxiter!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 <= tol < 1:
        raise ValueError(f"curvature='pcg' takes tol, a number in [0, 1), got {tol!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk < 1:
        raise ValueError(f"curvature='pcg' takes chunk, an int >= 1 (rows per pass), got "
                         f"{chunk!r}")
