"""What every influence estimator shares: the fitted ensemble, queries, chunks, the
scores' reductions and removal predictions.

:class:`~skdtda.InfluenceTransformer` (influence functions) and
:class:`~skdtda.UnrolledInfluence` (differentiating through training) differ
only in how they fit and in how they produce each member's predicted changes
``delta`` chunk by chunk (``_blocks``); everything a caller does with those
changes is here.
"""

from abc import ABCMeta, abstractmethod
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array, check_is_fitted

from ..discrepancy import STATISTICS, check_statistic, discrepancy
from .._inputs import n_rows
from .._loops import chunks
from ..ensemble import (ATTRIBUTED, SeedEnsembleClassifier, SeedEnsembleRegressor, check_rows,
                        check_same_training_data, fit_preprocessing, is_fitted_pipeline,
                        member_nets, net_input, net_targets, query_targets, row_labels,
                        rows_as_given, split_pipeline)
from ..measurements import MEASUREMENTS
from ..model import functional_member, measure_all
from ._scoring import row_chunk

__all__ = ["CONVENTION"]

#: The sign and scale convention of every skdtda score, as the docstrings state it.
CONVENTION = """The sign and scale convention of every skdtda score: the predicted change
    of the measurement when the training row is removed, in the measurement's
    own units, already divided by the number of training rows N. Positive means
    removing the row makes the measurement larger (for a loss: the row was
    helping). Removing a set sums the per-row changes (first order)."""


