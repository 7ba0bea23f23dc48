"""scikit-learn's own models as ensemble members and as attribution targets.

A seed ensemble of ``MLPClassifier``, ``MLPRegressor``, ``SGDClassifier`` or
``SGDRegressor`` trains clones of the user's estimator, each with its own
``random_state``, with scikit-learn's own ``fit``. ``LogisticRegression``,
``Ridge`` and ``LinearRegression`` fit deterministically (one optimum): their
ensemble has one member, and distributional and classical attribution
coincide.

For attribution each fitted member becomes the torch function it computes
(:func:`torch_member`): its layers as ``nn.Linear`` modules holding
``coefs_``/``intercepts_`` (or ``coef_``/``intercept_``), its activation, its
training loss as the criterion, and its L2 regulariser as an
:class:`~skdtda.model.L2Penalty` written exactly as
scikit-learn trains it (weights penalised, intercepts not). It is wrapped in
an initialised (never trained) skorch net, so that measurements, curvature
and gradients treat it like any skorch member.
"""

import numpy as np
import torch
from sklearn.linear_model import (LinearRegression, LogisticRegression, Ridge, SGDClassifier,
                                  SGDRegressor)
from sklearn.neural_network import MLPClassifier, MLPRegressor
from skorch import NeuralNetClassifier, NeuralNetRegressor
from torch import nn

from ..model import L2Penalty, TrainingRecipe, is_deterministic

__all__ = ["CLASSIFIERS", "REGRESSORS", "check_model", "is_sklearn_model", "torch_member"]

#: scikit-learn classifiers and regressors a seed ensemble takes as members.
CLASSIFIERS = (MLPClassifier, SGDClassifier, LogisticRegression)
REGRESSORS = (MLPRegressor, SGDRegressor, Ridge, LinearRegression)

_SGD_PROBA_LOSSES = ("log_loss", "modified_huber")
_SGD_REGRESSION_LOSSES = ("squared_error", "huber")


def is_sklearn_model(estimator):
    return isinstance(estimator, CLASSIFIERS + REGRESSORS)


def check_model(estimator, vary):
    """Refuse ensemble settings a scikit-learn model cannot honour, saying why."""
    name = type(estimator).__name__
    if not is_deterministic(estimator) and vary != "both":
        raise ValueError(
            f"vary={vary!r} cannot be honoured for {name}: scikit-learn draws its "
            "initialisation and its shuffling from one random_state, so one of them cannot "
            "be held fixed while the other varies; use vary='both' (each member gets its own "
            "random_state)")
    if isinstance(estimator, SGDClassifier) and estimator.loss not in _SGD_PROBA_LOSSES:
        raise ValueError(
            f"SGDClassifier(loss={estimator.loss!r}) has no predict_proba, which the "
            f"ensemble averages over members; use loss='log_loss' or 'modified_huber'")


def fit_member(estimator, X, y, key=None):
    """Fit one clone (``key`` stands for the arguments when ``memory=`` caches it)."""
    return estimator.fit(X, y)


def check_fitted_member(member):
    """The reason a fitted member is unusable (non-finite weights or loss), or None."""
    weights = getattr(member, "coefs_", None) or [getattr(member, "coef_", np.zeros(1))]
    biases = getattr(member, "intercepts_", None) or [
        np.atleast_1d(getattr(member, "intercept_", 0.0))]
    if not all(np.isfinite(w).all() for w in weights + biases):
        return "its weights are no longer finite"
    loss = getattr(member, "loss_", None)
    if loss is not None and not np.isfinite(loss):
        return f"its training loss became {loss}"
    return None


# -- the torch function of a fitted member ---------------------------------------------
_ACTIVATIONS = {"identity": nn.Identity, "logistic": nn.Sigmoid, "tanh": nn.Tanh,
                "relu": nn.ReLU}


class SklearnModule(nn.Module):
    """The function a fitted scikit-learn MLP or linear model computes, before its link.

    ``Linear -> activation -> ... -> Linear``, with scikit-learn's ``(in, out)``
    weight matrices transposed into ``nn.Linear``. With ``binary_logit``, the
    single output ``z`` of a binary logistic model becomes the logits
    ``[0, z]``: their softmax is ``[1 - sigmoid(z), sigmoid(z)]`` and their
    cross-entropy the binary log-loss, so binary and multiclass models share
    one criterion.

    Parameters
    ----------
    weights : list of arrays of shape (in, out)
    biases : list of arrays of shape (out,) or None (no intercept)
    activation : {"identity", "logistic", "tanh", "relu"}
        Between layers, as scikit-learn's ``activation``.
    binary_logit : bool
    """

    def __init__(self, weights, biases, activation="identity", binary_logit=False):
        super().__init__()
        layers = []
        for w, b in zip(weights, biases):
            layer = nn.Linear(w.shape[0], w.shape[1], bias=b is not None, dtype=torch.float64)
            with torch.no_grad():
                layer.weight.copy_(torch.as_tensor(np.asarray(w, dtype=np.float64).T))
                if b is not None:
                    layer.bias.copy_(torch.as_tensor(np.asarray(b, dtype=np.float64)))
            layers.append(layer)
        self.layers = nn.ModuleList(layers)
        self.activation = _ACTIVATIONS[activation]()
        self.binary_logit = binary_logit

    def forward(self, X):
        h = X
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.activation(h)
        if self.binary_logit:
            h = torch.cat([torch.zeros_like(h), h], dim=1)
        return h


