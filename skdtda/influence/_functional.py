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
from torch.func import functional_call, grad, vmap

from ..ensemble._batched import _plain_stack
from ..measurements import get_measurement

__all__ = ["FunctionalMember", "optimizer_weight_decay"]


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

    Parameters
    ----------
    net : skorch.NeuralNet
        A fitted member.
    measurement : str or callable
        Named measurement of :mod:`skdtda.measurements`, or a differentiable
        torch callable ``(net, y_pred, y_true) -> tensor of shape (n,)``.
    kind : {"classifier", "regressor"}
    """

    def __init__(self, net, measurement, kind):
        self.net = net
        self.module = net.module_
        self.names, shapes, values = [], [], []
        for name, param in self.module.named_parameters():
            self.names.append(name)
            shapes.append(param.shape)
            values.append(param.detach().reshape(-1))
        self.shapes = shapes
        self.sizes = [int(np.prod(s)) for s in shapes]
        self.theta = torch.cat(values)
        self.dtype = self.theta.dtype
        self.device = self.theta.device
        self.loss_fn = get_measurement("loss", kind)
        self.measure_fn = (measurement if callable(measurement)
                           else get_measurement(measurement, kind))
        self.weight_decay = optimizer_weight_decay(net)
        self._measurement_is_named = not callable(measurement)
        self._stack = self._linear_stack()

    def _linear_stack(self):
        """For a plain Linear/activation stack: its layers, and where each parameter
        sits in them, so per-sample gradients come from layer-wise outer products."""
        layers = _plain_stack(self.module)
        if not layers:
            return None
        where = {}
        for i, layer in enumerate(layers):
            if type(layer) is nn.Linear:
                where[id(layer.weight)] = (i, "weight")
                if layer.bias is not None:
                    where[id(layer.bias)] = (i, "bias")
        slots = [where.get(id(p)) for p in self.module.parameters()]
        return None if None in slots else (layers, slots)

    @property
    def n_params(self):
        return self.theta.numel()

    def unflatten(self, theta):
        return {name: part.view(shape) for name, part, shape
                in zip(self.names, theta.split(self.sizes), self.shapes)}

    def outputs(self, theta, X):
        return functional_call(self.module, self.unflatten(theta), (X,))

    def tensors(self, X, y):
        X = torch.as_tensor(np.asarray(X), device=self.device).to(self.dtype)
        y = torch.as_tensor(np.asarray(y), device=self.device)
        if torch.is_floating_point(y):
            y = y.to(self.dtype)
        return X, y

    def _per_sample(self, fn):
        def one(theta, x, y):
            return fn(self.net, self.outputs(theta, x[None]), y[None])[0]
        return one

    def per_sample_grads(self, fn_name, X, y):
        """Gradients of the per-sample loss (``"loss"``) or measurement, shape (n, P)."""
        fn = self.loss_fn if fn_name == "loss" else self.measure_fn
        X, y = self.tensors(X, y)
        if self._stack is not None and (fn_name == "loss" or self._measurement_is_named):
            return self._stack_grads(fn, X, y)
        g = vmap(grad(self._per_sample(fn)), in_dims=(None, 0, 0))(self.theta, X, y)
        return g.detach()

    def _stack_grads(self, fn, X, y):
        """Per-sample gradients of a plain stack without vmap.

        Row n's value depends only on row n's pre-activations ``z_n`` (the
        layers are Linear or elementwise), so one backward pass of the summed
        values gives every ``d value_n / d z_n``; a Linear layer's per-sample
        weight gradient is then the outer product of that with its input.
        """
        layers, slots = self._stack
        params = self.unflatten(self.theta)
        names = dict(zip((id(p) for p in self.module.parameters()), self.names))
        inputs, pre = {}, {}
        with torch.enable_grad():
            h = X
            for i, layer in enumerate(layers):
                if type(layer) is nn.Linear:
                    inputs[i] = h
                    bias = None if layer.bias is None else params[names[id(layer.bias)]]
                    h = torch.nn.functional.linear(h, params[names[id(layer.weight)]], bias)
                    if not h.requires_grad:  # the first layer: theta is a constant here
                        h.requires_grad_()
                    pre[i] = h
                else:
                    h = layer(h)
            values = fn(self.net, h, y)
            order = sorted(pre)
            grads = dict(zip(order, torch.autograd.grad(values.sum(), [pre[i] for i in order])))
        parts = []
        for i, kind in slots:
            g = grads[i]
            parts.append(g if kind == "bias"
                         else (g[:, :, None] * inputs[i][:, None, :]).reshape(len(g), -1))
        return torch.cat(parts, dim=1).detach()

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
            part = grad(self.mean_loss)(self.theta, X[rows], y[rows])
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
