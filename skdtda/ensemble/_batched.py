"""Train many seed members of one skorch net in a single batched pass.

Every member's parameters are stacked along a new leading axis, the module runs
on the stacks (as batched matrix products for plain Linear/activation stacks,
otherwise under ``torch.func.vmap`` with ``functional_call``), and the net's own
optimizer class updates the stacked tensors. The optimizers accepted here act elementwise
(each parameter entry's update depends only on that entry's gradient history
and on the step count, which all members share), so one optimizer over the
stacks performs exactly the per-member updates of the loop. Minibatches are
drawn from each member's own generator with the same calls, in the same order,
as skorch's ``DataLoader`` (:meth:`skdtda.model.TrainingRecipe.epoch_order`),
so for the same seeds the batched pass runs the same algorithm as a loop of
``net.fit`` calls; only the order of floating-point
reductions inside the batched matrix products differs.

Anything outside that envelope (callbacks that act between steps, an internal
validation split, random layers, buffers, other optimizers) is reported by
:func:`unsupported_reason`, and the caller falls back to the loop.
"""

import copy
import time
from collections.abc import Mapping

import numpy as np
import torch
from skorch import NeuralNet, NeuralNetClassifier
from skorch.dataset import Dataset as SkorchDataset
from torch import nn
from torch.func import vmap
from torch.utils.data import DataLoader

from .._inputs import SparseRows, as_tensors, n_rows, take_rows
from .._torch import call_with_parameters
from ..measurements import get_measurement
from ..model import TrainingRecipe, plain_stack

per_sample_loss = get_measurement("loss", "classifier")  # the same function for regressors

__all__ = ["check_vmappable", "fit_batched", "unsupported_reason"]

# Elementwise optimizers: their stacked update equals the per-member updates.
_OPTIMIZERS = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
)

# Layers that are pure functions of their input and parameters.
_PURE_LAYERS = (
    nn.Linear, nn.Bilinear, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.LayerNorm, nn.Embedding,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Hardtanh,
    nn.Hardswish, nn.Hardsigmoid, nn.LogSigmoid, nn.Softmax, nn.LogSoftmax,
)

_ITERATOR_KWARGS = {"shuffle", "generator", "batch_size", "drop_last", "num_workers",
                    "pin_memory"}


def unsupported_reason(net):
    """Why the batched path cannot train ``net``, or None if it can.

    Parameters
    ----------
    net : skorch.NeuralNet
        An initialized member net, as the loop would train it.

    Returns
    -------
    reason : str or None
    """
    if net.optimizer not in _OPTIMIZERS:
        names = ", ".join(o.__name__ for o in _OPTIMIZERS)
        return (f"optimizer {getattr(net.optimizer, '__name__', net.optimizer)!r} is not "
                f"one of the elementwise optimizers {names}")
    callbacks = net.callbacks
    if callbacks not in (None, "disable") and len(callbacks) > 0:
        return ("the net has callbacks, which act between the training steps of a "
                "single net")
    if net.train_split is not None:
        return ("the net holds out an internal validation split (train_split); "
                "set train_split=None so every member trains on all rows")
    if net.iterator_train is not DataLoader:
        return "iterator_train is not torch's DataLoader"
    extra = set(net.get_params_for("iterator_train")) - _ITERATOR_KWARGS
    if extra:
        return f"iterator_train has options the batched path does not replay: {sorted(extra)}"
    if net.get_params_for("iterator_train").get("num_workers", 0):
        return "iterator_train uses worker processes"
    if net.dataset is not SkorchDataset or net.get_params_for("dataset"):
        return "the net uses a custom dataset"
    if getattr(net, "compile", False):
        return "the net is compiled with torch.compile"
    if any(True for _ in net.criterion_.parameters()):
        return "the criterion has learnable parameters"
    module = net.module_
    if any(True for _ in module.buffers()):
        return "the module has buffers (e.g. batch norm running statistics)"
    for name, layer in module.named_modules():
        if any(True for _ in layer.children()):
            continue
        if isinstance(layer, nn.Dropout) and layer.p == 0:
            continue
        if not isinstance(layer, _PURE_LAYERS):
            return (f"layer {name or 'module'!r} ({type(layer).__name__}) is not one the "
                    "batched path knows to be a pure function of its input")
    return None


