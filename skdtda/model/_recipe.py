"""What each member's training was, read once from a skorch net or a scikit-learn model.

Several parts of skdtda ask the same questions of a member's training: how many
rows a step draws and in which order, how many steps an epoch takes, which
optimizer at which effective learning rate. ``damping="auto"`` sums the
effective learning rates (:meth:`TrainingRecipe.training_time`),
``retraining="auto"`` reads the batch size (:meth:`TrainingRecipe.retraining`),
and the batched trainer and the unrolled replay draw the batches
(:meth:`TrainingRecipe.batch_slices`, :meth:`TrainingRecipe.epoch_order`).
:class:`TrainingRecipe` answers them for skorch nets, scikit-learn's MLPs and
SGD models, and the models scikit-learn solves to convergence alike.
"""

import numpy as np
import torch
from sklearn.linear_model import (LinearRegression, LogisticRegression, Ridge, SGDClassifier,
                                  SGDRegressor)
from sklearn.neural_network import MLPClassifier, MLPRegressor

from .._loops import chunks

__all__ = ["DETERMINISTIC", "TrainingRecipe", "batch_order", "is_deterministic"]

#: scikit-learn models whose fit has one optimum whatever the seed.
DETERMINISTIC = (LogisticRegression, Ridge, LinearRegression)


def is_deterministic(estimator):
    """Whether ``estimator`` is a model that scikit-learn solves to one optimum."""
    return isinstance(estimator, DETERMINISTIC)


def batch_order(generator, n_samples, shuffle):
    """One epoch's sample order, drawn as skorch's ``DataLoader`` draws it.

    Each pass over a ``DataLoader`` first draws a base seed from its generator;
    ``RandomSampler`` then draws a permutation, and a second one for its
    (empty) remainder when ``num_samples == n``. The same draws here leave the
    generator in the state the loop leaves it in.
    """
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    if not shuffle:
        return torch.arange(n_samples)
    order = torch.randperm(n_samples, generator=generator)
    torch.randperm(n_samples, generator=generator)
    return order


