"""UnrolledInfluence: differentiate through each seed's actual training run.

For member ``s`` of a seed ensemble, training is replayed from the member's own
initialisation over the member's own minibatches, with the loss of training
row ``n`` in each minibatch mean weighted by ``1 + eps * w_n``. Forward-mode
differentiation carries ``d theta_t / d eps`` (a *tangent*) through every
optimizer step, next to the parameters themselves, so memory does not grow with
the number of steps. Many removal directions ``w`` travel together as a batch of
tangents: each step costs one gradient plus one Hessian-vector product per
tangent. Reverse mode sweeps back from a query measurement's gradient and gets
its derivative with respect to every row's weight at once, for the same
per-step cost per query, recomputing the trajectory from a fixed number of
snapshots (memory is bounded whatever the number of steps there too).

Removing row ``k`` from the mean over the remaining rows is the direction
``w = -e_k + 1/N`` at ``eps = 1`` (to first order in ``1/N``), which makes the
response, in the long-training limit of small-step SGD, the influence function
of :class:`InfluenceTransformer`:

    delta_sk = (1/N) grad m(theta_s)^T (H_s + wd I)^{-1} (grad l_k(theta_s) - gbar_s)

(Theorem 2 of Mlodozeniec et al., 2025). See ``docs/unrolled.md`` for the
derivation.
"""

import math
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import _fit_context, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_memory
from skorch import NeuralNet, NeuralNetClassifier
from torch.func import grad, jvp, vmap

from ...discrepancy import STATISTICS
from ...ensemble import SeedEnsembleClassifier, SeedEnsembleRegressor
from ...ensemble import _batched
from ...ensemble._seed_ensemble import _initialize_member
from ...measurements import MEASUREMENTS
from .._functional import FunctionalMember
from .._transformer import _CONVENTION, InfluenceTransformer

__all__ = ["UnrolledInfluence", "unrolled_response"]

_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)

# Criteria whose mean reduction is the mean of the per-row losses, so that a
# weight per row reproduces the batch loss skorch differentiates.
_MEAN_CRITERIA = (torch.nn.CrossEntropyLoss, torch.nn.NLLLoss, torch.nn.MSELoss,
                  torch.nn.L1Loss, torch.nn.SmoothL1Loss, torch.nn.HuberLoss,
                  torch.nn.BCEWithLogitsLoss)


def _optimizer_settings(net):
    """The optimizer's hyper-parameters as the instantiated optimizer holds them.

    Reading ``net.optimizer_`` rather than the skorch parameters picks up the
    optimizer's own defaults (AdamW's ``weight_decay=0.01``).
    """
    optimizer = net.optimizer_
    if type(optimizer) not in _OPTIMIZERS:
        names = ", ".join(o.__name__ for o in _OPTIMIZERS)
        raise ValueError(f"UnrolledInfluence differentiates through {names}; the net's "
                         f"optimizer is {type(optimizer).__name__}")
    if len(optimizer.param_groups) != 1:
        raise ValueError("UnrolledInfluence needs a single optimizer parameter group, got "
                         f"{len(optimizer.param_groups)} (optimizer__param_groups)")
    group = dict(optimizer.param_groups[0])
    if group.get("maximize"):
        raise ValueError("optimizer__maximize=True is not supported by UnrolledInfluence")
    if group.get("amsgrad"):
        raise ValueError("optimizer__amsgrad=True is not supported by UnrolledInfluence: "
                         "the running maximum has no derivative where it switches")
    if torch.is_tensor(group["lr"]):
        group["lr"] = float(group["lr"])
    group["kind"] = type(optimizer).__name__
    return group


def _unsupported_reason(net):
    """Why the replay cannot reproduce ``net``'s training, or None."""
    if not isinstance(net.optimizer_, _OPTIMIZERS):
        names = ", ".join(o.__name__ for o in _OPTIMIZERS)
        return f"optimizer {type(net.optimizer_).__name__} is not one of {names}"
    reason = _batched.unsupported_reason(net)
    if reason is not None:
        return reason
    criterion = net.criterion_
    if type(criterion) not in _MEAN_CRITERIA or getattr(criterion, "weight", None) is not None \
            or getattr(criterion, "reduction", "mean") != "mean":
        return (f"criterion {type(criterion).__name__} is not a mean of per-row losses "
                f"(supported: {', '.join(c.__name__ for c in _MEAN_CRITERIA)}, unweighted, "
                "reduction='mean')")
    if type(net).get_loss not in (NeuralNet.get_loss, NeuralNetClassifier.get_loss):
        return "the net overrides get_loss"
    return None


# sigma'(z) and sigma''(z) of the activations the hand-written step knows, from
# the activation's output h.
_ACTIVATION_DERIVATIVES = {
    torch.nn.Identity: None,
    torch.nn.ReLU: "relu",
    torch.nn.Tanh: (lambda h: 1 - h * h, lambda h: -2 * h * (1 - h * h)),
    torch.nn.Sigmoid: (lambda h: h * (1 - h), lambda h: h * (1 - h) * (1 - 2 * h)),
}


