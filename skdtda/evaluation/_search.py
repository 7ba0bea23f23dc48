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

import numpy as np
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_array

from .._agreement import distribution_change, lds
from ._metrics import predict_distributions
from ._retrain import removal_masks

__all__ = ["make_lds_scorer", "query_folds"]


class _QueryIndex:
    """Finds each query row by its bytes: identical (x, y) rows share their ground truth."""

    def __init__(self, X_query, y_query):
        self.X = np.ascontiguousarray(X_query)
        self.y = np.asarray(y_query)
        self.index = {}
        for i in range(len(self.X)):
            self.index.setdefault(self._key(self.X[i], self.y[i]), i)

    @staticmethod
    def _key(x, y):
        return np.ascontiguousarray(x, dtype=np.float64).tobytes() + repr(y).encode()

    def lookup(self, X, y):
        X = np.asarray(X)
        y = np.asarray(y).reshape(-1)
        found = [self.index.get(self._key(X[i], y[i])) for i in range(len(X))]
        if any(i is None for i in found):
            raise ValueError(
                "the scorer got rows that are not among the ground truth's query points. "
                "Search with the X, y and cv from skdtda.evaluation.query_folds, which score "
                "held-out queries only; the training folds must be exactly the training rows.")
        return np.asarray(found)


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
        predicted = predict_distributions(influence, self.queries.X[rows], self.queries.y[rows],
                                          remove=self.remove)
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
    X_query : array-like of shape (n_query, n_features)
        The query rows measured.
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
    X_query = check_array(X_query, dtype=[np.float64, np.float32])
    y_query = np.asarray(y_query).reshape(-1)
    if len(y_query) != len(X_query):
        raise ValueError(f"y_query has {len(y_query)} rows but X_query has {len(X_query)}")
    scorer = _LDSScorer(actual, masks, X_query, y_query, discrepancy, q, method)
    if scorer.actual_change.shape != (len(masks), len(X_query)):
        raise ValueError(f"the ground truth covers {scorer.actual_change.shape[0]} sets and "
                         f"{scorer.actual_change.shape[1]} queries, but remove has "
                         f"{len(masks)} sets and X_query {len(X_query)} rows")
    return scorer


def query_folds(X_train, y_train, X_query, y_query, *, n_splits=5, shuffle=True,
                random_state=None):
    """Data and folds for ``GridSearchCV`` over attribution settings: folds over queries.

    Parameters
    ----------
    X_train : array-like of shape (n_train, n_features)
        The training rows that were retrained (the rows attributed).
    y_train : array-like of shape (n_train,)
    X_query : array-like of shape (n_query, n_features)
        The ground truth's query rows.
    y_query : array-like of shape (n_query,)
    n_splits : int, default=5
        Folds over the query rows.
    shuffle : bool, default=True
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    X : ndarray of shape (n_train + n_query, n_features)
        The training rows followed by the query rows.
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
    X_train = check_array(X_train, dtype=[np.float64, np.float32], input_name="X_train")
    X_query = check_array(X_query, dtype=X_train.dtype, input_name="X_query")
    y_train, y_query = np.asarray(y_train).reshape(-1), np.asarray(y_query).reshape(-1)
    # misaligned lengths would pair rows with the wrong targets in the concatenation
    for name, X_part, y_part in (("train", X_train, y_train), ("query", X_query, y_query)):
        if len(y_part) != len(X_part):
            raise ValueError(f"y_{name} has {len(y_part)} rows but X_{name} has {len(X_part)}")
    if X_query.shape[1] != X_train.shape[1]:
        raise ValueError(f"X_query has {X_query.shape[1]} features but X_train has "
                         f"{X_train.shape[1]}")
    n_train = len(X_train)
    train = np.arange(n_train)
    folds = KFold(n_splits, shuffle=shuffle,
                  random_state=random_state if shuffle else None).split(X_query)
    cv = [(train, n_train + test) for _, test in folds]
    return (np.concatenate([X_train, X_query]), np.concatenate([y_train, y_query]), cv)
