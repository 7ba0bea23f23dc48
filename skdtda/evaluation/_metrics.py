"""Predicted distributions after removal sets, from a fitted influence estimator.

The scores that compare them with retraining (:func:`lds`, :func:`loo_correlation`,
:func:`noise_ceiling`, ...) are array functions of :mod:`skdtda._agreement`,
re-exported here.
"""

from sklearn.utils.validation import check_is_fitted

from ..influence import InfluenceTransformer, UnrolledInfluence
from ._retrain import Distributions, removal_masks

__all__ = ["predict_distributions"]


def predict_distributions(influence, X_query, y_query=None, *, remove):
    """Predicted samples of each query's measurement after each removal set.

    Parameters
    ----------
    influence : InfluenceTransformer or UnrolledInfluence
        Fitted on the training rows that ``remove`` refers to.
    X_query : array-like of shape (n_query, n_features)
        Query rows.
    y_query : array-like of shape (n_query,), default=None
        Query targets; None uses the ensemble's prediction.
    remove : array-like of bool of shape (n_sets, n_train), or list of array-like of int
        The removal sets (True = removed).

    Returns
    -------
    distributions : Distributions
        ``before`` (n_seeds, n_query): each attributed member's measurement
        ``m_s``; ``after`` (n_sets, n_seeds, n_query): ``m_s`` plus the sum of
        the member's predicted changes over the set (the convention of
        docs/design.md: predicted change when removed, already divided by N,
        summed over a group). Computed chunk by chunk: the (n_seeds, n_query,
        n_train) array of per-row changes is never built. With an influence
        fitted with ``correction="newton"``, each set is re-solved with the
        curvature of its kept rows instead of summing first-order changes (one
        new factorisation per member and set; one-row sets by a low-rank
        update, see :class:`~skdtda.InfluenceTransformer`). The samples of the
        influence's ``predict_removal_sets``.
    """
    if not isinstance(influence, (InfluenceTransformer, UnrolledInfluence)):
        raise ValueError("influence must be a fitted InfluenceTransformer or UnrolledInfluence, "
                         f"got {type(influence).__name__}")
    check_is_fitted(influence)
    masks = removal_masks(remove, influence.n_train_)
    return Distributions(*influence.predict_removal_sets(X_query, y_query, remove=masks))