class _PlainStackStep:
    """Gradient and batched Hessian-vector products of a plain MLP, by hand.

    For ``Linear -> activation -> ... -> Linear`` with Identity/ReLU/Tanh/Sigmoid
    and a cross-entropy or squared-error loss, the forward-over-reverse
    products that ``vmap(jvp(grad))`` forms are written out as matrix products
    over the tangents. ``torch.func`` spends several milliseconds of Python per
    step re-tracing the transforms; on small nets that is most of the replay.

    Forward tangent: ``z' = h'_{l-1} W^T + h_{l-1} W'^T + b'``, ``h' = s'(z) z'``.
    Output: ``e = c * dl/dz`` with ``c_n = (1 + w_n) / B``,
    ``e' = c' * dl/dz + c * (d2l/dz2) z'``. Backward tangent:
    ``gW' = e'^T h + e^T h'``, ``gb' = sum e'``, ``d' = e' W + e W'``,
    ``e'_{l-1} = d' s'(z) + d s''(z) z'``.

    The parameters travel as one block per parameter tensor, and the tangents
    in layouts that make every product over the ``K`` tangents one 2-D matrix
    product: a weight's tangent is ``(out, K, in)``, a bias's ``(out, K)``, an
    activation's ``(features, K, batch)``. Four of the six products per layer
    read and write these layouts as they are; ``e^T h'`` and ``e W'`` need one
    copy each that swaps the two outer axes (a full transpose would cost 20x
    more at 64 x 64 x 64). A weight's own block is
    ``(out, 1, in)`` (a bias's ``(out, 1)``) so that it broadcasts against its
    tangents in the optimizer's arithmetic.
    """

    @staticmethod
    def layers_of(net, y):
        layers = _batched._plain_stack(net.module_)
        criterion = net.criterion_
        if layers is None:
            return None
        if type(criterion) is torch.nn.CrossEntropyLoss:
            if criterion.label_smoothing != 0 or y.ndim != 1:
                return None
        elif type(criterion) is not torch.nn.MSELoss:
            return None
        linears = []
        for layer in layers:
            if type(layer) is torch.nn.Linear:
                linears.append([layer, None])
            elif type(layer) is torch.nn.Dropout:  # p == 0, an identity
                continue
            elif type(layer) in _ACTIVATION_DERIVATIVES and linears and linears[-1][1] is None:
                linears[-1][1] = type(layer)
            else:
                return None
        if not linears or linears[-1][1] is not None:
            return None
        return linears

    def __init__(self, member, linears):
        ids = {id(p): i for i, (_, p) in enumerate(member.module.named_parameters())}
        offsets = np.concatenate([[0], np.cumsum(member.sizes)])
        self.layers = []
        for layer, act in linears:
            w = ids[id(layer.weight)]
            b = None if layer.bias is None else ids[id(layer.bias)]
            self.layers.append((w, b, act, tuple(layer.weight.shape)))
        self.slices = [slice(int(offsets[i]), int(offsets[i + 1]))
                       for i in range(len(member.sizes))]
        # The block shape of each parameter: (out, in) for a weight, (out,) for a bias.
        self.shapes = [None] * len(self.slices)
        for w, b, _, shape in self.layers:
            self.shapes[w] = shape
            if b is not None:
                self.shapes[b] = shape[:1]
        self.cross_entropy = type(member.net.criterion_) is torch.nn.CrossEntropyLoss

    def split(self, theta):
        """Flat parameters (P,) -> blocks of shape (out, 1, in) and (out, 1)."""
        return [theta[s].reshape(shape[0], 1, *shape[1:]).clone()
                for s, shape in zip(self.slices, self.shapes)]

    def split_tangent(self, tangent):
        """Flat tangents (K, P) -> blocks of shape (out, K, in) and (out, K)."""
        K = len(tangent)
        return [tangent[:, s].reshape(K, *shape).transpose(0, 1).contiguous()
                for s, shape in zip(self.slices, self.shapes)]

    @staticmethod
    def join(blocks):
        return torch.cat([block.reshape(-1) for block in blocks])

    @staticmethod
    def join_tangent(blocks):
        K = blocks[0].shape[1]
        # per tangent, out x in numbers (out for a bias); explicit, as K may be 0
        return torch.cat([block.transpose(0, 1).reshape(K, math.prod(block.shape[:1]
                                                                     + block.shape[2:]))
                          for block in blocks], dim=1)

    def gradient(self, theta, x, y):
        """Gradient blocks of the minibatch mean loss alone (no tangents)."""
        h, hs = x, [x]
        for w, b, act, (o, i) in self.layers:
            z = h @ theta[w].view(o, i).T
            if b is not None:
                z = z + theta[b].view(o)
            if act is None or act is torch.nn.Identity:
                h = z
            elif act is torch.nn.ReLU:
                h = z.clamp_min(0)
            else:
                h = act()(z)
            hs.append(h)
        out, B = hs[-1], len(x)
        if self.cross_entropy:
            e = torch.softmax(out, dim=-1)
            e[torch.arange(B), y] -= 1
        else:
            e = (2 / out.shape[1]) * (out - y.reshape(out.shape))
        e = e / B
        grad = [None] * len(theta)
        for layer in range(len(self.layers) - 1, -1, -1):
            w, b, _, (o, i) = self.layers[layer]
            grad[w] = (e.T @ hs[layer]).view(o, 1, i)
            if b is not None:
                grad[b] = e.sum(0).view(o, 1)
            if layer == 0:
                break
            d = e @ theta[w].view(o, i)
            act, h_prev = self.layers[layer - 1][2], hs[layer]
            if act is None or act is torch.nn.Identity:
                e = d
            elif act is torch.nn.ReLU:
                e = d * (h_prev > 0).to(d.dtype)
            else:
                e = d * _ACTIVATION_DERIVATIVES[act][0](h_prev)
        return grad

    def __call__(self, theta, tangent, x, y, w_dot, row_derivatives=False, workspace=None):
        """Gradient blocks and their tangent blocks (and, if asked, dl_n along each tangent).

        ``theta`` and ``tangent`` are block lists (see :meth:`split`); ``w_dot``
        of shape (K, B) is the tangent of the rows' loss weights. With
        ``row_derivatives`` a third output (K, B) holds each row's loss
        derivative along each tangent (the per-row dot products
        ``grad l_n^T t_k``).

        ``workspace``, a dict owned by one replay, keeps the tangent-sized
        buffers from step to step: allocating them afresh (~10 MB a step at
        64 tangents on the benchmark MLP) costs page faults each time the
        allocator hands freed memory back to the system, about a quarter of
        the step. The returned tangent blocks then live in it until the next
        call.
        """
        K, B = w_dot.shape

        def buffer(key, *shape):
            if workspace is None:
                return torch.empty(shape, dtype=x.dtype, device=x.device)
            held = workspace.get(key)
            if held is None or held.shape != shape:
                held = workspace[key] = torch.empty(shape, dtype=x.dtype, device=x.device)
            return held

        # Per-row factors (B, features) broadcast over the tangents as contiguous
        # (features, 1, B) blocks: a transposed view would make the inner stride
        # of the elementwise products non-unit, 8x slower.
        h, h_dot = x, None
        hs, hs_dot, zs_dot = [x], [None], [None]
        for w, b, act, (o, i) in self.layers:
            W, W_dot = theta[w].view(o, i), tangent[w]
            z = h @ W.T
            z_dot = buffer(("z", w), o, K, B)
            if h_dot is None:
                torch.mm(W_dot.view(o * K, i), h.T, out=z_dot.view(o * K, B))
            else:
                torch.mm(W, h_dot.view(i, K * B), out=z_dot.view(o, K * B))
                z_dot.view(o * K, B).addmm_(W_dot.view(o * K, i), h.T)
            if b is not None:
                z = z + theta[b].view(o)
                z_dot.add_(tangent[b].unsqueeze(-1))
            if act is None or act is torch.nn.Identity:
                h, h_dot = z, z_dot
                zs_dot.append(None)
            elif act is torch.nn.ReLU:
                h = z.clamp_min(0)
                h_dot = z_dot.mul_((z > 0).to(z.dtype).T.unsqueeze(1).contiguous())
                zs_dot.append(None)
            else:
                h = act()(z)
                h_dot = torch.mul(z_dot,
                                  _ACTIVATION_DERIVATIVES[act][0](h).T.unsqueeze(1).contiguous(),
                                  out=buffer(("h", w), o, K, B))
                zs_dot.append(z_dot)
            hs.append(h)
            hs_dot.append(h_dot)
        out, out_dot = hs[-1], hs_dot[-1]
        if self.cross_entropy:
            p = torch.softmax(out, dim=-1)
            dl = p.clone()
            dl[torch.arange(B), y] -= 1
            p_t = p.T.unsqueeze(1).contiguous()
            hess_dot = (out_dot - (p_t * out_dot).sum(0, keepdim=True)).mul_(p_t)
        else:
            scale = 2 / out.shape[1]
            dl = scale * (out - y.reshape(out.shape))
            hess_dot = scale * out_dot
        dl_t = dl.T.unsqueeze(1).contiguous()
        rows = (dl_t * out_dot).sum(0) if row_derivatives else None
        e = dl / B
        e_dot = hess_dot.addcmul_(dl_t, w_dot.unsqueeze(0)).div_(B)
        grad, grad_dot = [None] * len(theta), [None] * len(theta)
        for layer in range(len(self.layers) - 1, -1, -1):
            w, b, _, (o, i) = self.layers[layer]
            h_in, h_in_dot = hs[layer], hs_dot[layer]
            grad[w] = (e.T @ h_in).view(o, 1, i)
            g_dot = buffer(("g", w), o, K, i)
            torch.mm(e_dot.view(o * K, B), h_in, out=g_dot.view(o * K, i))
            if h_in_dot is not None:
                # h' (in, K, B) -> (K, in, B) swaps the outer axes only (a cheap copy)
                swapped = buffer(("swap", w), K, i, B).copy_(h_in_dot.transpose(0, 1))
                g_dot.view(o, K * i).addmm_(e.T, swapped.view(K * i, B).T)
            grad_dot[w] = g_dot
            if b is not None:
                grad[b] = e.sum(0).view(o, 1)
                grad_dot[b] = e_dot.sum(-1)
            if layer == 0:
                break
            W, W_dot = theta[w].view(o, i), tangent[w]
            d = e @ W
            d_dot = buffer(("d", w), i, K, B)
            torch.mm(W.T, e_dot.view(o, K * B), out=d_dot.view(i, K * B))
            # W'^T e^T comes out (K, in, B); adding it swaps the outer axes only
            # (the swap buffer's first use, e^T h' above, is done with)
            product = torch.mm(W_dot.view(o, K * i).T, e.T,
                               out=buffer(("swap", w), K, i, B).view(K * i, B))
            d_dot.add_(product.view(K, i, B).transpose(0, 1))
            act, h_prev = self.layers[layer - 1][2], hs[layer]
            if act is None or act is torch.nn.Identity:
                e, e_dot = d, d_dot
            elif act is torch.nn.ReLU:
                mask = (h_prev > 0).to(d.dtype)
                e, e_dot = d * mask, d_dot.mul_(mask.T.unsqueeze(1).contiguous())
            else:
                first, second = _ACTIVATION_DERIVATIVES[act]
                e = d * first(h_prev)
                e_dot = d_dot.mul_(first(h_prev).T.unsqueeze(1).contiguous()).addcmul_(
                    (d * second(h_prev)).T.unsqueeze(1).contiguous(), zs_dot[layer])
        return (grad, grad_dot, rows) if row_derivatives else (grad, grad_dot)


