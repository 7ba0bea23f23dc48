"""Grid search over attribution settings against a fixed retraining ground truth.

The ground truth is tied to one training set, one list of removal sets and
one set of query points, so cross-validation cannot split the training rows:
an influence fitted on a fold would attribute other rows than the ones
retrained. The folds split the **query points** instead, with the training
set and the ground truth fixed: every fold fits the influence on all training
rows and scores it on its held-out queries. Attribution settings have no
parameters fitted to queries, so the score on held-out queries is an honest
estimate only in the sense that matters here: the *selection* among settings
is made on some queries and can be checked on others (keep a final set of
queries out of the search for the number you report).

:class:`AttributionSearchCV` does all of it in one ``fit(X_train, y_train)``: the
folds, the scorer, a ``GridSearchCV`` that raises a failing candidate's error, and
the refit of the best settings on the training rows alone. With the scorer by hand,
``GridSearchCV``'s default ``error_score=np.nan`` turns every scoring error into a
NaN score and a warning (scikit-learn catches any ``Exception`` a scorer raises), so
the scorer's errors name the way out.
"""

import time
from collections.abc import Mapping
from numbers import Integral, Number, Real

import joblib
import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, MetaEstimatorMixin, _fit_context, clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_array, check_is_fitted

from .._agreement import distribution_change, lds
from .._inputs import is_dataset, n_rows, take_rows
from ..influence._base import CONVENTION
from ._metrics import predict_distributions
from ._retrain import removal_masks

__all__ = ["AttributionSearchCV", "make_lds_scorer", "query_folds"]

#: How to search correctly, as every refusal of the scorer says it: GridSearchCV turns
#: a scorer's error into a NaN score and shows the message only in its warning.
_HOW_TO_SEARCH = ("Search with skdtda.evaluation.AttributionSearchCV, or with the X, y and "
                  "cv from skdtda.evaluation.query_folds and refit=False (a plain cv=k "
                  "splits the training rows, and GridSearchCV's default error_score=nan "
                  "turns this error into NaN scores).")


def _is_raw(X):
    """Whether ``X`` is rows for the steps of a Pipeline rather than one numeric array:
    a DataFrame (a ColumnTransformer selects its columns by name), a sparse matrix,
    or raw documents (a list of strings). Such rows stay in their own form."""
    if sparse.issparse(X) or hasattr(X, "iloc"):
        return True
    if isinstance(X, Mapping) or is_dataset(X):
        raise ValueError(
            f"query folds need rows that GridSearchCV can index (arrays, sparse matrices, "
            f"DataFrames, lists of documents); got {type(X).__name__}")
    return np.asarray(X).dtype.kind not in "biuf"


def _check_rows(X, name, dtype=None):
    """A numeric array checked as before; raw rows (see ``_is_raw``) as they are."""
    if _is_raw(X):
        return X
    return check_array(X, dtype=dtype or [np.float64, np.float32], input_name=name)


def _concat_rows(X_train, X_query):
    """The training rows followed by the query rows, in their common form."""
    if sparse.issparse(X_train) and sparse.issparse(X_query):
        return sparse.vstack([X_train, X_query], format="csr")
    if hasattr(X_train, "iloc") and hasattr(X_query, "iloc"):
        if hasattr(X_train, "columns") and list(X_train.columns) != list(
                getattr(X_query, "columns", [])):
            raise ValueError(f"X_query's columns {list(X_query.columns)} differ from "
                             f"X_train's {list(X_train.columns)}")
        import pandas as pd

        return pd.concat([X_train, X_query])
    if isinstance(X_train, (list, tuple)) and isinstance(X_query, (list, tuple)):
        return list(X_train) + list(X_query)
    if isinstance(X_train, np.ndarray) and isinstance(X_query, np.ndarray):
        return np.concatenate([X_train, X_query])
    raise ValueError(f"X_query must be rows of the same form as X_train, got "
                     f"{type(X_query).__name__} and {type(X_train).__name__}")


