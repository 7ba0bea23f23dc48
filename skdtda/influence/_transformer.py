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
import os
from numbers import Integral, Real
from pathlib import Path

import joblib
import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_memory
from sklearn.utils.parallel import Parallel, delayed

from .._inputs import n_rows
from .._loops import progress
from ..curvature import (AUTO_ALL_COLUMNS, AUTO_COLUMN_MACS, AUTO_MAX_MACS, AUTO_MAX_PARAMS,
                         CURVATURES, LAYERED, NEWTON_ROWS, NEWTON_SETS, auto_options,
                         fit_curvature, resolve_curvature)
from ..discrepancy import STATISTICS
from ..ensemble import fingerprint, member_nets
from ..model import AUTO_EXACT_COLUMNS, measure_all
from ._base import CONVENTION, _BaseInfluence
from ._calibration import AUTO_SECONDS, CalibrationUnavailable, calibrate
from ._damping import (EIGENVALUE_FRACTION, FALLBACK, KRONECKER_FACTOR, KRONECKER_SPREAD_FACTOR,
                       SPREAD_FACTOR, AutoDamping)
from ._retraining import RETRAINING, retraining_protocol
from ._scoring import GRADIENT_BUDGET, SOLUTION_BUDGET, Scoring, row_chunk
from ._store import (STORE_BUDGET, STORE_VERSION, StoreUnavailable, TrainingStore,
                     row_numbers, store_folder)

__all__ = ["InfluenceTransformer"]

logger = logging.getLogger("skdtda")

# AUTO_MAX_MACS and FALLBACK as the docstring writes them
_MACS = f"{AUTO_MAX_MACS:.2g}".replace("e+", "e")
_COLUMN_MACS = f"{AUTO_COLUMN_MACS:.0e}".replace("e+0", "e").replace("e+", "e")
_FALLBACK = f"{FALLBACK:.0e}".replace("e-0", "e-")


def _prepare_member(member, X, y, curvature, damping, options, chunk, factorise=True,
                    retraining="same_steps"):
    """One member's inverse curvature and the centre ``c_s`` each row's gradient is
    measured against (a joblib task). The curvature is factored here unless its
    damping may still change (``damping="auto"``'s floor)."""
    solver = fit_curvature(curvature, member, X, y, damping, options)
    if factorise:
        solver.factorise()
    if retraining == "same_epochs":
        return solver, [-b for b in member.fixed_penalty_grads()]
    return solver, member.mean_grads(X, y, chunk)


class InfluenceTransformer(_BaseInfluence):
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
    curvature : {{"auto", "ekfac", "kfac", "ggn", "exact", "cg", "pcg", "identity"}}, \
