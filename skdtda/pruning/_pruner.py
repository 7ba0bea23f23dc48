"""DataPruner: score every training row by influence and keep the best share.

Pruning removes rows, so it is a *sampler* (``fit_resample``), never a
transformer. Scoring (the seed ensemble, its curvature and the influence
products) is the expensive part and does not depend on ``fraction``, ``mode``
or ``statistic``; it is computed by one module-level function that
``memory=`` (a :class:`joblib.Memory`) can cache, so a grid over ``fraction``
pays for it once per training set.
"""

import inspect
import warnings
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array, check_memory, indexable

from .._inputs import n_rows, take_rows
from .._loops import chunks
from ..discrepancy import STATISTICS, check_statistic, discrepancy
from ..ensemble import (SeedEnsembleClassifier, SeedEnsembleRegressor, check_rows,
                        rows_as_given, split_pipeline)
from ..influence import SPREAD_FACTOR, InfluenceTransformer

__all__ = ["DataPruner"]

_SEED_MAX = np.iinfo(np.int32).max

_CONVENTION = """Scores follow skdtda's convention: the predicted change of the objective
    when the row is removed, in the measurement's own units, already divided by
    the number of training rows. For ``objective="validation"`` (with the
    default ``measurement="loss"``) a *negative* score means removing the row
    is predicted to lower the validation loss: the row is harmful, and the
    rows with the lowest scores are removed first. For ``objective="self"`` the
    score is the predicted change of the row's own loss when it is left out
    (self-influence, usually positive); the rows with the highest scores
    (memorised, atypical or mislabelled rows) are removed first."""


def _is_classification(y):
    return type_of_target(y) in ("binary", "multiclass")


def _default_influence(y, seed):
    ensemble = (SeedEnsembleClassifier if _is_classification(y) else SeedEnsembleRegressor)
    return InfluenceTransformer(ensemble(n_seeds=4, random_state=seed))


def _validation_samples(influence, X_val, y_val):
    """Per-seed mean validation measurement and its predicted change per training row.

    Returns ``before`` of shape (n_seeds,) and ``delta`` of shape (n_seeds, n_train).
    The mean over validation rows is linear, so the change of the mean is the
    mean of the per-row changes: skdtda's estimators score it at the cost of one
    query (``mean_influence_samples``); another influence object is summed chunk
    by chunk, which bounds memory to ``n_seeds * batch_size * n_train``.
    """
    before = influence.measure(X_val, y_val).mean(axis=1)
    if hasattr(influence, "mean_influence_samples"):
        return before, influence.mean_influence_samples(X_val, y_val)
    delta = 0.0
    for rows in chunks(n_rows(X_val), influence.batch_size):
        delta = delta + influence.influence_samples(take_rows(X_val, rows),
                                                    y_val[rows]).sum(axis=1)
    return before, delta / n_rows(X_val)


def _self_samples(influence, X, y):
    """Per-seed measurement of each training row and its change when that row is removed.

    Returns ``before`` and ``delta``, both of shape (n_seeds, n_train): the
    diagonal of the (n_seeds, n_train, n_train) influence array. skdtda's
    estimators give it directly (``self_influence_samples``: one pass over the
    rows); another influence object is scored chunk by chunk, so the full array
    never exists.
    """
    if hasattr(influence, "self_influence_samples"):
        return influence.measure(X, y), influence.self_influence_samples()
    delta = np.empty((len(influence.members_), n_rows(X)))
    for rows in chunks(n_rows(X), influence.batch_size):
        block = influence.influence_samples(take_rows(X, rows), y[rows])
        local = np.arange(rows.stop - rows.start)
        delta[:, rows] = block[:, local, rows.start + local]
    return influence.measure(X, y), delta


