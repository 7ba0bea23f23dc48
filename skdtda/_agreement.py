"""Agreement of predicted and retrained distributions: LDS, leave-one-out, noise ceilings.

Array functions only (re-exported by :mod:`skdtda.evaluation`), so that the
influence estimators can score their own calibration with them.

Scores compare, query by query, how a discrepancy of the measurement's
distribution (change in mean, increase in variance, Wasserstein-2, ...) varies
over removal sets under prediction and under retraining, and average the
per-query correlations. The retrained side is itself an estimate from a finite
number of seeds; its split-half reliability says how high a perfect method
could score with that many seeds (the noise ceiling).
"""

import warnings
from numbers import Integral

import numpy as np
from scipy.stats import rankdata
from sklearn.utils import Bunch, check_random_state

from .discrepancy import check_statistic, discrepancy as _discrepancy

__all__ = ["bootstrap_ci", "distribution_change", "lds", "loo_correlation", "mean_over_queries",
           "noise_ceiling", "per_query_correlation", "query_interval", "score_report",
           "spearman_brown_ceiling"]

_METHODS = ("spearman", "pearson")


def distribution_change(distributions, discrepancy="mean", *, q=0.5):
    """A discrepancy between the before and after samples, per removal set and query.

    Parameters
    ----------
    distributions : Distributions or tuple of (before, after)
        ``before`` of shape (n_seeds, n_query), ``after`` of shape
        (n_sets, n_seeds, n_query).
    discrepancy : str or callable, default="mean"
        Any statistic of :func:`skdtda.discrepancy.discrepancy`.
    q : float, default=0.5
        Quantile for ``discrepancy="quantile"``.

    Returns
    -------
    change : ndarray of shape (n_sets, n_query)
    """
    before, after = _check_distributions(distributions)
    before = np.broadcast_to(before[:, None, :], (before.shape[0],) + after.shape[::2])
    return _discrepancy(before, np.moveaxis(after, 1, 0), discrepancy, q=q)


def _check_distributions(distributions):
    try:
        before, after = distributions
    except (TypeError, ValueError):
        raise ValueError("expected a Distributions (before, after) pair; got "
                         f"{type(distributions).__name__}") from None
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if before.ndim != 2 or after.ndim != 3 or after.shape[1:] != before.shape:
        raise ValueError("a Distributions pair needs before of shape (n_seeds, n_query) and after "
                         f"of shape (n_sets, n_seeds, n_query); got {before.shape} and "
                         f"{after.shape}")
    if not (np.all(np.isfinite(before)) and np.all(np.isfinite(after))):
        raise ValueError("the distributions hold NaN or inf")
    return before, after


def _is_pair(values):
    """A (before, after) pair given as a tuple or a list of a 2-D and a 3-D array."""
    if isinstance(values, tuple):
        return True
    return (isinstance(values, list) and len(values) == 2 and np.ndim(values[0]) == 2
            and np.ndim(values[1]) == 3)


def _as_change(values, discrepancy, q):
    """(n_sets, n_query) changes from a Distributions pair or an array of changes."""
    if _is_pair(values):
        return distribution_change(tuple(values), discrepancy, q=q)
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("expected changes of shape (n_sets, n_query) or a Distributions pair; "
                         f"got a {type(values).__name__} that is neither") from None
    if values.ndim != 2:
        raise ValueError("expected changes of shape (n_sets, n_query) or a Distributions pair; "
                         f"got an array of shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("the changes hold NaN or inf")
    return values


def per_query_correlation(predicted, actual, method):
    """Correlation over removal sets (axis 0) for each query; NaN where one side is constant."""
    if predicted.shape != actual.shape:
        raise ValueError(f"predicted changes have shape {predicted.shape} but the retrained "
                         f"ones {actual.shape}: the same removal sets and queries are needed")
    if predicted.shape[0] < 3:
        raise ValueError(f"a correlation over removal sets needs at least 3 sets, got "
                         f"{predicted.shape[0]}")
    if method == "spearman":
        predicted, actual = rankdata(predicted, axis=0), rankdata(actual, axis=0)
    elif method != "pearson":
        raise ValueError(f"method={method!r} must be one of {_METHODS}")
    a = predicted - predicted.mean(axis=0)
    b = actual - actual.mean(axis=0)
    denom = np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=0) / denom
    r[denom <= 1e-300] = np.nan
    return r


