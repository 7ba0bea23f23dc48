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

``1 / tau`` has a floor, kronfluence's rule: a tenth of the curvature's mean
eigenvalue (:func:`eigenvalue_floor`, applied once the curvature is fitted).
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
import torch

__all__ = ["EIGENVALUE_FRACTION", "FALLBACK", "SPREAD_FACTOR", "SPREAD_STATISTICS",
           "auto_damping", "damping_factor", "eigenvalue_floor", "training_time"]

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


def damping_factor(statistic):
    """The multiple of ``damping="auto"``'s value that ``statistic`` takes."""
    return SPREAD_FACTOR if isinstance(statistic, str) and statistic in SPREAD_STATISTICS \
        else 1.0


def _skorch_time(net, n_train):
    from ..ensemble._batched import train_steps_per_epoch

    optimizer = getattr(net, "optimizer_", None)
    if optimizer is None or len(optimizer.param_groups) != 1:
        return None, "the net has no single optimizer parameter group"
    group = optimizer.param_groups[0]
    steps = len(net.history) * train_steps_per_epoch(net, n_train)[1]
    if steps == 0:
        return None, "the net records no optimizer step"
    lr = float(group["lr"])
    if isinstance(optimizer, torch.optim.SGD):
        rate = lr * (1 - group.get("dampening", 0.0)) / (1 - group.get("momentum", 0.0))
        return steps * rate, f"SGD, {steps} steps at an effective rate {rate:.3g}"
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        beta2, eps = group["betas"][1], group["eps"]
        rates = []
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if "exp_avg_sq" not in state:
                return None, "the Adam optimizer holds no second moments"
            step = float(state["step"])
            v_hat = state["exp_avg_sq"].double() / (1 - beta2 ** step)
            rates.append((lr / (v_hat.sqrt() + eps)).reshape(-1))
        rate = float(torch.cat(rates).median())
        name = type(optimizer).__name__
        return steps * rate, f"{name}, {steps} steps at a median rate {rate:.3g}"
    return None, f"optimizer {type(optimizer).__name__} (SGD, Adam and AdamW are known)"


def _sklearn_mlp_time(member, n_train):
    from ..ensemble._sklearn import mlp_batch

    if member.solver == "lbfgs":
        return np.inf, "lbfgs, run to convergence"
    per_epoch = -(-n_train // mlp_batch(member, n_train))
    opt = member._optimizer
    if member.solver == "adam":
        steps = int(opt.t)
        v_hat = np.concatenate([np.ravel(v) for v in opt.vs]) / (1 - opt.beta_2 ** steps)
        rate = float(np.median(opt.learning_rate_init / (np.sqrt(v_hat) + opt.epsilon)))
        return steps * rate, f"Adam, {steps} steps at a median rate {rate:.3g}"
    momentum = member.momentum
    n_epochs = member.n_iter_
    if member.learning_rate == "invscaling":
        # the rate is set once an epoch from the samples seen before it
        seen = np.arange(n_epochs) * n_train
        rates = member.learning_rate_init / (seen + 1.0) ** member.power_t
        rates[0] = member.learning_rate_init
        total = float(per_epoch * rates.sum())
    else:  # constant, or adaptive at its initial rate (an upper bound)
        total = per_epoch * n_epochs * member.learning_rate_init
    return total / (1 - momentum), f"SGD, {per_epoch * n_epochs} steps"


def _sgd_optimal_t0(member):
    """scikit-learn's ``optimal_init`` (``_sgd_fast``): ``1 / (eta0 * alpha)`` with
    ``eta0 = typw / max(1, |dloss(1, -typw)|)``, ``typw = alpha^(-1/4)``."""
    alpha = member.alpha
    typw = np.sqrt(1.0 / np.sqrt(alpha))
    loss = member.loss
    if loss == "log_loss":
        slope = typw / (np.exp(-typw) + 1)
    elif loss == "modified_huber":
        slope = 2 * typw * (1 + typw) if typw <= 1 else 4 * typw
    elif loss == "huber":
        slope = min(1 + typw, member.epsilon)
    else:  # squared error
        slope = 1 + typw
    return 1.0 / (typw / max(1.0, slope) * alpha)


def _sklearn_sgd_time(member):
    steps = int(member.t_) - 1
    schedule = member.learning_rate
    if schedule == "optimal":
        from scipy.special import digamma

        t0 = _sgd_optimal_t0(member)
        # sum_{t=1}^{T} 1 / (alpha (t0 + t - 1))
        total = (digamma(t0 + steps) - digamma(t0)) / member.alpha
    elif schedule == "invscaling":
        t = np.arange(1, steps + 1, dtype=np.float64)
        total = float((member.eta0 / t ** member.power_t).sum())
    else:  # constant, or adaptive at its initial rate (an upper bound)
        total = steps * member.eta0
    return float(total), f"SGD ({schedule}), {steps} updates"


def training_time(member, n_train):
    """``(tau, how)``: the summed effective learning rate of a fitted member's
    training, ``np.inf`` for a solver run to convergence, or ``(None, why not)``."""
    from sklearn.linear_model import SGDClassifier, SGDRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    from ..ensemble._sklearn import is_deterministic

    if isinstance(member, (MLPClassifier, MLPRegressor)):
        return _sklearn_mlp_time(member, n_train)
    if isinstance(member, (SGDClassifier, SGDRegressor)):
        return _sklearn_sgd_time(member)
    if is_deterministic(member):
        return np.inf, f"{type(member).__name__}, solved to convergence"
    return _skorch_time(member, n_train)


def auto_damping(members, torch_members, n_train):
    """``(damping, how, floored)`` for ``damping="auto"``: ``1 / tau`` over the
    attributed members (the median of their training times; ``floored``: the
    :func:`eigenvalue_floor` applies once the curvature is fitted), 0 for a
    converged penalised fit, :data:`FALLBACK` where training says nothing."""
    times, how = [], None
    for member in members:
        tau, how = training_time(member, n_train)
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
    means = [c.mean_eigenvalue() for c in curvatures if hasattr(c, "mean_eigenvalue")]
    if not means:
        return None
    return EIGENVALUE_FRACTION * float(np.mean(means))