def _fitted(influence, X, y, validation):
    """A clone of ``influence`` fitted on ``(X, y)``; where it calibrates its damping
    (``damping="calibrate"``, or ``"auto"`` where that calibrates), on the validation
    rows that the objective measures (its ``fit``'s ``X_query``)."""
    fitted = clone(influence)
    if (getattr(fitted, "damping", None) in ("auto", "calibrate")
            and "X_query" in inspect.signature(fitted.fit).parameters):
        return fitted.fit(X, y, X_query=validation[0], y_query=validation[1])
    return fitted.fit(X, y)


def _score_samples(influence, X, y, objective, validation_data, folds):
    """Fit the influence and return per-seed (before, delta) samples for every row.

    This is the expensive step that ``memory=`` caches; it depends only on its
    arguments. ``folds`` is None (one fit on all rows) or a list of
    ``(train, validation)`` index pairs for cross-fitting. Returns a list with
    one ``(train_rows, before, delta, fitted_influence)`` per fit; ``before``
    broadcasts against ``delta`` of shape (n_seeds, len(train_rows)).
    """
    fits = []
    if folds is None:
        if objective == "self":
            fitted = clone(influence).fit(X, y)
            before, delta = _self_samples(fitted, X, y)
        else:
            fitted = _fitted(influence, X, y, validation_data)
            before, delta = _validation_samples(fitted, *validation_data)
            before = before[:, None]
        fits.append((np.arange(n_rows(X)), before, delta, fitted))
        return fits
    for train, val in folds:
        validation = take_rows(X, val), y[val]
        fitted = _fitted(influence, take_rows(X, train), y[train], validation)
        before, delta = _validation_samples(fitted, *validation)
        fits.append((train, before[:, None], delta, fitted))
    return fits


