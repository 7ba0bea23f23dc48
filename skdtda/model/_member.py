"""One trained member as a function of its attributed parameters, in two forms.

Influence functions need gradients and curvature of the training loss and of
the measurement with respect to a member's parameters. A member turns a fitted
skorch net into pure functions of ``theta`` (a flat vector in
``module.named_parameters()`` order) with ``torch.func``, and evaluates them in
chunks of rows so memory stays bounded. It comes in two forms:

* :class:`FlatMember`: every selected parameter, and per-row gradients as one
  ``(n, P)`` block (what the dense, kernel, conjugate-gradient and identity
  curvatures work on);
* :class:`LayeredMember`: the parameters of the supported layers only, and
  per-row gradients as one ``(n, out, in)`` block per layer, from forward hooks
  (what the Kronecker-factored curvatures and the factored scoring work on).
"""

import copy

import numpy as np
import torch
from torch import nn
from torch.func import grad, vmap

from .._loops import chunks
from .._inputs import as_tensors, module_call, n_rows, per_row_tree
from .._torch import call_with_parameters
from ..exceptions import unsupported_ops
from ..measurements import get_measurement
from ._penalty import decoupled_decay, optimizer_weight_decay
from ._trace import LayerTracer
from .layers import find_layers, selected_parameters

__all__ = ["FlatMember", "FunctionalMember", "LayeredMember", "functional_member",
           "measure_all"]


