"""The interface every inverse-curvature backend implements.

A backend is fitted to one member and its training rows (``fit_curvature``
builds it by name) and then solves ``(H + damping I)^{-1} v`` for gradients
in the member's layout, with ``H`` the curvature of the member's **mean**
training objective (mean loss plus its L2 terms). Backends factor lazily, at
the first solve (or :meth:`Curvature.factorise`): choosing the damping after
fitting, from :meth:`Curvature.mean_eigenvalue` (``damping="auto"``'s floor), is
:meth:`Curvature.with_damping` and costs no refactorisation.

``correction="newton"`` needs the curvature of the kept rows (:meth:`kept`),
and for single rows the curvature rescaled to ``N - 1`` rows (:meth:`rescaled`)
with each row's own term (:meth:`row_factors`); see :mod:`skdtda.curvature._newton`.
A backend that cannot says so in words.
"""

import copy
from abc import ABC, abstractmethod

__all__ = ["Curvature", "FlatCurvature"]


class Curvature(ABC):
    """``(H + damping I)^{-1}`` of one member's training objective.

    Subclasses implement :meth:`solve_blocks`, :meth:`mean_eigenvalue` and
    :meth:`with_damping`; the rest have defaults. The class attributes say
    what the backend can do, so that callers need not probe it.

    Attributes
    ----------
    member : FunctionalMember
        The member it was fitted to (None for a dense matrix given as is).
    damping : float
        Added to every eigenvalue of ``H``.
    options : tuple of str
        The ``curvature_options`` it takes.
    layered : bool
        Whether it works on a :class:`~skdtda.model.LayeredMember` (one block
        per layer) rather than a :class:`~skdtda.model.FlatMember` (one block).
    newton_sets : bool
        Whether :meth:`kept` refits it to the kept rows of a removal set.
    newton_rows : bool
        Whether :meth:`rescaled` and :meth:`row_factors` give the single-row
        Newton correction (a low-rank update per row).
    kronecker : bool
        Whether it is Kronecker-factored (K-FAC, EK-FAC): ``damping="auto"`` takes
        a smaller multiple of the damping for it.
    cheap_self_products : bool
        Whether :meth:`self_products` costs less than solving each row (an
        eigenbasis where the inverse is a division): self-influence then asks
        it rather than a precomputed store.
    subspace : int or None
        Set where the inverse lives on each layer's leading Kronecker directions
        (K-FAC and EK-FAC with ``curvature_options={"subspace": k}``): gradients are
        then scored in those directions, through ``project_rows``,
        ``solve_projected`` and ``bases``, never rotated back. None elsewhere.
    """

    member = None
    options = ()
    layered = False
    kronecker = False
    newton_sets = False
    newton_rows = False
    cheap_self_products = False
    subspace = None

    @abstractmethod
    def solve_blocks(self, blocks):
        """``(H + damping I)^{-1}`` applied to gradient blocks.

        Parameters
        ----------
        blocks : list of tensor
            Vectors in the member's layout, a leading axis of ``n`` rows each:
            one ``(n, P)`` block for a flat member, one ``(n, out, in)`` block per
            layer for a layered one.

        Returns
        -------
        solved : list of tensor
            The same layout.
        """

    def solve_rows(self, fn_name, X, y):
        """:meth:`solve_blocks` of the member's per-row gradients of ``fn_name``
        (``"loss"`` or ``"measurement"``) on the rows ``X, y``."""
        return self.solve_blocks(self.member.grads(fn_name, X, y))

    @abstractmethod
    def mean_eigenvalue(self):
        """``trace(H) / P``, the L2 terms included and the damping not, or None
        where the backend stands for no curvature (the identity)."""

    @abstractmethod
    def with_damping(self, damping):
        """The same curvature with another damping, as a new solver.

        It shares what does not depend on the damping (factors, Jacobians,
        eigendecompositions), so it costs a number for the Kronecker-factored
        and conjugate-gradient backends, and, for the dense and kernel forms, a
        solve through one eigendecomposition that all its copies share
        (computed at the first solve that needs it).
        """

    def solve_dampings(self, blocks, dampings):
        """:meth:`solve_blocks` of ``blocks`` at each of several dampings, as cheaply as
        the backend allows (a calibration scores many): a list, one solution per
        damping. This default solves through :meth:`with_damping` copies."""
        return [self.with_damping(damping).solve_blocks(blocks) for damping in dampings]

    def bilinear_dampings(self, left, right, dampings):
        """``left^T (H + d I)^{-1} right`` at each damping ``d`` (a calibration scores
        many): a list of ``(n_left, n_right)`` float64 tensors, one per damping.

        ``left`` is a list of blocks in the member's layout (as for
        :meth:`solve_blocks`), ``right`` the same blocks flattened per row, float64
        (a list of ``(n_right, block size)``). This default solves ``left`` through
        :meth:`solve_dampings` and takes the products; the dense and kernel forms
        reduce their matrix once to tridiagonal form and rotate both sides instead
        (no ``(n, P)`` solve per damping).

        Parameters
        ----------
        left : list of tensor
            Blocks of ``n_left`` rows in the member's layout.
        right : list of tensor
            The same blocks for ``n_right`` rows, each flattened to
            ``(n_right, block size)``, float64.
        dampings : sequence of float

        Returns
        -------
        forms : list of tensor of shape (n_left, n_right)
            float64, one per damping.

        Examples
        --------
        >>> import torch
        >>> from skdtda.curvature import EigenCurvature
        >>> H = torch.diag(torch.tensor([1.0, 3.0], dtype=torch.float64))
        >>> curvature = EigenCurvature(H, damping=1.0)
        >>> left = [torch.tensor([[1.0, 1.0]], dtype=torch.float64)]
        >>> right = [torch.tensor([[2.0, 0.0], [0.0, 4.0]], dtype=torch.float64)]
        >>> for form in curvature.bilinear_dampings(left, right, [1.0, 3.0]):
        ...     print(form.round(decimals=4).tolist())  # [2 / (1 + d), 4 / (3 + d)]
        [[1.0, 1.0]]
        [[0.5, 0.6667]]
        """
        return [sum(s.double().reshape(len(s), -1) @ r.T for s, r in zip(solved, right))
                for solved in self.solve_dampings(left, dampings)]

    def set_damping(self, damping):
        """Re-damp in place: this solver becomes :meth:`with_damping` of ``damping``."""
        vars(self).update(vars(self.with_damping(damping)))

    def factorise(self):
        """Factor now what the first solve would factor (nothing, for backends
        whose fit does all the work)."""

    def _copy(self, **changes):
        """A shallow copy with some attributes replaced (for :meth:`with_damping`)."""
        other = copy.copy(self)
        vars(other).update(changes)
        return other

    def kept(self, X, y, keeps):
        """For each set of kept rows, this backend refitted to their curvature
        ``H_keep`` (``correction="newton"``; see :mod:`skdtda.curvature._newton`).

        Parameters
        ----------
        X, y : arrays
            All training rows and their net targets.
        keeps : iterable of ndarray of bool of shape (n_train,)
            The kept rows of each set (at least one row removed).

        Yields
        ------
        solver : Curvature
            A solver of ``H_keep`` with the same damping, one per set.
        """
        raise ValueError(f"correction='newton' cannot refit {type(self).__name__} to the kept "
                         "rows of a removal set")

    def rescaled(self, n_train, n_removed=1):
        """``H~ = (N/N') (H_data + D_n) + D_f + damping I`` for ``N' = N - n_removed``:
        the curvature of all rows rescaled to the kept count, before each row's own
        term is taken out (single-row ``correction="newton"``)."""
        raise ValueError(f"the single-row Newton correction cannot rescale a "
                         f"{type(self).__name__}")

    def self_products(self, X, y, centre):
        """``grad m_k^T (H + damping I)^{-1} (g_k - c)`` for every row ``k`` of
        ``X, y`` (``m`` the measurement, ``g`` the loss, ``c`` the centre blocks):
        ``(n,)`` float64, each row scored against itself (self-influence, times
        N). By default the measurement gradients are solved (:meth:`solve_rows`)
        and multiplied with the loss gradients."""
        solved = self.solve_rows("measurement", X, y)
        grads = self.member.grads("loss", X, y)
        total = None
        for v, g, c in zip(solved, grads, centre):
            g = g.reshape(len(g), -1).double() - c.reshape(1, -1).double()
            part = (v.reshape(len(v), -1).double() * g).sum(dim=1)
            total = part if total is None else total + part
        return total

    def row_factors(self, X, y):
        """Each row's own curvature term as ``U_k S_k U_k^T``: ``U`` (n, r, P)
        float64 and the signs ``S`` (n, r)."""
        raise ValueError(f"{type(self).__name__} has no per-row curvature terms")

    def row_width(self, X):
        """Vectors of P numbers held per training row while :meth:`row_factors`'
        terms are taken out (sizes the chunks of training rows)."""
        raise ValueError(f"{type(self).__name__} has no per-row curvature terms")


class FlatCurvature(Curvature):
    """A backend over one flat ``(n, P)`` block: it implements :meth:`solve`."""

    @abstractmethod
    def solve(self, vectors):
        """``(H + damping I)^{-1} v`` for each row ``v`` of ``vectors`` (n, P), float64."""

    def solve_blocks(self, blocks):
        """:meth:`solve` of the one ``(n, P)`` block, as a list of one block."""
        (flat,) = blocks
        return [self.solve(flat)]
