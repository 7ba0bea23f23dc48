"""``damping="auto"``: the damping that finite training implies.

T steps of gradient descent with learning rates ``eta_t`` on the mean training
loss respond along a curvature eigendirection ``h`` as
``(1 - prod_t (1 - eta_t h)) / h`` instead of the influence function's
``1 / h`` (Bae et al. 2024; the paper's Theorem 2: unrolled differentiation
reaches the influence function only as T grows). With the training time
``tau = sum_t eta_t`` that filter is ``tau`` for ``h << 1 / tau`` and ``1 / h``
for ``h >> 1 / tau``, the two limits of ``1 / (h + 1 / tau)``. So the damping
that a run's own training implies is ``1 / tau``:

* SGD with momentum ``beta`` and dampening ``d``: slow directions move at the
  effective rate ``eta (1 - d) / (1 - beta)``; ``tau = T eta (1 - d) / (1 - beta)``.
* Adam/AdamW: parameter ``i`` moves at ``eta / (sqrt(v_i) + eps)`` (``v`` the
  bias-corrected second moment the fitted optimizer holds); ``tau`` takes the
  median over parameters.
* scikit-learn's schedules (``invscaling``, SGDClassifier's ``optimal``) are
  summed step by step.

Full-batch solvers run to convergence (lbfgs, liblinear, closed forms) are
the ``tau -> infinity`` limit: no damping where the objective's own L2 term
keeps the curvature positive definite, else the fixed fallback.

``1 / tau`` has a floor, kronfluence's rule: the fraction
:data:`EIGENVALUE_FRACTION` of the curvature's mean eigenvalue
(:func:`eigenvalue_floor`, applied once the curvature is fitted; the backends
factor at their first solve, so the floor costs no refactorisation).
Long Adam training takes large steps once its second moments have shrunk, so
``1 / tau`` can fall far below the curvature's own scale; there the floor
decides. Measured against retraining in docs/benchmarks.md ("Damping").

Statistics of the spread (``"variance"``, ``"std"``) take :data:`SPREAD_FACTOR`
times that damping. Their change over seeds is quadratic in the per-seed
responses (``var(m + delta) - var(m) = 2 cov(m, delta) + var(delta)``), so the
seed-to-seed noise of the weakly curved directions, which the damping bounds,
enters them squared where the mean sees it averaged away. Measured against
retraining, variance-LDS peaks at 1.5-10x the damping that is best for the mean
and leave-one-out (docs/benchmarks.md).
"""

import logging

import numpy as np

from ..curvature import KRONECKER
from ..model import TrainingRecipe

__all__ = ["AutoDamping", "EIGENVALUE_FRACTION", "FALLBACK", "KRONECKER_FACTOR",
           "KRONECKER_SPREAD_FACTOR", "SPREAD_FACTOR", "SPREAD_STATISTICS", "auto_damping",
           "curvature_factor", "damping_factor", "eigenvalue_floor"]

logger = logging.getLogger("skdtda")

#: Damping where training says nothing (an unknown optimizer, an unpenalised fit
#: run to convergence): the former default.
FALLBACK = 1e-3

#: The floor of ``1 / tau``: this fraction of the curvature's mean eigenvalue
#: (kronfluence's default damping).
EIGENVALUE_FRACTION = 0.1

#: Statistics of the spread over seeds, and the multiple of the damping they take:
#: chosen on three recipes (diabetes SGD and Adam, digits SGD: variance-LDS within
#: 0.02 of the best fixed damping on each at 3x, against -0.09 to 0.00 at 1x), then
#: tested on six others (docs/benchmarks.md, "Damping").
SPREAD_STATISTICS = ("variance", "std")
SPREAD_FACTOR = 3.0

#: The Kronecker-factored curvatures (K-FAC, EK-FAC) take this multiple of the damping
#: that training implies, and their statistics of the spread :data:`KRONECKER_SPREAD_FACTOR`
#: times that. Chosen on 2026-12-06 (08:30 UTC) on the ten choice recipes of
#: benchmarks/recipes.py with EK-FAC forced (LOO, mean- and variance-LDS within 0.03 of
#: the best fixed damping on 28 of 30 scores, against 18 with the dense factors), before
#: the held-out recipes were scored (docs/benchmarks.md, "A damping rule that transfers").
#: EK-FAC's eigenvalues are the exact curvature's diagonal in the Kronecker eigenbases,
#: which the Schur-Horn theorem squeezes towards their mean: its weakly curved
#: directions are already lifted, so they need less damping than the exact curvature's.
KRONECKER_FACTOR = 1 / 30
KRONECKER_SPREAD_FACTOR = 10.0


def damping_factor(statistic):
    """The multiple of ``damping="auto"``'s value that ``statistic`` takes (dense
    curvatures)."""
    return SPREAD_FACTOR if isinstance(statistic, str) and statistic in SPREAD_STATISTICS \
        else 1.0