class FunctionalMember:
    """Loss, outputs and measurements of one member as functions of ``theta``.

    The base of :class:`FlatMember` and :class:`LayeredMember`, which say which
    parameters ``theta`` holds and how per-row gradients are laid out. Every
    other parameter is held fixed at its trained value. The module always
    runs in evaluation mode (BatchNorm on its running statistics, Dropout
    off), as predictions do.

    Parameters
    ----------
    net : skorch.NeuralNet
        A fitted member (a scikit-learn model as the skorch net of the torch
        function it computes).
    measurement : str or callable
        Named measurement of :mod:`skdtda.measurements`, or a differentiable
        torch callable ``(net, y_pred, y_true) -> tensor of shape (n,)`` whose
        value for row ``n`` depends on row ``n`` only.
    task : {"classifier", "regressor"}
    modules : None, str, type or list of them, default=None
        The attributed modules (see :func:`skdtda.model.layers.find_layers`).
    probe_X : array-like, default=None
        A few training rows: they show the hooks where each layer keeps its rows.
    """

    def __init__(self, net, measurement, task, modules=None, probe_X=None):
        self.net = net
        self.module = net.module_
        self.module.eval()
        self.loss_fn = get_measurement("loss", task)
        self.measure_fn = (measurement if callable(measurement)
                           else get_measurement(measurement, task))
        self.weight_decay = optimizer_weight_decay(net)
        # the parameter-wise L2 term, as (coefficients, normalised): the net's own
        # (scikit-learn's models), or AdamW's decay as its fixed point implies it
        own = getattr(net, "l2_penalty_", None)
        if own is not None and own.coefficients:
            self._l2 = (own.coefficients, own.normalised)
        else:
            decay = decoupled_decay(net)
            self._l2 = None if decay is None else (decay, False)
            if decay is not None:
                self.weight_decay = 0.0
        self._specs, self.fixed = find_layers(self.module, modules)
        every = dict(self.module.named_parameters())
        self.dtype = next(iter(every.values())).dtype if every else torch.float32
        self.device = next(iter(every.values())).device if every else torch.device("cpu")
        self.tracer = None
        if probe_X is not None:
            self._trace(self.tensors(probe_X, [0])[0])

    def _attribute(self, names):
        """Hold ``names`` (in this order) as ``theta``, with their share of the penalty."""
        every = dict(self.module.named_parameters())
        self.names = names
        self.shapes = [every[n].shape for n in names]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.theta = torch.cat([every[n].detach().reshape(-1) for n in names])
        self.penalty, self.penalty_normalised = None, False
        coefficients, normalised = self._l2 or ({}, False)
        if coefficients:
            parts = [torch.as_tensor(coefficients.get(n, 0.0), dtype=torch.float64)
                     .expand(every[n].shape).reshape(-1) for n in names]
            self.penalty = torch.cat(parts).to(self.device)
            self.penalty_normalised = normalised

    def _trace(self, X):
        """Hook the supported layers (once), probing where they keep their rows."""
        if self.tracer is None and self._specs:
            self.tracer = LayerTracer(self, self._specs, X)
        return self.tracer

    def supported_layers(self, X):
        """The supported layers among the attributed modules that the hooks trace
        (probed once, on the rows ``X``): those a :class:`LayeredMember` of the same
        net attributes. A list of :class:`~skdtda.model.layers.LayerSpec`."""
        tracer = self._trace(self.tensors(X, [0])[0])
        return [] if tracer is None else tracer.specs

    def _flat_from_layers(self, X):
        """Whether every attributed parameter lies in a hooked layer (then per-row
        gradients come from one backward pass instead of vmap)."""
        if self._trace(X) is None:
            return False
        covered = {n for spec in self.tracer.specs for n in spec.param_names}
        return set(self.names) <= covered

    @property
    def n_params(self):
        return self.theta.numel()

    def n_outputs(self, X):
        """Numbers in one row's output of the module (on the first row of ``X``)."""
        with torch.no_grad():
            return self.outputs(self.theta, self.tensors(X[:1], [0])[0])[0].numel()

    def unflatten(self, theta):
        return {name: part.view(shape) for name, part, shape
                in zip(self.names, theta.split(self.sizes), self.shapes)}

    def outputs(self, theta, X):
        params = self.unflatten(theta)
        return module_call(lambda args, kwargs: call_with_parameters(
            self.module, params, args, kwargs), X)

    def tensors(self, X, y):
        """Rows and targets as torch: ``X`` a tensor, a
        :class:`~skdtda._inputs.MultiInput` of tensors (several forward arguments)
        or a :class:`~skdtda._inputs.SparseRows` (densified chunk by chunk);
        integer inputs (token ids) stay integer."""
        X = as_tensors(X, self.dtype, self.device)
        y = torch.as_tensor(np.asarray(y), device=self.device)
        if torch.is_floating_point(y):
            y = y.to(self.dtype)
        return X, y

    def _per_sample(self, fn, add_row_axis=lambda x: x[None]):
        def one(theta, x, y):
            return fn(self.net, self.outputs(theta, add_row_axis(x)), y[None])[0]
        return one

    def _fn(self, fn_name):
        return self.loss_fn if fn_name == "loss" else self.measure_fn

    def grads(self, fn_name, X, y):
        """Per-row gradients of the loss (``"loss"``) or the measurement, as blocks."""
        raise NotImplementedError

    def mean_grads(self, X, y, chunk=1024):
        """Gradient of the part of the objective that is normalised by N, float64,
        in the blocks of :meth:`grads` without their row axis.

        That is the mean training-loss gradient (no weight decay), plus the
        penalty's gradient when the penalty is normalised with the losses
        (:class:`~skdtda.model.L2Penalty`): a row's first-order effect is its
        gradient minus this mean, which vanishes at the optimum.
        """
        raise NotImplementedError

    def fixed_penalty_grads(self):
        """Gradient of the fixed L2 terms at ``theta`` (``D_f theta``), float64, in
        the blocks of :meth:`mean_grads`.

        They are applied at every optimizer step, so when an epoch's steps grow
        with the rows, a row's share of them leaves with the row
        (``retraining="same_epochs"``).
        """
        raise NotImplementedError

    def per_sample_grads(self, fn_name, X, y):
        """Gradients of the per-sample loss (``"loss"``) or measurement, shape (n, P)."""
        fn = self._fn(fn_name)
        X, y = self.tensors(X, y)
        if self._flat_from_layers(X):
            return self._flat(self.tracer.row_grads(fn, X, y), n_rows(X))
        X, add_row_axis = per_row_tree(X)
        with unsupported_ops("per-row gradients of all parameters"):
            g = vmap(grad(self._per_sample(fn, add_row_axis)), in_dims=(None, 0, 0))(
                self.theta, X, y)
        return g.detach()

    def _flat(self, blocks, n):
        """Hooked layer blocks to one (n, P) matrix in ``self.names`` order."""
        parts = {}
        for spec, block in zip(self.tracer.specs, blocks):
            for name, part in zip(spec.param_names, spec.kind.to_params(spec.module, block)):
                parts[name] = part.reshape(n, -1)
        return torch.cat([parts[name] for name in self.names], dim=1)

    def with_penalty_scaled(self, scale):
        """This member with its normalised penalty scaled by ``scale`` (a shallow
        copy; itself where that changes nothing): the objective of ``N / scale``
        kept rows, whose normalised L2 terms grow by ``N / N'``."""
        if self.penalty is None or not self.penalty_normalised or scale == 1:
            return self
        scaled = copy.copy(self)
        scaled.penalty = self.penalty * scale
        return scaled

    def fixed_diagonal(self):
        """``D_f``: the curvature of the fixed L2 terms (optimizer weight decay, a
        non-normalised penalty), (P,) float64."""
        fixed = torch.full((self.n_params,), float(self.weight_decay), dtype=torch.float64,
                           device=self.device)
        if self.penalty is not None and not self.penalty_normalised:
            fixed = fixed + self.penalty.double()
        return fixed

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
        for rows in chunks(n_rows(X), chunk):
            part = grad(self.mean_loss)(self.theta, X[rows], y[rows]).detach()
            total += part.double() * n_rows(X[rows])
        return total / n_rows(X)

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


