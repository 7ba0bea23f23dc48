"""UnrolledInfluence: the estimator over a seed ensemble's replayed trainings."""

import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.base import _fit_context, is_classifier
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_memory
from skorch import NeuralNet

from ..._inputs import n_rows
from ..._loops import chunks, progress
from ...discrepancy import STATISTICS
from ...ensemble import initial_members, split_pipeline
from ...model import measure_all
from .._base import CONVENTION, _BaseInfluence
from ._replay import SNAPSHOTS, _Replay, _removal_directions

__all__ = ["UnrolledInfluence"]

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


class UnrolledInfluence(_BaseInfluence):
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
    {CONVENTION}

    Row ``n``'s loss in each minibatch mean is weighted by ``1 + eps w_n``.
    Removing row ``k`` from the mean over the other rows is, to first order in
    ``1/N``, ``w = -e_k + 1/N`` at ``eps = 1``, so the parameter response is
    ``-J e_k + (1/N) J 1`` with ``J = d theta_T / d w`` carried forward. For
    small-step SGD run to convergence it tends to
    ``(1/N) (H + wd I)^{{-1}} (grad l_k - gbar)``, the response of
    :class:`InfluenceTransformer` with ``curvature="exact", damping=0,
    retraining="same_steps"``: the replay keeps the recorded steps.

    Cost, per member: forward mode runs ``ceil((n_train + 1) / n_tangents)``
    replays in ``fit``, each a gradient plus ``n_tangents`` Hessian-vector
    products per step, and stores ``n_train * n_params`` numbers; memory does
    not grow with the number of steps. Reverse mode runs one primal replay in
    ``fit`` (to check it) and ``ceil(n_query / n_tangents)`` backward sweeps
    per scoring call, each ``n_tangents`` Hessian-vector products per step
    plus a few primal replays (2 when ``T <= {SNAPSHOTS} * {SNAPSHOTS} / 4`` steps, 3 for
    1260, 6 for a million) that recompute the parameters from at most
    ``max({SNAPSHOTS}, n_tangents)`` snapshots; memory does not grow with the number
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
        **_BaseInfluence._parameter_constraints,
        "mode": [StrOptions({"auto", "forward", "reverse"})],
        "n_tangents": [Interval(Integral, 1, None, closed="left")],
        "memory": [None, str, HasMethods(["cache"])],
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
        # a Pipeline's ensemble (its steps are held fixed, as InfluenceTransformer holds them)
        net = getattr(split_pipeline(self.estimator, "UnrolledInfluence")[1]
                      if self.estimator is not None else None, "net", None)
        if net is not None and not isinstance(net, NeuralNet):
            raise ValueError(
                f"UnrolledInfluence replays a member's training step by step, which it can do "
                f"for skorch nets but not for scikit-learn's own optimizers "
                f"({type(net).__name__}); use InfluenceTransformer, which attributes "
                "scikit-learn models through the function and loss they fit")
        self._adopt_ensemble(X, y)
        self._members = [self._member_function(i) for i in self.members_]
        ens = self.estimator_
        n = self.n_train_
        task = "classifier" if is_classifier(ens) else "regressor"
        # Each member's starting point is rebuilt the way the ensemble built it
        replays = [_Replay(ens.estimators_[i], ens.init_seeds_[i], ens.order_seeds_[i],
                           self._X_train, self._y_train, task, start=start)
                   for i, start in zip(self.members_, initial_members(ens, self.members_))]

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
        batches = [directions[rows] for rows in chunks(len(directions), self.n_tangents)]
        tasks = [(s, c) for s in range(len(replays)) for c in range(len(batches))]
        task, key = _cached(self.memory, _replay_chunk)
        jobs = Parallel(n_jobs=self.n_jobs, return_as="generator")(
            delayed(task)(replays[s], batches[c], key=key(replays[s], batches[c]))
            for s, c in tasks)
        parts = [[None] * len(batches) for _ in replays]
        finals = [None] * len(replays)
        with progress(len(tasks), "unrolled replays", "replay", self.verbose) as bar:
            for (s, c), (theta, tangents) in zip(tasks, jobs):
                parts[s][c] = tangents
                finals[s] = theta
                bar.update()

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
        for q_rows in chunks(n_rows(X), self._train_chunk()):
            grads = [member.per_sample_grads("measurement", X[q_rows], y[q_rows])
                     for member in self._members]
            measured = measure_all(self._members, X[q_rows], y[q_rows])
            for t_rows in chunks(self.n_train_, self._train_chunk()):
                delta = np.stack([
                    (g @ response[t_rows].T).double().cpu().numpy()
                    for g, response in zip(grads, self.responses_)
                ])
                yield q_rows, t_rows, measured, delta

    def _reverse_blocks(self, X, y):
        """Reverse mode: one backward sweep per member and batch of ``n_tangents`` queries."""
        n_sweeps = -(-n_rows(X) // self.n_tangents) * len(self._replays)
        with progress(n_sweeps, f"reverse sweeps for {n_rows(X)} queries", "sweep",
                      self.verbose) as bar:
            for q_rows in chunks(n_rows(X), self.n_tangents):
                grads = [member.per_sample_grads("measurement", X[q_rows], y[q_rows])
                         for member in self._members]
                measured = measure_all(self._members, X[q_rows], y[q_rows])
                task, key = _cached(self.memory, _adjoint_chunk)
                jobs = Parallel(n_jobs=self.n_jobs, return_as="generator")(
                    delayed(task)(replay, g, key=key(replay, g))
                    for replay, g in zip(self._replays, grads))
                deltas = []
                for weights_bar in jobs:
                    # removing row k is the direction -e_k + 1/N
                    weights_bar = weights_bar.double().cpu()
                    deltas.append((weights_bar.mean(1, keepdim=True) - weights_bar).numpy())
                    bar.update()
                delta = np.stack(deltas)
                for t_rows in chunks(self.n_train_, self._train_chunk()):
                    yield q_rows, t_rows, measured, delta[:, :, t_rows]