class _BaseInfluence(TransformerMixin, BaseEstimator, metaclass=ABCMeta):
    """Distributional influence of training rows from per-seed predicted changes.

    Subclasses declare their parameters, fit (``_adopt_ensemble`` first), and
    yield each member's predicted changes chunk by chunk (``_blocks``).
    """

    #: The parameters both estimators take, and their constraints.
    _parameter_constraints = {
        "estimator": [*ATTRIBUTED, None],
        "measurement": [StrOptions(set(MEASUREMENTS)), callable],
        "statistic": [StrOptions(set(STATISTICS)), callable],
        "q": [Interval(Real, 0, 1, closed="both")],
        "seed_index": [Interval(Integral, 0, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    # -- fitting --------------------------------------------------------------------------
    def _adopt_ensemble(self, X, y):
        """Validate, fit or adopt the ensemble, and pick the attributed members
        (``members_``, their indices; the subclass then holds them as functions of
        their parameters in ``_members``, in the same order). Returns the validated
        ``X, y`` (for a Pipeline, its steps' output: the rows as the ensemble takes them).

        The estimator may be a Pipeline ending in a seed ensemble: the steps before
        it are fitted on ``(X, y)`` (unless the Pipeline is fitted) and held fixed
        as ``preprocessor_``; the ensemble trains on, and attribution sees, their
        output, while the rows stay the user's rows."""
        name = type(self).__name__
        check_statistic(self.statistic, self.measurement)  # before any training
        self._row_labels = row_labels(X)
        estimator = self.estimator
        if estimator is None:
            y_rows = rows_as_given(X, y)[1]
            target = type_of_target(np.asarray(y_rows) if y_rows is not None else y)
            estimator = (SeedEnsembleClassifier() if target in ("binary", "multiclass")
                         else SeedEnsembleRegressor())
        if split_pipeline(estimator, name)[0]:
            X, y = rows_as_given(X, y)
            y = check_array(y, ensure_2d=False, dtype=None, input_name="y")
            self.preprocessor_, estimator, X = fit_preprocessing(estimator, X, y, name)
            for attribute in ("n_features_in_", "feature_names_in_"):
                self.__dict__.pop(attribute, None)
        else:
            self.preprocessor_ = None
            X_given, y = rows_as_given(X, y)
            X, y = check_rows(self, X_given, y, reset=True, multi_output=True)
            if hasattr(X_given, "iloc") and not is_fitted_pipeline(estimator):
                X = X_given  # an unfitted ensemble sees them as given (column names)
            elif hasattr(X_given, "iloc") and hasattr(estimator, "feature_names_in_"):
                X = X_given  # so does one fitted with names; one fitted without, the array
        try:
            check_is_fitted(estimator)
            self.estimator_ = estimator
            n_features = getattr(estimator, "n_features_in_", None)
            if n_features is not None and hasattr(X, "shape") and len(X.shape) > 1 \
                    and n_features != X.shape[1]:
                raise ValueError(
                    f"the fitted estimator has {n_features} features but X has "
                    f"{X.shape[1]}; it must be fitted on the training rows being attributed")
            check_same_training_data(estimator, X, y, name)
        except NotFittedError:
            self.estimator_ = clone(estimator).fit(X, y)
        ens = self.estimator_
        n_seeds = len(ens.estimators_)
        if self.seed_index is not None and self.seed_index >= n_seeds:
            raise ValueError(f"seed_index={self.seed_index} but the ensemble has only "
                             f"{n_seeds} members")
        self.members_ = (np.arange(n_seeds) if self.seed_index is None
                         else np.array([self.seed_index]))
        self._X_train = net_input(ens, X)
        self._y_train = net_targets(ens, y)
        self.n_train_ = n_rows(X)
        return X, y

    def _member_function(self, i, layered=False, modules=None):
        """Attributed member ``i`` (an index into ``estimator_.estimators_``) as a
        function of its attributed parameters."""
        task = "classifier" if is_classifier(self.estimator_) else "regressor"
        return functional_member(member_nets(self.estimator_)[i], self.measurement, task,
                                 modules=modules, layered=layered,
                                 probe_X=self._X_train[:8] if layered else None)

    # -- queries and chunks ---------------------------------------------------------------
    def _query(self, X, y):
        """Query rows in the nets' form and their targets (the ensemble's prediction
        when ``y`` is None; a Dataset's own targets when ``X`` is one)."""
        check_is_fitted(self)
        X, y = rows_as_given(X, y)
        if self.preprocessor_ is not None:
            X = self.preprocessor_.transform(X)
        else:
            checked = check_rows(self, X, reset=False)[0]
            # the ensemble sees them as given where it knows column names, else as checked
            if not hasattr(self.estimator_, "feature_names_in_"):
                X = checked
        X = net_input(self.estimator_, X)
        return X, query_targets(self.estimator_, X, y)

    def _train_chunk(self):
        """Training rows per chunk: ``batch_size``, fewer where their per-row gradient
        blocks (``n_params`` numbers a row) would pass the gradient budget."""
        lead = self._members[0]
        return row_chunk(lead.n_params, lead.theta.element_size(), self.batch_size)

    @abstractmethod
    def _blocks(self, X, y):
        """Yield (query rows, train rows, m (S, nq), delta (S, nq, nt)) chunk by chunk."""

    def _removal_samples(self, X, y, masks):
        """``(before, after)`` for boolean removal sets ``masks`` (n_sets, n_train):
        ``m_s`` and ``m_s`` plus the sum of the member's changes over each set."""
        before = np.empty((len(self._members), n_rows(X)))
        shift = np.zeros((len(masks),) + before.shape)
        weights = masks.astype(np.float64)
        for q_rows, t_rows, measured, delta in self._blocks(X, y):
            before[:, q_rows] = measured
            shift[:, :, q_rows] += np.einsum("sqt,mt->msq", delta, weights[:, t_rows])
        return before, before[None] + shift

    # -- scores ---------------------------------------------------------------------------
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
        out = np.empty((len(self._members), n_rows(X), self.n_train_))
        for q_rows, t_rows, _, delta in self._blocks(X, y):
            out[:, q_rows, t_rows] = delta
        return out

    def mean_influence_samples(self, X, y=None):
        """Per-seed predicted change of the queries' *mean* measurement when each
        training row is removed.

        What ``influence_samples(X, y).mean(axis=1)`` gives, without its
        ``(n_seeds, n_query, n_train)`` array: the mean over queries is linear,
        so the influence functions score the queries' summed solved gradients
        once, at the cost of one query (a validation set's mean loss, as
        :class:`~skdtda.DataPruner` scores it).

        Parameters
        ----------
        X : array-like of shape (n_query, n_features)
            Query rows.
        y : array-like of shape (n_query,), default=None
            Query targets; None uses the ensemble's prediction.

        Returns
        -------
        delta : ndarray of shape (n_seeds, n_train)
            ``delta[s, k]``: member ``s``'s predicted change of the mean
            measurement over the queries when training row ``k`` is removed.

        Notes
        -----
        {convention}
        """
        X, y = self._query(X, y)
        return self._mean_samples(X, y)

    def _mean_samples(self, X, y):
        """:meth:`mean_influence_samples` of rows in the nets' form: the per-row
        changes summed over the queries chunk by chunk."""
        out = np.zeros((len(self._members), self.n_train_))
        for _, t_rows, _, delta in self._blocks(X, y):
            out[:, t_rows] += delta.sum(axis=1)
        return out / n_rows(X)

    def self_influence_samples(self):
        """Per-seed predicted change of each training row's own measurement when
        that row is removed (self-influence).

        The diagonal of ``influence_samples(X_train, y_train)``, with the
        training rows' own targets, without building the
        ``(n_seeds, n_train, n_train)`` array.

        Returns
        -------
        delta : ndarray of shape (n_seeds, n_train)
            ``delta[s, k]``: member ``s``'s predicted change of training row
            ``k``'s measurement when row ``k`` is removed.

        Notes
        -----
        {convention}
        """
        check_is_fitted(self)
        return self._self_samples()

    def _self_samples(self):
        """:meth:`self_influence_samples`: chunks of training rows scored as queries,
        keeping the diagonal."""
        delta = np.empty((len(self._members), self.n_train_))
        for rows in chunks(self.n_train_, self.batch_size):
            X, y = self._X_train[rows], self._y_train[rows]
            for q_rows, t_rows, _, block in self._blocks(X, y):
                q = np.arange(q_rows.start, q_rows.stop)
                k = rows.start + q
                inside = (k >= t_rows.start) & (k < t_rows.stop)
                delta[:, k[inside]] = block[:, q[inside] - q_rows.start,
                                            k[inside] - t_rows.start]
        return delta

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
        return measure_all(self._members, X, y)

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
        out = np.empty((n_rows(X), self.n_train_))
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
            curvature of the ``N'`` kept rows (one new factorisation per member;
            one row by a low-rank update where the curvature allows it). The
            set of :meth:`predict_removal_sets`, for one set.

        Notes
        -----
        {convention}
        """
        X, y = self._query(X, y)
        mask = self._removal_mask(remove)
        return self._removal_samples(X, y, mask[None])[1][0]

    def predict_removal_sets(self, X, y=None, remove=None):
        """Samples of each query's measurement before and after removing each of many sets.

        Parameters
        ----------
        X : array-like of shape (n_query, n_features)
            Query rows.
        y : array-like of shape (n_query,), default=None
            Query targets; None uses the ensemble's prediction.
        remove : array-like of bool of shape (n_sets, n_train)
            The removal sets, True where a training row is removed (see
            :func:`skdtda.evaluation.removal_masks`).

        Returns
        -------
        before : ndarray of shape (n_seeds, n_query)
            Each attributed member's measurement ``m_s``.
        after : ndarray of shape (n_sets, n_seeds, n_query)
            ``m_s`` plus the sum of the member's predicted changes over the set:
            first-order samples of the measurement's distribution after the
            removal. With ``correction="newton"``, each set re-solved with the
            curvature of its kept rows instead (see :meth:`predict_removal`).
            Computed chunk by chunk: the ``(n_seeds, n_query, n_train)`` array
            of per-row changes is never built.

        Notes
        -----
        {convention}
        """
        X, y = self._query(X, y)
        return self._removal_samples(X, y, self._removal_masks(remove))

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
                                 f"{remove.shape} (predict_removal_sets and "
                                 "skdtda.evaluation.predict_distributions take many sets)")
            if remove.size and (not np.issubdtype(remove.dtype, np.integer)
                                or remove.min() < 0 or remove.max() >= self.n_train_):
                raise ValueError(f"remove must hold indices in [0, {self.n_train_}), got "
                                 f"{remove[:5].tolist()}...")
            mask = np.zeros(self.n_train_, dtype=bool)
            mask[remove.astype(int)] = True
        if mask.all():
            raise ValueError(f"remove removes every one of the {self.n_train_} training rows")
        return mask

    def _removal_masks(self, remove):
        masks = np.asarray(remove)
        if remove is None or masks.dtype != bool or masks.ndim != 2 \
                or masks.shape[1] != self.n_train_:
            raise ValueError(f"remove must be a boolean array of shape (n_sets, {self.n_train_}),"
                             f" got {getattr(masks, 'dtype', None)} of shape "
                             f"{getattr(masks, 'shape', None)} (skdtda.evaluation.removal_masks "
                             "builds one from index arrays)")
        full = np.flatnonzero(masks.all(axis=1))
        if len(full):
            raise ValueError(f"removal set {full[0]} removes every training row")
        return masks

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns: one per training row.

        The training DataFrame's (or Series') index labels, as strings, when
        it had an index other than the default ``0, 1, ...``; otherwise
        ``train0``, ``train1``, ... So with ``set_output(transform="pandas")``
        the score columns carry the labels of the rows they score.

        Parameters
        ----------
        input_features : ignored

        Returns
        -------
        names : ndarray of str of shape (n_train,)
        """
        check_is_fitted(self)
        labels = getattr(self, "_row_labels", None)
        if labels is not None and not np.array_equal(labels, np.arange(self.n_train_)):
            return np.asarray([str(label) for label in labels], dtype=object)
        return np.asarray([f"train{k}" for k in range(self.n_train_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True
        return tags


for _method in (_BaseInfluence.influence_samples, _BaseInfluence.mean_influence_samples,
                _BaseInfluence.self_influence_samples, _BaseInfluence.transform,
                _BaseInfluence.predict_removal, _BaseInfluence.predict_removal_sets):
    # method docstrings sit one level deeper than the class docstring
    _method.__doc__ = _method.__doc__.replace("{convention}",
                                              CONVENTION.replace("\n    ", "\n        "))