def mean_over_queries(r):
    if np.all(np.isnan(r)):
        raise ValueError("every query's changes are constant over the removal sets on one side; "
                         "no correlation is defined")
    skipped = int(np.isnan(r).sum())
    if skipped:
        warnings.warn(f"{skipped} of {len(r)} queries have constant changes over the removal "
                      "sets on one side and are left out of the average", RuntimeWarning,
                      stacklevel=3)
    return float(np.nanmean(r))


def lds(predicted, actual, discrepancy="mean", *, q=0.5, method="spearman"):
    """Linear datamodeling score, the paper's Eq. 11, for any discrepancy.

    For each query, the Spearman correlation over removal sets between the
    predicted and the retrained change of the measurement's distribution
    (``discrepancy`` between the samples before and after the removal),
    averaged over queries. ``discrepancy="mean"`` is the classical LDS;
    ``"variance"``, ``"wasserstein"`` (and every other statistic of
    :func:`skdtda.discrepancy.discrepancy`) give the distributional LDS.

    Parameters
    ----------
    predicted : Distributions or ndarray of shape (n_sets, n_query)
        Predicted samples (:func:`predict_distributions`), or predicted
        changes already reduced by the discrepancy.
    actual : Distributions or ndarray of shape (n_sets, n_query)
        Retrained samples (:func:`retrain_distributions`), or changes.
    discrepancy : str or callable, default="mean"
        Applied to ``Distributions`` inputs.
    q : float, default=0.5
        Quantile for ``discrepancy="quantile"``.
    method : {"spearman", "pearson"}, default="spearman"
        Correlation over removal sets.

    Returns
    -------
    score : float
        In [-1, 1]; 1 when the predicted ordering of the removal sets matches
        retraining for every query. Queries whose changes are constant on one
        side are left out, with a warning.

    See Also
    --------
    score_report : the score with its bootstrap interval and noise ceiling.

    Examples
    --------
    >>> import numpy as np
    >>> from skdtda.evaluation import lds
    >>> actual = np.array([[0.1, 2.0], [0.3, 1.0], [0.2, 3.0]])
    >>> lds(actual * 10, actual)
    1.0
    """
    check_statistic(discrepancy)
    r = per_query_correlation(_as_change(predicted, discrepancy, q),
                              _as_change(actual, discrepancy, q), method)
    return mean_over_queries(r)


def loo_correlation(predicted, actual, *, method="pearson"):
    """Correlation of predicted and retrained leave-one-out changes of the mean.

    Parameters
    ----------
    predicted : Distributions or ndarray of shape (n_removed, n_query)
        Predicted samples for leave-one-out sets (see
        :func:`~skdtda.evaluation.leave_one_out`), or predicted changes of the
        mean (e.g. ``InfluenceTransformer(statistic="mean").transform(X_query)[:, rows].T``).
    actual : Distributions or ndarray of shape (n_removed, n_query)
        Retrained samples for the same sets, or their changes of the mean.
    method : {"pearson", "spearman"}, default="pearson"
        Correlation over the removed rows, per query, averaged over queries.

    Returns
    -------
    score : float

    Examples
    --------
    >>> import numpy as np
    >>> from skdtda.evaluation import loo_correlation
    >>> actual = np.array([[0.1, 2.0], [0.3, 1.0], [0.2, 3.0]])
    >>> round(loo_correlation(2 * actual + 1, actual), 6)
    1.0
    """
    r = per_query_correlation(_as_change(predicted, "mean", 0.5),
                              _as_change(actual, "mean", 0.5), method)
    return mean_over_queries(r)