# Criteria whose mean reduction is the mean of their elementwise losses.
_MEAN_CRITERIA = (nn.CrossEntropyLoss, nn.NLLLoss, nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss,
                  nn.HuberLoss)


class _Program:
    """The batched forward and loss of one member net, over stacked parameters.

    Plain Linear/activation stacks run as batched matrix products with each
    weight stored transposed, ``(n_members, in, out)``, which lets both the
    forward product and the weight-gradient product run on contiguous
    operands (about 1.4x faster than the ``(out, in)`` layout on a 512-wide
    layer). The layout is a permutation of entries, so the elementwise
    optimizers do not see it. Every other module runs under
    ``vmap(functional_call)``.
    """

    def __init__(self, lead):
        self.lead = lead
        module = lead.module_
        self.names = [name for name, _ in module.named_parameters()]
        layers = plain_stack(module)
        self.plain = layers is not None
        if self.plain:
            ids = {id(p): name for name, p in module.named_parameters()}
            self.layers = [
                ("linear", ids[id(layer.weight)],
                 None if layer.bias is None else ids[id(layer.bias)])
                if type(layer) is nn.Linear else ("act", layer)
                for layer in layers
            ]
            self.transposed = {op[1] for op in self.layers if op[0] == "linear"}
        else:
            self.transposed = set()
            self._vforward = vmap(lambda p, x: call_with_parameters(module, p, (x,)))
        criterion = lead.criterion_
        self.flat_loss = (
            type(criterion) in _MEAN_CRITERIA
            and getattr(criterion, "weight", None) is None
            and type(lead).get_loss in (NeuralNet.get_loss, NeuralNetClassifier.get_loss)
        )
        # log_softmax over a short class axis is slow on the CPU (0.36 ms for
        # 2048 x 10); the same cross-entropy from logsumexp pieces takes 0.1 ms.
        self.logit_ce = (type(criterion) is nn.CrossEntropyLoss and self.flat_loss
                         and criterion.label_smoothing == 0)
        self.mse = type(criterion) is nn.MSELoss and self.flat_loss
        if not self.flat_loss:
            self._vloss = vmap(lambda yp, yt: lead.get_loss(yp, yt, X=None, training=True))

    def stack(self, members):
        """Stacked, trainable copies of the members' parameters."""
        per_member = [dict(m.module_.named_parameters()) for m in members]
        stacked = {}
        for name in self.names:
            value = torch.stack([p[name].detach() for p in per_member])
            if name in self.transposed:
                value = value.transpose(1, 2)
            stacked[name] = value.contiguous().requires_grad_()
        return stacked

    def member_value(self, name, value):
        """One member's slice of a stacked tensor, in the module's own layout."""
        return value.transpose(0, 1) if name in self.transposed else value

    def forward(self, params, x):
        if not self.plain:
            return self._vforward(params, x)
        for op in self.layers:
            if op[0] == "act":
                x = op[1](x)
            elif op[2] is None:
                x = torch.bmm(x, params[op[1]])
            else:
                x = torch.baddbmm(params[op[2]].unsqueeze(1), x, params[op[1]])
        return x

    def losses(self, y_pred, y_true):
        if not self.flat_loss:
            return self._vloss(y_pred, y_true)
        n_members, batch = y_pred.shape[:2]
        if self.logit_ce and y_pred.ndim == 3:
            shift = y_pred.detach().amax(dim=-1, keepdim=True)
            z = y_pred - shift
            picked = z.gather(-1, y_true.long().unsqueeze(-1)).squeeze(-1)
            return (z.exp().sum(dim=-1).log() - picked).mean(dim=1)
        # The per-sample criterion of measure(..., "loss"), flattened over members:
        # every member's batch has the same size, so the mean of its rows' losses
        # is its mean-reduced loss.
        loss = per_sample_loss(self.lead, y_pred.reshape(n_members * batch, *y_pred.shape[2:]),
                               y_true.reshape(n_members * batch, *y_true.shape[2:]))
        return loss.reshape(n_members, -1).mean(dim=1)


