"""The L2 terms of a member's training objective: a parameter-wise penalty, and
its optimizer's weight decay."""

import torch

__all__ = ["L2Penalty", "decoupled_decay", "optimizer_weight_decay"]


class L2Penalty:
    """A parameter-wise L2 term of a member's training objective.

    The curvature of the objective gains ``diag(coefficients)``: the
    objective, written as the *mean* training loss plus penalty, holds
    ``sum_p coefficients[p] / 2 * theta_p^2``. scikit-learn's models carry
    such terms (on weights, not on intercepts); a skorch net's uniform
    optimizer weight decay is read separately (:func:`optimizer_weight_decay`).

    Parameters
    ----------
    coefficients : dict
        ``{parameter name: coefficient}``, a float or an array broadcastable
        to the parameter's shape; parameters not named carry none.
    normalised : bool
        Whether the penalty is divided by the number of training rows N with
        the losses (``C * sum loss + |w|^2 / 2`` as scikit-learn's
        ``LogisticRegression`` trains, or ``alpha |w|^2 / (2 N)`` as its
        full-batch ``MLPClassifier``): then removing rows scales it by
        ``N / N_kept``, and the full objective's gradient (not only the
        losses') is what vanishes at the optimum. False: a fixed term
        (optimizer weight decay, ``SGDClassifier``'s ``alpha``).
    """

    def __init__(self, coefficients, normalised):
        self.coefficients = dict(coefficients)
        self.normalised = bool(normalised)


def optimizer_weight_decay(net):
    """The L2 coefficient the net's optimizer adds to every gradient (0 if none).

    SGD's and Adam's ``weight_decay`` add ``wd * theta`` to the gradient, i.e.
    train on ``loss + wd/2 |theta|^2``, whose Hessian is the loss Hessian plus
    ``wd * I``. AdamW's decoupled decay is read by :func:`decoupled_decay`
    where its optimizer holds second moments; this uniform value stands for it
    only where it does not (an approximation: its fixed point is not that of a
    uniform L2 penalty).
    """
    params = net.get_params_for("optimizer")
    if "param_groups" in params:
        raise ValueError("influence with optimizer__param_groups is not supported")
    optimizer = getattr(net, "optimizer_", None)
    if optimizer is not None:
        # the optimizer's own value: AdamW decays by 0.01 unless told otherwise
        return float(optimizer.param_groups[0].get("weight_decay", 0.0))
    return float(params.get("weight_decay", 0.0))


def decoupled_decay(net):
    """AdamW's decoupled weight decay as the parameter-wise L2 term its fixed point
    implies: ``{parameter name: wd * (sqrt(v_hat) + eps)}`` (a tensor of the
    parameter's shape; 0 for a parameter the optimizer does not hold), or None where
    the net's optimizer is not AdamW with a positive decay, has more than one
    parameter group, or holds no second moments.

    AdamW steps ``theta <- theta (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps)``: its
    decay is not preconditioned by the second moments, its gradient step is. Written
    as a preconditioned step on one objective, the decay is the gradient of
    ``sum_i wd (sqrt(v_hat_i) + eps) theta_i^2 / 2``, and at the fixed point the loss
    gradient is ``-wd (sqrt(v_hat) + eps) theta``, not ``-wd theta``. With
    ``sqrt(v_hat)`` far below 1 late in training, reading the decay as a uniform
    ``wd`` overstates the curvature's L2 term and the decay lost with a removed row's
    steps (``retraining="same_epochs"``) by the same factor (measured in
    docs/benchmarks.md, "Third round": Wasserstein-LDS 0.16 -> 0.67 on a held-out
    AdamW recipe).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skorch import NeuralNetRegressor
    >>> from skdtda.model import decoupled_decay
    >>> X = np.random.RandomState(0).randn(32, 3).astype(np.float32)
    >>> y = X.sum(1, keepdims=True)
    >>> net = NeuralNetRegressor(torch.nn.Linear, module__in_features=3, module__out_features=1,
    ...                          optimizer=torch.optim.AdamW, optimizer__weight_decay=0.1,
    ...                          lr=0.05, max_epochs=300, train_split=None, verbose=0).fit(X, y)
    >>> decay = decoupled_decay(net)
    >>> sorted(decay), tuple(decay["weight"].shape)
    (['bias', 'weight'], (1, 3))
    >>> bool((decay["weight"] < 0.1).all())  # trained: below the uniform reading, wd = 0.1
    True
    >>> adam = NeuralNetRegressor(torch.nn.Linear, module__in_features=3,
    ...                           module__out_features=1, optimizer=torch.optim.Adam,
    ...                           max_epochs=2, train_split=None, verbose=0).fit(X, y)
    >>> decoupled_decay(adam) is None  # not AdamW: the uniform weight decay stands
    True
    """
    optimizer = getattr(net, "optimizer_", None)
    if not isinstance(optimizer, torch.optim.AdamW) or len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    wd = float(group.get("weight_decay", 0.0))
    if not wd > 0:
        return None
    beta2, eps = group["betas"][1], group["eps"]
    in_group = {id(p) for p in group["params"]}
    out = {}
    for name, p in net.module_.named_parameters():
        if id(p) not in in_group:
            out[name] = 0.0  # not decayed
            continue
        state = optimizer.state.get(p, {})
        second = state.get("max_exp_avg_sq" if group.get("amsgrad") else "exp_avg_sq")
        if second is None or "step" not in state or not float(state["step"]) > 0:
            return None
        v_hat = second.detach().double().cpu() / (1 - beta2 ** float(state["step"]))
        out[name] = wd * (v_hat.sqrt() + eps)
    return out
