"""PrunedEstimator: prune the training rows with a DataPruner, then fit an estimator.

A meta-estimator in the spirit of SLEP005's ``ResampledTrainer``: it works in a
plain scikit-learn ``Pipeline``, ``GridSearchCV`` and ``cross_validate``;
pruning touches only the rows passed to ``fit`` (the training folds), and
prediction passes every row through unchanged.
"""

from collections.abc import Mapping

from sklearn.base import BaseEstimator, MetaEstimatorMixin, _fit_context, clone
from sklearn.utils import _safe_indexing
from sklearn.utils._metadata_requests import (MetadataRouter, MethodMapping, _routing_enabled,
                                              process_routing)
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import (_check_method_params, _check_sample_weight,
                                      check_is_fitted, indexable)

from .._inputs import take_rows
from ..ensemble import SeedEnsembleClassifier, SeedEnsembleRegressor, rows_as_given
from ._pruner import DataPruner

__all__ = ["PrunedEstimator"]


def _estimator_has(attr):
    """The fitted estimator has ``attr``; before fitting, the given estimator has it."""

    def check(self):
        if hasattr(self, "estimator_"):
            return hasattr(self.estimator_, attr)
        template = self._template()
        # An unknown default is decided by y at fit; allow the method until then.
        return template is None or hasattr(template, attr)

    return check