class _Replay:
    """One member's training, replayed in flat parameters with tangents.

    Parameters
    ----------
    net : skorch.NeuralNet
        The fitted member.
    init_seed, order_seed : int
        The member's initialisation and minibatch-order seeds.
    X, y : ndarray
        The training rows in the form the member trained on.
    kind : {"classifier", "regressor"}
    start : skorch.NeuralNet, default=None
        The member as it was before training (initialized). None rebuilds it
        as ``clone(net)`` initialized under ``init_seed``, which needs the
        module given as a class: a module instance keeps its trained weights.
    """

    def __init__(self, net, init_seed, order_seed, X, y, kind, start=None):
        reason = _unsupported_reason(net)
        if reason is not None:
            raise ValueError(f"UnrolledInfluence cannot replay this net's training: {reason}")
        self.member = FunctionalMember(net, "loss", kind)
        self.opt = _optimizer_settings(net)
        if start is None:
            start = _initialize_member(clone(net), init_seed)
        self.theta0 = torch.cat([p.detach().reshape(-1) for p in start.module_.parameters()])
        self.order_seed = int(order_seed)
        self.X, self.y = self.member.tensors(X, y)
        shuffle, _, batch_size, drop_last = _batched._iterator_settings(net, len(X))
        self.shuffle, self.batch_size, self.drop_last = shuffle, batch_size, drop_last
        self.max_epochs = net.max_epochs
        self.per_row = self._per_row_loss()
        linears = _PlainStackStep.layers_of(net, self.y)
        self.fast = None if linears is None else _PlainStackStep(self.member, linears)

    def key(self):
        """A hash of everything the replay computes from, for ``memory=``.

        The initial and the trained parameters, the minibatch and optimizer
        settings, the architecture and criterion, and the training rows: two
        replays with the same key compute the same numbers.
        """
        import joblib

        net = self.member.net
        settings = {k: v for k, v in self.opt.items() if k != "params"}
        return joblib.hash((self.theta0.cpu().numpy(), self.member.theta.cpu().numpy(),
                            self.order_seed, self.batch_size, self.shuffle, self.drop_last,
                            self.max_epochs, repr(sorted(settings.items())), repr(net.module_),
                            repr(net.criterion_), self.X.cpu().numpy(), self.y.cpu().numpy()))

    def _per_row_loss(self):
        criterion = self.member.net.criterion_
        # cross_entropy and mse_loss with reduction="none" reach forward-mode AD
        # through Python decompositions (about 3 ms a step); the same losses from
        # log_softmax and a square run as plain kernels.
        if type(criterion) is torch.nn.CrossEntropyLoss and criterion.label_smoothing == 0 \
                and self.y.ndim == 1:
            def cross_entropy(z, target):
                return -torch.log_softmax(z, dim=-1).gather(1, target[:, None])[:, 0]
            return cross_entropy
        if type(criterion) is torch.nn.MSELoss:
            def squared_error(z, target):
                diff = z - target.reshape(z.shape)
                return (diff * diff).reshape(len(z), -1).mean(dim=1)
            return squared_error
        member = self.member
        return lambda z, target: member.loss_fn(member.net, z, target)

    def _loss(self, theta, w, xb, yb):
        losses = self.per_row(self.member.outputs(theta, xb), yb)
        return (losses * (1 + w)).mean()

    def run(self, directions):
        """Replay training, carrying ``d theta / d eps`` for each direction.

        Parameters
        ----------
        directions : tensor of shape (n_tangents, n_samples)
            Row weights ``w``: the minibatch loss weights row ``n`` by
            ``1 + eps * w_n``.

        Returns
        -------
        theta : tensor of shape (n_params,)
            The replayed final parameters.
        tangents : tensor of shape (n_tangents, n_params)
            ``d theta_T / d eps`` for each direction.
        """
        dtype, device = self.theta0.dtype, self.theta0.device
        # rows of a minibatch are gathered as one block of (batch, n_tangents)
        directions = directions.to(device=device, dtype=dtype).T.contiguous()
        theta = self._split(self.theta0)
        tangent = self._split_tangent(torch.zeros(directions.shape[1], len(self.theta0),
                                                  dtype=dtype, device=device))
        states, states_dot = [{} for _ in theta], [{} for _ in theta]
        workspace = {}
        for step, idx in self._batches():
            g, g_dot = self._gradients(theta, tangent, idx, directions[idx].T,
                                       workspace=workspace)
            for j in range(len(theta)):
                theta[j], tangent[j] = self._update(theta[j], tangent[j], g[j], g_dot[j],
                                                    states[j], states_dot[j], step)
        return self._join(theta), self._join_tangent(tangent)

    def adjoint(self, cotangents, budget=None):
        """Reverse-mode replay: ``d (c^T theta_T) / d w_n`` for every training row.

        One backward sweep through the replayed training gives, for each
        cotangent ``c`` of the final parameters (a measurement's gradient), its
        derivative with respect to every training row's loss weight at once:
        the transpose of what :meth:`run` computes one direction at a time.
        Per step it costs one Hessian-vector product per cotangent, as a
        tangent does in :meth:`run`, plus the primal steps that recompute the
        parameters going backwards (see :meth:`_sweep`).

        Parameters
        ----------
        cotangents : tensor of shape (n_cotangents, n_params)
        budget : int, default=None
            Parameter-and-state snapshots held at once, whatever the number
            of steps. None means ``max(64, n_cotangents)``.

        Returns
        -------
        theta : tensor of shape (n_params,)
            The replayed final parameters.
        weights_bar : tensor of shape (n_cotangents, n_samples)
            ``d (c_k^T theta_T) / d w_n``.
        """
        dtype, device = self.theta0.dtype, self.theta0.device
        n = len(self.X)
        # The minibatches as (step, int32 rows): T x batch_size small integers.
        steps = [(step, idx.to(torch.int32)) for step, idx in self._batches()]
        bar = self._split_tangent(cotangents.to(device=device, dtype=dtype))
        bar_states = [{} for _ in bar]
        weights_bar = torch.zeros(n, len(cotangents), dtype=dtype, device=device)
        zeros = torch.zeros(len(cotangents), self.batch_size, dtype=dtype, device=device)
        workspace = {}

        def back(t, theta, states, g):
            """Carry the cotangents back through step ``t``."""
            step, idx = steps[t]
            idx = idx.long()
            g_bar = [None] * len(bar)
            for j in range(len(bar)):
                g_bar[j], bar[j] = self._update_adjoint(theta[j], bar[j], g[j], states[j][0],
                                                        bar_states[j], step)
            # H g_bar (H symmetric) and each row's grad l_n^T g_bar, in one pass
            _, hvp, rows = self._gradients(theta, g_bar, idx, zeros[:, :len(idx)],
                                           row_derivatives=True, workspace=workspace)
            for j in range(len(bar)):
                bar[j].add_(hvp[j])
            weights_bar.index_add_(0, idx, rows.T, alpha=1 / len(idx))

        budget = max(64, len(cotangents)) if budget is None else budget
        theta = self._split(self.theta0)
        final = self._sweep(steps, 0, len(steps), theta, [({}, {}) for _ in theta],
                            max(4, budget), back)
        return self._join(final), weights_bar.T

    def _primal_step(self, steps, theta, states, t):
        """Step ``t`` of the replay without tangents: its gradient, the new parameters and state.

        ``states`` holds, per block, the optimizer state and its (empty) tangent;
        the update rebinds the state's entries and never mutates the parameters'
        ones, so earlier snapshots stay valid.
        """
        step, idx = steps[t]
        no_tangent = self._split_tangent(theta[0].new_zeros(0, len(self.theta0)))
        g, g_dot = self._gradients(theta, no_tangent, idx.long(),
                                   no_tangent[0].new_zeros(0, len(idx)))
        new_theta, new_states = [], []
        for j in range(len(theta)):
            state, state_dot = dict(states[j][0]), dict(states[j][1])
            new_theta.append(self._update(theta[j], no_tangent[j], g[j], g_dot[j], state,
                                          state_dot, step)[0])
            new_states.append((state, state_dot))
        return g, new_theta, new_states

    def _sweep(self, steps, first, stop, theta, states, budget, back):
        """Call ``back`` on steps ``stop - 1`` down to ``first``, from the state before ``first``.

        ``steps`` lists the minibatches as (step number, rows).

        Holds at most ``budget`` snapshots (parameters, optimizer state and
        gradient of one step) whatever the number of steps. A range that fits
        is replayed once, keeping every step's snapshot, and walked back. A
        longer one is replayed once keeping the starting snapshots of ``k``
        pieces, which are then swept in turn (last first) with the ``budget -
        k`` left. ``k`` is the smallest that lets the pieces fit the rest (two
        replays of every step in all); if none does, ``budget // d`` for the
        fewest levels ``d`` with ``(budget // d) ** d`` steps covered (``d``
        replays: 3 for 1260 steps and a budget of 64, 6 for a million steps).
        Returns the parameters after step ``stop - 1``.
        """
        n = stop - first
        if n <= budget:
            saved = []
            for t in range(first, stop):
                g, new_theta, new_states = self._primal_step(steps, theta, states, t)
                saved.append((t, theta, states, g))
                theta, states = new_theta, new_states
            for item in reversed(saved):
                back(*item)
            return theta
        if budget < 4:
            # too few snapshots to cut further: replay from the start to each step
            for last in range(stop - 1, first - 1, -1):
                step_theta, step_states = theta, states
                for t in range(first, last):
                    _, step_theta, step_states = self._primal_step(steps, step_theta,
                                                                   step_states, t)
                g, after, _ = self._primal_step(steps, step_theta, step_states, last)
                back(last, step_theta, step_states, g)
                if last == stop - 1:
                    final = after
            return final
        fits = [k for k in range(2, budget - 1) if -(-n // k) <= budget - k]
        if fits:
            k = fits[0]
        else:  # d levels of budget // d snapshots each reach (budget // d) ** d steps
            depth = 3
            while (budget // depth) ** depth < n and budget // depth > 2:
                depth += 1
            k = max(2, budget // depth)
        length = -(-n // k)
        starts = []
        for start in range(first, stop, length):
            starts.append((start, theta, states))
            for t in range(start, min(start + length, stop)):
                _, theta, states = self._primal_step(steps, theta, states, t)
        for start, snapshot, snapshot_states in reversed(starts):
            self._sweep(steps, start, min(start + length, stop), snapshot, snapshot_states,
                        budget - len(starts), back)
        return theta

    # -- the two step implementations behind one interface --------------------------------
    def _split(self, theta):
        return self.fast.split(theta) if self.fast is not None else [theta.clone()]

    def _split_tangent(self, tangent):
        return self.fast.split_tangent(tangent) if self.fast is not None else [tangent.clone()]

    def _join(self, blocks):
        return self.fast.join(blocks) if self.fast is not None else blocks[0]

    def _join_tangent(self, blocks):
        return self.fast.join_tangent(blocks) if self.fast is not None else blocks[0]

    def _gradients(self, theta, tangent, idx, w_dot, row_derivatives=False, workspace=None):
        """Minibatch gradient, its tangents (and each row's loss derivative), in blocks."""
        xb, yb = self.X[idx], self.y[idx]
        if self.fast is not None:
            if len(w_dot) == 0 and not row_derivatives:
                return self.fast.gradient(theta, xb, yb), tangent
            return self.fast(theta, tangent, xb, yb, w_dot, row_derivatives, workspace)
        theta, tangent = theta[0], tangent[0]
        w0 = torch.zeros(len(idx), dtype=theta.dtype, device=theta.device)
        grad_fn = grad(lambda th, w: self._loss(th, w, xb, yb))
        if len(tangent) == 0:
            return [grad_fn(theta, w0)], [tangent]

        def both(th, w):
            return grad_fn(th, w), self.per_row(self.member.outputs(th, xb), yb)

        def push(t, wdot):
            return jvp(both, (theta, w0), (t, wdot))

        # The gradient does not depend on the tangent: out_dims=None keeps it
        # computed once for the whole batch of tangents.
        (g, _), (g_dot, rows) = vmap(push, out_dims=((None, None), (0, 0)))(tangent, w_dot)
        return ([g], [g_dot], rows) if row_derivatives else ([g], [g_dot])

    def _batches(self):
        """Yield (step, row indices) of every minibatch the member trained on, in order."""
        n = len(self.X)
        generator = torch.Generator().manual_seed(self.order_seed)
        stop = n - n % self.batch_size if self.drop_last else n
        step = 0
        for _ in range(self.max_epochs):
            order = _batched.batch_order(generator, n, self.shuffle).to(self.X.device)
            for start in range(0, stop, self.batch_size):
                step += 1
                yield step, order[start:start + self.batch_size]

    def _update(self, theta, tangent, g, g_dot, state, state_dot, step):
        kind = self.opt["kind"]
        if kind == "SGD":
            return _sgd(theta, tangent, g, g_dot, state, state_dot, self.opt, step)
        return _adam(theta, tangent, g, g_dot, state, state_dot, self.opt, step,
                     decoupled=kind == "AdamW")

    def _update_adjoint(self, theta, bar, g, state, bar_state, step):
        kind = self.opt["kind"]
        if kind == "SGD":
            return _sgd_adjoint(theta, bar, g, state, bar_state, self.opt, step)
        return _adam_adjoint(theta, bar, g, state, bar_state, self.opt, step,
                             decoupled=kind == "AdamW")


def _sgd(theta, tangent, g, g_dot, state, state_dot, opt, step):
    """torch.optim.SGD's update and its derivative (momentum, dampening, nesterov).

    The parameters follow torch.optim's arithmetic out of place; the tangents,
    ``K`` times bigger, are updated in place (``g_dot`` is consumed). ``theta``
    broadcasts against ``tangent`` (shapes ``(P,)`` and ``(K, P)``, or blocks).
    """
    lr, wd, mu = opt["lr"], opt["weight_decay"], opt["momentum"]
    d, d_dot = g, g_dot
    if wd:
        d = d + wd * theta
        d_dot.add_(tangent, alpha=wd)
    if mu:
        if step == 1:
            # a copy: d_dot may be a buffer the next step's gradient overwrites
            buf, buf_dot = d.clone(), d_dot.clone()
        else:
            damp = 1 - opt["dampening"]
            buf = mu * state["buf"] + damp * d
            buf_dot = state_dot["buf"]
            if damp == 1:  # one pass: buf' = d' + mu buf'
                torch.add(d_dot, buf_dot, alpha=mu, out=buf_dot)
            else:
                buf_dot.mul_(mu).add_(d_dot, alpha=damp)
        state["buf"], state_dot["buf"] = buf, buf_dot
        if opt["nesterov"]:
            d = d + mu * buf
            d_dot.add_(buf_dot, alpha=mu)
        else:
            d, d_dot = buf, buf_dot
    return theta - lr * d, tangent.add_(d_dot, alpha=-lr)


def _adam_quantities(g, state, opt, step):
    """Adam's moments after the step and the parts of its update, shared by both modes.

    ``g`` is the gradient with any coupled weight decay added; ``state`` the
    moments before the step (empty at step 1, where they are zero).
    """
    beta1, beta2 = opt["betas"]
    m = beta1 * state["m"] + (1 - beta1) * g if step > 1 else (1 - beta1) * g
    v = beta2 * state["v"] + (1 - beta2) * g * g if step > 1 else (1 - beta2) * g * g
    root2 = (1 - beta2 ** step) ** 0.5
    root = v.sqrt()
    denom = root / root2 + opt["eps"]
    # d sqrt(v) = dv / (2 sqrt(v)). v == 0 only where every gradient so far was
    # exactly 0 (a dead unit), whose derivatives are 0 too: 0/0 must not spread NaN.
    half_inverse_root = torch.where(
        root > 0, 0.5 / root.clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(root))
    return m, v, root2, denom, m / denom, half_inverse_root


def _adam(theta, tangent, g, g_dot, state, state_dot, opt, step, decoupled):
    """torch.optim.Adam/AdamW's update and its derivative through m and sqrt(v).

    As in :func:`_sgd`, the tangents are updated in place.
    """
    lr, wd = opt["lr"], opt["weight_decay"]
    beta1, beta2 = opt["betas"]
    if wd and decoupled:
        theta = theta * (1 - lr * wd)
        tangent.mul_(1 - lr * wd)
    elif wd:
        g = g + wd * theta
        g_dot.add_(tangent, alpha=wd)
    if step == 1:
        state_dot["m"], state_dot["v"] = torch.zeros_like(g_dot), torch.zeros_like(g_dot)
    m, v, root2, denom, update, half_inverse_root = _adam_quantities(g, state, opt, step)
    m_dot = state_dot["m"].mul_(beta1).add_(g_dot, alpha=1 - beta1)
    v_dot = state_dot["v"].mul_(beta2).addcmul_(g_dot, g, value=2 * (1 - beta2))
    state["m"], state["v"] = m, v
    step_size = lr / (1 - beta1 ** step)
    # update' = m' / denom - update * denom' / denom with denom' = v' / (2 sqrt(v) root2)
    tangent.addcmul_(m_dot, 1 / denom, value=-step_size)
    tangent.addcmul_(v_dot, update * half_inverse_root / (root2 * denom), value=step_size)
    return theta - step_size * update, tangent


def _sgd_adjoint(theta, bar, g, state, bar_state, opt, step):
    """The transpose of :func:`_sgd`'s derivative, for reverse mode.

    ``bar`` is the cotangent of the parameters after the step, ``bar_state``
    that of the optimizer state after it (updated in place to the state
    before it); ``state`` is the primal state before the step. Returns the
    cotangent of the step's gradient and that of the parameters before the step
    (without the gradient's own dependence on them, which the caller adds as
    ``H g_bar``).
    """
    lr, wd, mu = opt["lr"], opt["weight_decay"], opt["momentum"]
    if not mu:
        d_bar = bar * -lr  # theta_new = theta - lr d
    else:
        # u = d + mu buf (nesterov) or u = buf; theta_new = theta - lr u
        buf_bar = bar_state.pop("buf", None)
        scale = -lr * mu if opt["nesterov"] else -lr
        buf_bar = bar * scale if buf_bar is None else buf_bar.add_(bar, alpha=scale)
        if step == 1:  # buf = d
            d_bar = buf_bar
        else:  # buf = mu buf_prev + (1 - dampening) d
            d_bar = buf_bar * (1 - opt["dampening"])
            bar_state["buf"] = buf_bar.mul_(mu)
        if opt["nesterov"]:
            d_bar.add_(bar, alpha=-lr)
    # d = g + wd theta
    return d_bar, bar.add_(d_bar, alpha=wd) if wd else bar


def _adam_adjoint(theta, bar, g, state, bar_state, opt, step, decoupled):
    """The transpose of :func:`_adam`'s derivative (see :func:`_sgd_adjoint`)."""
    lr, wd = opt["lr"], opt["weight_decay"]
    beta1, beta2 = opt["betas"]
    if wd and not decoupled:
        g = g + wd * theta
    _, _, root2, denom, update, half_inverse_root = _adam_quantities(g, state, opt, step)
    step_size = lr / (1 - beta1 ** step)
    # theta_new = theta1 - step_size * m / denom, denom = sqrt(v) / root2 + eps
    m_bar = bar * (-step_size / denom)
    v_bar = bar * (step_size * update * half_inverse_root / (root2 * denom))
    if "m" in bar_state:
        m_bar.add_(bar_state["m"])
        v_bar.add_(bar_state["v"])
    # m = beta1 m_prev + (1 - beta1) g1, v = beta2 v_prev + (1 - beta2) g1^2
    g_bar = torch.mul(m_bar, 1 - beta1).addcmul_(v_bar, g, value=2 * (1 - beta2))
    bar_state["m"], bar_state["v"] = m_bar.mul_(beta1), v_bar.mul_(beta2)
    if wd and decoupled:  # theta1 = theta (1 - lr wd)
        bar = bar.mul_(1 - lr * wd)
    elif wd:  # g1 = g + wd theta
        bar = bar.add_(g_bar, alpha=wd)
    return g_bar, bar


def _removal_directions(rows, n_samples, dtype):
    """Directions of removing each row from the mean, without the shared 1/N part."""
    directions = torch.zeros(len(rows), n_samples, dtype=dtype)
    directions[torch.arange(len(rows)), torch.as_tensor(rows)] = -1
    return directions


def _replay_chunk(replay, directions, key=None):
    """One joblib task: replay a member with one batch of tangents.

    ``key`` stands for both arguments when ``memory=`` caches the task (which
    then hashes the key, not the replay object).
    """
    theta, tangents = replay.run(directions)
    return theta, tangents


def _adjoint_chunk(replay, directions, key=None):
    """One joblib task: sweep back through a member's training with a batch of cotangents."""
    return replay.adjoint(directions)[1]


def _cached(memory, task):
    """``task`` cached by ``memory`` under its ``key`` argument, and a key maker."""
    if memory is None:
        return task, lambda replay, directions: None
    cached = check_memory(memory).cache(task, ignore=["replay", "directions"])
    return cached, lambda replay, directions: (replay.key(), directions.cpu().numpy())


def unrolled_response(net, init_seed, order_seed, X, y, remove, *, kind=None, n_tangents=64,
                      renormalize=True):
    """Response of one trained net's parameters to removing rows or sets of rows.

    Replays ``net``'s training (initialised under ``torch.manual_seed(init_seed)``,
    minibatches drawn from ``torch.Generator().manual_seed(order_seed)``, as
    :class:`SeedEnsembleClassifier` trains its members) and differentiates the
    final parameters through every optimizer step in forward mode.

    Parameters
    ----------
    net : skorch.NeuralNet
        A fitted net, trained on ``X, y`` under the two seeds. Its initial
        weights are rebuilt as ``clone(net)`` initialized under ``init_seed``,
        so its module must be given as a class (an instance keeps its trained
        weights through the clone); compare the returned ``theta`` with the
        net's own parameters.
    init_seed, order_seed : int
        The seeds of its initialisation and minibatch order.
    X : ndarray of shape (n_samples, n_features)
        Training inputs, in the net's dtype.
    y : ndarray of shape (n_samples,) or (n_samples, n_targets)
        Training targets in the form the net trained on.
    remove : list of array-like of int, or ndarray of bool of shape (n_sets, n_samples)
        The removal sets, each a list of row indices (one row each for
        leave-one-out).
    kind : {"classifier", "regressor"}, default=None
        None reads it from the net's class.
    n_tangents : int, default=64
        Directions carried through one replay.
    renormalize : bool, default=True
        Remove each set from the mean over the remaining rows (as retraining
        on fewer rows does). False keeps the other rows' weights at ``1/B``
        per minibatch (the paper's Eq. 4 with ``eps = 1``).

    Returns
    -------
    theta : ndarray of shape (n_params,)
        The replayed final parameters (compare with the net's own).
    response : ndarray of shape (n_sets, n_params)
        First-order change of the final parameters when each set is removed.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.preprocessing import scale
    >>> from skdtda import SeedEnsembleClassifier
    >>> from skdtda.influence import unrolled_response
    >>> X, y = load_iris(return_X_y=True)
    >>> ens = SeedEnsembleClassifier(n_seeds=1, random_state=0).fit(scale(X), y)
    >>> theta, response = unrolled_response(
    ...     ens.estimators_[0], ens.init_seeds_[0], ens.order_seeds_[0],
    ...     scale(X).astype(np.float32), y, remove=[[0], [1, 2]])
    >>> response.shape
    (2, 259)
    """
    if kind is None:
        kind = "classifier" if isinstance(net, NeuralNetClassifier) else "regressor"
    replay = _Replay(net, init_seed, order_seed, X, y, kind)
    n = len(replay.X)
    mask = np.asarray(remove, dtype=object) if not isinstance(remove, np.ndarray) else remove
    if isinstance(mask, np.ndarray) and mask.dtype == bool:
        sets = [np.flatnonzero(row) for row in np.atleast_2d(mask)]
    else:
        sets = [np.atleast_1d(np.asarray(s, dtype=int)) for s in remove]
    dtype = replay.theta0.dtype
    directions = torch.zeros(len(sets) + int(renormalize), n, dtype=dtype)
    for i, rows in enumerate(sets):
        directions[i, torch.as_tensor(rows)] = -1
    if renormalize:
        directions[-1] = 1
    theta, tangents = None, []
    for start in range(0, len(directions), n_tangents):
        theta, part = replay.run(directions[start:start + n_tangents])
        tangents.append(part)
    tangents = torch.cat(tangents)
    if renormalize:
        sizes = torch.tensor([len(s) for s in sets], dtype=dtype)
        tangents = tangents[:-1] + sizes[:, None] * tangents[-1] / n
    return theta.detach().cpu().numpy(), tangents.detach().cpu().numpy()


class UnrolledInfluence(InfluenceTransformer):
    __doc__ = f"""Distributional influence of training rows by differentiating through training.

    ``fit(X_train, y_train)`` fits the seed ensemble (a clone) unless it is
    already fitted. Each member's training is replayed (its initialisation,
    its minibatches, its optimizer) and differentiated through every step with
    respect to each training row's weight (the paper's Algorithm 1), in one of
    two modes that give the same numbers:

    * forward: ``fit`` carries one tangent per training row through each
      member's replay and keeps the parameter responses (``responses_``);
      scoring any number of queries is then cheap.
    * reverse: each scoring call sweeps back through each member's replay
      with one cotangent per query (the query measurement's gradient) and gets
      its derivative with respect to every training row at once. The cost
      grows with the number of queries instead of training rows.

    ``transform(X)`` returns, for each query row and each training row, a
    discrepancy between the measurement's distribution over seeds before and
    after removing that training row, as :class:`InfluenceTransformer` does,
    whose long-training limit this is.

    Parameters
    ----------
    estimator : SeedEnsembleClassifier or SeedEnsembleRegressor, default=None
        The seed ensemble whose members are attributed. If it is already
        fitted, it is used as is and must have been fitted on the ``X, y``
        passed to ``fit``, in the same row order (``replay_error_`` checks
        it). If it is not fitted, a clone is fitted on them. None gives a
        default ensemble, a classifier or a regressor depending on ``y``.
        Members must train with SGD (momentum, dampening, nesterov, weight
        decay), Adam or AdamW, on a module of pure layers with a mean-reduced
        criterion and no callbacks.
    measurement : str or callable, default="loss"
        ``"loss"``, ``"margin"``, ``"log_proba"``, ``"proba"`` or
        ``"prediction"`` (see :meth:`SeedEnsembleClassifier.measure`), or a
        differentiable torch callable ``(net, y_pred, y_true) -> tensor of
        shape (n,)`` of the module's output.
    statistic : str or callable, default="mean"
        Discrepancy reducing the paired samples over seeds in ``transform``:
        {", ".join(repr(s) for s in STATISTICS)}, or a callable
        ``(before, after) -> array``; see :func:`skdtda.discrepancy.discrepancy`.
    q : float, default=0.5
        Quantile for ``statistic="quantile"``.
    seed_index : int, default=None
        Use only this member (fixed-seed unrolled differentiation). None uses
        every member.
    mode : {"auto", "forward", "reverse"}, default="auto"
        How the derivatives are carried (see above). ``"auto"`` takes forward
        mode when two replays hold every training row (``n_train + 1 <= 2 *
        n_tangents``; a reverse sweep costs 1.2 to 1.6 forward replays, and
        each scoring call runs its own) and reverse mode otherwise:
        attribution usually scores fewer queries than there are training rows.
        Both modes agree to round-off (tested). ``mode_`` records the choice.
    n_tangents : int, default=64
        Directions carried through one replay of a member's training: removal
        tangents in forward mode, query cotangents in reverse mode. Memory is
        about ``n_tangents * n_params * (1 + optimizer states)`` numbers; time
        per replay grows about linearly with it, as each is one
        Hessian-vector product per step.
    batch_size : int, default=256
        Query rows and training rows per chunk when scoring.
    n_jobs : int, default=None
        Joblib jobs over replays: (member, batch of tangents) in ``fit`` in
        forward mode, members per batch of queries in reverse mode. None
        means 1.
    memory : str, joblib.Memory or None, default=None
        Caches each replay on disk as it finishes (forward mode: each batch of
        tangents in ``fit``; reverse mode: each sweep for a batch of queries),
        keyed by the member's initial and trained parameters, its training
        settings and rows, and the directions. An interrupted ``fit`` or
        ``transform`` run again with the same ``memory`` redoes only the
        replays that had not finished; a second ``transform`` of the same
        queries in reverse mode sweeps nothing. None caches nothing.
    verbose : int, default=0
        Progress bar over replays.

    Attributes
    ----------
    estimator_ : SeedEnsembleClassifier or SeedEnsembleRegressor
        The fitted ensemble.
    mode_ : {"forward", "reverse"}
        The mode in use.
    responses_ : list of ndarray of shape (n_train, n_params)
        Forward mode only: per attributed member, the first-order change of
        its final parameters when each training row is removed (from the mean
        over the remaining rows), in the member's dtype.
    replay_error_ : ndarray of shape (n_seeds,)
        Per attributed member, the largest absolute difference between the
        replayed final parameters and the member's own, relative to the
        largest parameter. About 1e-12 in float64 and 1e-6 in float32; a
        large value means the replay did not follow the member's training
        (a warning says so).
    members_ : ndarray of int
        Indices into ``estimator_.estimators_`` of the attributed members.
    n_train_ : int
        Number of training rows N.
    n_features_in_ : int
        Number of features.

    See Also
    --------
    InfluenceTransformer : Influence functions, the long-training limit.
    unrolled_response : The parameter response of one net to removal sets.

    Notes
    -----
    {_CONVENTION}

    Row ``n``'s loss in each minibatch mean is weighted by ``1 + eps w_n``.
    Removing row ``k`` from the mean over the other rows is, to first order in
    ``1/N``, ``w = -e_k + 1/N`` at ``eps = 1``, so the parameter response is
    ``-J e_k + (1/N) J 1`` with ``J = d theta_T / d w`` carried forward. For
    small-step SGD run to convergence it tends to
    ``(1/N) (H + wd I)^{{-1}} (grad l_k - gbar)``, the response of
    :class:`InfluenceTransformer` with ``curvature="exact", damping=0``.

    Cost, per member: forward mode runs ``ceil((n_train + 1) / n_tangents)``
    replays in ``fit``, each a gradient plus ``n_tangents`` Hessian-vector
    products per step, and stores ``n_train * n_params`` numbers; memory does
    not grow with the number of steps. Reverse mode runs one primal replay in
    ``fit`` (to check it) and ``ceil(n_query / n_tangents)`` backward sweeps
    per scoring call, each ``n_tangents`` Hessian-vector products per step
    plus a few primal replays (2 when ``T <= 64 * 64 / 4`` steps, 3 for 1260,
    6 for a million) that recompute the parameters from at most
    ``max(64, n_tangents)`` snapshots; memory does not grow with the number
    of steps either (apart from the ``T * batch_size`` row indices, int32).

    References
    ----------
    Mlodozeniec et al., "Distributional Training Data Attribution: What do
    Influence Functions Sample?", arXiv:2506.12965, Algorithm 1 and Theorem 2.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.preprocessing import scale
    >>> from skdtda import SeedEnsembleClassifier, UnrolledInfluence
    >>> X, y = load_iris(return_X_y=True)
    >>> X = scale(X)
    >>> ens = SeedEnsembleClassifier(n_seeds=2, random_state=0)
    >>> influence = UnrolledInfluence(ens).fit(X, y)
    >>> influence.transform(X[:3]).shape
    (3, 150)
    >>> influence.influence_samples(X[:3], y[:3]).shape
    (2, 3, 150)
    >>> bool(influence.replay_error_.max() < 1e-4)
    True
    """

    _parameter_constraints = {
        "estimator": [SeedEnsembleClassifier, SeedEnsembleRegressor, None],
        "measurement": [StrOptions(set(MEASUREMENTS)), callable],
        "statistic": [StrOptions(set(STATISTICS)), callable],
        "q": [Interval(Real, 0, 1, closed="both")],
        "seed_index": [Interval(Integral, 0, None, closed="left"), None],
        "mode": [StrOptions({"auto", "forward", "reverse"})],
        "n_tangents": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "memory": [None, str, HasMethods(["cache"])],
        "verbose": ["verbose"],
    }

    def __init__(self, estimator=None, *, measurement="loss", statistic="mean", q=0.5,
                 seed_index=None, mode="auto", n_tangents=64, batch_size=256, n_jobs=None,
                 memory=None, verbose=0):
        self.estimator = estimator
        self.measurement = measurement
        self.statistic = statistic
        self.q = q
        self.seed_index = seed_index
        self.mode = mode
        self.n_tangents = n_tangents
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.memory = memory
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit (or adopt) the ensemble and differentiate through each member's training.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The training rows to attribute, in the order the ensemble saw them.
        y : array-like of shape (n_samples,)
            Their targets.

        Returns
        -------
        self : UnrolledInfluence
            The fitted transformer.
        """
        self._adopt_ensemble(X, y)
        ens = self.estimator_
        n = self.n_train_
        # Each member's starting point is rebuilt the way the ensemble built it
        # (from its template, not from the trained member: a module passed as an
        # instance would carry the trained weights into a clone).
        template = ens._make_template(ens._n_net_outputs)
        replays = [_Replay(ens.estimators_[i], ens.init_seeds_[i], ens.order_seeds_[i],
                           self._X_train, self._y_train, ens._kind,
                           start=_initialize_member(ens._member(template, i), ens.init_seeds_[i]))
                   for i in self.members_]

        for stale in ("responses_", "_replays"):  # from an earlier fit in the other mode
            self.__dict__.pop(stale, None)
        self.mode_ = self.mode
        if self.mode == "auto":
            # a sweep costs 1.2-1.6 forward replays, and each scoring call runs its own
            self.mode_ = "forward" if n + 1 <= 2 * self.n_tangents else "reverse"
        if self.mode_ == "forward":
            finals = self._fit_forward(replays)
        else:
            # The primal replay alone checks that it follows each member's training;
            # the sweeps run when queries are scored.
            self._replays = replays
            dtype = self._members[0].dtype
            jobs = Parallel(n_jobs=self.n_jobs)(
                delayed(_replay_chunk)(replay, torch.zeros(0, n, dtype=dtype))
                for replay in replays)
            finals = [theta for theta, _ in jobs]
        errors = []
        for member, theta in zip(self._members, finals):
            scale = member.theta.abs().max().clamp_min(torch.finfo(member.dtype).tiny)
            errors.append(float((theta - member.theta).abs().max() / scale))
        self.replay_error_ = np.asarray(errors)
        tolerance = 1e-3 if self._members[0].dtype == torch.float32 else 1e-6
        if self.replay_error_.max() > tolerance:
            worst = int(np.argmax(self.replay_error_))
            warnings.warn(
                f"the replay of member {self.members_[worst]} ends {self.replay_error_[worst]:.2g} "
                "(relative) away from its trained parameters: the ensemble was not trained on "
                "these rows in this order, or its training is chaotic at this precision; the "
                "responses describe the replayed run", UserWarning)
        return self

    def _fit_forward(self, replays):
        """Forward mode: every row's parameter response per member (``responses_``)."""
        n = self.n_train_
        # One extra direction, all ones, is the shared "renormalise the mean" part.
        dtype = self._members[0].dtype
        rows = np.arange(n)
        directions = torch.cat([_removal_directions(rows, n, dtype), torch.ones(1, n,
                                                                                dtype=dtype)])
        chunks = [directions[s:s + self.n_tangents]
                  for s in range(0, len(directions), self.n_tangents)]
        tasks = [(s, c) for s in range(len(replays)) for c in range(len(chunks))]
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(tasks), desc="unrolled replays", unit="replay",
                       leave=self.verbose > 1)
        task, key = _cached(self.memory, _replay_chunk)
        jobs = Parallel(n_jobs=self.n_jobs, return_as="generator")(
            delayed(task)(replays[s], chunks[c], key=key(replays[s], chunks[c]))
            for s, c in tasks)
        parts = [[None] * len(chunks) for _ in replays]
        finals = [None] * len(replays)
        for (s, c), (theta, tangents) in zip(tasks, jobs):
            parts[s][c] = tangents
            finals[s] = theta
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()

        self.responses_ = []
        for member, part in zip(self._members, parts):
            tangents = torch.cat(part)
            self.responses_.append((tangents[:-1] + tangents[-1] / n).to(member.dtype))
        return finals

    def _blocks(self, X, y):
        """Yield (query rows, train rows, m (S, nq), delta (S, nq, nt)) chunk by chunk."""
        if self.mode_ == "reverse":
            yield from self._reverse_blocks(X, y)
            return
        for q_rows in self._chunks(len(X)):
            grads, measured = [], []
            for member in self._members:
                grads.append(member.per_sample_grads("measurement", X[q_rows], y[q_rows]))
                measured.append(member.measure(X[q_rows], y[q_rows]).double().cpu().numpy())
            measured = np.stack(measured)
            for t_rows in self._chunks(self.n_train_):
                delta = np.stack([
                    (g @ response[t_rows].T).double().cpu().numpy()
                    for g, response in zip(grads, self.responses_)
                ])
                yield q_rows, t_rows, measured, delta

    def _reverse_blocks(self, X, y):
        """Reverse mode: one backward sweep per member and batch of ``n_tangents`` queries."""
        bar = None
        n_sweeps = -(-len(X) // self.n_tangents) * len(self._replays)
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_sweeps, desc=f"reverse sweeps for {len(X)} queries",
                       unit="sweep", leave=self.verbose > 1)
        try:
            for q_rows in self._chunks(len(X), self.n_tangents):
                grads = [member.per_sample_grads("measurement", X[q_rows], y[q_rows])
                         for member in self._members]
                measured = np.stack([member.measure(X[q_rows], y[q_rows]).double().cpu().numpy()
                                     for member in self._members])
                task, key = _cached(self.memory, _adjoint_chunk)
                jobs = Parallel(n_jobs=self.n_jobs, return_as="generator")(
                    delayed(task)(replay, g, key=key(replay, g))
                    for replay, g in zip(self._replays, grads))
                deltas = []
                for weights_bar in jobs:
                    # removing row k is the direction -e_k + 1/N
                    weights_bar = weights_bar.double().cpu()
                    deltas.append((weights_bar.mean(1, keepdim=True) - weights_bar).numpy())
                    if bar is not None:
                        bar.update()
                delta = np.stack(deltas)
                for t_rows in self._chunks(self.n_train_):
                    yield q_rows, t_rows, measured, delta[:, :, t_rows]
        finally:
            if bar is not None:
                bar.close()
