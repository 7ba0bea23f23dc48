"""InfluenceTransformer: per-seed influence functions that sample the post-removal law.

For member ``s`` of a seed ensemble, the influence function predicts the
response of that run's measurement to removing training row ``k``:

    delta_sk = (1/N) grad m(theta_s)^T (H_s + damping I)^{-1} (grad l_k(theta_s) - c_s)

with ``H_s`` the curvature of the *mean* training loss (plus the optimizer's
weight decay) and ``c_s`` what a removed row's gradient is measured against:
minus the per-step weight decay when retraining keeps the epochs (minibatch
recipes), the mean training gradient when it keeps the steps (full batch;
:mod:`skdtda.influence._retraining`). The pairs ``(m_s, m_s + delta_sk)`` are
samples of the measurement's distribution before and after the removal; a discrepancy between
them (change in mean, increase in variance, Wasserstein-2, ...) is the
distributional influence of row ``k``.
"""

import logging
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted, validate_data

from ..curvature import (CURVATURES, LAYERED, NEWTON_ROWS, NEWTON_SETS, fit_curvature,
                         resolve_curvature, woodbury_solve)
from ..discrepancy import STATISTICS, check_statistic, discrepancy
from ..ensemble import SeedEnsembleClassifier, SeedEnsembleRegressor, check_same_training_data
from ..ensemble._seed_ensemble import _numpy_dtype
from ..measurements import MEASUREMENTS
from ._damping import FALLBACK, auto_damping, damping_factor, eigenvalue_floor
from ..model import FlatMember, LayeredMember
from ._retraining import RETRAINING, retraining_protocol

__all__ = ["InfluenceTransformer"]

logger = logging.getLogger("skdtda")

# Bytes of solved query gradients held at once while scoring (all members, or one
# member and the query chunk's responses when scored member by member).
_SOLUTION_BUDGET = 256 * 2**20
# Bytes of one training chunk's per-row gradient blocks.
_GRADIENT_BUDGET = 128 * 2**20

_CONVENTION = """The sign and scale convention of every skdtda score: the predicted change
    of the measurement when the training row is removed, in the measurement's
    own units, already divided by the number of training rows N. Positive means
    removing the row makes the measurement larger (for a loss: the row was
    helping). Removing a set sums the per-row changes (first order)."""


def _prepare_member(member, X, y, curvature, damping, options, chunk, factorise=True,
                    retraining="same_steps"):
    """One member's inverse curvature and the centre ``c_s`` each row's gradient is
    measured against (a joblib task)."""
    solver = fit_curvature(curvature, member, X, y, damping, options)
    if factorise:  # the damping is settled: factor where the work runs
        solver.factorise()
    if retraining == "same_epochs":
        return solver, [-b for b in member.fixed_penalty_grads()]
    return solver, member.mean_grads(X, y, chunk)