class PrunedEstimator(MetaEstimatorMixin, BaseEstimator):
    """Fit an estimator on the rows that a :class:`DataPruner` keeps.

    ``fit(X, y)`` fits a clone of ``pruner`` on ``(X, y)``, then a clone of
    ``estimator`` on the kept rows only, with sample-aligned fit parameters
    (``sample_weight``, ...) subset to the same rows. ``predict``,
    ``predict_proba``, ``decision_function``, ``score`` and friends delegate to
    the fitted estimator, on all rows. Used as a step of a scikit-learn
    ``Pipeline`` or inside ``GridSearchCV``, pruning only ever touches the
    training folds.

    Parameters
    ----------
    pruner : DataPruner, default=None
        Unfitted pruner (cloned). None gives ``DataPruner()``.
    estimator : estimator object, default=None
        Unfitted estimator (cloned) trained on the kept rows. None retrains
        the pruner's own seed ensemble (``pruner.influence.estimator``) on the
        kept rows, the paper's protocol; when that is None too, a default
        ``SeedEnsembleClassifier`` or ``SeedEnsembleRegressor`` chosen from ``y``.
    memory : str, joblib.Memory or None, default=None
        Caches the pruner's scoring, as ``DataPruner(memory=...)`` does; set it
        here or on the pruner. With it, a grid over ``pruner__fraction`` scores
        each training fold once.

    Attributes
    ----------
    pruner_ : DataPruner
        The fitted pruner; ``pruner_.sample_indices_`` are the rows the
        estimator was trained on.
    estimator_ : estimator object
        The estimator fitted on the kept rows.
    classes_ : ndarray of shape (n_classes,)
        Class labels, when the estimator is a classifier.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    DataPruner : The sampler that scores and selects the rows.

    Notes
    -----
    Transformers placed *before* this step in a ``Pipeline`` are fitted on
    the unpruned rows; to prune first, put them inside:
    ``PrunedEstimator(pruner, make_pipeline(StandardScaler(), clf))``.
    The estimator type and tags are those of ``estimator``, so
    ``is_classifier`` and stratified cross-validation work.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.preprocessing import scale
    >>> from skdtda import (DataPruner, InfluenceTransformer, PrunedEstimator,
    ...                     SeedEnsembleClassifier)
    >>> X, y = load_iris(return_X_y=True)
    >>> X = scale(X)
    >>> influence = InfluenceTransformer(SeedEnsembleClassifier(n_seeds=2, random_state=0))
    >>> pruner = DataPruner(influence, fraction=0.1, validation_fraction=0.5, random_state=0)
    >>> model = PrunedEstimator(pruner, LogisticRegression()).fit(X, y)
    >>> len(model.pruner_.sample_indices_), model.predict(X[:2]).shape
    (135, (2,))
    """

    _parameter_constraints = {
        "pruner": [HasMethods(["fit", "fit_resample"]), None],
        "estimator": [HasMethods(["fit"]), None],
        "memory": [None, str, HasMethods(["cache"])],
    }

    def __init__(self, pruner=None, estimator=None, *, memory=None):
        self.pruner = pruner
        self.estimator = estimator
        self.memory = memory

    def _template(self):
        """The estimator to clone, when it is known before seeing y."""
        if self.estimator is not None:
            return self.estimator
        influence = getattr(self.pruner, "influence", None)
        return getattr(influence, "estimator", None)

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, **fit_params):
        """Prune the rows, then fit the estimator on the kept ones.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Their targets.
        **fit_params : dict
            Parameters of ``estimator.fit``. Arrays of length ``n_samples``
            (``sample_weight``, ...) are subset to the kept rows. With metadata
            routing enabled they are routed as the estimator requests.

        Returns
        -------
        self : PrunedEstimator
            The fitted meta-estimator.
        """
        if _routing_enabled():
            fit_params = process_routing(self, "fit", **fit_params).estimator.fit
        # Array-likes without __getitem__ become arrays so the kept rows can be taken;
        # a Dataset is read into arrays, a dict of arrays kept (one per forward argument).
        X, y = rows_as_given(X, y)
        X, y = indexable(X, y) if not isinstance(X, Mapping) else (X, y)
        if fit_params.get("sample_weight") is not None:
            # Checked against all rows before pruning: one of another length would be passed
            # on unsubset and rejected against the kept rows' count, a number the caller
            # never chose.
            _check_sample_weight(fit_params["sample_weight"], X)
        pruner = DataPruner() if self.pruner is None else clone(self.pruner)
        if self.memory is not None:
            pruner.set_params(memory=self.memory)
        self.pruner_ = pruner.fit(X, y)
        kept = self.pruner_.sample_indices_
        template = self._template()
        if template is None:
            template = (SeedEnsembleClassifier() if type_of_target(y) in ("binary", "multiclass")
                        else SeedEnsembleRegressor())
        params = _check_method_params(X, fit_params, indices=kept)
        self.estimator_ = clone(template).fit(take_rows(X, kept), _safe_indexing(y, kept),
                                              **params)
        if hasattr(self.pruner_, "n_features_in_"):
            self.n_features_in_ = self.pruner_.n_features_in_
        if hasattr(self.pruner_, "feature_names_in_"):
            self.feature_names_in_ = self.pruner_.feature_names_in_
        return self

    @property
    def classes_(self):
        """Class labels of the fitted estimator."""
        check_is_fitted(self)
        return self.estimator_.classes_

    @available_if(_estimator_has("predict"))
    def predict(self, X):
        """Predict with the estimator fitted on the kept rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs; none are removed.
        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
            Predictions.
        """
        check_is_fitted(self)
        return self.estimator_.predict(X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities from the estimator fitted on the kept rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``.
        """
        check_is_fitted(self)
        return self.estimator_.predict_proba(X)

    @available_if(_estimator_has("predict_log_proba"))
    def predict_log_proba(self, X):
        """Log class probabilities from the estimator fitted on the kept rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``.
        """
        check_is_fitted(self)
        return self.estimator_.predict_log_proba(X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        """Decision function of the estimator fitted on the kept rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            The estimator's decision values (not attribution scores).
        """
        check_is_fitted(self)
        return self.estimator_.decision_function(X)

    @available_if(_estimator_has("transform"))
    def transform(self, X):
        """Transform with the estimator fitted on the kept rows (all rows pass through).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        X_out : array-like of shape (n_samples, n_features_out)
            The estimator's output.
        """
        check_is_fitted(self)
        return self.estimator_.transform(X)

    @available_if(_estimator_has("score"))
    def score(self, X, y, sample_weight=None):
        """The estimator's default score on ``(X, y)``, with no row removed.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Passed on when given.

        Returns
        -------
        score : float
            Accuracy for classifiers, R^2 for regressors (the estimator's own).
        """
        check_is_fitted(self)
        if sample_weight is None:
            return self.estimator_.score(X, y)
        return self.estimator_.score(X, y, sample_weight=sample_weight)

    def get_metadata_routing(self):
        """Routing of fit parameters: everything goes to ``estimator.fit``, subset to kept rows.

        Returns
        -------
        routing : MetadataRouter
            The routing information.
        """
        router = MetadataRouter(owner=self).add(
            estimator=self._template() or SeedEnsembleClassifier(),
            method_mapping=MethodMapping().add(caller="fit", callee="fit")
            .add(caller="predict", callee="predict").add(caller="score", callee="score"))
        return router

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        template = self._template()
        if template is None:
            tags.target_tags.required = True
            return tags
        sub = template.__sklearn_tags__()
        # Copied as Pipeline does, so is_classifier, stratified CV and the
        # default scorer follow the wrapped estimator.
        tags.estimator_type = sub.estimator_type
        tags.classifier_tags = sub.classifier_tags
        tags.regressor_tags = sub.regressor_tags
        tags.transformer_tags = sub.transformer_tags
        tags.target_tags.multi_output = sub.target_tags.multi_output
        tags.target_tags.required = True
        tags.input_tags.pairwise = sub.input_tags.pairwise
        # the pruner takes CSR rows; the kept rows then go to the wrapped estimator
        tags.input_tags.sparse = sub.input_tags.sparse
        return tags
