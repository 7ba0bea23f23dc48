"""Inverse-curvature backends: solve (H + damping I)^{-1} g per ensemble member.

- ``"auto"``: the exact GGN where it is cheap, else EK-FAC (from every column of the
  output-Hessian root where that is cheap: :func:`auto_options`), see
  :func:`resolve_curvature`;
- ``"exact"``: the Hessian of the mean training loss (dense, small models);
- ``"ggn"``: the exact generalised Gauss-Newton (positive semi-definite): a dense
  ``(P, P)`` matrix, or its kernel (Woodbury) form on an ``(N (K-1), N (K-1))``
  matrix when the training rows times outputs are fewer than the parameters
  (:func:`fit_curvature`, :class:`KernelCurvature`);
- ``"kfac"`` / ``"ekfac"``: Kronecker-factored GGN and its eigenvalue-corrected form
  over every supported layer (Linear, Conv1d/2d, Embedding/Bag) wherever it
  sits in the module, the other parameters held fixed;
- ``"cg"``: conjugate gradients with exact GGN-vector products (matrix-free);
- ``"pcg"``: EK-FAC refined by a few conjugate-gradient steps on the exact GGN of the
  same layers (EK-FAC as the preconditioner);
- ``"identity"``: H = I, a gradient dot product.
"""

from ._base import Curvature, FlatCurvature
from ._cg import CGCurvature
from ._dense import EigenCurvature
from ._fit import (AUTO_ALL_COLUMNS, AUTO_COLUMN_MACS, AUTO_MAX_MACS, AUTO_MAX_PARAMS, BACKENDS,
                   CURVATURES, KRONECKER, LAYERED, NEWTON_ROWS, NEWTON_SETS, auto_options,
                   fit_curvature, resolve_curvature, solve_blocks, solve_grads)
from ._identity import IdentityCurvature
from ._kernel import KernelCurvature
from ._kfac import DIAGONAL_INPUT_ABOVE, KroneckerCurvature
from ._newton import woodbury_solve
from ._pcg import PCGCurvature
from ._terms import dense_ggn, dense_hessian

__all__ = ["AUTO_ALL_COLUMNS", "AUTO_COLUMN_MACS", "AUTO_MAX_MACS", "AUTO_MAX_PARAMS", "BACKENDS",
           "CGCurvature", "CURVATURES", "Curvature", "DIAGONAL_INPUT_ABOVE", "EigenCurvature",
           "FlatCurvature", "IdentityCurvature", "KRONECKER", "KernelCurvature",
           "KroneckerCurvature", "LAYERED", "NEWTON_ROWS", "NEWTON_SETS", "PCGCurvature",
           "auto_options", "dense_ggn", "dense_hessian", "fit_curvature", "resolve_curvature",
           "solve_blocks", "solve_grads", "woodbury_solve"]