class HalfSquaredError(nn.Module):
    """``(y_pred - y)^2 / 2``: scikit-learn's squared loss (MLPRegressor, SGDRegressor)."""

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, y_pred, y_true):
        loss = 0.5 * (y_pred - y_true) ** 2
        return loss.mean() if self.reduction == "mean" else loss


class MarginLoss(nn.Module):
    """An SGDClassifier's loss on its decision values, summed over its one-vs-rest classes.

    ``z`` has one column per binary problem (one for a binary model, K for K
    classes); the target of column k is +1 for class k and -1 otherwise (the
    binary model's column is class 1). ``log_loss`` is ``log(1 + exp(-y z))``,
    ``modified_huber`` ``max(0, 1 - y z)^2`` for ``y z >= -1`` and ``-4 y z``
    below. :meth:`log_proba` follows scikit-learn's ``predict_proba``.
    """

    def __init__(self, loss="log_loss", reduction="mean"):
        super().__init__()
        self.loss = loss
        self.reduction = reduction

    def _signed(self, z, y_true):
        y = y_true.long().reshape(-1)
        if z.shape[1] == 1:
            return z[:, 0:1] * (2 * y - 1).to(z.dtype)[:, None]
        onehot = (y[:, None] == torch.arange(z.shape[1], device=z.device)).to(z.dtype)
        return z * (2 * onehot - 1)

    def forward(self, z, y_true):
        m = self._signed(z, y_true)
        if self.loss == "log_loss":
            per = torch.nn.functional.softplus(-m)
        else:
            per = torch.where(m >= -1, torch.clamp(1 - m, min=0) ** 2, -4 * m)
        loss = per.sum(dim=1)
        return loss.mean() if self.reduction == "mean" else loss

    def proba(self, z):
        if self.loss == "log_loss":
            p = torch.sigmoid(z)
        else:
            p = (torch.clamp(z, -1, 1) + 1) / 2
        if z.shape[1] == 1:
            return torch.cat([1 - p, p], dim=1)
        total = p.sum(dim=1, keepdim=True)
        if self.loss == "modified_huber":  # scikit-learn: all-zero rows are uniform
            zero = total == 0
            p = torch.where(zero, torch.ones_like(p), p)
            total = torch.where(zero, torch.full_like(total, p.shape[1]), total)
        return p / total

    def log_proba(self, z):
        if self.loss == "log_loss":
            log_p = torch.nn.functional.logsigmoid(z)
            if z.shape[1] == 1:
                return torch.cat([torch.nn.functional.logsigmoid(-z), log_p], dim=1)
            return log_p - torch.logsumexp(log_p, dim=1, keepdim=True)
        proba = self.proba(z)
        return torch.log(proba.clamp_min(torch.finfo(proba.dtype).tiny))


class _Proba:
    """Picklable predict nonlinearity of a MarginLoss net."""

    def __init__(self, criterion):
        self.criterion = criterion

    def __call__(self, z):
        return self.criterion.proba(z)


def _layers(member):
    if hasattr(member, "coefs_"):
        weights = list(member.coefs_)
        biases = list(member.intercepts_)
        return weights, biases, member.activation
    coef = np.atleast_2d(member.coef_)
    intercept = np.atleast_1d(member.intercept_) if member.fit_intercept else None
    return [coef.T], [intercept], "identity"


def _logistic_penalty(member):
    """The L2 coefficient of ``|w|^2 / 2`` per ``C``, or None when unpenalised."""
    penalty = member.penalty
    if penalty == "deprecated":
        if member.C == np.inf:
            return None
        l1_ratio = member.l1_ratio
        penalty = "l2" if l1_ratio in (0, None) else "elasticnet"
    if penalty in (None, "none"):
        return None
    if penalty != "l2":
        raise ValueError(
            f"LogisticRegression with an L1 term (penalty={penalty!r}, l1_ratio="
            f"{member.l1_ratio}) has no curvature at zero weights, so influence functions "
            "do not apply; use the L2 penalty (l1_ratio=0)")
    return 1.0


def _sgd_alpha(member):
    penalty = member.penalty
    if penalty is None:
        return 0.0
    if penalty == "l2" or (penalty == "elasticnet" and member.l1_ratio == 0):
        return float(member.alpha)
    raise ValueError(
        f"{type(member).__name__}(penalty={penalty!r}) has an L1 term, which has no "
        "curvature at zero weights, so influence functions do not apply; use penalty='l2'")


