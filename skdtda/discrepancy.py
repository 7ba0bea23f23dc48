"""Discrepancies between the distributions of a measurement before and after removal.

A seed ensemble gives, for every training seed ``s``, the measurement ``m_s`` of
the trained net and ``m_s + delta_s`` after removing training data. Distributional
training data attribution compares the two samples over seeds rather than a single
number: a :func:`discrepancy` reduces the paired samples along the seed axis (axis 0)
to one number per query and training example, vectorised over all trailing axes.
"""

import numpy as np
from scipy.special import ndtri

__all__ = ["ONE_SIGNED", "STATISTICS", "discrepancy", "check_statistic"]

STATISTICS = ("mean", "variance", "std", "wasserstein", "wasserstein_smooth", "ks", "quantile",
              "flip")


#: The named measurements (:mod:`skdtda.measurements`) that never change sign, and
#: why: ``statistic="flip"`` (the share of seeds on which the measurement changes
#: sign) is always 0 on them, so it is refused there.
ONE_SIGNED = {"loss": "a loss is never negative",
              "log_proba": "a log-probability is never positive",
              "proba": "a probability is never negative"}


def check_statistic(statistic, measurement=None):
    """Validate a discrepancy statistic, for a measurement when one is given.

    Parameters
    ----------
    statistic : str or callable
        One of the names in :data:`STATISTICS`, or a callable
        ``statistic(before, after) -> ndarray of shape before.shape[1:]``.
    measurement : str or callable, default=None
        The measurement the statistic will compare (see
        :mod:`skdtda.measurements`). ``"flip"`` counts sign changes, so it is
        refused for the measurements that never change sign (:data:`ONE_SIGNED`:
        ``"loss"``, ``"log_proba"``, ``"proba"``); it suits ``"margin"`` (the
        predicted class flips) and ``"prediction"`` (a regression output crosses
        zero). A callable measurement is the caller's to judge.

    Returns
    -------
    statistic : str or callable
        The input, unchanged.

    Raises
    ------
    ValueError
        If ``statistic`` is neither a known name nor a callable, or is
        ``"flip"`` for a measurement that never changes sign.

    Examples
    --------
    >>> from skdtda.discrepancy import check_statistic
    >>> check_statistic("ks")
    'ks'
    >>> check_statistic("median")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
        ...
    ValueError: Unknown statistic 'median'; expected a callable or one of ...
    >>> check_statistic("flip", measurement="margin")
    'flip'
    >>> check_statistic("flip", measurement="loss")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
        ...
    ValueError: statistic='flip' counts the seeds on which the measurement changes sign, ...
    """
    if callable(statistic):
        return statistic
    # The isinstance check comes first so that arrays or other objects with an
    # elementwise ``==`` never reach the tuple membership test.
    if isinstance(statistic, str) and statistic in STATISTICS:
        if statistic == "flip" and isinstance(measurement, str) and measurement in ONE_SIGNED:
            raise ValueError(
                "statistic='flip' counts the seeds on which the measurement changes sign, "
                f"but measurement={measurement!r} never does ({ONE_SIGNED[measurement]}), so "
                "every score would be 0. Use measurement='margin' (a classifier: the "
                "predicted class flips) or measurement='prediction' (a regressor: the "
                "output crosses zero), or another statistic.")
        return statistic
    raise ValueError(
        f"Unknown statistic {statistic!r}; expected a callable or one of "
        f"{', '.join(repr(name) for name in STATISTICS)}."
    )


def _check_q(q):
    try:
        valid = np.ndim(q) == 0 and 0.0 <= float(q) <= 1.0
    except (TypeError, ValueError):
        valid = False
    # NaN fails both comparisons above, so it is rejected here too.
    if not valid:
        raise ValueError(f"q must be a number in [0, 1]; got q={q!r}.")
    return float(q)