default="auto"
        Curvature of the mean training loss. ``"auto"`` (recorded in
        ``curvature_``) takes the exact Gauss-Newton where building it is cheap
        (``n_train * n_outputs * n_params**2 <= {_MACS}`` and
        ``n_params <= {AUTO_MAX_PARAMS}``, or in its kernel form for few rows and a wide
        net, ``(n_train * n_outputs)**2 * n_params <= {_MACS}`` and
        ``n_train * n_outputs <= {AUTO_MAX_PARAMS}``), else EK-FAC: on small models the exact
        Gauss-Newton predicts leave-one-out retraining much better
        (docs/influence.md). Its EK-FAC takes every column of each row's
        output-Hessian root (``samples=None``, as the exact Gauss-Newton does)
        for at most {AUTO_ALL_COLUMNS} outputs while those passes cost at most
        ``n_train * n_outputs * (one row's products through the layers) <=
        {_COLUMN_MACS}`` multiply-adds (recorded in ``curvature_options_``):
        closer to retraining than one combination (docs/benchmarks.md).
        EK-FAC or K-FAC of the Gauss-Newton work layer by layer over every supported
        layer (Linear, Conv1d/2d, Embedding/Bag, wherever it sits in the module; the
        other parameters are held fixed, see ``modules``) and never build a (rows x
        parameters) matrix; the exact Gauss-Newton or the exact Hessian are dense (small
        models); conjugate gradients use exact Gauss-Newton-vector products
        (matrix-free, any module, slow: only when asked for); ``"pcg"`` refines EK-FAC
        by a few of them, EK-FAC as the preconditioner (only when asked for); the
        identity is a gradient dot product (no damping).
    damping : "auto", "calibrate" or float, default="auto"
        Added to the curvature's eigenvalues; the chosen value is recorded in
        ``damping_``. ``"auto"`` takes the damping that the members' own
        training implies, ``1 / tau`` with ``tau`` the summed effective
        learning rate of their optimizer steps: finite training responds along
        a curvature direction ``h`` as ``(1 - (1 - eta h)^T) / h``, whose two
        limits are those of ``1 / (h + 1 / tau)``. SGD (with momentum),
        Adam/AdamW and scikit-learn's solvers are read from the fitted members.
        Its floor is kronfluence's rule, {EIGENVALUE_FRACTION:g} x the fitted curvature's
        mean eigenvalue: long Adam training takes large steps once its second
        moments have shrunk, and ``1 / tau`` then falls below the curvature's
        scale. That value is then multiplied by the curvature's and the
        statistic's factor: 1 for the exact forms, 1/{1 / KRONECKER_FACTOR:.0f} for
        K-FAC/EK-FAC, whose eigenvalues are already squeezed towards their mean;
        statistics of the spread over seeds (``statistic="variance"`` or
        ``"std"``) take {SPREAD_FACTOR:g} times more with the exact forms and
        {KRONECKER_SPREAD_FACTOR:g} times more with the Kronecker ones (their change is
        quadratic in the per-seed responses, so the noise that the damping
        bounds enters them squared). A fit run to convergence gets 0 where its L2 term keeps the
        curvature definite; anything else gets {_FALLBACK}. ``"calibrate"``
        measures instead: it retrains the members' recipe with a few seeds
        without random sets of rows (at most ``calibration_budget`` times the
        ensemble's own fit), scores candidate dampings around the rule's value
        (1/31.6x to 31.6x) by how well they predict that retraining, and takes
        the best where its gain over the rule's value is clear of the noise
        (``calibration_``, ``fidelity_``; docs/influence.md, "How far to
        trust the scores"). A float is the explicit choice; with
        ``curvature="exact"`` or ``"ggn"``, 0 gives the pseudo-inverse (null
        space dropped).
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
        for ``"cg"``; ``{{"maxiter": 5, "tol": 0.0, "samples": "auto"}}`` for
        ``"pcg"``; ``{{"samples": "auto"}}`` for ``"ekfac"``/``"kfac"``:
        ``None`` builds the factors from every column of each row's
        output-Hessian root (one backward pass per output), an int ``k`` from
        ``k`` random combinations of them (unbiased, ``k`` passes); ``"auto"``
        takes every column for at most {AUTO_EXACT_COLUMNS} outputs, else one combination (as
        faithful to the exact Gauss-Newton on the problems measured, at a
        fraction of the cost: docs/architectures.md); ``curvature="auto"``
        takes every column where it is cheap (see ``curvature``).
        ``"ekfac"``/``"kfac"`` also take ``{{"diagonal_input_above": 8192}}``:
        a layer with more inputs than this (a first layer on a wide
        vocabulary) keeps only the diagonal of its input factor, logging why
        (None keeps every factor full; docs/influence.md, "Wide inputs"),
        and ``{{"subspace": k}}``: each layer's inverse on the ``k`` leading
        eigenvectors of both factors only (LoGra's Kronecker projection), so
        queries and training rows are scored as ``k x k`` blocks and
        ``precompute`` stores them so (the compressed store; an approximation
        of the full EK-FAC, docs/influence.md, "A compressed store").
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
        ``n_params_attributed_`` numbers each, would pass {GRADIENT_BUDGET >> 20} MiB). A
        query chunk holds as many rows as keep the solved gradients of all seeds
        within {SOLUTION_BUDGET >> 20} MiB, at least ``batch_size``; beyond that (large nets,
        many seeds) seeds are scored one at a time, with one seed's solved
        gradients and the chunk's responses each within {SOLUTION_BUDGET >> 20} MiB. Memory stays
        bounded in the number of training rows, of queries and of parameters.
    n_jobs : int, default=None
        Joblib jobs over seeds while preparing curvature and building the
        ``precompute`` store in ``fit``. None means 1; any joblib backend (e.g.
        Dask) applies (a store under ``memory=`` is written by the workers, so
        they must see that folder).
    verbose : int, default=0
        Progress bars over seeds while preparing curvature and building the
        store, and over blocks of queries x training rows while scoring.
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

    calibration_budget : float, default=3.0
        With ``damping="calibrate"``: the retraining's cost, in fits of the
        ensemble's members, at most this multiple of the ensemble's own
        ``n_seeds`` (``seeds * (1 + n_sets)`` member fits; the large removal
        sets train on 70% of the rows, so the time is a little less). A budget
        too small for 8 removal sets is refused, saying what it would take.
    calibration_options : dict, default=None
        With ``damping="calibrate"``: ``{{"seeds": 4, "queries": 40, "sets": None,
        "max_sets": 40}}``, the retrained seeds (1 for a one-member ensemble),
        the query rows (training rows drawn at random and held out of every
        retraining, at most a fifth of the rows; or as many of the rows given
        to ``fit`` as ``X_query``), and the removal sets (None:
        as many as the budget allows, at most ``max_sets``; half remove 30% of
        the other rows, half 5%).
    memory : str, path-like, joblib.Memory or None, default=None
        Where ``damping="calibrate"`` keeps its retrained sets (one file a
        set, under ``skdtda-calibration``), so that an interrupted or repeated
        fit with the same ensemble, rows and measurement retrains only what is
        missing; and where the store of ``precompute`` is kept, as memory-mapped
        ``.npy`` files under ``skdtda-store``, read back by a later fit of the
        same members on the same rows whatever its damping, curvature,
        measurement or statistic (a store whose record names other rows or
        members is refused).
    precompute : "auto" or bool, default="auto"
        Whether ``fit`` stores what every query needs of the training rows,
        each member's loss gradient of each row, so that ``transform``,
        ``influence_samples``, ``predict_removal(_sets)``,
        ``mean_influence_samples`` and ``self_influence_samples`` compute only
        the queries' side and the products instead of a forward and backward
        pass over every training row. Exact: Linear and convolution layers keep
        each row's patches and output gradients (``T (in + out)`` numbers for
        ``T`` patches) where that is smaller than the row's ``(out, in)``
        gradient block, other blocks (embeddings, the dense curvatures' one
        block of all parameters) the block itself. ``"auto"`` stores where the
        store fits ``precompute_budget`` and otherwise logs why not (logger
        ``"skdtda"``, INFO); ``True`` raises instead, with the size needed;
        ``correction="newton"`` needs more than the gradients and stores nothing.
        The store does not depend on the damping.
    precompute_budget : int, default={STORE_BUDGET}
        Bytes the store may take ({STORE_BUDGET >> 20} MiB by default), in memory or on
        disk under ``memory``.
    query_rank : int or None, default=None
        None scores exactly. An integer ``R`` replaces each Kronecker-factored
        layer's solved query gradient, an ``(out, in)`` block per query and member,
        by its best rank-``R`` approximation (truncated SVD; kronfluence's
        ``query_gradient_rank``) wherever that is smaller, so that its product
        with a training row costs ``R (in + out)`` multiply-adds a patch instead
        of ``in x out``: a cheaper ``transform``, ``influence_samples`` and
        ``predict_removal(_sets)`` for many queries or many training rows, with
        or without ``precompute``. An approximation: on an MLP 32-128-128-4
        (EK-FAC), ``R = 8`` kept a median Spearman of 0.99 and Pearson of 0.9998
        with the exact scores, ``R = 32`` 0.9999 (docs/benchmarks.md).
        ``mean_influence_samples`` and ``self_influence_samples`` stay exact (they
        cost one query's products already), and so does every block that is not
        a factored layer's (the dense curvatures).

    Attributes
    ----------
    estimator_ : SeedEnsembleClassifier or SeedEnsembleRegressor
        The fitted ensemble.
    curvature_ : str
        The curvature used: ``curvature``, or what ``"auto"`` chose.
    curvature_options_ : dict or None
        The curvature's options used: ``curvature_options``, with
        ``{{"samples": None}}`` added where ``curvature="auto"`` took EK-FAC from
        every output-Hessian column.
    damping_ : float
        The damping used: ``damping``, or what ``"auto"`` or ``"calibrate"`` chose.
    calibration_ : Bunch or None
        With ``damping="calibrate"``, one entry per candidate damping: ``damping``
        and ``factor`` (its multiple of the rule's value ``rule``), ``mean`` (the
        LDS of the change of the mean over the large sets, with
        ``mean_interval``), ``small`` (the correlation of the change of the mean
        over the small sets, with ``small_interval``), ``variance`` and
        ``wasserstein`` (their LDS over the large sets), ``objective`` (the mean
        of ``mean`` and ``small``), ``gain`` (the smoothed objective less the
        rule's, with ``gain_interval``: query rows and retrained seeds resampled);
        ``chosen`` (the index taken, for the statistics of location; the
        spread's statistics take their factor on top), ``guarded`` (True where a
        candidate scored higher but its gain's interval reached zero, so the
        rule's value was kept), ``n_seeds``, ``n_sets``, ``n_large``, ``n_queries`` and
        ``query_rows`` (the training rows measured; None where ``X_query`` was
        given). Intervals are 95% over the query rows. None otherwise.
    fidelity_ : Bunch or None
        Where the damping was calibrated, how well the fitted transformer
        predicts the calibration's retraining at ``damping_``: ``lds`` of
        ``statistic`` over the large removal sets with its 95% ``interval``,
        and ``small_sets`` (the correlation of the change of the mean over the
        small sets, leave-one-out's regime) with ``small_sets_interval``. The
        intervals are for a retraining measured on other rows (prediction
        intervals over another draw of as many query rows, about sqrt(2) wider
        than the mean's confidence interval); with ``X_query`` given to
        ``fit``, for those rows (the mean's confidence interval). Both
        are corrected for the noise of the few retrained seeds (divided by
        their noise ceiling, ``lds_ceiling`` and ``small_sets_ceiling``: what
        a retraining with many seeds would show) and for that of the few
        members scored (times ``lds_members_factor`` and
        ``small_sets_members_factor``: what all the members predict);
        ``lds_measured`` and ``small_sets_measured`` are the raw values. Also
        the retraining's size
        (``n_sets``, ``n_small_sets``, ``n_seeds``, ``n_queries``) and its
        ``queries``: ``"training rows held out"`` (measured as test rows) or
        ``"given"`` (``X_query``). None otherwise.
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
    precompute_ : bool
        Whether ``fit`` stored the training rows' gradients (see ``precompute``).
    store_nbytes_ : int
        The store's size in bytes (0 without one).
    members_ : ndarray of int
        Indices into ``estimator_.estimators_`` of the attributed members.
    n_train_ : int
        Number of training rows N.
    n_features_in_ : int
        Number of features.

    Notes
    -----
    {CONVENTION}

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
    >>> influence.precompute_  # fit stored the training rows' gradients
    True
    >>> influence.self_influence_samples().shape
    (4, 150)
    """

    _parameter_constraints = {
        **_BaseInfluence._parameter_constraints,
        "curvature": [StrOptions(set(CURVATURES))],
        "damping": [Interval(Real, 0, None, closed="left"), StrOptions({"auto", "calibrate"})],
        "calibration_budget": [Interval(Real, 0, None, closed="left")],
        "calibration_options": [dict, None],
        "memory": [None, str, os.PathLike, HasMethods(["cache"])],
        "curvature_options": [dict, None],
        "modules": [str, type, list, tuple, None],
        "correction": [StrOptions({"newton"}), None],
        "retraining": [StrOptions(set(RETRAINING))],
        "precompute": ["boolean", StrOptions({"auto"})],
        "precompute_budget": [Interval(Real, 0, None, closed="left")],
        "query_rank": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, estimator=None, *, curvature="auto", damping="auto", measurement="loss",
                 statistic="mean", q=0.5, curvature_options=None, modules=None,
                 seed_index=None, batch_size=256, n_jobs=None, verbose=0, correction=None,
                 retraining="auto", calibration_budget=3.0, calibration_options=None,
                 memory=None, precompute="auto", precompute_budget=STORE_BUDGET,
                 query_rank=None):
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
        self.calibration_budget = calibration_budget
        self.calibration_options = calibration_options
        self.memory = memory
        self.precompute = precompute
        self.precompute_budget = precompute_budget
        self.query_rank = query_rank

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, X_query=None, y_query=None):
        """Fit (or adopt) the ensemble and prepare each member's inverse curvature.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The training rows to attribute.
        y : array-like of shape (n_samples,)
            Their targets.
        X_query : array-like of shape (n_query, n_features), default=None
            Where the damping is calibrated (``damping="calibrate"``, or
            ``"auto"`` where it calibrates): the rows you will ask about (test
            rows, say; as the estimator takes them, before any Pipeline step),
            measured instead of training rows held out of the retraining, at
            most ``calibration_options["queries"]`` of them. Both the damping
            and ``fidelity_`` are then for these rows: how well attribution
            works depends on which rows are asked about (docs/influence.md,
            "How far to trust the scores"). None: training rows drawn at random.
        y_query : array-like of shape (n_query,), default=None
            Their targets; None takes the ensemble's prediction (as
            ``transform`` does).

        Returns
        -------
        self : InfluenceTransformer
            The fitted transformer.
        """
        if self.query_rank is not None and self.correction == "newton":
            raise ValueError("query_rank approximates first-order scores, and "
                             "correction='newton' re-solves every row exactly: use one of them")
        if self.query_rank is not None and (self.curvature_options or {}).get("subspace"):
            raise ValueError("query_rank and curvature_options={'subspace': ...} both "
                             "compress the solved queries (to rank query_rank, or onto the "
                             "subspace's k x k block per layer): use one of them")
        if X_query is None and y_query is not None:
            raise ValueError("y_query was given without X_query")
        if X_query is not None and self.damping not in ("auto", "calibrate"):
            raise ValueError(f"X_query is what damping='calibrate' (or 'auto') measures; "
                             f"damping={self.damping!r} calibrates nothing")
        X, y = self._adopt_ensemble(X, y)
        query = None if X_query is None else self._query(X_query, y_query)
        ens = self.estimator_
        estimators = [ens.estimators_[i] for i in self.members_]
        auto = None
        self.damping_ = self.damping
        if self.damping in ("auto", "calibrate"):
            nets = member_nets(ens)
            auto = AutoDamping(estimators, [nets[i] for i in self.members_], self.n_train_,
                               self.statistic, self.curvature)
            self.damping_ = auto.value  # provisional: the curvature's form may depend on it
        self.retraining_, how = retraining_protocol(estimators, self.n_train_, self.retraining)
        if self.retraining == "auto":
            logger.info("retraining='auto' chose %r: %s", self.retraining_, how)
        self.curvature_, self._members = self._resolve_curvature()
        lead = self._members[0]
        self.curvature_options_ = self.curvature_options
        if self.curvature == "auto" and self.curvature_ in LAYERED:
            self.curvature_options_ = auto_options(lead, self._X_train, self.curvature_options)
        self.n_params_attributed_ = lead.n_params
        self.attributed_layers_ = ([spec.name for spec in lead.layers]
                                   if self.curvature_ in LAYERED else [])
        self.fixed_parameters_ = dict(lead.fixed)
        if self.fixed_parameters_:
            logger.info("%d of %d parameters attributed; held fixed: %s", lead.n_params,
                        sum(p.numel() for p in lead.module.parameters()),
                        sorted(self.fixed_parameters_))
        jobs = Parallel(n_jobs=self.n_jobs, return_as="generator")(
            delayed(_prepare_member)(member, self._X_train, self._y_train, self.curvature_,
                                     self.damping_, self.curvature_options_, self._train_chunk(),
                                     factorise=auto is None, retraining=self.retraining_)
            for member in self._members)
        self.curvatures_, self._centres = [], []
        with progress(len(self._members), f"curvature ({self.curvature_})", "seed",
                      self.verbose) as bar:
            for curvature, centre in jobs:
                self.curvatures_.append(curvature)
                self._centres.append(centre)
                bar.update()
        self.calibration_ = self.fidelity_ = None
        if auto is not None:  # the damping is chosen now that the curvature is fitted
            damping = None
            if self.damping == "calibrate":
                damping = self._calibrate(auto, X, y, query=query)
            elif self.calibration_budget > 0:
                try:
                    damping = self._calibrate(auto, X, y, max_seconds=AUTO_SECONDS,
                                              query=query)
                except CalibrationUnavailable as reason:
                    logger.info("damping='auto' keeps its rule and does not calibrate: %s",
                                reason)
            if damping is None:
                damping = auto.with_floor(self.curvatures_, self.curvature_)
                if query is not None:
                    logger.info("X_query was not used: damping='auto' kept its rule")
            self._set_damping(damping)
        self._precompute()
        return self

    def _memory_folder(self, name):
        """``name`` under the ``memory=`` location, or None without one."""
        if self.memory is None:
            return None
        memory = os.fspath(self.memory) if isinstance(self.memory, os.PathLike) else self.memory
        location = check_memory(memory).location
        return None if location is None else Path(location) / name

    def _precompute(self):
        """``precompute=``: store (or read back) what every query needs of the training
        rows, each member's loss gradients of them (:mod:`skdtda.influence._store`)."""
        self._store, self.precompute_, self.store_nbytes_ = None, False, 0
        required = self.precompute != "auto"  # True, or a numpy bool
        if required and not self.precompute:
            return
        reason, layouts = None, None
        if self.correction == "newton":
            reason = ("correction='newton' solves each training row with its own curvature "
                      "term, so its scores need more than the rows' gradients")
        else:
            try:
                layouts, size = TrainingStore.plan(self._members, self._X_train, self._y_train,
                                                   self.curvatures_)
            except StoreUnavailable as why:
                reason = str(why)
            else:
                if size > self.precompute_budget:
                    reason = (f"the store needs {size / 2**20:.1f} MiB ({size} bytes), more "
                              f"than precompute_budget={self.precompute_budget:g} bytes "
                              f"({self.precompute_budget / 2**20:.1f} MiB)")
        if reason is None:
            try:
                self._store = self._open_store(layouts)
            except StoreUnavailable as why:
                reason = str(why)
        if reason is not None:
            if required:
                raise ValueError(f"precompute=True cannot store the training rows: {reason}; "
                                 "raise precompute_budget or use precompute='auto' or False")
            logger.info("precompute='auto' stores nothing, every query recomputes the "
                        "training rows' gradients: %s", reason)
            return
        self.precompute_, self.store_nbytes_ = True, self._store.nbytes

    def _open_store(self, layouts):
        """Build the store, in memory or (with ``memory=``) as memory-mapped files,
        or read back the one kept for the same rows, members and blocks."""
        folder = self._memory_folder("skdtda-store")
        record = None
        if folder is not None:
            ens = self.estimator_
            fitted = getattr(ens, "training_fingerprint_", None)
            fp = fitted if fitted is not None else fingerprint(self._X_train, self._y_train)
            record = {
                "version": STORE_VERSION, "fingerprint": fp.key(),
                "parameters": [joblib.hash(m.theta.detach().cpu().numpy())
                               for m in self._members],
                "layout": [(type(m).__name__, list(m.names), layout,
                            repr(getattr(m.net, "criterion_", None)))
                           for m, layout in zip(self._members, layouts)]}
            if self.curvatures_[0].subspace is not None:
                # rows kept in the eigenbases depend on how those were fitted
                record["curvature"] = (self.curvature_, repr(self.curvature_options_))
            folder = store_folder(folder, record)
            if (folder / "store.pkl").exists():
                logger.info("precompute: the training rows' store is read back from %s",
                            folder)
                return TrainingStore.load(folder, layouts, record)
        return TrainingStore.build(self._members, self._X_train, self._y_train, layouts,
                                   self._store_chunk(layouts), folder=folder, record=record,
                                   n_jobs=self.n_jobs, verbose=self.verbose,
                                   solvers=self.curvatures_)

    def _store_chunk(self, layouts):
        """Rows per pass while building the store: within the gradient budget for the
        largest stored row."""
        lead = self._members[0]
        stored = max(row_numbers(layout) for layout in layouts)
        return row_chunk(max(stored, lead.n_params), lead.theta.element_size(),
                         max(self.batch_size, 1024))

    def _set_damping(self, damping):
        if damping != self.damping_:
            self.curvatures_ = [c.with_damping(damping) for c in self.curvatures_]
            self.damping_ = damping
        for curvature in self.curvatures_:  # left unfactored by the fit
            curvature.factorise()

    def _calibrate(self, auto, X, y, max_seconds=None, query=None):
        """``damping="calibrate"``: the candidates around the rule's value scored
        against a small retraining (:mod:`skdtda.influence._calibration`)."""
        center = (auto.training_value(self.curvatures_)
                  * auto.factor(self.curvature_, "mean"))
        if not center > 0:
            raise CalibrationUnavailable(
                f"damping='calibrate' searches around the damping the members' training "
                f"implies, and {auto.how} gives {center:g}: a penalised objective solved to "
                "convergence needs no damping; use damping='auto' (or a float)")
        folder = self._memory_folder("skdtda-calibration")
        result = calibrate(
            self, X, y, self._X_train, self._y_train, center, budget=self.calibration_budget,
            options=self.calibration_options, statistic=self.statistic, q=self.q,
            # statistics of the spread keep their multiple of the location's damping
            ratio=auto.factor(self.curvature_) / auto.factor(self.curvature_, "mean"),
            folder=folder, n_jobs=self.n_jobs, verbose=self.verbose, max_seconds=max_seconds,
            query=query)
        self.calibration_, self.fidelity_ = result.table, result.fidelity
        return result.damping

    def _resolve_curvature(self):
        """``(curvature_, members)``: the curvature ``curvature`` stands for, and each
        attributed member in the form it needs (flat, or layered for the
        Kronecker-factored curvatures)."""
        lead = None
        if self.curvature == "auto":  # the choice looks at a flat member's size and layers
            lead = self._member_function(self.members_[0], modules=self.modules)
        curvature = resolve_curvature(self.curvature, lead, self._X_train, self.damping_)
        if self.curvature == "auto":
            logger.info("curvature='auto' chose %r", curvature)
        if self.correction == "newton" and curvature not in NEWTON_SETS:
            raise ValueError(
                f"correction='newton' refits the curvature to the kept rows, which "
                f"curvature={curvature!r} cannot do; use one of "
                f"{', '.join(map(repr, NEWTON_SETS))} (single rows: {NEWTON_ROWS}), or "
                "correction=None")
        layered = curvature in LAYERED
        if lead is not None and not layered:  # the flat lead the choice looked at
            return curvature, [lead] + [self._member_function(i, modules=self.modules)
                                        for i in self.members_[1:]]
        return curvature, [self._member_function(i, layered=layered, modules=self.modules)
                           for i in self.members_]

    # -- scoring ------------------------------------------------------------------------
    def _scoring(self):
        return Scoring(self._members, self.curvatures_, self._centres, self._X_train,
                       self._y_train, self.batch_size, self.verbose,
                       store=getattr(self, "_store", None), query_rank=self.query_rank)

    def _blocks(self, X, y):
        """Yield (query rows, train rows, m (S, nq), delta (S, nq, nt)) chunk by chunk."""
        if self.correction != "newton":
            return self._scoring().first_order(X, y)
        self._check_newton_rows()
        return self._scoring().newton_rows(X, y)

    def _mean_samples(self, X, y):
        if self.correction == "newton":
            return super()._mean_samples(X, y)
        return self._scoring().mean_over_queries(X, y)

    def _self_samples(self):
        if self.correction == "newton":
            return super()._self_samples()
        return self._scoring().self_influence()

    def _check_newton_rows(self):
        if self.curvature_ not in NEWTON_ROWS:
            raise ValueError(
                f"correction='newton' for single rows (transform, influence_samples, "
                f"one-row removal sets) needs curvature in {NEWTON_ROWS}: a low-rank update "
                f"of each row's own curvature term; with curvature={self.curvature_!r} it "
                "applies to removal sets of two rows or more (predict_removal, "
                "skdtda.evaluation.predict_distributions). Use correction=None for "
                "first-order per-row scores")

    def _removal_samples(self, X, y, masks):
        """With ``correction="newton"``: one-row sets by the Woodbury update where the
        curvature allows it, the others re-solved with their kept rows."""
        if self.correction != "newton":
            return super()._removal_samples(X, y, masks)
        scoring = self._scoring()
        before = measure_all(self._members, X, y)
        after = np.broadcast_to(before, (len(masks),) + before.shape).copy()
        sizes = masks.sum(axis=1)
        single = np.flatnonzero(sizes == 1) if self.curvature_ in NEWTON_ROWS else []
        if len(single):
            delta = np.empty((len(self._members), n_rows(X), len(single)))
            for q_rows, t, _, part in scoring.newton_rows(X, y, masks[single].argmax(axis=1)):
                delta[:, q_rows, t] = part
            after[single] += np.moveaxis(delta, 2, 0)
        rest = np.setdiff1d(np.flatnonzero(sizes > 0), single)
        if len(rest):
            after[rest] += scoring.newton_shifts(X, y, masks[rest])
        return before, after