def _canonical(value):
    """A cell as it compares across forms: numbers as floats (a column may be
    upcast when the training and query rows are concatenated)."""
    if isinstance(value, Number) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # numpy's str_ as Python's
        return str(value)
    return value


class _QueryIndex:
    """Finds each query row by its content: identical (x, y) rows share their ground
    truth. Rows are numeric arrays, sparse matrices, DataFrames or documents."""

    def __init__(self, X_query, y_query):
        self.raw = _is_raw(X_query)
        self.X = X_query if self.raw else np.ascontiguousarray(X_query)
        self.y = np.asarray(y_query)
        self.index = {}
        for i, key in enumerate(self._keys(self.X, self.y)):
            self.index.setdefault(key, i)

    @staticmethod
    def _keys(X, y):
        if sparse.issparse(X):
            X = sparse.csr_matrix(X)
            rows = [np.ascontiguousarray(X[i].toarray(), dtype=np.float64).tobytes()
                    for i in range(X.shape[0])]
        elif hasattr(X, "iloc"):
            values = np.asarray(X, dtype=object).reshape(len(X), -1)
            rows = [joblib.hash([_canonical(v) for v in row]) for row in values]
        elif np.asarray(X).dtype.kind in "biuf":
            X = np.asarray(X)
            rows = [np.ascontiguousarray(X[i], dtype=np.float64).tobytes()
                    for i in range(len(X))]
        else:  # documents
            rows = [joblib.hash(_canonical(X[i])) for i in range(n_rows(X))]
        return [(row, repr(y[i])) for i, row in enumerate(rows)]

    def rows(self, rows):
        return take_rows(self.X, rows)

    def lookup(self, X, y):
        y = np.asarray(y).reshape(-1)
        if not self.raw and hasattr(X, "iloc"):
            X = np.asarray(X)  # a numeric DataFrame against array queries: by value
        found = [self.index.get(key) for key in self._keys(X, y)]
        if any(i is None for i in found):
            raise ValueError(self._unknown)
        return np.asarray(found)

    _unknown = ("the scorer got rows that are not among the ground truth's query points: "
                "it scores held-out queries only, with every training fold exactly the "
                "retrained training rows. " + _HOW_TO_SEARCH)


class _LDSScorer:
    def __init__(self, actual, remove, X_query, y_query, discrepancy, q, method):
        self.actual_change = distribution_change(actual, discrepancy, q=q)
        self.remove = remove
        self.queries = _QueryIndex(X_query, y_query)
        self.discrepancy, self.q, self.method = discrepancy, q, method

    def __call__(self, influence, X, y):
        n_train = self.remove.shape[1]
        if getattr(influence, "n_train_", n_train) != n_train:
            raise ValueError(
                f"the influence attributes {influence.n_train_} training rows but the ground "
                f"truth removes rows of {n_train}: fit it on exactly the retrained training "
                "rows (refit=True would fit on training rows and queries together). "
                + _HOW_TO_SEARCH)
        rows = self.queries.lookup(X, y)
        predicted = predict_distributions(influence, self.queries.rows(rows),
                                          self.queries.y[rows], remove=self.remove)
        return lds(predicted, self.actual_change[:, rows], self.discrepancy, q=self.q,
                   method=self.method)

    def __repr__(self):
        return (f"make_lds_scorer(discrepancy={self.discrepancy!r}, method={self.method!r}, "
                f"n_sets={self.remove.shape[0]}, n_query={len(self.queries.X)})")