class FlatMember(FunctionalMember):
    """A member over every selected parameter, with per-row gradients as one
    ``(n, P)`` block.

    Parameters
    ----------
    net, measurement, task, modules, probe_X
        As for :class:`FunctionalMember`; ``modules=None`` attributes every
        parameter, otherwise every parameter of the selected modules, whatever
        their kind.
    """

    def __init__(self, net, measurement, task, modules=None, probe_X=None):
        super().__init__(net, measurement, task, modules, probe_X)
        names = selected_parameters(self.module, modules)
        self.fixed = {} if modules is None else {
            n: "not selected by modules=" for n, _ in self.module.named_parameters()
            if n not in names}
        self._attribute(names)

    def grads(self, fn_name, X, y):
        """Per-row gradients of the loss (``"loss"``) or the measurement: one
        ``(n, P)`` block."""
        return [self.per_sample_grads(fn_name, X, y)]

    def mean_grads(self, X, y, chunk=1024):
        """:meth:`FunctionalMember.mean_grads` as one (P,) block."""
        mean = self.mean_loss_grad(X, y, chunk)
        if self.penalty_normalised and self.penalty is not None:
            mean = mean + self.penalty * self.theta.double()
        return [mean]

    def fixed_penalty_grads(self):
        """:meth:`FunctionalMember.fixed_penalty_grads` as one (P,) block."""
        return [self.fixed_diagonal() * self.theta.double()]


class LayeredMember(FunctionalMember):
    """A member over the parameters of its supported layers (Linear, Conv1d/2d,
    Embedding/Bag, wherever they sit), with per-row gradients as one
    ``(n, out, in)`` block per layer, from forward hooks.

    Parameters
    ----------
    net, measurement, task, modules
        As for :class:`FunctionalMember`; the supported layers among
        ``modules`` are attributed, every other parameter is held fixed
        (``fixed`` says why).
    probe_X : array-like
        A few training rows (required): they show the hooks where each layer
        keeps its rows.
    """

    def __init__(self, net, measurement, task, modules=None, probe_X=None):
        if probe_X is None:
            raise ValueError("a LayeredMember needs probe_X (a few training rows)")
        super().__init__(net, measurement, task, modules, probe_X)
        if self.tracer is not None:
            self.fixed.update(self.tracer.fixed)
        if not self.layers:
            raise ValueError(
                f"{type(self.module).__name__} has no attributable layer (Linear, "
                "Conv1d/2d, Embedding/Bag) among the selected modules: "
                f"{_reasons(self.fixed)}; use curvature='ggn' or 'cg' for this module")
        self._attribute([n for spec in self.layers for n in spec.param_names])

    @property
    def layers(self):
        """The attributed layers, :class:`~skdtda.model.layers.LayerSpec` each."""
        return self.tracer.specs if self.tracer is not None else []

    def grads(self, fn_name, X, y):
        """Per-row gradients of the loss (``"loss"``) or the measurement: one
        ``(n, out, in)`` block per attributed layer."""
        X, y = self.tensors(X, y)
        return self.tracer.row_grads(self._fn(fn_name), X, y)

    def grad_patches(self, fn_name, X, y):
        """Per-row gradients as factors: per layer, the patches and output gradients
        whose ``sum_t g_nt a_nt^T`` is each row's block of :meth:`grads`
        (``(patches, [g (n, T, out)])``)."""
        X, y = self.tensors(X, y)
        return self.tracer.row_patches(self._fn(fn_name), X, y)

    def mean_grads(self, X, y, chunk=1024):
        """:meth:`FunctionalMember.mean_grads` as one (out, in) block per layer."""
        normalised = self.penalty if self.penalty_normalised else None
        total = None
        for rows in chunks(n_rows(X), chunk):
            # summed from the factors: no (rows, out, in) block (a wide first layer's
            # would be rows x out x vocabulary)
            patches, gs = self.grad_patches("loss", X[rows], y[rows])
            sums = [p.grad_sum(g).double() for p, g in zip(patches, gs)]
            total = sums if total is None else [t + s for t, s in zip(total, sums)]
        total = [t / n_rows(X) for t in total]
        if normalised is not None:
            pen = self.to_blocks(normalised * self.theta.double())
            total = [t + p for t, p in zip(total, pen)]
        return total

    def fixed_penalty_grads(self):
        """:meth:`FunctionalMember.fixed_penalty_grads` as one (out, in) block per layer."""
        return self.to_blocks(self.fixed_diagonal() * self.theta.double())

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


def functional_member(net, measurement, task, modules=None, layered=False, probe_X=None):
    """The member of ``net`` in the form a curvature works on: a
    :class:`LayeredMember` (``layered=True``, which needs ``probe_X``) or a
    :class:`FlatMember`."""
    form = LayeredMember if layered else FlatMember
    return form(net, measurement, task, modules=modules, probe_X=probe_X)


def measure_all(members, X, y):
    """The measurement of rows ``X, y`` under every member, (n_members, n) float64."""
    return np.stack([member.measure(X, y).double().cpu().numpy() for member in members])


def _reasons(fixed):
    seen = {}
    for name, reason in fixed.items():
        seen.setdefault(reason, []).append(name)
    return "; ".join(f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''}: {reason}"
                     for reason, names in seen.items())