# Activations whose derivative the hand-written backward reads off their output.
_OUTPUT_DERIVATIVES = {
    nn.ReLU: None,  # threshold_backward, in place (7x faster than multiplying by h > 0)
    nn.Tanh: lambda h: 1 - h * h,
    nn.Sigmoid: lambda h: h * (1 - h),
    nn.Identity: None,
}


class _ManualStep:
    """Forward, loss gradient and backward of a plain stack, without autograd.

    For ``Linear -> activation -> ... -> Linear`` with ReLU/Tanh/Sigmoid and a
    cross-entropy or squared-error loss, the gradients are the same products
    autograd forms (``h^T g`` for weights, ``g W^T`` for inputs, sums over the
    batch for biases), written into buffers kept across steps. Reusing them
    avoids allocating (and page-faulting) megabytes of fresh memory every step,
    about 7% of a step of a 512-wide net.
    """

    @staticmethod
    def applies(program):
        if not (program.plain and (program.logit_ce or program.mse)):
            return False
        expect_linear = True
        for op in program.layers:
            if op[0] == "linear":
                expect_linear = False
            elif expect_linear or type(op[1]) not in _OUTPUT_DERIVATIVES or (
                    type(op[1]) is nn.ReLU and op[1].inplace):
                return False
            else:
                expect_linear = True
        return program.layers[-1][0] == "linear"

    def __init__(self, program):
        self.program = program
        self.linears = []  # (weight name, bias name, activation after it or None)
        for op in program.layers:
            if op[0] == "linear":
                self.linears.append([op[1], op[2], None])
            else:
                self.linears[-1][2] = type(op[1])
        self.buffers = {}

    def _buffers(self, params, n_members, batch):
        if batch not in self.buffers:
            outs = [params[w].shape[2] for w, _, _ in self.linears]
            ref = params[self.linears[0][0]]
            new = lambda width: ref.new_empty(n_members, batch, width)  # noqa: E731
            self.buffers[batch] = ([new(w) for w in outs], [new(w) for w in outs[:-1]])
        return self.buffers[batch]

    @torch.no_grad()
    def __call__(self, params, x, y_true):
        """Set every parameter's ``.grad``; return each member's loss, shape (n_members,)."""
        n_members, batch = x.shape[:2]
        outputs, grads = self._buffers(params, n_members, batch)
        h = x
        for (w, b, act), out in zip(self.linears, outputs):
            if b is None:
                torch.bmm(h, params[w], out=out)
            else:
                torch.baddbmm(params[b].unsqueeze(1), h, params[w], out=out)
            if act is nn.ReLU:
                out.clamp_(min=0)
            elif act is nn.Tanh:
                out.tanh_()
            elif act is nn.Sigmoid:
                out.sigmoid_()
            h = out
        losses, g = self._loss_and_gradient(h, y_true)
        for layer in range(len(self.linears) - 1, -1, -1):
            w, b, _ = self.linears[layer]
            below = outputs[layer - 1] if layer else x
            weight = params[w]
            if weight.grad is None:
                weight.grad = torch.empty_like(weight)
            torch.bmm(below.transpose(1, 2), g, out=weight.grad)
            if b is not None:
                if params[b].grad is None:
                    params[b].grad = torch.empty_like(params[b])
                torch.sum(g, dim=1, out=params[b].grad)
            if layer:
                g_below = grads[layer - 1]
                torch.bmm(g, weight.transpose(1, 2), out=g_below)
                act = self.linears[layer - 1][2]
                if act is nn.ReLU:
                    torch.ops.aten.threshold_backward.grad_input(g_below, below, 0,
                                                                 grad_input=g_below)
                elif act is not None and act is not nn.Identity:
                    g_below.mul_(_OUTPUT_DERIVATIVES[act](below))
                g = g_below
        return losses

    def _loss_and_gradient(self, y_pred, y_true):
        batch = y_pred.shape[1]
        if self.program.logit_ce:
            shifted = y_pred - y_pred.amax(dim=-1, keepdim=True)
            exp = shifted.exp()
            total = exp.sum(dim=-1, keepdim=True)
            index = y_true.long().unsqueeze(-1)
            losses = (total.log() - shifted.gather(-1, index)).squeeze(-1).mean(dim=1)
            grad = exp.div_(total).scatter_add_(-1, index, torch.full_like(shifted[..., :1], -1))
            return losses, grad.div_(batch)
        diff = y_pred - y_true.reshape(y_pred.shape)
        losses = (diff * diff).reshape(len(diff), -1).mean(dim=1)
        return losses, diff.mul_(2 / diff[0].numel())


