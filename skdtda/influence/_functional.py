"""One trained member as a function of a flat parameter vector.

Influence functions need gradients and curvature of the training loss and of
the measurement with respect to all of a member's parameters. This wrapper
turns a fitted skorch net into pure functions of ``theta`` (a flat vector in
``module.named_parameters()`` order) with ``torch.func``, and evaluates them in
chunks of rows so memory stays bounded.
"""

import numpy as np
import torch
from torch import nn
from torch.func import grad, vmap

from .._torch import call_with_parameters
from ..curvature._trace import LayerTracer
from ..exceptions import unsupported_ops
from ..measurements import get_measurement

__all__ = ["FunctionalMember", "L2Penalty", "optimizer_weight_decay"]


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


class FunctionalMember:
    """Loss, outputs and measurements of one member as functions of ``theta``.

    ``theta`` holds the *attributed* parameters; every other parameter is held
    fixed at its trained value. The module always runs in evaluation mode
    (BatchNorm on its running statistics, Dropout off), as predictions do.

    Parameters
    ----------
    net : skorch.NeuralNet
        A fitted member.
    measurement : str or callable
        Named measurement of :mod:`skdtda.measurements`, or a differentiable
        torch callable ``(net, y_pred, y_true) -> tensor of shape (n,)`` whose
        value for row ``n`` depends on row ``n`` only.
    kind : {"classifier", "regressor"}
    modules : None, str, type or list of them, default=None
        The attributed modules (see :func:`skdtda.curvature.layers.find_layers`).
    layered : bool, default=False
        Attribute only the parameters of supported layers (Linear, Conv1d/2d,
        Embedding/Bag) and work in per-layer blocks (Kronecker-factored
        curvature). Otherwise every selected parameter is attributed, as one
        flat vector.
    probe_X : array-like, default=None
        A few training rows: they show where each layer keeps its rows.
    """

    def __init__(self, net, measurement, kind, modules=None, layered=False, probe_X=None):
        from ..curvature.layers import find_layers

        self.net = net
        self.module = net.module_
        self.module.eval()
        self.loss_fn = get_measurement("loss", kind)
        self.measure_fn = (measurement if callable(measurement)
                           else get_measurement(measurement, kind))
        self.weight_decay = optimizer_weight_decay(net)
        penalty = getattr(net, "l2_penalty_", None)
        specs, self.fixed = find_layers(self.module, modules)
        every = dict(self.module.named_parameters())
        self.dtype = next(iter(every.values())).dtype if every else torch.float32
        self.device = next(iter(every.values())).device if every else torch.device("cpu")
        self.tracer, self._specs = None, specs
        self.layered = layered
        if layered and probe_X is None:
            raise ValueError("a layered FunctionalMember needs probe_X (a few training rows)")
        if probe_X is not None:
            self._trace(self.tensors(probe_X, [0])[0])
        if layered:
            if not self.layers:
                raise ValueError(
                    f"{type(self.module).__name__} has no attributable layer (Linear, "
                    "Conv1d/2d, Embedding/Bag) among the selected modules: "
                    f"{_reasons(self.fixed)}; use curvature='ggn' or 'cg' for this module")
            names = [n for spec in self.layers for n in spec.param_names]
        elif modules is None:
            names = list(every)
            self.fixed = {}
        else:
            from ..curvature.layers import _normalise, _selected

            chosen = _normalise(modules)
            owner = {id(p): name for name, sub in self.module.named_modules()
                     for p in sub.parameters(recurse=False)}
            subs = dict(self.module.named_modules())
            names = [n for n, p in every.items()
                     if _selected(owner[id(p)], subs[owner[id(p)]], chosen)]
            if not names:
                raise ValueError(f"modules={modules!r} selects no parameter")
            self.fixed = {n: "not selected by modules=" for n in every if n not in names}
        self.names = names
        self.shapes = [every[n].shape for n in names]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.theta = torch.cat([every[n].detach().reshape(-1) for n in names])
        self.penalty, self.penalty_normalised = None, False
        if penalty is not None and penalty.coefficients:
            parts = [torch.as_tensor(penalty.coefficients.get(n, 0.0), dtype=torch.float64)
                     .expand(every[n].shape).reshape(-1) for n in names]
            self.penalty = torch.cat(parts).to(self.device)
            self.penalty_normalised = penalty.normalised

    def _trace(self, X):
        """Hook the supported layers (once), probing where they keep their rows."""
        if self.tracer is None and self._specs:
            self.tracer = LayerTracer(self, self._specs, X)
            if self.layered:
                self.fixed.update(self.tracer.fixed)
        return self.tracer

    @property
    def layers(self):
        return self.tracer.specs if self.tracer is not None else []

    def _flat_from_layers(self, X):
        """Whether every attributed parameter lies in a hooked layer (then per-row
        gradients come from one backward pass instead of vmap)."""
        if self._trace(X) is None:
            return False
        covered = {n for spec in self.layers for n in spec.param_names}
        return set(self.names) <= covered

    @property
    def n_params(self):
        return self.theta.numel()

    def unflatten(self, theta):
        return {name: part.view(shape) for name, part, shape
                in zip(self.names, theta.split(self.sizes), self.shapes)}

    def outputs(self, theta, X):
        return call_with_parameters(self.module, self.unflatten(theta), (X,))

    def tensors(self, X, y):
        X = torch.as_tensor(np.asarray(X), device=self.device)
        if torch.is_floating_point(X):
            X = X.to(self.dtype)
        y = torch.as_tensor(np.asarray(y), device=self.device)
        if torch.is_floating_point(y):
            y = y.to(self.dtype)
        return X, y

    def _per_sample(self, fn):
        def one(theta, x, y):
            return fn(self.net, self.outputs(theta, x[None]), y[None])[0]
        return one

    def _fn(self, fn_name):
        return self.loss_fn if fn_name == "loss" else self.measure_fn

    def grads(self, fn_name, X, y):
        """Per-row gradients of the loss (``"loss"``) or the measurement, as blocks.

        Layered members give one ``(n, out, in)`` block per attributed layer;
        others one ``(n, P)`` block.
        """
        if not self.layered:
            return [self.per_sample_grads(fn_name, X, y)]
        X, y = self.tensors(X, y)
        return self.tracer.row_grads(self._fn(fn_name), X, y)

    def grad_patches(self, fn_name, X, y):
        """A layered member's per-row gradients as factors: per layer, the patches
        and output gradients whose ``sum_t g_nt a_nt^T`` is each row's block of
        :meth:`grads` (``(patches, [g (n, T, out)])``)."""
        X, y = self.tensors(X, y)
        return self.tracer.row_patches(self._fn(fn_name), X, y)

    def per_sample_grads(self, fn_name, X, y):
        """Gradients of the per-sample loss (``"loss"``) or measurement, shape (n, P)."""
        fn = self._fn(fn_name)
        X, y = self.tensors(X, y)
        if self._flat_from_layers(X):
            return self._flat(self.tracer.row_grads(fn, X, y), len(X))
        with unsupported_ops("per-row gradients of all parameters"):
            g = vmap(grad(self._per_sample(fn)), in_dims=(None, 0, 0))(self.theta, X, y)
        return g.detach()

    def _flat(self, blocks, n):
        """Layer blocks to one (n, P) matrix in ``self.names`` order."""
        parts = {}
        for spec, block in zip(self.layers, blocks):
            for name, part in zip(spec.param_names, spec.kind.to_params(spec.module, block)):
                parts[name] = part.reshape(n, -1)
        return torch.cat([parts[name] for name in self.names], dim=1)

    def mean_grads(self, X, y, chunk=1024):
        """Gradient of the part of the objective that is normalised by N, float64,
        in the blocks of :meth:`grads` without their row axis.

        That is the mean training-loss gradient (no weight decay), plus the
        penalty's gradient when the penalty is normalised with the losses
        (:class:`L2Penalty`): a row's first-order effect is its gradient minus
        this mean, which vanishes at the optimum.
        """
        normalised = self.penalty if self.penalty_normalised else None
        if not self.layered:
            mean = self.mean_loss_grad(X, y, chunk)
            return [mean if normalised is None else mean + normalised * self.theta.double()]
        total = None
        for start in range(0, len(X), chunk):
            blocks = self.grads("loss", X[start:start + chunk], y[start:start + chunk])
            sums = [b.double().sum(dim=0) for b in blocks]
            total = sums if total is None else [t + s for t, s in zip(total, sums)]
        total = [t / len(X) for t in total]
        if normalised is not None:
            pen = self.to_blocks(normalised * self.theta.double())
            total = [t + p for t, p in zip(total, pen)]
        return total

    def fixed_diagonal(self):
        """``D_f``: the curvature of the fixed L2 terms (optimizer weight decay, a
        non-normalised penalty), (P,) float64."""
        fixed = torch.full((self.n_params,), float(self.weight_decay), dtype=torch.float64,
                           device=self.device)
        if self.penalty is not None and not self.penalty_normalised:
            fixed = fixed + self.penalty.double()
        return fixed

    def fixed_penalty_grads(self):
        """Gradient of the fixed L2 terms at ``theta`` (``D_f theta``), float64, in
        the blocks of :meth:`mean_grads`.

        They are applied at every optimizer step, so when an epoch's steps grow
        with the rows, a row's share of them leaves with the row
        (``retraining="same_epochs"``).
        """
        flat = self.fixed_diagonal() * self.theta.double()
        return self.to_blocks(flat) if self.layered else [flat]

    def to_blocks(self, flat):
        """A flat vector over the attributed parameters as per-layer blocks
        (``(out, in)`` each, the layout of :meth:`grads`); float64."""
        by_name = dict(zip(self.names, flat.double().split(self.sizes)))
        blocks = []
        for spec in self.layers:
            shape = tuple(spec.shape)
            index = torch.arange(int(np.prod(shape)), dtype=torch.float64).reshape((1,) + shape)
            block = torch.zeros(int(np.prod(shape)), dtype=torch.float64)
            for name, where in zip(spec.param_names, spec.kind.to_params(spec.module, index)):
                block[where.reshape(-1).long()] = by_name[name].reshape(-1).cpu()
            blocks.append(block.reshape(shape).to(flat.device))
        return blocks

    def measure(self, X, y):
        X, y = self.tensors(X, y)
        with torch.no_grad():
            return self.measure_fn(self.net, self.outputs(self.theta, X), y)

    def mean_loss(self, theta, X, y):
        return self.loss_fn(self.net, self.outputs(theta, X), y).mean()

    def mean_loss_grad(self, X, y, chunk=1024):
        """Gradient of the mean training loss (no weight decay), float64, shape (P,)."""
        X, y = self.tensors(X, y)
        total = torch.zeros(self.n_params, dtype=torch.float64, device=self.device)
        for start in range(0, len(X), chunk):
            rows = slice(start, start + chunk)
            part = grad(self.mean_loss)(self.theta, X[rows], y[rows]).detach()
            total += part.double() * len(X[rows])
        return total / len(X)

    def output_hessian_roots(self, outputs, y):
        """``R`` with ``R R^T`` the Hessian of each sample's loss w.r.t. its output,
        float64, shape (n, K, K).

        Softmax cross-entropy has the closed form ``R = diag(sqrt p) - p sqrt(p)^T``
        (``R R^T = diag(p) - p p^T`` because ``sum p = 1``); other losses go through
        the Hessian and its eigendecomposition.
        """
        criterion = self.net.criterion_
        if (type(criterion) is nn.CrossEntropyLoss and criterion.weight is None
                and criterion.label_smoothing == 0 and outputs.ndim == 2):
            p = torch.softmax(outputs.double(), dim=1)
            root_p = p.sqrt()
            return torch.diag_embed(root_p) - p[:, :, None] * root_p[:, None, :]
        lam, vec = torch.linalg.eigh(self.output_hessians(outputs, y).double())
        return vec * lam.clamp_min(0).sqrt()[:, None, :]

    def output_hessians(self, outputs, y):
        """Hessian of each sample's loss w.r.t. its own output, shape (n, K, K)."""
        def loss_of_output(z, target):
            return self.loss_fn(self.net, z[None], target[None])[0]
        flat = outputs.reshape(len(outputs), -1)
        shape = outputs.shape[1:]

        def hess(z, target):
            return torch.func.hessian(lambda v: loss_of_output(v.reshape(shape), target))(z)
        return vmap(hess)(flat, y)


def _reasons(fixed):
    seen = {}
    for name, reason in fixed.items():
        seen.setdefault(reason, []).append(name)
    return "; ".join(f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''}: {reason}"
                     for reason, names in seen.items())

