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
"""

from collections.abc import Mapping
from numbers import Number

import joblib
import numpy as np
from scipy import sparse
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_array

from .._agreement import distribution_change, lds
from .._inputs import is_dataset, n_rows, take_rows
from ._metrics import predict_distributions
from ._retrain import removal_masks

__all__ = ["make_lds_scorer", "query_folds"]


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

    _unknown = ("the scorer got rows that are not among the ground truth's query points. "
                "Search with the X, y and cv from skdtda.evaluation.query_folds, which score "
                "held-out queries only; the training folds must be exactly the training rows.")


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
                "rows (with query_folds, every training fold is those rows; refit=True would "
                "fit on training rows and queries together)")
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

    Notes
    -----
    Why folds over queries, and why ``refit=False``: see the module notes of
    :mod:`skdtda.evaluation` and ``docs/evaluation.md``. After the search,
    fit the chosen settings on the training rows yourself:
    ``clone(search.estimator).set_params(**search.best_params_).fit(X_train, y_train)``.
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