class TrainingRecipe:
    """How one member was (or will be) trained on ``n_train`` rows.

    Read with :meth:`read` from a skorch net (initialised or fitted) or a
    fitted scikit-learn model.

    Attributes
    ----------
    estimator : skorch.NeuralNet or scikit-learn estimator
        The member it was read from.
    n_train : int
        Training rows N.
    source : {"skorch", "mlp", "sgd", "converged"} or None
        A skorch net, scikit-learn's ``MLPClassifier``/``MLPRegressor``, its
        ``SGDClassifier``/``SGDRegressor``, a model it solves to convergence
        (:data:`DETERMINISTIC`); None where no recipe is known.
    batch_size : int or None
        Rows per optimizer step as the training iterator takes them (a skorch
        ``batch_size`` of -1 and full-batch solvers give ``n_train``; 1 for
        scikit-learn's SGD models).
    steps_per_epoch : int or None
        Optimizer steps per pass over the rows (``drop_last`` honoured).
    shuffle, drop_last : bool
        The skorch training iterator's settings (False elsewhere).
    generator : torch.Generator or None
        The generator a skorch net draws its batch order from.
    max_epochs : int or None
        The epochs a skorch net trains for.
    """

    def __init__(self, estimator, n_train, source, batch_size=None, steps_per_epoch=None,
                 shuffle=False, drop_last=False, generator=None, max_epochs=None):
        self.estimator, self.n_train, self.source = estimator, n_train, source
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.shuffle, self.drop_last = shuffle, drop_last
        self.generator, self.max_epochs = generator, max_epochs

    @classmethod
    def read(cls, estimator, n_train):
        """The recipe of ``estimator`` on ``n_train`` rows."""
        if isinstance(estimator, (MLPClassifier, MLPRegressor)):
            batch = _mlp_batch(estimator, n_train)
            return cls(estimator, n_train, "mlp", batch, -(-n_train // batch))
        if isinstance(estimator, (SGDClassifier, SGDRegressor)):
            return cls(estimator, n_train, "sgd", 1, n_train)
        if is_deterministic(estimator):
            return cls(estimator, n_train, "converged", n_train, 1)
        if hasattr(estimator, "get_params_for") and hasattr(estimator, "batch_size"):
            kwargs = estimator.get_params_for("iterator_train")
            batch_size = kwargs.get("batch_size", estimator.batch_size)
            batch_size = n_train if batch_size == -1 else int(batch_size)
            drop_last = bool(kwargs.get("drop_last", False))
            steps = n_train // batch_size if drop_last else -(-n_train // batch_size)
            return cls(estimator, n_train, "skorch", batch_size, steps,
                       shuffle=bool(kwargs.get("shuffle", False)), drop_last=drop_last,
                       generator=kwargs.get("generator"), max_epochs=estimator.max_epochs)
        return cls(estimator, n_train, None)

    @property
    def rows_per_step(self):
        """Rows one step takes (at most ``n_train``), or None where unknown."""
        return None if self.batch_size is None else min(self.batch_size, self.n_train)

    def batch_slices(self):
        """The positions in an epoch's order of each step's rows, as slices."""
        stop = self.n_train - self.n_train % self.batch_size if self.drop_last else self.n_train
        return list(chunks(stop, self.batch_size))

    def epoch_order(self, generator):
        """One epoch's sample order drawn from ``generator`` (:func:`batch_order`)."""
        return batch_order(generator, self.n_train, self.shuffle)

    def retraining(self):
        """``(protocol, how)``: the retraining that removing rows is predicted as
        (``"same_epochs"`` for minibatches, ``"same_steps"`` for full batches and
        solvers run to convergence), or ``(None, why not)``."""
        name = type(self.estimator).__name__
        if self.source == "mlp" and self.estimator.solver == "lbfgs":
            return "same_steps", "lbfgs: full-batch"
        if self.source == "sgd":
            return "same_epochs", f"{name}: one step per row"
        if self.source == "converged":
            return "same_steps", f"{name}: solved to convergence"
        if self.source is None:
            return None, f"{name}: no known training recipe"
        if self.rows_per_step >= self.n_train:
            return "same_steps", f"full-batch ({self.n_train} rows a step)"
        return ("same_epochs", f"minibatches of {self.rows_per_step} rows: an epoch's steps "
                "grow with the rows")

    def training_time(self):
        """``(tau, how)``: the summed effective learning rate of the training,
        ``np.inf`` for a solver run to convergence, or ``(None, why not)``.

        * SGD with momentum ``beta`` and dampening ``d``: slow directions move at
          the effective rate ``eta (1 - d) / (1 - beta)``;
        * Adam/AdamW: parameter ``i`` moves at ``eta / (sqrt(v_i) + eps)`` (``v``
          the bias-corrected second moment the fitted optimizer holds); the
          median over parameters;
        * scikit-learn's schedules (``invscaling``, SGDClassifier's ``optimal``)
          are summed step by step.
        """
        if self.source == "mlp":
            return self._mlp_time()
        if self.source == "sgd":
            return self._sgd_time()
        if self.source == "converged":
            return np.inf, f"{type(self.estimator).__name__}, solved to convergence"
        return self._skorch_time()

    def _skorch_time(self):
        net = self.estimator
        optimizer = getattr(net, "optimizer_", None)
        if optimizer is None or len(optimizer.param_groups) != 1:
            return None, "the net has no single optimizer parameter group"
        group = optimizer.param_groups[0]
        steps = len(net.history) * self.steps_per_epoch
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

    def _mlp_time(self):
        member, n_train = self.estimator, self.n_train
        if member.solver == "lbfgs":
            return np.inf, "lbfgs, run to convergence"
        per_epoch = self.steps_per_epoch
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

    def _sgd_time(self):
        member = self.estimator
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


def _mlp_batch(member, n_train):
    """The rows per step of a scikit-learn MLP's solver (N for lbfgs, full batch)."""
    if member.solver == "lbfgs":
        return n_train
    if member.batch_size == "auto":
        return min(200, n_train)
    return int(np.clip(member.batch_size, 1, n_train))


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