def check_vmappable(lead, X, y):
    """Run one batched forward/backward step on two rows; return a reason or None.

    Also catches a forward pass that draws random numbers (dropout inside a
    custom ``forward``), which a batched pass could not reproduce.
    """
    if isinstance(X, Mapping):
        return "the module takes several forward arguments (a dict of inputs)"
    program = _Program(lead)
    params = program.stack([lead])
    rng_state = torch.get_rng_state()
    dtype = params[program.names[0]].dtype if program.names else torch.float32
    try:
        first = as_tensors(take_rows(X, slice(0, 2)), dtype, lead.device)
        out = program.forward(params, (first[:] if isinstance(first, SparseRows) else first)[None])
        program.losses(out, torch.as_tensor(y[None, :2], device=lead.device)).sum().backward()
    except Exception as exc:  # any failure means: use the loop
        return f"the module or criterion does not run batched under torch.func.vmap ({exc})"
    if not torch.equal(rng_state, torch.get_rng_state()):
        return "the module draws random numbers in forward"
    return None


def _make_optimizer(lead, stacked):
    """The net's optimizer over the stacks, with its fastest kernels.

    Fused (one pass per update) or multi-tensor kernels do the same arithmetic
    as the per-tensor loop in fewer, larger calls; a choice made by the user
    (``optimizer__foreach`` / ``optimizer__fused``) is kept.
    """
    args, kwargs = lead.get_params_for_optimizer("optimizer", list(stacked.items()))
    if "foreach" in kwargs or "fused" in kwargs:
        return lead.optimizer(*args, **kwargs)
    try:
        return lead.optimizer(*args, fused=True, **kwargs)
    except (TypeError, RuntimeError, ValueError):  # no fused kernel for it here
        return lead.optimizer(*args, foreach=True, **kwargs)