class DataPruner(BaseEstimator):
    __doc__ = f"""Influence-based data pruning: a sampler that drops the most harmful rows.

    ``fit(X, y)`` scores every row by the predicted change of an objective
    when the row is removed, computed with per-seed influence functions of a
    seed ensemble and reduced over seeds by ``statistic`` (distributional
    training data attribution). ``fit_resample(X, y)`` returns the kept rows.
    A sampler, not a transformer: it has no ``transform``, so use it through
    :class:`PrunedEstimator` in a scikit-learn ``Pipeline`` or directly as a
    step of imbalanced-learn's ``Pipeline``.

    Parameters
    ----------
    influence : InfluenceTransformer, default=None
        Unfitted influence estimator; a clone is fitted on the rows passed to
        ``fit`` (on each cross-fitting fold's training rows). Its
        ``measurement`` defines the objective's per-row measurement (default
        the loss). None gives ``InfluenceTransformer`` with EK-FAC curvature
        over a default 4-seed ``SeedEnsembleClassifier`` or
        ``SeedEnsembleRegressor``, chosen from ``y``. One that calibrates its
        damping (``damping="calibrate"``, or ``"auto"`` where it calibrates) does
        so, with ``objective="validation"``, on the validation rows the objective
        measures (its ``fit``'s ``X_query``).
    fraction : float, default=0.1
        Share of the rows passed to ``fit`` that are removed:
        ``round(fraction * n_samples)`` rows, so ``fraction=0.2`` on 1000 rows
        keeps 800. It must remove at least one row and keep at least one.
    objective : {{"validation", "self"}}, default="validation"
        ``"validation"``: predicted change of the mean measurement over
        held-out rows, ``validation_data`` when given, else cross-fitted folds
        drawn inside ``fit`` (see ``validation_fraction``). ``"self"``: the
        predicted change of the row's own measurement when it is left out
        (self-influence); needs no held-out rows.
    validation_fraction : float, default=0.2
        Without ``validation_data``, the rows are split into
        ``n_folds = max(2, round(1 / validation_fraction))`` folds (stratified
        for classifiers). Each fold is held out once while the influence is
        fitted on the other folds, so every row is scored (as a training row
        of ``n_folds - 1`` fits, whose scores are averaged) and every row can
        be pruned. Costs ``n_folds`` ensemble fits.
    validation_data : tuple (X_val, y_val), default=None
        A fixed held-out set for ``objective="validation"``; then the
        influence is fitted once, on all rows passed to ``fit``. Its labels
        must have been seen in ``y``.
    statistic : str or callable, default="mean"
        Discrepancy between the objective's samples over seeds before and
        after the removal: {", ".join(repr(s) for s in STATISTICS)}, or a
        callable ``(before, after) -> array`` (see
        :func:`skdtda.discrepancy.discrepancy`). ``"mean"`` is the paper's
        mean influence. With ``objective="validation"`` the lowest values
        go first, so use a signed statistic there (``"mean"``,
        ``"variance"``, ``"std"``, ``"quantile"``); ``"wasserstein"``,
        ``"wasserstein_smooth"`` and ``"ks"`` are never negative. Ignored by the
        ``"fixed_seed"`` and ``"random"`` modes. The samples come from the
        influence as it is configured: its ``damping="auto"`` takes {SPREAD_FACTOR:g}x more
        for ``statistic="variance"`` or ``"std"`` of its own, so for pruning by
        the spread give the influence that statistic too.
    mode : {{"distributional", "fixed_seed", "random"}}, default="distributional"
        ``"distributional"``: ``statistic`` over all seeds of the ensemble,
        one common pruned set. ``"fixed_seed"``: the classical baseline, the
        scores of member ``seed_index`` alone. ``"random"``: uniformly random
        scores (a baseline; no influence is fitted).
    seed_index : int, default=0
        The member whose scores ``mode="fixed_seed"`` uses. All members are
        scored either way, so a cached scoring (``memory``) serves every mode
        and every ``seed_index``; for a cheap classical baseline give the
        ensemble ``n_seeds=1``.
    memory : str, joblib.Memory or None, default=None
        Caches the scoring (ensemble fits, curvature, influence products),
        which depends neither on ``fraction``, ``mode``, ``statistic`` nor
        ``seed_index``. A grid over those then scores each training set once.
        A path is a cache directory; None caches nothing.
    random_state : int, RandomState instance or None, default=None
        Draws the cross-fitting folds, the default ensemble's seeds and the
        scores of ``mode="random"``. Ensembles passed in keep their own
        ``random_state``.

    Attributes
    ----------
    scores_ : ndarray of shape (n_samples,)
        One score per row passed to ``fit`` (random draws for ``mode="random"``).
    seed_scores_ : ndarray of shape (n_seeds, n_samples)
        Each member's predicted change of the objective when the row is
        removed (averaged over cross-fitting folds). None for ``mode="random"``.
    sample_mask_ : ndarray of bool of shape (n_samples,)
        True for the kept rows.
    sample_indices_ : ndarray of int of shape (n_kept,)
        Indices of the kept rows, in their original order.
    n_removed_ : int
        Number of removed rows.
    influence_ : InfluenceTransformer or None
        The fitted influence when it was fitted once (``validation_data`` given,
        or ``objective="self"``); None with cross-fitting or ``mode="random"``.
    influences_ : list of InfluenceTransformer
        Every fitted influence: one, or one per cross-fitting fold.
    folds_ : list of (ndarray, ndarray) or None
        The cross-fitting ``(train, validation)`` index pairs, or None.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    PrunedEstimator : Prunes with a DataPruner, then fits an estimator.
    InfluenceTransformer : The per-seed influence functions used for scoring.

    Notes
    -----
    {_CONVENTION}

    With ``fraction`` removing ``r`` rows, ties are broken by row order
    (a stable sort). ``sample_weight`` is not used for scoring.

    References
    ----------
    Mlodozeniec et al., "Distributional Training Data Attribution: What do
    Influence Functions Sample?", arXiv:2506.12965, section 5 (data pruning).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.preprocessing import scale
    >>> from skdtda import DataPruner, InfluenceTransformer, SeedEnsembleClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> X = scale(X)
    >>> influence = InfluenceTransformer(SeedEnsembleClassifier(n_seeds=2, random_state=0))
    >>> pruner = DataPruner(influence, fraction=0.2, validation_fraction=0.5, random_state=0)
    >>> X_kept, y_kept = pruner.fit_resample(X, y)
    >>> X_kept.shape
    (120, 4)
    >>> pruner.scores_.shape, pruner.seed_scores_.shape
    ((150,), (2, 150))
    """

    _parameter_constraints = {
        "influence": [HasMethods(["fit", "influence_samples", "measure"]), None],
        "fraction": [Interval(Real, 0, 1, closed="neither")],
        "objective": [StrOptions({"validation", "self"})],
        "validation_fraction": [Interval(Real, 0, 0.5, closed="right")],
        "validation_data": [tuple, list, None],
        "statistic": [StrOptions(set(STATISTICS)), callable],
        "mode": [StrOptions({"distributional", "fixed_seed", "random"})],
        "seed_index": [Interval(Integral, 0, None, closed="left")],
        "memory": [None, str, HasMethods(["cache"])],
        "random_state": ["random_state"],
    }

    def __init__(self, influence=None, *, fraction=0.1, objective="validation",
                 validation_fraction=0.2, validation_data=None, statistic="mean",
                 mode="distributional", seed_index=0, memory=None, random_state=None):
        self.influence = influence
        self.fraction = fraction
        self.objective = objective
        self.validation_fraction = validation_fraction
        self.validation_data = validation_data
        self.statistic = statistic
        self.mode = mode
        self.seed_index = seed_index
        self.memory = memory
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Score every row and choose the rows to keep.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Their targets.

        Returns
        -------
        self : DataPruner
            The fitted pruner.
        """
        X, y = self._check_rows(X, y)
        # the objective is the influence's measurement (its default: the loss); only
        # the distributional mode reduces it by the statistic
        check_statistic(self.statistic, getattr(self.influence, "measurement", "loss")
                        if self.mode == "distributional" else None)
        n = n_rows(X)
        n_remove = int(round(self.fraction * n))
        if n_remove < 1:
            raise ValueError(f"fraction={self.fraction} removes no rows of the {n} "
                             f"sample{'s' if n != 1 else ''} passed to fit; raise it to at "
                             f"least {1 / n:.3g}")
        if n_remove >= n:
            raise ValueError(f"fraction={self.fraction} removes every one of the {n} "
                             f"sample{'s' if n != 1 else ''} passed to fit; lower it")
        rng = check_random_state(self.random_state)
        # Drawn in a fixed order whatever the mode, so that one random_state
        # gives the same folds and the same default ensemble in every mode.
        fold_seed, ensemble_seed, random_seed = rng.randint(_SEED_MAX, size=3)

        self.influence_, self.influences_, self.folds_ = None, [], None
        if self.mode == "random":
            self.seed_scores_ = None
            self.scores_ = np.random.RandomState(random_seed).uniform(size=n)
            priority = self.scores_
        else:
            influence = (_default_influence(y, int(ensemble_seed)) if self.influence is None
                         else self.influence)
            validation_data = self._check_validation_data(X, y)
            folds = None
            if self.objective == "validation" and validation_data is None:
                folds = self._folds(y, fold_seed)
                self.folds_ = folds
            score = check_memory(self.memory).cache(_score_samples)
            fits = score(influence, X, y, self.objective, validation_data, folds)
            self.influences_ = [fitted for *_, fitted in fits]
            if folds is None:
                self.influence_ = self.influences_[0]
            self.seed_scores_, self.scores_ = self._reduce(fits, n, self.influences_[0].q)
            # Lower validation objective is better; higher self-influence marks
            # the rows the model had to memorise.
            priority = -self.scores_ if self.objective == "validation" else self.scores_
        order = np.argsort(-priority, kind="stable")
        self.sample_mask_ = np.ones(n, dtype=bool)
        self.sample_mask_[order[:n_remove]] = False
        self.sample_indices_ = np.flatnonzero(self.sample_mask_)
        self.n_removed_ = n_remove
        return self

    def _check_rows(self, X, y, reset=True):
        """Rows as the influence takes them: raw rows for a Pipeline (its steps check
        them), else arrays, sparse matrices, dicts of arrays or a Dataset read into
        arrays, validated as the ensembles validate them."""
        estimator = getattr(self.influence, "estimator", None)
        if estimator is not None and split_pipeline(estimator, "DataPruner")[0]:
            X, y = rows_as_given(X, y)
            y = check_array(y, ensure_2d=False, dtype=None, input_name="y")
            if len(y) != n_rows(X):
                raise ValueError(f"X has {n_rows(X)} rows but y has {len(y)}")
            return X, y
        return check_rows(self, X, y, reset=reset, multi_output=True)

    def _check_validation_data(self, X, y):
        if self.objective != "validation" or self.validation_data is None:
            return None
        if len(self.validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val), got "
                             f"{len(self.validation_data)} items")
        X_val, y_val = self._check_rows(*self.validation_data, reset=False)
        if n_rows(X_val) == 0:
            raise ValueError("validation_data holds no rows")
        if _is_classification(y):
            unseen = np.setdiff1d(y_val, y)
            if len(unseen):
                raise ValueError(f"validation_data has labels not in the training y: "
                                 f"{unseen[:5].tolist()}")
            missing = np.setdiff1d(y, y_val)
            if len(missing):
                warnings.warn(f"validation_data has no rows of the classes "
                              f"{missing[:5].tolist()}; pruning will not account for them",
                              UserWarning)
        return X_val, y_val

    def _folds(self, y, seed):
        n_folds = max(2, int(round(1 / self.validation_fraction)))
        if len(y) < 2 * n_folds:
            raise ValueError(f"validation_fraction={self.validation_fraction} splits the "
                             f"{len(y)} samples into {n_folds} folds; at least {2 * n_folds} "
                             f"samples are needed, or pass validation_data")
        if not _is_classification(y):
            splitter = KFold(n_folds, shuffle=True, random_state=seed)
            return [(tr, va) for tr, va in splitter.split(np.zeros(len(y)))]
        classes, counts = np.unique(y, return_counts=True)
        if counts.min() < n_folds:
            rare = classes[counts.argmin()].tolist()
            raise ValueError(
                f"class {rare!r} has {counts.min()} rows, fewer than the {n_folds} validation "
                f"folds of validation_fraction={self.validation_fraction}: some validation fold "
                f"would miss that class. Raise validation_fraction, pass validation_data or use "
                f"objective='self'")
        splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
        return [(tr, va) for tr, va in splitter.split(np.zeros(len(y)), y)]

    def _reduce(self, fits, n, q):
        """Combine the per-fit samples into per-seed and per-row scores."""
        n_seeds = fits[0][2].shape[0]
        if self.mode == "fixed_seed" and self.seed_index >= n_seeds:
            raise ValueError(f"seed_index={self.seed_index} but the ensemble has only "
                             f"{n_seeds} members")
        seed_sum, stat_sum, count = np.zeros((n_seeds, n)), np.zeros(n), np.zeros(n)
        for rows, before, delta, _ in fits:
            before = np.broadcast_to(before, delta.shape)
            seed_sum[:, rows] += delta
            if self.mode == "distributional":
                stat_sum[rows] += discrepancy(before, before + delta, self.statistic, q=q)
            count[rows] += 1
        seed_scores = seed_sum / count
        if self.mode == "fixed_seed":
            return seed_scores, seed_scores[self.seed_index].copy()
        return seed_scores, stat_sum / count

    def fit_resample(self, X, y):
        """Fit the pruner and return the kept rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Their targets.

        Returns
        -------
        X_kept : array-like of shape (n_kept, n_features)
            The kept rows of ``X``, of the same type (pandas keeps its index).
        y_kept : array-like of shape (n_kept,) or (n_kept, n_targets)
            Their targets.
        """
        X, y = rows_as_given(X, y)
        X, y = indexable(X, y) if not isinstance(X, Mapping) else (X, y)
        self.fit(X, y)
        return take_rows(X, self.sample_indices_), _safe_indexing(y, self.sample_indices_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True  # the influence takes CSR rows
        return tags