def _refuse_unsupported_fit(member):
    name = type(member).__name__
    if getattr(member, "early_stopping", False):
        raise ValueError(
            f"{name}(early_stopping=True) holds out a validation split, so the members "
            "train on fewer rows than they are attributed; use early_stopping=False")
    if getattr(member, "class_weight", None) is not None:
        raise ValueError(f"{name}(class_weight=...) weights the losses per class, which "
                         "influence does not model; use class_weight=None")


def torch_member(member, n_train, classifier):
    """An initialised skorch net computing ``member``'s function, loss and penalty.

    Parameters
    ----------
    member : fitted scikit-learn estimator of ``CLASSIFIERS`` or ``REGRESSORS``
        Fitted on class indices (classifiers), as the ensemble fits them.
    n_train : int
        Training rows N (the penalties that scikit-learn divides by N).
    classifier : bool

    Returns
    -------
    net : skorch.NeuralNetClassifier or NeuralNetRegressor
        Its ``module_`` holds the member's weights (float64), its
        ``criterion_`` the member's per-row training loss, and its
        ``l2_penalty_`` the member's regulariser.
    """
    _refuse_unsupported_fit(member)
    weights, biases, activation = _layers(member)
    names = [f"layers.{i}.weight" for i in range(len(weights))]
    predict_nonlinearity = "auto"
    binary_logit = False
    if isinstance(member, (MLPClassifier, MLPRegressor)):
        # alpha / (2 B) |W|^2 on the mean loss of a batch of B rows (for the regressor,
        # (1/2) squared error, a mean over rows and outputs); B = N for lbfgs
        batch = TrainingRecipe.read(member, n_train).batch_size
        penalty = L2Penalty({n: member.alpha / batch for n in names},
                            normalised=batch == n_train)
    if isinstance(member, MLPClassifier):
        if member.out_activation_ not in ("softmax", "logistic") or member.n_outputs_ != (
                1 if len(member.classes_) == 2 else len(member.classes_)):
            raise ValueError("a multilabel MLPClassifier is not supported")
        binary_logit = member.out_activation_ == "logistic"
        criterion = nn.CrossEntropyLoss()
    elif isinstance(member, MLPRegressor):
        if member.loss != "squared_error":
            raise ValueError(f"MLPRegressor(loss={member.loss!r}) is not supported; use "
                             "loss='squared_error'")
        criterion = HalfSquaredError()
    elif isinstance(member, LogisticRegression):
        binary_logit = len(member.classes_) == 2
        criterion = nn.CrossEntropyLoss()
        per_c = _logistic_penalty(member)
        coefficients = {}
        if per_c is not None:
            # C sum loss + |w|^2 / 2 = C N (mean loss + |w|^2 / (2 C N))
            coefficients[names[0]] = 1.0 / (member.C * n_train)
            if member.solver == "liblinear" and member.fit_intercept:
                # liblinear penalises the intercept as a feature of value intercept_scaling
                coefficients["layers.0.bias"] = 1.0 / (
                    member.C * n_train * member.intercept_scaling ** 2)
        penalty = L2Penalty(coefficients, normalised=True)
    elif isinstance(member, SGDClassifier):
        criterion = MarginLoss(member.loss)
        predict_nonlinearity = _Proba(criterion)
        penalty = L2Penalty({names[0]: _sgd_alpha(member)}, normalised=False)
    elif isinstance(member, SGDRegressor):
        if member.loss not in _SGD_REGRESSION_LOSSES:
            raise ValueError(f"SGDRegressor(loss={member.loss!r}) is not supported; use one "
                             f"of {list(_SGD_REGRESSION_LOSSES)}")
        criterion = (HalfSquaredError() if member.loss == "squared_error"
                     else nn.HuberLoss(delta=member.epsilon))
        penalty = L2Penalty({names[0]: _sgd_alpha(member)}, normalised=False)
    elif isinstance(member, (Ridge, LinearRegression)):
        criterion = HalfSquaredError()
        coefficients = {}
        if isinstance(member, Ridge):
            # sum_n |y_n - f_n|^2 + alpha |w|^2 = 2 N K (mean_n (1/2) mean_k r^2
            #   + alpha |w|^2 / (2 N K)), K targets; alpha may be one per target
            n_targets = weights[0].shape[1]
            alpha = np.broadcast_to(np.asarray(member.alpha, dtype=np.float64), (n_targets,))
            coefficients[names[0]] = alpha[:, None] / (n_train * n_targets)
        penalty = L2Penalty(coefficients, normalised=True)
    else:  # pragma: no cover - guarded by is_sklearn_model
        raise TypeError(type(member).__name__)
    module = SklearnModule(weights, biases, activation, binary_logit=binary_logit)
    net_class = NeuralNetClassifier if classifier else NeuralNetRegressor
    net = net_class(module, criterion=criterion, train_split=None,
                    predict_nonlinearity=predict_nonlinearity, verbose=0)
    net.initialize()
    net.module_.eval()
    net.l2_penalty_ = penalty
    return net