def fit_batched(members, X, y, *, rows=None, progress=None):
    """Train initialized member nets in one batched pass, in place.

    Parameters
    ----------
    members : list of skorch.NeuralNet
        Initialized nets with identical settings; each carries its own
        ``iterator_train__generator``. Their modules hold the initial weights.
    X : ndarray of shape (n_samples, ...)
        Training inputs, already in the modules' dtype.
    y : ndarray of shape (n_samples, ...)
        Training targets in the form the net's criterion expects.
    rows : tensor of int64 of shape (n_members, n_train), default=None
        Each member's own training rows (indices into X): member ``i`` trains as
        it would on ``X[rows[i]]``, so that members of several row sets of one
        size train in one pass. None: every member trains on all rows.
    progress : callable, default=None
        Called as ``progress(epoch, mean_loss)`` after each epoch.

    Returns
    -------
    losses : ndarray of shape (max_epochs, n_members)
        Each member's training loss per epoch (weighted by batch size); NaN
        from the first epoch in which any member's loss was not finite on.
    """
    lead = members[0]
    n_members = len(members)
    n_samples = n_rows(X) if rows is None else rows.shape[1]
    program = _Program(lead)
    stacked = program.stack(members)
    optimizer = _make_optimizer(lead, stacked)
    lead.module_.train()
    manual = _ManualStep(program) if _ManualStep.applies(program) else None

    # a sparse matrix stays sparse: each step densifies only its own minibatches
    X_all = as_tensors(X, next(lead.module_.parameters()).dtype, lead.device)
    y_all = torch.as_tensor(y, device=lead.device)
    if rows is not None:
        rows = torch.as_tensor(rows, dtype=torch.int64, device=lead.device)
    recipes = [TrainingRecipe.read(m, n_samples) for m in members]
    steps = recipes[0].batch_slices()
    sizes = [step.stop - step.start for step in steps]

    epoch_losses = np.full((lead.max_epochs, n_members), np.nan)
    batch_losses = np.full((lead.max_epochs, len(steps), n_members), np.nan)
    durations = np.zeros(lead.max_epochs)
    n_done = 0
    for epoch in range(lead.max_epochs):
        tic = time.perf_counter()
        orders = torch.stack([recipes[0].epoch_order(r.generator) for r in recipes])
        orders = orders.to(lead.device)
        step_losses = []
        for step in steps:
            idx = orders[:, step]
            if rows is not None:  # positions in each member's rows -> rows of X
                idx = torch.gather(rows, 1, idx)
            if manual is not None:
                losses = manual(stacked, X_all[idx], y_all[idx])
            else:
                optimizer.zero_grad()
                losses = program.losses(program.forward(stacked, X_all[idx]), y_all[idx])
                losses.sum().backward()
            optimizer.step()
            step_losses.append(losses.detach())
        batch_losses[epoch] = torch.stack(step_losses).cpu().numpy()
        epoch_losses[epoch] = np.average(batch_losses[epoch], axis=0, weights=sizes)
        durations[epoch] = time.perf_counter() - tic
        n_done = epoch + 1
        if not np.all(np.isfinite(epoch_losses[epoch])):
            break  # later epochs would only spread NaN; the caller reports it
        if progress is not None:
            progress(epoch, float(epoch_losses[epoch].mean()))

    _write_back(members, program, stacked, optimizer, batch_losses[:n_done], epoch_losses[:n_done],
                sizes, durations[:n_done])
    return epoch_losses


def _write_back(members, program, stacked, optimizer, batch_losses, epoch_losses, sizes,
                durations):
    """Give each member its trained weights, optimizer state and history."""
    for i, member in enumerate(members):
        params = dict(member.module_.named_parameters())
        with torch.no_grad():
            for name, value in stacked.items():
                params[name].copy_(program.member_value(name, value[i]))
        for name, value in stacked.items():
            state = optimizer.state.get(value)
            if state:
                member.optimizer_.state[params[name]] = {
                    key: _member_slice(program, name, v, i, value.shape)
                    for key, v in state.items()
                }
        # Plain dicts in skorch's History layout: recording 10^5 batches through
        # History.record_batch would cost as much as a tenth of the training.
        for epoch in range(len(epoch_losses)):
            member.history.append({
                "epoch": len(member.history) + 1,
                "batches": [{"train_loss": float(batch_losses[epoch, b, i]),
                             "train_batch_size": size} for b, size in enumerate(sizes)],
                "train_batch_count": len(sizes),
                "train_loss": float(epoch_losses[epoch, i]),
                "dur": float(durations[epoch]),
            })


def _member_slice(program, name, value, i, stacked_shape):
    if torch.is_tensor(value):
        if value.shape == stacked_shape:
            return program.member_value(name, value[i]).clone(memory_format=torch.contiguous_format)
        return value.clone()
    return copy.deepcopy(value)