def _check_samples(before, after):
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    if before.shape != after.shape:
        raise ValueError(
            "before and after must have the same shape (n_seeds, ...), paired by seed; "
            f"got before.shape={before.shape} and after.shape={after.shape}."
        )
    if before.ndim == 0 or before.shape[0] < 1:
        raise ValueError(
            "before and after need a seed axis (axis 0) with at least 1 seed; "
            f"got shape {before.shape}."
        )
    for name, values in (("before", before), ("after", after)):
        n_bad = values.size - np.count_nonzero(np.isfinite(values))
        if n_bad:
            raise ValueError(
                f"{name} contains {n_bad} non-finite value(s) (NaN or inf); a diverged "
                "member or a failed measurement should be dropped before comparing."
            )
    return before, after


def _wasserstein(before, after):
    # For two 1-D samples of equal size with equal weights the optimal coupling
    # pairs order statistics (the monotone rearrangement), so sorting is exact.
    diff = np.sort(after, axis=0) - np.sort(before, axis=0)
    return np.sqrt(np.mean(diff**2, axis=0))


def _wasserstein_smooth(before, after):
    # The empirical quantile difference sort(after) - sort(before) at the levels
    # u_i = (i + 1/2) / S is fitted by least squares as a + b * z_i with the normal
    # scores z_i = Phi^{-1}(u_i): a smooth transport map, where the raw difference
    # also holds the seed-to-seed scatter of the shifts (with few seeds and shifts
    # near the gaps between order statistics the sorted difference is each seed's
    # own shift, so W2 reads their root mean square). The z_i sum to zero, so
    # ``a`` is the change of the mean and ``b`` that of the normal-score scale.
    n_seeds = before.shape[0]
    diff = np.sort(after, axis=0) - np.sort(before, axis=0)
    z = ndtri((np.arange(n_seeds) + 0.5) / n_seeds)
    z = z.reshape((n_seeds,) + (1,) * (before.ndim - 1))
    zz = np.sum(z**2)
    shift = np.mean(diff, axis=0)
    if zz == 0:  # one seed: only a shift
        return np.abs(shift)
    scale = np.sum(diff * z, axis=0) / zz
    return np.sqrt(shift**2 + scale**2 * zz / n_seeds)


def _ks(before, after):
    n_seeds = before.shape[0]
    pooled = np.concatenate([after, before], axis=0)
    order = np.argsort(pooled, axis=0, kind="stable")
    # Walking the pooled sample in sorted order, an ``after`` value raises
    # S * F_after by one and a ``before`` value raises S * F_before by one; integer
    # counts keep the differences exact.
    gap = np.cumsum(np.where(order < n_seeds, 1, -1), axis=0)
    # Inside a run of tied values the running count is only partial; both CDFs are
    # defined at the last element of the run, so only those positions count.
    sorted_values = np.take_along_axis(pooled, order, axis=0)
    run_end = np.ones(pooled.shape, dtype=bool)
    run_end[:-1] = sorted_values[1:] != sorted_values[:-1]
    return np.max(np.abs(gap) * run_end, axis=0) / n_seeds


