"""One member's training, replayed with tangents (forward) or cotangents (reverse).

The replay starts from the member's own initialisation, draws the member's own
minibatches and applies the member's own optimizer, with the loss of training
row ``n`` in each minibatch mean weighted by ``1 + eps * w_n``.
"""

from collections.abc import Mapping

import torch
from sklearn.base import clone
from skorch import NeuralNet, NeuralNetClassifier
from torch.func import grad, jvp, vmap

from ..._inputs import SparseRows, n_rows
from ...ensemble import initialize_member
from ...ensemble import unsupported_reason as batched_unsupported_reason
from ...model import FlatMember, TrainingRecipe
from ._optimizers import (_OPTIMIZERS, _adam, _adam_adjoint, _optimizer_settings, _sgd,
                          _sgd_adjoint)
from ._plain_step import _PlainStackStep

#: Parameter-and-state snapshots a reverse sweep holds at least (more with more
#: cotangents), whatever the number of steps.
SNAPSHOTS = 64

# Criteria whose mean reduction is the mean of the per-row losses, so that a
# weight per row reproduces the batch loss skorch differentiates.
_MEAN_CRITERIA = (torch.nn.CrossEntropyLoss, torch.nn.NLLLoss, torch.nn.MSELoss,
                  torch.nn.L1Loss, torch.nn.SmoothL1Loss, torch.nn.HuberLoss,
                  torch.nn.BCEWithLogitsLoss)


def _unsupported_reason(net):
    """Why the replay cannot reproduce ``net``'s training, or None."""
    if not isinstance(net.optimizer_, _OPTIMIZERS):
        names = ", ".join(o.__name__ for o in _OPTIMIZERS)
        return f"optimizer {type(net.optimizer_).__name__} is not one of {names}"
    reason = batched_unsupported_reason(net)
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
    task : {"classifier", "regressor"}
    start : skorch.NeuralNet, default=None
        The member as it was before training (initialized). None rebuilds it
        as ``clone(net)`` initialized under ``init_seed``, which needs the
        module given as a class: a module instance keeps its trained weights.
    """

    def __init__(self, net, init_seed, order_seed, X, y, task, start=None):
        reason = _unsupported_reason(net)
        if reason is not None:
            raise ValueError(f"UnrolledInfluence cannot replay this net's training: {reason}")
        self.member = FlatMember(net, "loss", task)
        self.opt = _optimizer_settings(net)
        if start is None:
            start = initialize_member(clone(net), init_seed)
        self.theta0 = torch.cat([p.detach().reshape(-1) for p in start.module_.parameters()])
        self.order_seed = int(order_seed)
        self.X, self.y = self.member.tensors(X, y)
        self.recipe = TrainingRecipe.read(net, n_rows(X))
        self.shuffle, self.batch_size = self.recipe.shuffle, self.recipe.batch_size
        self.drop_last, self.max_epochs = self.recipe.drop_last, self.recipe.max_epochs
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
                            repr(net.criterion_), _hashable(self.X), self.y.cpu().numpy()))

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
            of steps. None means ``max(SNAPSHOTS, n_cotangents)``.

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

        budget = max(SNAPSHOTS, len(cotangents)) if budget is None else budget
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
        generator = torch.Generator().manual_seed(self.order_seed)
        step = 0
        for _ in range(self.max_epochs):
            order = self.recipe.epoch_order(generator).to(self.y.device)
            for rows in self.recipe.batch_slices():
                step += 1
                yield step, order[rows]

    def _update(self, theta, tangent, g, g_dot, state, state_dot, step):
        optimizer = self.opt["kind"]
        if optimizer == "SGD":
            return _sgd(theta, tangent, g, g_dot, state, state_dot, self.opt, step)
        return _adam(theta, tangent, g, g_dot, state, state_dot, self.opt, step,
                     decoupled=optimizer == "AdamW")

    def _update_adjoint(self, theta, bar, g, state, bar_state, step):
        optimizer = self.opt["kind"]
        if optimizer == "SGD":
            return _sgd_adjoint(theta, bar, g, state, bar_state, self.opt, step)
        return _adam_adjoint(theta, bar, g, state, bar_state, self.opt, step,
                             decoupled=optimizer == "AdamW")


def _removal_directions(rows, n_samples, dtype):
    """Directions of removing each row from the mean, without the shared 1/N part."""
    directions = torch.zeros(len(rows), n_samples, dtype=dtype)
    directions[torch.arange(len(rows)), torch.as_tensor(rows)] = -1
    return directions


def _hashable(X):
    """The training rows of a replay in a form joblib hashes by value: a tensor, a
    dict of tensors (several forward arguments) or a CSR matrix (kept sparse)."""
    if isinstance(X, Mapping):
        return {name: _hashable(value) for name, value in X.items()}
    if isinstance(X, SparseRows):
        return X.matrix
    return X.cpu().numpy()
