"""A scikit-learn Pipeline that ends in a seed ensemble, as an attributed model.

Most scikit-learn models are Pipelines: a scaler, an encoder, a
ColumnTransformer or a vectorizer in front of the model. Attribution treats
the steps before the seed ensemble as a fixed map from the user's raw rows to
the nets' inputs: they are fitted once on the training rows (unless the
Pipeline is already fitted) and held fixed while the ensemble's members are
attributed. Rows stay the user's rows: the ``k``-th score is the ``k``-th raw
training row's, whatever the steps turn it into.

Any step that keeps the rows may stand before the ensemble (the Pipeline is
walked step by step, nested Pipelines included); a step that changes the
number of rows (a sampler with ``fit_resample``) is refused, because the
ensemble's rows would no longer be the user's.
"""

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .._inputs import n_rows
from ._seed_ensemble import SeedEnsembleClassifier, SeedEnsembleRegressor

__all__ = ["ATTRIBUTED", "fit_preprocessing", "is_attributed_model", "is_fitted_pipeline",
           "row_labels", "split_pipeline"]

#: The estimators attribution accepts as its model: a seed ensemble, or a Pipeline
#: ending in one (for ``_parameter_constraints``).
ATTRIBUTED = [SeedEnsembleClassifier, SeedEnsembleRegressor, Pipeline]

_ENSEMBLES = (SeedEnsembleClassifier, SeedEnsembleRegressor)


def is_attributed_model(estimator):
    """Whether ``estimator`` is a seed ensemble or a Pipeline whose last step is one."""
    try:
        split_pipeline(estimator, "")
    except (TypeError, ValueError):
        return False
    return True


def _flat_steps(pipeline, prefix=""):
    steps = []
    for name, step in pipeline.steps:
        if isinstance(step, Pipeline):
            steps.extend(_flat_steps(step, f"{prefix}{name}__"))
        elif step is not None and not (isinstance(step, str) and step == "passthrough"):
            steps.append((f"{prefix}{name}", step))
    return steps


def split_pipeline(estimator, consumer):
    """The steps before the seed ensemble, and the ensemble.

    Parameters
    ----------
    estimator : SeedEnsembleClassifier, SeedEnsembleRegressor or Pipeline
        A seed ensemble, or a Pipeline (nested ones included) whose last step is
        one.
    consumer : str
        Who asks, for the messages.

    Returns
    -------
    steps : list of (str, estimator)
        The steps before the ensemble, flattened (``"outer__inner"`` names for
        nested Pipelines; ``"passthrough"`` and None steps dropped). Empty for
        a bare ensemble.
    ensemble : SeedEnsembleClassifier or SeedEnsembleRegressor

    Raises
    ------
    ValueError
        When the last step is not a seed ensemble (naming it), or a step
        changes the number of rows (a sampler).
    TypeError
        When ``estimator`` is neither an ensemble nor a Pipeline.
    """
    if isinstance(estimator, _ENSEMBLES):
        return [], estimator
    if not isinstance(estimator, Pipeline):
        raise TypeError(f"{consumer}: the estimator must be a SeedEnsembleClassifier, a "
                        "SeedEnsembleRegressor or a Pipeline ending in one, got "
                        f"{type(estimator).__name__}")
    steps = _flat_steps(estimator)
    if not steps:
        raise ValueError(f"{consumer}: the Pipeline has no steps")
    last_name, last = steps[-1]
    if not isinstance(last, _ENSEMBLES):
        raise ValueError(
            f"{consumer}: the Pipeline's last step {last_name!r} is a {type(last).__name__}, "
            "not a seed ensemble; attribution needs the model to be a SeedEnsembleClassifier "
            "or SeedEnsembleRegressor (wrap the net or scikit-learn model in one)")
    for name, step in steps[:-1]:
        if hasattr(step, "fit_resample"):
            raise ValueError(
                f"{consumer}: the Pipeline's step {name!r} ({type(step).__name__}) is a "
                "sampler, which changes the training rows; attribution scores the rows the "
                "Pipeline is given, so every step before the ensemble must keep them. "
                "Resample the data before attributing instead")
        if not hasattr(step, "transform"):
            raise ValueError(f"{consumer}: the Pipeline's step {name!r} "
                             f"({type(step).__name__}) has no transform, so it cannot stand "
                             "before the ensemble")
    return steps[:-1], last


def _is_fitted(estimator):
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True


def is_fitted_pipeline(estimator):
    """Whether every step of ``estimator`` is fitted (a Pipeline's own check looks at
    its last step only; a fitted ensemble behind unfitted steps was fitted on other
    features)."""
    steps, ensemble = split_pipeline(estimator, "")
    return _is_fitted(ensemble) and all(_is_fitted(step) for _, step in steps)


def fit_preprocessing(estimator, X, y, consumer):
    """The fitted steps before the ensemble, the ensemble, and the training rows as
    the ensemble sees them.

    An unfitted Pipeline's steps are cloned and fitted on ``(X, y)`` in order
    (``fit_transform``); a fitted Pipeline's steps are used as they are (its
    ensemble must then have been fitted on their output of ``X``, which its
    consumers check).

    Parameters
    ----------
    estimator : SeedEnsembleClassifier, SeedEnsembleRegressor or Pipeline
    X : array-like, sparse matrix, DataFrame, dict or Dataset
        The raw training rows.
    y : array-like of shape (n_samples,)
    consumer : str
        Who asks, for the messages.

    Returns
    -------
    preprocessor : Pipeline or None
        The fitted steps before the ensemble; None for a bare ensemble.
    ensemble : SeedEnsembleClassifier or SeedEnsembleRegressor
        Fitted when the Pipeline was; otherwise the unfitted last step.
    X_features : array-like
        ``X`` through the preprocessor (``X`` itself for a bare ensemble).
    """
    steps, ensemble = split_pipeline(estimator, consumer)
    if not steps:
        return None, ensemble, X
    if is_fitted_pipeline(estimator):
        preprocessor = Pipeline(steps)
        features = preprocessor.transform(X)
    else:
        # everything is refitted, the ensemble too (fitted behind unfitted steps, it
        # would describe other features)
        preprocessor = Pipeline([(name, clone(step)) for name, step in steps])
        features = preprocessor.fit_transform(X, y)
        ensemble = clone(ensemble)
    _check_same_rows(X, features, consumer)
    return preprocessor, ensemble, features


def _check_same_rows(X, features, consumer):
    n_in = len(X) if not hasattr(X, "shape") else X.shape[0]
    n_out = n_rows(features)
    if n_in != n_out:
        raise ValueError(f"{consumer}: the steps before the ensemble turned {n_in} rows into "
                         f"{n_out}; every step must keep the rows")


def row_labels(X):
    """The training rows' labels: a DataFrame's or Series' index, else None."""
    index = getattr(X, "index", None)
    if index is None or not hasattr(X, "iloc"):
        return None
    return np.asarray(index)
