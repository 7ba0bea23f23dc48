"""The registry of supported layer kinds, where the curvature backends use it.

Its home is :mod:`skdtda.model.layers`, below every backend: the layered form
of a member (:class:`~skdtda.model.LayeredMember`) is built from it. This
module keeps the names importable from here.
"""

from ..model.layers import (KINDS, DensePatches, LayerKind, LayerSpec, OneHotPatches,
                            find_layers, gram)

__all__ = ["DensePatches", "KINDS", "LayerKind", "LayerSpec", "OneHotPatches", "find_layers",
           "gram"]