class InfluenceTransformer(TransformerMixin, BaseEstimator):
    __doc__ = f"""Distributional influence of training rows from per-seed influence functions.

    ``fit(X_train, y_train)`` fits the seed ensemble (a clone) unless it is
    already fitted, and prepares each member's inverse curvature.
    ``transform(X)`` returns, for each query row and each training row, a
    discrepancy between the measurement's distribution over seeds before and
    after removing that training row.

    Parameters
    ----------
    estimator : SeedEnsembleClassifier or SeedEnsembleRegressor, default=None
        The seed ensemble whose members are attributed. If it is already
        fitted, it is used as is and must have been fitted on the ``X, y``
        passed to ``fit`` (the training rows being attributed). If it is not
        fitted, a clone is fitted on them. None gives a default ensemble, a
        classifier or a regressor depending on ``y``.
    curvature : {{"auto", "ekfac", "kfac", "ggn", "exact", "cg", "identity"}}, default="auto"
        Curvature of the mean training loss. ``"auto"`` (recorded in
        ``curvature_``) takes the exact Gauss-Newton where building it is cheap
        (``n_train * n_outputs * n_params**2 <= 2.5e10`` and
        ``n_params <= 4096``, or in its kernel form for few rows and a wide
        net, ``(n_train * n_outputs)**2 * n_params <= 2.5e10`` and
        ``n_train * n_outputs <= 4096``), else EK-FAC: on small models the exact
        Gauss-Newton predicts leave-one-out retraining much better
        (docs/influence.md). EK-FAC or K-FAC of the Gauss-Newton work layer by
        layer over every supported layer (Linear, Conv1d/2d, Embedding/Bag,
        wherever it sits in the module; the other parameters are held fixed,
        see ``modules``) and never build a (rows x parameters) matrix; the
        exact Gauss-Newton or the exact Hessian are dense (small models);
        conjugate gradients use exact Gauss-Newton-vector products
        (matrix-free, any module, slow: only when asked for); the identity is
        a gradient dot product (no damping).
    damping : "auto" or float, default="auto"
        Added to the curvature's eigenvalues. ``"auto"`` (recorded in
        ``damping_``) takes the damping that the members' own training
        implies, ``1 / tau`` with ``tau`` the summed effective learning rate
        of their optimizer steps: finite training responds along a curvature
        direction ``h`` as ``(1 - (1 - eta h)^T) / h``, whose two limits are
        those of ``1 / (h + 1 / tau)``. SGD (with momentum), Adam/AdamW and
        scikit-learn's solvers are read from the fitted members. Its floor is
        kronfluence's rule, 0.1 x the fitted curvature's mean eigenvalue: long
        Adam training takes large steps once its second moments have shrunk,
        and ``1 / tau`` then falls below the curvature's scale. A fit run to
        convergence gets 0 where its L2 term keeps the curvature definite;
        anything else gets 1e-3. Statistics of the spread over seeds
        (``statistic="variance"`` or ``"std"``) take 3 times that value: their
        change is quadratic in the per-seed responses, so the noise that the
        damping bounds enters them squared (variance-LDS peaks at 1.5-10x the
        damping best for the mean). On nine recipes it came within 0.03 of the
        best fixed damping on 25 of 27 scores (docs/benchmarks.md, "Damping").
        A float is the explicit choice; with ``curvature="exact"``
        or ``"ggn"``, 0 gives the pseudo-inverse (null space dropped).
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
    curvature_options : dict, default=None
        Options of the curvature backend: ``{{"maxiter": 100, "tol": 1e-6}}``
        for ``"cg"``; ``{{"samples": "auto"}}`` for ``"ekfac"``/``"kfac"``:
        ``None`` builds the factors from every column of each row's
        output-Hessian root (one backward pass per output), an int ``k`` from
        ``k`` random combinations of them (unbiased, ``k`` passes); ``"auto"``
        takes every column for at most 2 outputs, else one combination (as
        faithful to the exact Gauss-Newton on the problems measured, at a
        fraction of the cost: docs/architectures.md).
    modules : str, type, list of them, or None, default=None
        The attributed modules; the parameters of every other module are held
        fixed at their trained values. None: with EK-FAC/K-FAC every
        supported layer, with the other curvatures every parameter. A name
        (as in ``module.named_modules()``) selects that module and everything
        inside it, a class every module of that class. EK-FAC/K-FAC attribute
        only the supported layers among them. ``n_params_attributed_`` and
        ``fixed_parameters_`` report the result.
    seed_index : int, default=None
        Use only this member: the classical fixed-seed influence the paper
        compares against. None uses every member.
    batch_size : int, default=256
        Training rows per chunk (fewer where their per-row gradients,
        ``n_params_attributed_`` numbers each, would pass 128 MiB). A query
        chunk holds as many rows as keep the solved gradients of all seeds
        within 256 MiB, at least ``batch_size``; beyond that (large nets, many
        seeds) seeds are scored one at a time, with one seed's solved
        gradients and the chunk's responses each within 256 MiB. Memory stays
        bounded in the number of training rows, of queries and of parameters.
    n_jobs : int, default=None
        Joblib jobs over seeds while preparing curvature in ``fit``. None
        means 1; any joblib backend (e.g. Dask) applies.
    verbose : int, default=0
        Progress bars over seeds while preparing curvature, and over blocks of
        queries x training rows while scoring.
    correction : {{None, "newton"}}, default=None
        None: first-order influence, with the curvature of all N rows.
        ``"newton"``: one Newton step on the objective of the *kept* rows, with
        their curvature ``H_keep`` (exact on a quadratic objective; see
        docs/influence.md, "Beyond first order"). A removal set ``S`` of
        ``predict_removal`` or :func:`skdtda.evaluation.predict_distributions`
        is re-solved with ``H_keep`` (the curvatures ``"exact"``, ``"ggn"``,
        ``"kfac"``, ``"ekfac"``, ``"cg"``): **one new factorisation per member
        and set** (dense: the removed rows' terms, ``|S| C P^2``, a ``P^3``
        product and a Cholesky factor; kernel: a new ``(M', M')`` Gram matrix;
        K-FAC/EK-FAC: factors and eigenvalues refitted over the kept rows; CG:
        a solve over the kept rows). Single rows (``transform``,
        ``influence_samples``, one-row sets) take a low-rank (Woodbury) update
        of each row's own term (curvatures ``"exact"`` and ``"ggn"``): one
        refactorisation per member and query chunk, plus **C extra solves per
        training row** (C the number of outputs; with ``"exact"``, the rank of
        the row's Hessian and an eigendecomposition of it). The other
        curvatures refuse single rows with ``"newton"``.
    retraining : {{"auto", "same_epochs", "same_steps"}}, default="auto"
        Which retraining without the rows is predicted; the two differ only
        where training stopped short of convergence. ``"same_epochs"``: the
        members' recipe for as many epochs, so that in minibatches a set
        removing a fraction ``f`` of the rows removes ``f`` of the steps too
        (as :func:`skdtda.evaluation.retrain_distributions` retrains): a
        removed row takes its gradient and its share of the per-step L2 terms
        along (weight decay, a non-normalised penalty: ``c_s = -wd theta_s``).
        ``"same_steps"``: as many steps on
        the mean loss of the kept rows, which re-weights them: ``c_s`` is the
        mean training gradient (full-batch training retrains this way).
        ``"auto"`` (recorded in ``retraining_``) reads the members' batch size:
        minibatches give ``"same_epochs"``; full batches and solvers run to
        convergence ``"same_steps"``. The two shift every row's ``delta`` for
        a member and query by the same amount, so rankings under ``"mean"``
        and leave-one-out correlations do not depend on it; the spread over
        seeds and the Wasserstein distance do (docs/influence.md).

    Attributes
    ----------
    estimator_ : SeedEnsembleClassifier or SeedEnsembleRegressor
        The fitted ensemble.
    curvature_ : str
        The curvature used: ``curvature``, or what ``"auto"`` chose.
    damping_ : float
        The damping used: ``damping``, or what ``"auto"`` chose.
    retraining_ : str
        The retraining predicted: ``retraining``, or what ``"auto"`` chose.
    curvatures_ : list
        Per attributed member, its inverse-curvature solver.
    n_params_attributed_ : int
        Number of attributed parameters per member.
    attributed_layers_ : list of str
        With EK-FAC/K-FAC, the names of the attributed layers.
    fixed_parameters_ : dict
        ``{{parameter name: reason}}`` for every parameter held fixed (empty when
        every parameter is attributed).
    members_ : ndarray of int
        Indices into ``estimator_.estimators_`` of the attributed members.
    n_train_ : int
        Number of training rows N.
    n_features_in_ : int
        Number of features.

    Notes
    -----
    {_CONVENTION}

    References
    ----------
    Mlodozeniec et al., "Distributional Training Data Attribution: What do
    Influence Functions Sample?", arXiv:2506.12965.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.preprocessing import scale
    >>> from skdtda import InfluenceTransformer, SeedEnsembleClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> X = scale(X)
    >>> influence = InfluenceTransformer(SeedEnsembleClassifier(n_seeds=4, random_state=0))
    >>> influence.fit(X, y).transform(X[:3]).shape
    (3, 150)
    >>> influence.influence_samples(X[:3], y[:3]).shape
    (4, 3, 150)
    """

    _parameter_constraints = {
        "estimator": [SeedEnsembleClassifier, SeedEnsembleRegressor, None],
        "curvature": [StrOptions(set(CURVATURES))],
        "damping": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "measurement": [StrOptions(set(MEASUREMENTS)), callable],
        "statistic": [StrOptions(set(STATISTICS)), callable],
        "q": [Interval(Real, 0, 1, closed="both")],
        "curvature_options": [dict, None],
        "modules": [str, type, list, tuple, None],
        "seed_index": [Interval(Integral, 0, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
        "correction": [StrOptions({"newton"}), None],
        "retraining": [StrOptions(set(RETRAINING))],
    }

    def __init__(self, estimator=None, *, curvature="auto", damping="auto", measurement="loss",
                 statistic="mean", q=0.5, curvature_options=None, modules=None,
                 seed_index=None, batch_size=256, n_jobs=None, verbose=0, correction=None,
                 retraining="auto"):
        self.estimator = estimator
        self.curvature = curvature
        self.damping = damping
        self.measurement = measurement
        self.statistic = statistic
        self.q = q
        self.curvature_options = curvature_options
        self.modules = modules
        self.seed_index = seed_index
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.correction = correction
        self.retraining = retraining

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit (or adopt) the ensemble and prepare each member's inverse curvature.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The training rows to attribute.
        y : array-like of shape (n_samples,)
            Their targets.

        Returns
        -------
        self : InfluenceTransformer
            The fitted transformer.
        """
        self._adopt_ensemble(X, y)
        ens = self.estimator_
        self.damping_ = self.damping
        floored = False
        if self.damping == "auto":
            self.damping_, how, floored = auto_damping(
                [ens.estimators_[i] for i in self.members_],
                [ens._torch_members()[i] for i in self.members_], self.n_train_)
            if self.damping_ == 0 and self.curvature == "cg":
                # CG needs a positive shift on every parameter (intercepts are unpenalised)
                self.damping_, how = FALLBACK, f"{how}; CG needs a positive damping"
            factor = damping_factor(self.statistic)
            if factor != 1:
                self.damping_ *= factor
                how = (f"{how}; x {factor:g} for statistic={self.statistic!r}, a "
                       "statistic of the spread over seeds")
            logger.info("damping='auto' chose %.4g: %s", self.damping_, how)
        self.retraining_, how = retraining_protocol(
            [ens.estimators_[i] for i in self.members_], self.n_train_, self.retraining)
        if self.retraining == "auto":
            logger.info("retraining='auto' chose %r: %s", self.retraining_, how)
        self.curvature_ = resolve_curvature(self.curvature, self._members[0], self._X_train,
                                            self.damping_)
        if self.curvature == "auto":
            logger.info("curvature='auto' chose %r", self.curvature_)
        if self._newton() and self.curvature_ not in NEWTON_SETS:
            raise ValueError(
                f"correction='newton' refits the curvature to the kept rows, which "
                f"curvature={self.curvature_!r} cannot do; use one of "
                f"{', '.join(map(repr, NEWTON_SETS))} (single rows: {NEWTON_ROWS}), or "
                "correction=None")
        layered = self.curvature_ in LAYERED
        if layered:
            self._members = [
                LayeredMember(ens._torch_members()[i], self.measurement, ens._kind,
                              modules=self.modules, probe_X=self._X_train[:8])
                for i in self.members_]
        lead = self._members[0]
        self.n_params_attributed_ = lead.n_params
        self.attributed_layers_ = [spec.name for spec in lead.layers] if layered else []
        self.fixed_parameters_ = dict(lead.fixed)
        if self.fixed_parameters_:
            logger.info("%d of %d parameters attributed; held fixed: %s", lead.n_params,
                        sum(p.numel() for p in lead.module.parameters()),
                        sorted(self.fixed_parameters_))
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(self._members), desc=f"curvature ({self.curvature_})",
                       unit="seed", leave=self.verbose > 1)
        jobs = Parallel(n_jobs=self.n_jobs, return_as="generator")(
            delayed(_prepare_member)(member, self._X_train, self._y_train, self.curvature_,
                                     self.damping_, self.curvature_options, self._train_chunk(),
                                     factorise=not floored, retraining=self.retraining_)
            for member in self._members)
        self.curvatures_, self._centres = [], []
        for curvature, centre in jobs:
            self.curvatures_.append(curvature)
            self._centres.append(centre)
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        if floored:
            self._apply_eigenvalue_floor()
        return self

    def _apply_eigenvalue_floor(self):
        """``damping="auto"``: raise ``1 / tau`` to a tenth of the curvature's mean
        eigenvalue where it lies below (each backend re-damped in place; the dense
        and kernel forms, left unfactored by the fit, are factored once here)."""
        factor = damping_factor(self.statistic)  # the floor scales as 1 / tau did
        floor = eigenvalue_floor(self.curvatures_)
        if floor is not None and factor * floor > self.damping_:
            floor *= factor
            logger.info("damping='auto': 1 / tau = %.4g lies below 0.1 x the curvature's "
                        "mean eigenvalue; using %.4g", self.damping_ / factor, floor)
            self.curvatures_ = [curvature.with_damping(floor) for curvature in self.curvatures_]
            self.damping_ = floor
        for curvature in self.curvatures_:  # left unfactored by the fit
            curvature.factorise()

    def _adopt_ensemble(self, X, y):
        """Validate, fit or adopt the ensemble, and wrap the attributed members."""
        X_given, y_given = X, y  # an unfitted ensemble sees them as given (column names)
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True,
                             y_numeric=False)
        estimator = self.estimator
        if estimator is None:
            kind = type_of_target(y)
            estimator = (SeedEnsembleClassifier() if kind in ("binary", "multiclass")
                         else SeedEnsembleRegressor())
        try:
            check_is_fitted(estimator)
            self.estimator_ = estimator
            if estimator.n_features_in_ != X.shape[1]:
                raise ValueError(
                    f"the fitted estimator has {estimator.n_features_in_} features but X has "
                    f"{X.shape[1]}; it must be fitted on the training rows being attributed")
            check_same_training_data(estimator, X, y, type(self).__name__)
        except NotFittedError:
            self.estimator_ = clone(estimator).fit(X_given, y_given)
        ens = self.estimator_
        n_seeds = len(ens.estimators_)
        if self.seed_index is not None and self.seed_index >= n_seeds:
            raise ValueError(f"seed_index={self.seed_index} but the ensemble has only "
                             f"{n_seeds} members")
        check_statistic(self.statistic)
        self.members_ = (np.arange(n_seeds) if self.seed_index is None
                         else np.array([self.seed_index]))
        self._X_train = self._as_net_input(X)
        self._y_train = ens._net_targets(y)
        self.n_train_ = len(X)
        self._members = [FlatMember(ens._torch_members()[i], self.measurement, ens._kind,
                                    # UnrolledInfluence has no modules=: all parameters
                                    modules=getattr(self, "modules", None))
                         for i in self.members_]

    # -- scoring ------------------------------------------------------------------------
    def _as_net_input(self, X):
        return np.require(X, dtype=_numpy_dtype(self.estimator_._dtype),
                          requirements=["C", "W"])

    def _query(self, X, y):
        check_is_fitted(self)
        X = self._as_net_input(validate_data(self, X, reset=False,
                                             dtype=[np.float64, np.float32]))
        return X, self.estimator_._query_targets(X, y)

    def _chunks(self, n, size=None):
        size = size or self._train_chunk()
        for start in range(0, n, size):
            yield slice(start, min(start + size, n))

    def _train_chunk(self):
        """Training rows per chunk: ``batch_size``, fewer where their per-row gradient
        blocks (``n_params_attributed_`` numbers a row) would pass 128 MiB."""
        member = self._members[0]
        per_row = member.n_params * member.theta.element_size()
        return max(1, min(self.batch_size, _GRADIENT_BUDGET // per_row))

    def _query_chunk(self):
        """Query rows per chunk, and whether members are scored one at a time.

        Every training chunk's gradients are computed once per query chunk, so
        fewer, larger query chunks save that work. While the solved query
        gradients of *all* members fit a fixed budget (256 MiB) for at least
        ``batch_size`` queries, a chunk holds as many queries as fit, and each
        training chunk is scored for all members at once (nothing grows with
        the number of training rows). Beyond that (large nets, many seeds),
        members are scored one at a time: only one member's solved gradients
        are held, and the chunk's responses over all training rows, ``n_seeds *
        n_train`` float64 a query, stay within the same budget.
        """
        member = self._members[0]
        per_query = member.n_params * member.theta.element_size()
        all_members = _SOLUTION_BUDGET // (len(self._members) * per_query)
        if all_members >= self.batch_size:
            return all_members, False
        per_response = len(self._members) * self.n_train_ * 8
        return max(1, min(_SOLUTION_BUDGET // per_query, _SOLUTION_BUDGET // per_response)), True

    def _newton(self):
        # UnrolledInfluence, a subclass, has no correction=
        return getattr(self, "correction", None) == "newton"

    def _blocks(self, X, y):
        """Yield (query rows, train rows, m (S, nq), delta (S, nq, nt)) chunk by chunk."""
        if self._newton():
            yield from self._newton_blocks(X, y)
            return
        q_size, by_member = self._query_chunk()
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            n_blocks = -(-len(X) // q_size) * -(-self.n_train_ // self._train_chunk())
            bar = tqdm(total=n_blocks, desc=f"scoring {len(X)} queries x {self.n_train_} rows",
                       unit="block", leave=self.verbose > 1)
        try:
            yield from self._scored_blocks(X, y, q_size, by_member, bar)
        finally:
            if bar is not None:
                bar.close()

    def _solve_queries(self, member, curv, centre, Xq, yq):
        """One member's solved query gradients (flattened blocks) and their products
        with the centre ``c_s``."""
        solved = curv.solve_rows("measurement", Xq, yq)
        offset = sum(s.reshape(len(Xq), -1).double() @ m.reshape(-1)
                     for s, m in zip(solved, centre))
        # The products with training gradients run in the member's dtype (2x
        # faster, half the memory for float32 nets), whatever the solve's.
        return [s.reshape(len(Xq), -1).to(member.dtype) for s in solved], offset

    def _train_response(self, member, solved, offset, t_rows):
        """``delta`` of the solved queries for training rows ``t_rows``, (nq, nt)
        float64, summed over the attributed layers' blocks."""
        grads = member.grads("loss", self._X_train[t_rows], self._y_train[t_rows])
        total = None
        for s, g in zip(solved, grads):
            part = s @ g.reshape(len(g), -1).T
            total = part if total is None else total.add_(part)
        return total.double().sub_(offset[:, None]).cpu().numpy() / self.n_train_

    def _scored_blocks(self, X, y, q_size, by_member, bar):
        members = list(zip(self._members, self.curvatures_, self._centres))
        for q_rows in self._chunks(len(X), q_size):
            Xq, yq = X[q_rows], y[q_rows]
            measured = np.stack([member.measure(Xq, yq).double().cpu().numpy()
                                 for member in self._members])
            if by_member:
                delta = np.empty((len(members), len(Xq), self.n_train_))
                for s, (member, curv, centre) in enumerate(members):
                    solved, offset = self._solve_queries(member, curv, centre, Xq, yq)
                    for t_rows in self._chunks(self.n_train_):
                        delta[s, :, t_rows] = self._train_response(member, solved, offset,
                                                                   t_rows)
                for t_rows in self._chunks(self.n_train_):
                    if bar is not None:
                        bar.update()
                    yield q_rows, t_rows, measured, delta[:, :, t_rows]
                continue
            solved = [self._solve_queries(member, curv, centre, Xq, yq)
                      for member, curv, centre in members]
            for t_rows in self._chunks(self.n_train_):
                delta = np.stack([self._train_response(member, sol, offset, t_rows)
                                  for member, (sol, offset) in zip(self._members, solved)])
                if bar is not None:
                    bar.update()
                yield q_rows, t_rows, measured, delta

    # -- correction="newton" -------------------------------------------------------------
    def _measured(self, X, y):
        return np.stack([member.measure(X, y).double().cpu().numpy()
                         for member in self._members])

    def _newton_blocks(self, X, y, rows=None):
        """Single-row Newton: yield (query rows, positions in ``rows``, m, delta).

        For each training row ``k`` (all rows, or ``rows``),
        ``delta_sk = (1/N') grad m^T (H~ - U_k S_k U_k^T / N')^{-1} (g_k - c_s)``
        with ``N' = N - 1`` (:mod:`skdtda.curvature._newton`): per member and
        query chunk one new factorisation (``H~``), per training row ``r + 1``
        solves (``r`` = the rank of the row's curvature term: its outputs).
        """
        if self.curvature_ not in NEWTON_ROWS:
            raise ValueError(
                f"correction='newton' for single rows (transform, influence_samples, "
                f"one-row removal sets) needs curvature in {NEWTON_ROWS}: a low-rank update "
                f"of each row's own curvature term; with curvature={self.curvature_!r} it "
                "applies to removal sets of two rows or more (predict_removal, "
                "skdtda.evaluation.predict_distributions). Use correction=None for "
                "first-order per-row scores")
        rows = np.arange(self.n_train_) if rows is None else np.asarray(rows)
        member = self._members[0]
        per_query = member.n_params * 8
        per_response = len(self._members) * max(len(rows), 1) * 8
        q_size = max(1, min(_SOLUTION_BUDGET // per_query, _SOLUTION_BUDGET // per_response))
        # a training row holds its gradient, U_k and H~^{-1} U_k (r = outputs) or, with
        # "exact", its (P, P) Hessian
        width = self.curvatures_[0].row_width(self._X_train)
        t_size = max(1, min(self.batch_size,
                            _GRADIENT_BUDGET // (width * member.n_params * 8)))
        n_kept = self.n_train_ - 1
        members = list(zip(self._members, self.curvatures_, self._centres))
        for q_rows in self._chunks(len(X), q_size):
            Xq, yq = X[q_rows], y[q_rows]
            measured = self._measured(Xq, yq)
            delta = np.empty((len(members), len(Xq), len(rows)))
            for s, (member, curv, (centre,)) in enumerate(members):
                tilde = curv.rescaled(self.n_train_)
                query = member.per_sample_grads("measurement", Xq, yq).double()
                for t in self._chunks(len(rows), t_size):
                    Xt, yt = self._X_train[rows[t]], self._y_train[rows[t]]
                    v = member.per_sample_grads("loss", Xt, yt).double() - centre
                    U, signs = curv.row_factors(Xt, yt)
                    solved = woodbury_solve(tilde, U, signs, v, n_kept)
                    delta[s, :, t] = (query @ solved.T).cpu().numpy() / n_kept
                del tilde
            for t in self._chunks(len(rows), t_size):
                yield q_rows, t, measured, delta[:, :, t]

    def _newton_set_shifts(self, X, y, masks):
        """Set Newton: (n_sets, n_seeds, n_query) predicted changes, each set re-solved
        with the curvature of its kept rows (one refactorisation per member and set)."""
        shifts = np.zeros((len(masks), len(self._members), len(X)))
        q_size = self._query_chunk()[0]
        members = list(zip(self._members, self.curvatures_, self._centres))
        sets = [i for i, mask in enumerate(masks) if mask.any()]
        for s, (member, curv, centre) in enumerate(members):
            solvers = curv.kept(self._X_train, self._y_train, (~masks[i] for i in sets))
            for i, kept in zip(sets, solvers):
                removed = np.flatnonzero(masks[i])
                n_kept = self.n_train_ - len(removed)
                total = None
                for t in self._chunks(len(removed)):
                    blocks = member.grads("loss", self._X_train[removed[t]],
                                          self._y_train[removed[t]])
                    sums = [b.double().sum(dim=0) for b in blocks]
                    total = sums if total is None else [a + b for a, b in zip(total, sums)]
                v = [t - len(removed) * m for t, m in zip(total, centre)]
                step = kept.solve_blocks([b[None] for b in v])
                step = [b.double().reshape(-1) for b in step]
                for q_rows in self._chunks(len(X), q_size):
                    query = member.grads("measurement", X[q_rows], y[q_rows])
                    change = sum(g.double().reshape(len(g), -1) @ b for g, b in zip(query, step))
                    shifts[i, s, q_rows] = change.cpu().numpy() / n_kept
        return shifts

    def _newton_distributions(self, X, y, masks):
        """``(before, after)`` of :func:`skdtda.evaluation.predict_distributions` with
        ``correction="newton"``: one-row sets by the Woodbury update where the
        curvature allows it, the others re-solved with their kept rows."""
        masks = np.asarray(masks, dtype=bool)
        before = self._measured(X, y)
        after = np.broadcast_to(before, (len(masks),) + before.shape).copy()
        sizes = masks.sum(axis=1)
        single = np.flatnonzero(sizes == 1) if self.curvature_ in NEWTON_ROWS else []
        if len(single):
            delta = np.empty((len(self._members), len(X), len(single)))
            for q_rows, t, _, part in self._newton_blocks(X, y, masks[single].argmax(axis=1)):
                delta[:, q_rows, t] = part
            after[single] += np.moveaxis(delta, 2, 0)
        rest = np.setdiff1d(np.flatnonzero(sizes > 0), single)
        if len(rest):
            after[rest] += self._newton_set_shifts(X, y, masks[rest])
        return before, after

    def influence_samples(self, X, y=None):
        """Per-seed predicted change of each query's measurement when each training row is removed.

        Parameters
        ----------
        X : array-like of shape (n_query, n_features)
            Query rows.
        y : array-like of shape (n_query,), default=None
            Query targets; None uses the ensemble's prediction.

        Returns
        -------
        delta : ndarray of shape (n_seeds, n_query, n_train)
            ``delta[s, i, k]``: member ``s``'s predicted change of query ``i``'s
            measurement when training row ``k`` is removed. ``n_seeds`` is 1
            when ``seed_index`` is set.

        Notes
        -----
        {convention}
        """
        X, y = self._query(X, y)
        out = np.empty((len(self._members), len(X), self.n_train_))
        for q_rows, t_rows, _, delta in self._blocks(X, y):
            out[:, q_rows, t_rows] = delta
        return out

    def measure(self, X, y=None):
        """The measurement of each query under each attributed member.

        Parameters
        ----------
        X : array-like of shape (n_query, n_features)
            Query rows.
        y : array-like of shape (n_query,), default=None
            Query targets; None uses the ensemble's prediction.

        Returns
        -------
        values : ndarray of shape (n_seeds, n_query)
            ``m_s`` for each attributed member: the "before" sample that
            ``influence_samples`` shifts.
        """
        X, y = self._query(X, y)
        return np.stack([member.measure(X, y).double().cpu().numpy()
                         for member in self._members])

    def transform(self, X):
        """Distributional influence of every training row on every query row.

        Parameters
        ----------
        X : array-like of shape (n_query, n_features)
            Query rows; their targets are the ensemble's predictions.

        Returns
        -------
        scores : ndarray of shape (n_query, n_train)
            ``statistic`` between the samples ``m_s`` and ``m_s + delta_sk``
            over seeds. Never builds the full 3-D array: works chunk by chunk.

        Notes
        -----
        {convention}
        """
        X, y = self._query(X, None)
        out = np.empty((len(X), self.n_train_))
        for q_rows, t_rows, measured, delta in self._blocks(X, y):
            before = np.broadcast_to(measured[:, :, None], delta.shape)
            out[q_rows, t_rows] = discrepancy(before, before + delta, self.statistic, q=self.q)
        return out

    def predict_removal(self, X, y=None, remove=None):
        """Samples of each query's measurement after removing a set of training rows.

        Parameters
        ----------
        X : array-like of shape (n_query, n_features)
            Query rows.
        y : array-like of shape (n_query,), default=None
            Query targets; None uses the ensemble's prediction.
        remove : array-like of int or bool
            Indices of the training rows to remove, or a boolean mask of length
            ``n_train_``.

        Returns
        -------
        samples : ndarray of shape (n_seeds, n_query)
            ``m_s + sum_{k in remove} delta_sk``: first-order samples of the
            measurement's distribution after the removal. With
            ``correction="newton"``, ``m_s + grad m^T H_keep^{-1} (1/N')
            sum_{k in remove} (g_k - c_s)`` instead: the set re-solved with the
            curvature of the ``N'`` kept rows (one new factorisation per member).
        """
        X, y = self._query(X, y)
        mask = self._removal_mask(remove)
        if self._newton():
            return self._measured(X, y) + self._newton_set_shifts(X, y, mask[None])[0]
        total = np.zeros((len(self._members), len(X)))
        measured_all = np.zeros_like(total)
        for q_rows, t_rows, measured, delta in self._blocks(X, y):
            total[:, q_rows] += delta[:, :, mask[t_rows]].sum(axis=2)
            measured_all[:, q_rows] = measured
        return measured_all + total

    def _removal_mask(self, remove):
        if remove is None:
            raise ValueError("predict_removal needs remove=: indices or a boolean mask of the "
                             "training rows to remove")
        remove = np.asarray(remove)
        if remove.dtype == bool:
            if remove.shape != (self.n_train_,):
                raise ValueError(f"a boolean remove mask must have shape ({self.n_train_},), "
                                 f"got {remove.shape}")
            mask = remove
        else:
            if remove.ndim != 1:
                raise ValueError("remove must be one set: a 1-D array of row indices or a "
                                 f"boolean mask of shape ({self.n_train_},), got shape "
                                 f"{remove.shape} (skdtda.evaluation.predict_distributions "
                                 "takes many sets)")
            if remove.size and (not np.issubdtype(remove.dtype, np.integer)
                                or remove.min() < 0 or remove.max() >= self.n_train_):
                raise ValueError(f"remove must hold indices in [0, {self.n_train_}), got "
                                 f"{remove[:5].tolist()}...")
            mask = np.zeros(self.n_train_, dtype=bool)
            mask[remove.astype(int)] = True
        if mask.all():
            raise ValueError(f"remove removes every one of the {self.n_train_} training rows")
        return mask

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns: one per training row, ``train0``, ``train1``, ...

        Parameters
        ----------
        input_features : ignored

        Returns
        -------
        names : ndarray of str of shape (n_train,)
        """
        check_is_fitted(self)
        return np.asarray([f"train{k}" for k in range(self.n_train_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


for _method in (InfluenceTransformer.influence_samples, InfluenceTransformer.transform):
    # method docstrings sit one level deeper than the class docstring
    _method.__doc__ = _method.__doc__.replace("{convention}",
                                              _CONVENTION.replace("\n    ", "\n        "))