def make_lds_scorer(actual, *, remove, X_query, y_query, discrepancy="mean", q=0.5,
                    method="spearman"):
    """A scorer for ``GridSearchCV`` over attribution settings: LDS on held-out queries.

    Parameters
    ----------
    actual : Distributions
        Retrained ground truth from :func:`retrain_distributions` on these
        removal sets and queries.
    remove : ndarray of bool of shape (n_sets, n_train)
        The removal sets retrained (True = removed).
    X_query : {array-like, sparse matrix, DataFrame, list of str}
        The ``n_query`` query rows measured, in the form the attributed model takes: for a
        Pipeline, its raw rows (a DataFrame for a ColumnTransformer, documents
        for a vectorizer). Rows are found again by their content.
    y_query : array-like of shape (n_query,)
        Their targets.
    discrepancy : str or callable, default="mean"
        The discrepancy of the distributional LDS (see :func:`lds`).
    q : float, default=0.5
        Quantile for ``discrepancy="quantile"``.
    method : {"spearman", "pearson"}, default="spearman"

    Returns
    -------
    scorer : callable
        ``scorer(influence, X, y)``: the LDS of a fitted influence on the query
        rows ``X, y`` (looked up among ``X_query, y_query``). Use it with the
        data and folds of :func:`query_folds` and ``refit=False``.

    See Also
    --------
    query_folds : the matching data and cross-validation folds.
    AttributionSearchCV : the search with this scorer and those folds, refitted on the
        training rows.

    Notes
    -----
    Why folds over queries, and why ``refit=False``: see the module notes of
    :mod:`skdtda.evaluation` and ``docs/evaluation.md``. After the search,
    fit the chosen settings on the training rows yourself:
    ``clone(search.estimator).set_params(**search.best_params_).fit(X_train, y_train)``.
    Pass ``error_score="raise"`` to ``GridSearchCV``: with its default, NaN, the
    scorer's refusals (an influence fitted on other rows, rows that are not
    queries) and any failing candidate become NaN scores and warnings.
    """
    remove = np.asarray(remove)
    if remove.dtype != bool or remove.ndim != 2:
        raise ValueError("remove must be the boolean matrix (n_sets, n_train) of the retrained "
                         "removal sets; removal_masks(sets, n_train) builds it from index lists")
    masks = removal_masks(remove, remove.shape[1])
    X_query = _check_rows(X_query, "X_query")
    y_query = np.asarray(y_query).reshape(-1)
    if len(y_query) != n_rows(X_query):
        raise ValueError(f"y_query has {len(y_query)} rows but X_query has "
                         f"{n_rows(X_query)}")
    scorer = _LDSScorer(actual, masks, X_query, y_query, discrepancy, q, method)
    if scorer.actual_change.shape != (len(masks), n_rows(X_query)):
        raise ValueError(f"the ground truth covers {scorer.actual_change.shape[0]} sets and "
                         f"{scorer.actual_change.shape[1]} queries, but remove has "
                         f"{len(masks)} sets and X_query {n_rows(X_query)} rows")
    return scorer


def query_folds(X_train, y_train, X_query, y_query, *, n_splits=5, shuffle=True,
                random_state=None):
    """Data and folds for ``GridSearchCV`` over attribution settings: folds over queries.

    Parameters
    ----------
    X_train : {array-like, sparse matrix, DataFrame, list of str}
        The ``n_train`` training rows that were retrained (the rows attributed), in the
        form the attributed model takes: for a Pipeline, its raw rows.
    y_train : array-like of shape (n_train,)
    X_query : same form as X_train
        The ground truth's query rows (a DataFrame with X_train's columns).
    y_query : array-like of shape (n_query,)
    n_splits : int, default=5
        Folds over the query rows.
    shuffle : bool, default=True
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    X : ndarray, sparse matrix, DataFrame or list of n_train + n_query rows
        The training rows followed by the query rows, in their form (a
        DataFrame keeps both index labels).
    y : ndarray of shape (n_train + n_query,)
    cv : list of (train, test) index pairs
        Every fold's ``train`` is exactly the training rows, so each candidate
        is fitted on what was retrained; its ``test`` is one fold of queries.

    Examples
    --------
    >>> import numpy as np
    >>> from skdtda.evaluation import query_folds
    >>> X, y, cv = query_folds(np.zeros((5, 2)), np.arange(5), np.ones((4, 2)), np.arange(4),
    ...                        n_splits=2, shuffle=False)
    >>> X.shape, [(len(tr), te.tolist()) for tr, te in cv]
    ((9, 2), [(5, [5, 6]), (5, [7, 8])])
    """
    X_train = _check_rows(X_train, "X_train")
    X_query = _check_rows(X_query, "X_query",
                          dtype=None if _is_raw(X_train) else X_train.dtype)
    y_train, y_query = np.asarray(y_train).reshape(-1), np.asarray(y_query).reshape(-1)
    # misaligned lengths would pair rows with the wrong targets in the concatenation
    for name, X_part, y_part in (("train", X_train, y_train), ("query", X_query, y_query)):
        if len(y_part) != n_rows(X_part):
            raise ValueError(f"y_{name} has {len(y_part)} rows but X_{name} has "
                             f"{n_rows(X_part)}")
    # a DataFrame's columns are compared by name when the rows are concatenated
    both_arrays = all(hasattr(X, "shape") and len(X.shape) == 2 and not hasattr(X, "iloc")
                      for X in (X_train, X_query))
    if both_arrays and X_query.shape[1] != X_train.shape[1]:
        raise ValueError(f"X_query has {X_query.shape[1]} features but X_train has "
                         f"{X_train.shape[1]}")
    n_train = n_rows(X_train)
    train = np.arange(n_train)
    folds = KFold(n_splits, shuffle=shuffle,
                  random_state=random_state if shuffle else None).split(np.zeros(n_rows(X_query)))
    cv = [(train, n_train + test) for _, test in folds]
    return (_concat_rows(X_train, X_query), np.concatenate([y_train, y_query]), cv)