def discrepancy(before, after, statistic="mean", *, q=0.5):
    """Discrepancy between paired samples of a measurement over training seeds.

    Parameters
    ----------
    before : array-like of shape (n_seeds, ...)
        The measurement ``m_s`` of every seed ``s``, before removing training
        data. Converted to float64.
    after : array-like of shape (n_seeds, ...)
        The measurement ``m_s + delta_s`` after removal, paired with ``before``
        by seed along axis 0.
    statistic : str or callable, default="mean"
        How the two samples over seeds (axis 0) are compared. Population
        statistics (``ddof=0``):

        - ``"mean"``: ``mean(after) - mean(before)``.
        - ``"variance"``: ``var(after) - var(before)``, the increase in variance.
        - ``"std"``: ``std(after) - std(before)``.
        - ``"wasserstein"``: the Wasserstein-2 distance between the two empirical
          distributions with weights ``1 / n_seeds``,
          ``sqrt(mean((sort(after) - sort(before)) ** 2))``. Nonnegative. The
          paper's estimator (its Eq. for 1-D W2 on paired samples).
        - ``"wasserstein_smooth"``: the Wasserstein-2 distance of a smoothed
          transport: the quantile difference ``sort(after) - sort(before)`` at
          levels ``u_i = (i + 1/2) / n_seeds`` fitted by least squares as
          ``a + b z_i``, ``z_i = Phi^{-1}(u_i)`` (normal scores), and
          ``sqrt(mean((a + b z_i) ** 2)) = sqrt(a**2 + b**2 mean(z**2))``.
          ``a`` is the change of the mean, ``b`` that of a quantile-based scale.
          Nonnegative; equal to ``"wasserstein"`` for a pure shift and, up to
          the estimate of the scale, for any location-scale change. Unlike
          ``"wasserstein"``, it does not count the seed-to-seed scatter of the
          shifts as a change of distribution: with few seeds and shifts no
          larger than the gaps between sorted samples, ``"wasserstein"`` is
          about the root mean square of the per-seed shifts whatever the
          distributions do (see the user guide, "Reading the statistics").
        - ``"ks"``: the two-sample Kolmogorov-Smirnov statistic
          ``sup_x |F_after(x) - F_before(x)|`` between the empirical CDFs.
        - ``"quantile"``: ``quantile(after, q) - quantile(before, q)``, with
          :func:`numpy.quantile`'s default (linear) interpolation.
        - ``"flip"``: the fraction of seeds on which the measurement crosses zero
          (e.g. a margin: the predicted class flips), i.e. where
          ``(before > 0) != (after > 0)``; zero counts as the non-positive side.
        - callable: ``statistic(before, after)`` gets the validated float64
          arrays and must return an array of shape ``before.shape[1:]``.

        The distributional statistics (the two ``"wasserstein"``, ``"ks"``,
        ``"quantile"``, and the moment differences) ignore the pairing; only
        ``"flip"`` uses it.
    q : float, default=0.5
        Quantile level in [0, 1] for ``statistic="quantile"``; ignored otherwise.

    Returns
    -------
    discrepancy : ndarray of shape (...)
        One value per trailing index: ``before.shape[1:]``, a 0-d array for
        inputs of shape ``(n_seeds,)``.

    Raises
    ------
    ValueError
        If the shapes differ, there is no seed, an input holds NaN or inf, the
        statistic is unknown, ``q`` lies outside [0, 1], or a callable statistic
        returns the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> from skdtda.discrepancy import discrepancy
    >>> before = np.array([[0.0, -1.0], [1.0, 1.0], [2.0, 3.0], [3.0, 5.0]])
    >>> after = before + np.array([0.5, 10.0])
    >>> discrepancy(before, after, "mean")
    array([ 0.5, 10. ])
    >>> discrepancy(before, after, "variance")
    array([0., 0.])
    >>> discrepancy(before, after, "wasserstein")
    array([ 0.5, 10. ])
    >>> discrepancy(before, after, "wasserstein_smooth")
    array([ 0.5, 10. ])
    >>> discrepancy(before, after, "ks")
    array([0.25, 1.  ])
    >>> discrepancy(before, after, "flip")
    array([0.25, 0.25])
    >>> discrepancy(before, after, "quantile", q=1.0)
    array([ 0.5, 10. ])
    """
    statistic = check_statistic(statistic)
    if statistic == "quantile":
        q = _check_q(q)
    before, after = _check_samples(before, after)

    if callable(statistic):
        result = np.asarray(statistic(before, after), dtype=np.float64)
        if result.shape != before.shape[1:]:
            raise ValueError(
                f"The callable statistic {statistic!r} returned shape {result.shape}; "
                f"expected before.shape[1:] = {before.shape[1:]}."
            )
        return result
    if statistic == "mean":
        result = np.mean(after, axis=0) - np.mean(before, axis=0)
    elif statistic == "variance":
        result = np.var(after, axis=0) - np.var(before, axis=0)
    elif statistic == "std":
        result = np.std(after, axis=0) - np.std(before, axis=0)
    elif statistic == "wasserstein":
        result = _wasserstein(before, after)
    elif statistic == "wasserstein_smooth":
        result = _wasserstein_smooth(before, after)
    elif statistic == "ks":
        result = _ks(before, after)
    elif statistic == "quantile":
        result = np.quantile(after, q, axis=0) - np.quantile(before, q, axis=0)
    else:  # "flip"
        result = np.mean((before > 0) != (after > 0), axis=0)
    # numpy reductions of a 1-D input give a scalar; keep the ndarray contract.
    return np.asarray(result, dtype=np.float64)