def curvature_factor(curvature, statistic):
    """The multiple of the damping that training implies (``max(1 / tau, floor)``)
    taken by the curvature ``curvature`` for the statistic ``statistic``: 1 (the
    exact forms, location), :data:`SPREAD_FACTOR` (their spread),
    :data:`KRONECKER_FACTOR` (K-FAC/EK-FAC, location) and
    :data:`KRONECKER_SPREAD_FACTOR` times that (their spread)."""
    spread = isinstance(statistic, str) and statistic in SPREAD_STATISTICS
    if curvature in KRONECKER:
        return KRONECKER_FACTOR * (KRONECKER_SPREAD_FACTOR if spread else 1.0)
    return SPREAD_FACTOR if spread else 1.0


def auto_damping(members, torch_members, n_train):
    """``(damping, how, floored)`` for ``damping="auto"``: ``1 / tau`` over the
    attributed members (the median of their training times; ``floored``: the
    :func:`eigenvalue_floor` applies once the curvature is fitted), 0 for a
    converged penalised fit, :data:`FALLBACK` where training says nothing."""
    times, how = [], None
    for member in members:
        tau, how = TrainingRecipe.read(member, n_train).training_time()
        if tau is None:
            logger.info("damping='auto': %s; using %g", how, FALLBACK)
            return FALLBACK, f"fallback ({how})", False
        times.append(tau)
    tau = float(np.median(times))
    if np.isinf(tau):
        penalty = getattr(torch_members[0], "l2_penalty_", None)
        penalised = penalty is not None and any(
            np.all(np.asarray(c) > 0) for c in penalty.coefficients.values())
        if penalised:
            return 0.0, f"{how}: no damping (its L2 term keeps the curvature definite)", False
        return FALLBACK, f"{how}, unpenalised: fallback", False
    return 1.0 / tau, f"1 / tau, tau = {tau:.4g} ({how})", True


def eigenvalue_floor(curvatures):
    """:data:`EIGENVALUE_FRACTION` of the fitted curvatures' mean eigenvalue
    (``trace / P``, averaged over members; regularisation included, damping not),
    or None where no backend has one (the identity)."""
    means = [m for m in (c.mean_eigenvalue() for c in curvatures) if m is not None]
    if not means:
        return None
    return EIGENVALUE_FRACTION * float(np.mean(means))


class AutoDamping:
    """``damping="auto"`` for one fit: ``1 / tau`` (or what stands for it), raised to
    the eigenvalue floor once the curvature is fitted, times the factor of the
    curvature and the statistic (:func:`curvature_factor`).

    Parameters
    ----------
    members : list
        The attributed fitted members (skorch nets or scikit-learn models).
    nets : list of skorch.NeuralNet
        The same members as nets (a scikit-learn model's carries its L2 penalty).
    n_train : int
    statistic : str or callable
        ``statistic=`` of the estimator (the spread's statistics take more damping).
    curvature : str
        ``curvature=`` of the estimator (CG needs a positive damping).

    Attributes
    ----------
    inverse_tau : float
        ``1 / tau``, or 0 or :data:`FALLBACK` where it stands for it.
    floored : bool
        Whether ``1 / tau`` was read from training: then the eigenvalue floor and the
        Kronecker factor apply to it.
    value : float
        A provisional damping before the curvature is resolved and fitted:
        ``inverse_tau`` times the statistic's factor for a dense curvature.
    """

    def __init__(self, members, nets, n_train, statistic, curvature):
        self.inverse_tau, self.how, self.floored = auto_damping(members, nets, n_train)
        if self.inverse_tau == 0 and curvature in ("cg", "pcg"):
            # CG needs a positive shift on every parameter (intercepts are unpenalised)
            self.inverse_tau, self.how = FALLBACK, f"{self.how}; CG needs a positive damping"
        self.statistic = statistic
        self.value = self.inverse_tau * curvature_factor("ggn", statistic)

    def training_value(self, curvatures):
        """``max(1 / tau, floor)`` (or what stands for it) once the curvatures are fitted,
        before the curvature's and the statistic's factor."""
        if not self.floored:
            return self.inverse_tau
        floor = eigenvalue_floor(curvatures)
        if floor is None or not floor > self.inverse_tau:
            return self.inverse_tau
        logger.info("damping='auto': 1 / tau = %.4g lies below %g x the curvature's mean "
                    "eigenvalue; using %.4g", self.inverse_tau, EIGENVALUE_FRACTION, floor)
        return floor

    def factor(self, curvature, statistic=None):
        """The multiple of :meth:`training_value` that ``curvature`` takes for
        ``statistic`` (the estimator's, by default); the Kronecker factor applies
        only to a damping read from training, not to the fallback."""
        statistic = self.statistic if statistic is None else statistic
        factor = curvature_factor(curvature, statistic)
        if curvature in KRONECKER and not self.floored:
            factor /= KRONECKER_FACTOR
        return factor

    def with_floor(self, curvatures, curvature):
        """The damping once the curvatures of kind ``curvature`` are fitted."""
        damping = self.training_value(curvatures) * self.factor(curvature)
        logger.info("damping='auto' chose %.4g: %s; x %.3g for curvature=%r and "
                    "statistic=%r", damping, self.how, self.factor(curvature), curvature,
                    self.statistic if isinstance(self.statistic, str) else "callable")
        return damping