def _best_has(attr):
    """The refitted best estimator has ``attr``; before fitting, the given estimator has it."""

    def check(self):
        return hasattr(getattr(self, "best_estimator_", self.estimator), attr)

    return check


class AttributionSearchCV(MetaEstimatorMixin, BaseEstimator):
    """Grid search over attribution settings against a retraining ground truth.

    ``fit(X_train, y_train)`` builds the folds over query rows of
    :func:`query_folds` and the LDS scorer of :func:`make_lds_scorer`, runs
    scikit-learn's ``GridSearchCV`` with them (``error_score="raise"``, so a failing
    candidate raises its own error instead of scoring NaN, and ``refit=False``), then
    fits the best settings on the training rows alone. Every candidate is fitted on
    exactly the retrained training rows and scored by the LDS on held-out queries.

    Parameters
    ----------
    estimator : estimator object
        The attribution to tune, unfitted (cloned): an :class:`~skdtda.InfluenceTransformer`
        or :class:`~skdtda.UnrolledInfluence` over a seed ensemble, or over a Pipeline
        ending in one.
    param_grid : dict or list of dict
        Settings to try, as for ``GridSearchCV`` (``"curvature"``, ``"damping"``,
        ``"estimator__n_seeds"``, ...).
    actual : Distributions
        Retrained ground truth from :func:`retrain_distributions`, on the training
        rows later passed to ``fit``, the removal sets ``remove`` and the queries
        ``X_query, y_query``.
    remove : ndarray of bool of shape (n_sets, n_train)
        The removal sets retrained (True = removed).
    X_query : {array-like, sparse matrix, DataFrame, list of str}
        The ``n_query`` query rows measured, in the form the attributed model takes
        (for a Pipeline, its raw rows).
    y_query : array-like of shape (n_query,)
        Their targets.
    discrepancy : str or callable, default="mean"
        The discrepancy of the distributional LDS (see :func:`lds`).
    q : float, default=0.5
        Quantile for ``discrepancy="quantile"``.
    method : {"spearman", "pearson"}, default="spearman"
        Correlation over removal sets.
    n_splits : int, default=5
        Folds over the query rows.
    shuffle : bool, default=True
        Shuffle the query rows before splitting them into folds.
    random_state : int, RandomState instance or None, default=None
        Shuffling of the query rows (``KFold``'s). Pass an int for the same folds
        at every fit.
    n_jobs : int, default=None
        Candidates and folds fitted in parallel by ``GridSearchCV``; None means 1.
    verbose : int, default=0
        ``GridSearchCV``'s verbosity.

    Attributes
    ----------
    best_params_ : dict
        The settings with the highest mean LDS over the query folds.
    best_score_ : float
        Their mean LDS over the query folds.
    best_index_ : int
        Their row in ``cv_results_``.
    best_estimator_ : estimator object
        ``estimator`` with ``best_params_``, fitted on the training rows alone.
    cv_results_ : dict of ndarray
        ``GridSearchCV``'s results: each fold's LDS (``split{k}_test_score``), their
        mean, spread and rank, and the fit and score times.
    scorer_ : callable
        The LDS scorer (:func:`make_lds_scorer`) of the search.
    n_splits_ : int
        Number of query folds.
    refit_time_ : float
        Seconds spent fitting ``best_estimator_``.
    n_features_in_ : int
        Number of features seen during fit, when the best estimator has it.

    See Also
    --------
    make_lds_scorer, query_folds : the same search by hand, with ``GridSearchCV``.

    Notes
    -----
    The folds split the queries, never the training rows: an influence fitted on a
    fold of the training rows would attribute other rows than the ground truth
    retrained. Attribution settings fit nothing to queries, so the folds measure how
    stable the choice is across queries; the best of many settings is still chosen on
    these queries, so report its score on queries kept out of the search.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.linear_model import Ridge
    >>> from skdtda import InfluenceTransformer, SeedEnsembleRegressor
    >>> from skdtda.evaluation import (AttributionSearchCV, random_subsets,
    ...                                retrain_distributions)
    >>> X, y = load_diabetes(return_X_y=True)
    >>> X_train, y_train, X_q, y_q = X[:60], y[:60], X[60:80], y[60:80]
    >>> ens = SeedEnsembleRegressor(Ridge(alpha=0.1), n_seeds=2, random_state=0)
    >>> sets = random_subsets(60, n_sets=8, keep_fraction=0.8, random_state=0)
    >>> truth = retrain_distributions(ens, X_train, y_train, X_q, y_q, remove=sets)
    >>> search = AttributionSearchCV(InfluenceTransformer(ens),
    ...                              {"curvature": ["exact", "identity"]}, actual=truth,
    ...                              remove=sets, X_query=X_q, y_query=y_q, n_splits=2,
    ...                              random_state=0).fit(X_train, y_train)
    >>> search.best_params_, search.best_estimator_.n_train_
    ({'curvature': 'exact'}, 60)
    >>> search.transform(X_q[:3]).shape
    (3, 60)
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit"])],
        "param_grid": [dict, list],
        "actual": "no_validation",  # these four are checked by make_lds_scorer
        "remove": "no_validation",
        "X_query": "no_validation",
        "y_query": "no_validation",
        "discrepancy": [str, callable],
        "q": [Interval(Real, 0, 1, closed="both")],
        "method": [StrOptions({"spearman", "pearson"})],
        "n_splits": [Interval(Integral, 2, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    def __init__(self, estimator, param_grid, *, actual, remove, X_query, y_query,
                 discrepancy="mean", q=0.5, method="spearman", n_splits=5, shuffle=True,
                 random_state=None, n_jobs=None, verbose=0):
        self.estimator = estimator
        self.param_grid = param_grid
        self.actual = actual
        self.remove = remove
        self.X_query = X_query
        self.y_query = y_query
        self.discrepancy = discrepancy
        self.q = q
        self.method = method
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Search the settings on query folds, then fit the best on ``X, y``.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame, list of str}
            The ``n_train`` training rows that were retrained, in the form the
            attributed model takes (for a Pipeline, its raw rows).
        y : array-like of shape (n_train,)
            Their targets.

        Returns
        -------
        self : AttributionSearchCV
            The fitted search.
        """
        scorer = make_lds_scorer(self.actual, remove=self.remove, X_query=self.X_query,
                                 y_query=self.y_query, discrepancy=self.discrepancy, q=self.q,
                                 method=self.method)
        n_train = scorer.remove.shape[1]
        if n_rows(X) != n_train:
            raise ValueError(f"X has {n_rows(X)} rows but the removal sets of the ground truth "
                             f"remove rows of {n_train}: fit on exactly the retrained "
                             "training rows")
        X_cv, y_cv, cv = query_folds(X, y, self.X_query, self.y_query, n_splits=self.n_splits,
                                     shuffle=self.shuffle, random_state=self.random_state)
        search = GridSearchCV(self.estimator, self.param_grid, scoring=scorer, cv=cv,
                              refit=False, error_score="raise", n_jobs=self.n_jobs,
                              verbose=self.verbose).fit(X_cv, y_cv)
        self.scorer_ = scorer
        self.cv_results_ = search.cv_results_
        self.best_index_ = search.best_index_
        self.best_params_ = search.best_params_
        self.best_score_ = search.best_score_
        self.n_splits_ = search.n_splits_
        start = time.perf_counter()
        self.best_estimator_ = clone(self.estimator).set_params(**self.best_params_).fit(X, y)
        self.refit_time_ = time.perf_counter() - start
        if hasattr(self.best_estimator_, "n_features_in_"):
            self.n_features_in_ = self.best_estimator_.n_features_in_
        return self

    def score(self, X, y):
        """LDS of the best estimator on query rows, as the search scored each fold.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame, list of str}
            Rows among ``X_query``.
        y : array-like of shape (n_rows,)
            Their targets.

        Returns
        -------
        score : float
            The distributional LDS on these queries, in [-1, 1] (see :func:`lds`).
        """
        check_is_fitted(self)
        return self.scorer_(self.best_estimator_, X, y)

    @available_if(_best_has("transform"))
    def transform(self, X):
        """Influence scores of the best estimator (its ``transform``).

        Parameters
        ----------
        X : array-like of shape (n_query, n_features)
            Query rows; their targets are the ensemble's predictions.

        Returns
        -------
        scores : ndarray of shape (n_query, n_train)
            The best estimator's statistic of every training row on every query.

        Notes
        -----
        {convention}
        """
        check_is_fitted(self)
        return self.best_estimator_.transform(X)

    @available_if(_best_has("influence_samples"))
    def influence_samples(self, X, y=None):
        """Per-seed predicted changes of the best estimator (its ``influence_samples``).

        Parameters
        ----------
        X : array-like of shape (n_query, n_features)
            Query rows.
        y : array-like of shape (n_query,), default=None
            Query targets; None uses the ensemble's prediction.

        Returns
        -------
        delta : ndarray of shape (n_seeds, n_query, n_train)
            Each member's predicted change of each query's measurement when each
            training row is removed.

        Notes
        -----
        {convention}
        """
        check_is_fitted(self)
        return self.best_estimator_.influence_samples(X, y)

    @available_if(_best_has("predict_removal_sets"))
    def predict_removal_sets(self, X, y=None, remove=None):
        """The best estimator's samples before and after each removal set.

        Parameters
        ----------
        X : array-like of shape (n_query, n_features)
            Query rows.
        y : array-like of shape (n_query,), default=None
            Query targets; None uses the ensemble's prediction.
        remove : array-like of bool of shape (n_sets, n_train)
            The removal sets, True where a training row is removed.

        Returns
        -------
        before : ndarray of shape (n_seeds, n_query)
            Each attributed member's measurement.
        after : ndarray of shape (n_sets, n_seeds, n_query)
            Its predicted samples after each removal.

        Notes
        -----
        {convention}
        """
        check_is_fitted(self)
        return self.best_estimator_.predict_removal_sets(X, y, remove)

    @available_if(_best_has("get_feature_names_out"))
    def get_feature_names_out(self, input_features=None):
        """Names of the output columns of :meth:`transform`: one per training row.

        Parameters
        ----------
        input_features : ignored

        Returns
        -------
        names : ndarray of str of shape (n_train,)
        """
        check_is_fitted(self)
        return self.best_estimator_.get_feature_names_out(input_features)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = get_tags(self.estimator).input_tags.sparse
        tags.target_tags.required = True
        return tags


for _name in ("transform", "influence_samples", "predict_removal_sets"):
    # available_if copies the function's docstring when the method is looked up
    _method = vars(AttributionSearchCV)[_name].fn
    _method.__doc__ = _method.__doc__.replace("{convention}",
                                              CONVENTION.replace("\n    ", "\n        "))
