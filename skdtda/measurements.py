"""Per-sample measurements m(theta) of a trained net.

A measurement maps a net and a query set to one number per query sample: its
loss, its margin, the log-probability of a class, a regression output. The
seed ensembles evaluate it under every member, which gives the distribution of
the measurement over training seeds; attribution methods differentiate it.

Each named measurement is a torch function ``(net, y_pred, y_true) -> tensor of
shape (n_samples,)`` of the module's raw output ``y_pred``, so it can be both
evaluated and differentiated. A user-supplied callable works on the numpy
level instead: ``(net, X, y) -> array of shape (n_samples,)``.
"""

import copy

import torch

__all__ = ["MEASUREMENTS", "get_measurement", "log_proba_from_output"]


def log_proba_from_output(net, y_pred):
    """Log-probabilities of a skorch classifier from its module's raw output.

    Follows skorch's own reading of the output: logits for
    ``CrossEntropyLoss``, probabilities for ``NLLLoss`` (with skorch's ``eps``
    guard), the criterion's own ``log_proba`` where it has one (the one-vs-rest
    losses of scikit-learn's ``SGDClassifier``), otherwise the net's predict
    nonlinearity.
    """
    criterion = net.criterion_
    if isinstance(criterion, torch.nn.CrossEntropyLoss):
        return torch.log_softmax(y_pred, dim=-1)
    if hasattr(criterion, "log_proba"):  # a criterion that knows its model's link
        return criterion.log_proba(y_pred)
    if isinstance(criterion, torch.nn.NLLLoss):
        return torch.log(y_pred + torch.finfo(y_pred.dtype).eps)
    proba = net._get_predict_nonlinearity()(y_pred)
    return torch.log(proba.clamp_min(torch.finfo(proba.dtype).tiny))


def _gather(values, y_true):
    return values.gather(-1, y_true.long().reshape(-1, 1)).reshape(-1)


def _loss(net, y_pred, y_true):
    criterion = net.criterion_
    if not hasattr(criterion, "reduction"):
        raise ValueError(
            f"measurement='loss' needs a criterion with a 'reduction' argument, "
            f"got {type(criterion).__name__}; pass a callable measurement instead"
        )
    # A shallow copy: the net's own criterion keeps its reduction.
    per_sample = copy.copy(criterion)
    per_sample.reduction = "none"
    if isinstance(criterion, torch.nn.NLLLoss):
        y_pred = torch.log(y_pred + torch.finfo(y_pred.dtype).eps)
    loss = per_sample(y_pred, y_true)
    return loss.reshape(loss.shape[0], -1).mean(dim=1)


def _log_proba(net, y_pred, y_true):
    return _gather(log_proba_from_output(net, y_pred), y_true)


def _proba(net, y_pred, y_true):
    return torch.exp(_log_proba(net, y_pred, y_true))


def _margin(net, y_pred, y_true):
    log_proba = log_proba_from_output(net, y_pred)
    correct = _gather(log_proba, y_true)
    others = log_proba.scatter(-1, y_true.long().reshape(-1, 1), float("-inf"))
    return correct - others.max(dim=-1).values


def _prediction(net, y_pred, y_true):
    if y_pred.ndim > 1 and y_pred.reshape(y_pred.shape[0], -1).shape[1] != 1:
        raise ValueError(
            "measurement='prediction' needs a single-output regressor, got "
            f"{y_pred.reshape(y_pred.shape[0], -1).shape[1]} outputs; pass a "
            "callable measurement to pick one"
        )
    return y_pred.reshape(-1)


#: Named measurements and whether each applies to classifiers and regressors.
MEASUREMENTS = {
    "loss": (_loss, {"classifier", "regressor"}),
    "margin": (_margin, {"classifier"}),
    "log_proba": (_log_proba, {"classifier"}),
    "proba": (_proba, {"classifier"}),
    "prediction": (_prediction, {"regressor"}),
}


def get_measurement(measurement, kind):
    """The torch function of a named measurement, checked against ``kind``.

    Parameters
    ----------
    measurement : str
        One of ``MEASUREMENTS``.
    kind : {"classifier", "regressor"}
        The kind of estimator that will be measured.

    Returns
    -------
    fn : callable
        ``fn(net, y_pred, y_true) -> tensor of shape (n_samples,)``.
    """
    if measurement not in MEASUREMENTS:
        raise ValueError(
            f"measurement={measurement!r} is not one of {sorted(MEASUREMENTS)} "
            "or a callable (net, X, y) -> array of shape (n_samples,)"
        )
    fn, kinds = MEASUREMENTS[measurement]
    if kind not in kinds:
        usable = sorted(name for name, (_, k) in MEASUREMENTS.items() if kind in k)
        raise ValueError(
            f"measurement={measurement!r} does not apply to a {kind}; "
            f"use one of {usable}"
        )
    return fn
