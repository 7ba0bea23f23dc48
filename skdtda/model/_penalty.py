"""The L2 terms of a member's training objective: a parameter-wise penalty, and
its optimizer's weight decay."""

__all__ = ["L2Penalty", "optimizer_weight_decay"]


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
    ``wd * I``. AdamW's decoupled decay is treated the same way, an
    approximation (its fixed point is not that of an L2 penalty).
    """
    params = net.get_params_for("optimizer")
    if "param_groups" in params:
        raise ValueError("influence with optimizer__param_groups is not supported")
    optimizer = getattr(net, "optimizer_", None)
    if optimizer is not None:
        # the optimizer's own value: AdamW decays by 0.01 unless told otherwise
        return float(optimizer.param_groups[0].get("weight_decay", 0.0))
    return float(params.get("weight_decay", 0.0))