def _split_half(actual, discrepancy, q, method, n_splits, rng, n_seeds):
    """Per-query correlation between two disjoint halves of n_seeds seeds, over splits.

    Each split draws its own n_seeds of the available seeds, then halves them.
    """
    before, after = actual
    rs = []
    for _ in range(n_splits):
        perm = rng.choice(before.shape[0], n_seeds, replace=False)
        a, b = perm[: n_seeds // 2], perm[n_seeds // 2: 2 * (n_seeds // 2)]
        half_a = distribution_change((before[a], after[:, a]), discrepancy, q=q)
        half_b = distribution_change((before[b], after[:, b]), discrepancy, q=q)
        rs.append(per_query_correlation(half_a, half_b, method))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN queries stay NaN
        return np.nanmean(rs, axis=0)


def noise_ceiling(actual, discrepancy="mean", *, q=0.5, method="spearman", n_seeds=None,
                  n_splits=20, random_state=None):
    """How high a perfect method could score against this retrained ground truth.

    The retrained changes are estimates from a finite number of seeds. Split
    the seeds into two random halves, compute the changes from each, and
    correlate them query by query (``split_half``); averaged over
    ``n_splits`` splits and over queries. The Spearman-Brown formula turns
    that into the reliability of the estimate from all seeds,
    ``rho = 2 r / (1 + r)``, and a method that predicted the true
    (infinite-seed) changes exactly would correlate with the estimate at
    about ``sqrt(rho)``: the ceiling (classical test theory; ``r <= 0`` gives
    0). The queries' correlations are averaged *before* the formula, since the
    square root of a noisy per-query value is biased upwards.

    Parameters
    ----------
    actual : Distributions
        Retrained samples from :func:`retrain_distributions` (paired by seed).
    discrepancy : str or callable, default="mean"
        Discrepancy of the score the ceiling is for.
    q : float, default=0.5
        Quantile for ``discrepancy="quantile"``.
    method : {"spearman", "pearson"}, default="spearman"
        The score's correlation: "spearman" for :func:`lds`, "pearson" for
        :func:`loo_correlation`.
    n_seeds : int, default=None
        The ceiling of a ground truth retrained with this many seeds (each
        split draws a fresh random subset of the seeds): the ceiling as a
        function of the number of seeds. None uses all.
    n_splits : int, default=20
        Random half splits averaged.
    random_state : int, RandomState instance or None, default=None
        Draws the splits and the seed subset.

    Returns
    -------
    result : Bunch
        ``ceiling`` (float), ``split_half`` (float, the mean half-vs-half
        correlation), ``per_query`` (ndarray, the formula applied to each
        query's own split-half correlation; noisy) and ``n_seeds``.
    """
    before, after = _check_distributions(actual)
    _check_count(n_splits, "n_splits")
    rng = check_random_state(random_state)
    if before.shape[0] < 4:
        raise ValueError("a split-half noise ceiling needs at least 4 seeds, got "
                         f"{before.shape[0]}")
    n_seeds = before.shape[0] if n_seeds is None else n_seeds
    if not 4 <= n_seeds <= before.shape[0]:
        raise ValueError(f"n_seeds={n_seeds} must lie between 4 and the {before.shape[0]} "
                         "seeds retrained")
    r = _split_half((before, after), discrepancy, q, method, n_splits, rng, n_seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        split_half = float(np.nanmean(r))
    return Bunch(ceiling=spearman_brown_ceiling(split_half), split_half=split_half,
                 per_query=spearman_brown_ceiling(r), n_seeds=n_seeds)


def _check_count(value, name):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def spearman_brown_ceiling(r):
    """sqrt of the full-sample reliability 2r / (1 + r); r <= 0 gives 0."""
    r = np.clip(r, 0, None)
    return np.sqrt(2 * r / (1 + r))


def bootstrap_ci(predicted, actual, discrepancy="mean", *, q=0.5, method="spearman",
                 over="queries", n_resamples=1000, confidence=0.95, random_state=None):
    """Bootstrap confidence interval of an LDS or leave-one-out score.

    Parameters
    ----------
    predicted, actual, discrepancy, q, method
        As in :func:`lds`.
    over : {"queries", "seeds"}, default="queries"
        What is resampled. "queries": the query points (the score is a mean
        over queries; cheap). "seeds": the retrained seeds, with the before
        and after samples resampled together (their pairing kept); this
        shows the noise of the ground truth itself and needs ``actual`` as
        :class:`Distributions`.
    n_resamples : int, default=1000
        Bootstrap resamples.
    confidence : float, default=0.95
        Coverage of the percentile interval.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    low, high : float
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie strictly between 0 and 1")
    _check_count(n_resamples, "n_resamples")
    rng = check_random_state(random_state)
    pred = _as_change(predicted, discrepancy, q)
    if over == "queries":
        r = per_query_correlation(pred, _as_change(actual, discrepancy, q), method)
        return query_interval(r, n_resamples, confidence, rng)
    if over == "seeds":
        if not _is_pair(actual):
            raise ValueError("over='seeds' needs the retrained Distributions, not changes")
        before, after = _check_distributions(actual)
        stats = np.empty(n_resamples)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for i in range(n_resamples):
                s = rng.randint(before.shape[0], size=before.shape[0])
                change = distribution_change((before[s], after[:, s]), discrepancy, q=q)
                stats[i] = np.nanmean(per_query_correlation(pred, change, method))
        return _percentiles(stats[~np.isnan(stats)], confidence)
    raise ValueError(f"over={over!r} must be 'queries' or 'seeds'")


def query_interval(r, n_resamples, confidence, rng, predictive=False):
    """Percentile interval of the mean of per-query correlations, queries resampled.

    ``predictive=False``: the mean over the population the queries were drawn from (a
    confidence interval). ``predictive=True``: the mean over *another* draw of as many
    queries (a prediction interval, about sqrt(2) wider): each resample adds the
    deviations of two independent resamples to the mean, ``mean(r[a]) + mean(r[b]) -
    mean(r)``, what a score measured on other rows differs by from ours.
    """
    r = r[~np.isnan(r)]
    if len(r) == 0:
        raise ValueError("no query has a defined correlation")
    draws = rng.randint(len(r), size=(n_resamples, len(r)))
    stats = r[draws].mean(axis=1)
    if predictive:
        other = rng.randint(len(r), size=(n_resamples, len(r)))
        stats = stats + r[other].mean(axis=1) - r.mean()
    return _percentiles(stats, confidence)


def _percentiles(stats, confidence):
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(low), float(high)


def score_report(predicted, actual, discrepancy="mean", *, q=0.5, method="spearman",
                 n_resamples=1000, confidence=0.95, random_state=None):
    """A score with its bootstrap interval and the ground truth's noise ceiling.

    Parameters
    ----------
    predicted : Distributions or ndarray of shape (n_sets, n_query)
        As in :func:`lds`.
    actual : Distributions
        Retrained samples (the ceiling needs the seeds).
    discrepancy : str or callable, default="mean"
    q : float, default=0.5
    method : {"spearman", "pearson"}, default="spearman"
        "spearman" reports the LDS, "pearson" the leave-one-out correlation.
    n_resamples : int, default=1000
    confidence : float, default=0.95
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    report : Bunch
        ``score``, ``ci`` (low, high) over queries, ``ceiling`` and
        ``split_half`` (see :func:`noise_ceiling`), ``n_sets``, ``n_query``,
        ``n_seeds`` (retrained) and ``discrepancy``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie strictly between 0 and 1")
    _check_count(n_resamples, "n_resamples")
    rng = check_random_state(random_state)
    true = _as_change(actual, discrepancy, q)
    r = per_query_correlation(_as_change(predicted, discrepancy, q), true, method)
    score = mean_over_queries(r)
    ci = query_interval(r, n_resamples, confidence, rng)
    ceiling = noise_ceiling(actual, discrepancy, q=q, method=method, random_state=rng)
    name = discrepancy if isinstance(discrepancy, str) else getattr(discrepancy, "__name__",
                                                                     "callable")
    return Bunch(score=score, ci=ci, ceiling=ceiling.ceiling, split_half=ceiling.split_half,
                 n_sets=true.shape[0], n_query=true.shape[1], n_seeds=actual[0].shape[0],
                 discrepancy=name)
