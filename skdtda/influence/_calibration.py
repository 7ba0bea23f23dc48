"""``damping="calibrate"``: the damping that best predicts a small retraining.

The rule of ``damping="auto"`` reads the damping from the members' training
(:mod:`skdtda.influence._damping`); how well a damping predicts retraining can
instead be *measured*, at a bounded cost, with the library's own retraining and
scores:

1. **Queries**: training rows drawn at random and held out of every retraining,
   so that the retrained members meet them as they meet test rows (a row they
   trained on is fitted closely and barely moves when others go). With queries
   the retraining kept, the calibration's LDS overstated the truth's on test rows
   (circles: 1.00 against 0.54) and it kept dampings 3-30x too small on problems
   trained long with Adam; chosen 2026-12-07 on four choice recipes of
   ``benchmarks/recipes.py`` and scored on others (docs/benchmarks.md, "Fourth
   round"). Or the rows the user gives (``fit(X, y, X_query=...)``: the rows
   they will ask about); the retraining then keeps every training row.
2. **Removal sets** of the other rows: half of them remove 30% (the regime of
   the LDS), half remove 5% (small removals, where first-order influence is
   most accurate and leave-one-out correlations live; they favour less damping
   than large sets do).
3. **Retraining**: a clone of the ensemble with a few seeds of its own
   (``seeds``), fitted on the rows other than the queries, and without each set
   too, every set with the same seeds (:func:`skdtda.ensemble.retrain_sets`),
   measuring the queries. The attributed members did train on the queries; the
   change common to every set that holding them out makes cancels from the
   scores, which correlate the sets' changes per query.
4. **Candidates**: the rule's damping times ``10 ** (k / 4)`` for ``k`` in
   ``-6 .. 6`` (1/31.6x to 31.6x). Each scored member's predicted samples for
   every set come from the set's summed training gradients, formed once:
   ``m_s + (1/N) grad m^T (H + d I)^{-1} sum_k (g_k - c_s)``, the forms at every
   candidate from :meth:`~skdtda.curvature.Curvature.bilinear_dampings` (a number
   per candidate for the Kronecker-factored forms, one tridiagonal reduction of
   the matrix for the dense and kernel ones).
5. **Scores** of each candidate against the retraining: the LDS of the change
   of the mean over the large sets and the correlation of the change of the
   mean over the small sets, their average the objective; the LDS of the
   variance and the Wasserstein distance are reported beside them.
6. **Choice**: the objective is smoothed over neighbouring candidates and the
   largest is taken, less a penalty of :data:`PENALTY` per decade away from the
   rule's value, so that a flat or noisy objective keeps the rule.
7. **Guard**: the candidate taken replaces the rule's value only where its gain
   over it is clear of noise: the lower end of the gain's 95% interval lies above
   zero (query rows and retrained seeds resampled together, the same resample for
   every candidate, so the interval is of the paired difference). Statistics of
   the spread then take their factor, as under ``"auto"``.
8. **Fidelity** at the final damping: its scores corrected for the few retrained
   seeds and the few scored members, with 95% *prediction* intervals: where a
   retraining measured on as many other rows should land (the best damping and
   the score depend on which rows are asked about; since 2026-12-07, 16:00); on
   rows the user gave, the mean's confidence interval (the claim is about them).

The retraining costs ``seeds * (1 + n_sets)`` member fits, at most
``calibration_budget`` times the ensemble's own ``n_seeds``; the scoring costs
one pass over the training rows' gradients per member and, per candidate, a
solve of the queries' gradients.
"""

import logging
import time
import warnings
from numbers import Integral
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.base import clone, is_classifier
from sklearn.utils import Bunch, check_random_state

from .._agreement import (distribution_change, noise_ceiling, per_query_correlation,
                          query_interval)
from .._cache import settings_key
from .._inputs import n_rows, take_rows
from .._loops import chunks, progress
from ..ensemble import member_nets, retrain_sets
from ..model import functional_member, measure_all

__all__ = ["AUTO_SECONDS", "CALIBRATION_OPTIONS", "CalibrationUnavailable", "FACTORS", "GUARD",
           "PENALTY", "calibrate"]

logger = logging.getLogger("skdtda")

#: The candidates, as multiples of the rule's damping: quarter decades from 1/31.6 to 31.6.
FACTORS = 10.0 ** (np.arange(-6, 7) / 4)
#: Objective (mean of two correlations) given up per decade away from the rule's damping:
#: a candidate a decade away must score 0.05 higher than the rule's value to be taken
#: (about half the width of the objective's 95% interval with the default options).
#: Chosen on 2026-12-06 on the ten choice recipes of benchmarks/recipes.py.
PENALTY = 0.05
#: The confidence of the guard: a candidate replaces the rule's value only where the
#: lower end of this interval of its gain (query rows and retrained seeds resampled)
#: lies above zero. Chosen on 2026-12-07 on the choice recipes of benchmarks/recipes.py:
#: on the digits CNN a calibration (its fidelity interval [0.13, 0.91]) moved the damping
#: 10x and lost 0.08 of mean-LDS to the rule; its gain's interval is [-0.05, 0.16], while
#: the move that the truth confirmed on the digits MLP with SGD stays clear ([0.005, 0.025]).
GUARD = 0.95
#: Shares of the rows that the large and the small removal sets remove.
LARGE, SMALL = 0.3, 0.05
#: ``calibration_options`` and their defaults: retrained seeds, query rows (at most; a
#: fifth of the rows where that is fewer), removal sets (None: as many as the budget
#: allows, at most ``max_sets``).
CALIBRATION_OPTIONS = {"seeds": 4, "queries": 40, "sets": None, "max_sets": 40}
#: The fewest removal sets of each size a calibration scores (a correlation over sets),
#: and the fewest query rows it measures.
MIN_SETS, MIN_QUERIES = 4, 10
#: The candidates are scored with the first this many attributed members: the noise of
#: the retrained side (a few seeds) outweighs that of a mean over more members. 8 since
#: 2026-12-07 (16 before; on the exact GGN each costs a reduction of its matrix): on nine
#: choice recipes of benchmarks/recipes.py the choice served the truth as well with 4, 8
#: or 16 (22-23 of 27 cells within 0.03), and the fidelity's estimate, corrected for the
#: members' noise (:func:`_members_factor`), as well with 8 as with 16
#: (benchmarks/scored_members_study.py).
SCORED_MEMBERS = 8
#: ``damping="auto"`` calibrates where the retraining is estimated (from its first fit,
#: without the queries) to take at most this many seconds; elsewhere it keeps the rule.
AUTO_SECONDS = 60.0


class CalibrationUnavailable(ValueError):
    """Why a calibration cannot run here (too few rows, a budget too small, a
    retraining too long for ``damping="auto"``): ``"calibrate"`` raises it,
    ``"auto"`` falls back to the rule."""


def _options(options):
    options = dict(options or {})
    unknown = sorted(set(options) - set(CALIBRATION_OPTIONS))
    if unknown:
        raise ValueError(f"calibration_options takes {sorted(CALIBRATION_OPTIONS)}, got "
                         f"{unknown}")
    merged = {**CALIBRATION_OPTIONS, **options}
    for name in ("seeds", "queries", "max_sets"):
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"calibration_options[{name!r}]={value!r} must be a positive "
                             "integer")
    sets = merged["sets"]
    if sets is not None and (isinstance(sets, bool) or not isinstance(sets, Integral)
                             or sets < 2 * MIN_SETS):
        raise ValueError(f"calibration_options['sets']={sets!r} must be None or an integer of "
                         f"at least {2 * MIN_SETS} ({MIN_SETS} large and {MIN_SETS} small "
                         "removal sets)")
    return merged


def plan_size(n_members, deterministic, budget, options):
    """``(seeds, n_sets)`` of the retraining: ``seeds * (1 + n_sets)`` member fits within
    ``budget * n_members``; refused, saying what it would take, where that is too few."""
    seeds = 1 if deterministic else options["seeds"]
    if not deterministic and seeds < 2:
        raise CalibrationUnavailable(
            f"damping='calibrate' needs at least 2 retrained seeds to sample the distribution "
            f"it predicts; calibration_options['seeds']={seeds}")
    allowed = int(np.floor(budget * n_members / seeds + 1e-9)) - 1
    n_sets = options["sets"] if options["sets"] is not None else min(allowed,
                                                                     options["max_sets"])
    needed = 2 * MIN_SETS
    if n_sets > allowed or allowed < needed:
        fits = seeds * (1 + max(n_sets, needed))
        raise CalibrationUnavailable(
            f"calibration_budget={budget} allows {max(allowed, 0)} retrained removal sets of "
            f"{seeds} seed{'s' * (seeds > 1)} ({budget} x the ensemble's {n_members} member "
            f"fit{'s' * (n_members > 1)}); damping='calibrate' needs at least {needed} "
            f"({MIN_SETS} large, {MIN_SETS} small) and was asked for "
            f"{max(n_sets, needed)}: raise calibration_budget to at least "
            f"{fits / n_members:.3g}, or use damping='auto'")
    return seeds, n_sets


def draw_sets(y, n_sets, n_queries, random_state, classifier):
    """``(queries, masks, n_large)``: query rows drawn at random, which no set removes
    (the retraining holds them out of every fit), and boolean removal masks over all
    rows (the first ``n_large`` remove :data:`LARGE` of the other rows, the rest
    :data:`SMALL`); for a classifier, neither the queries nor a set with them take
    every row of a class."""
    rng = check_random_state(random_state)
    n = len(y)
    labels = np.asarray(y).reshape(n, -1)[:, 0] if classifier else None
    classes = len(np.unique(labels)) if classifier else 0

    def keeps_classes(gone):
        return not classifier or len(np.unique(np.delete(labels, gone))) == classes

    for _ in range(100):
        queries = np.sort(rng.choice(n, n_queries, replace=False))
        if keeps_classes(queries):
            break
    pool = np.setdiff1d(np.arange(n), queries)
    n_large = n_sets - n_sets // 2
    masks = np.zeros((n_sets, n), dtype=bool)
    for j in range(n_sets):
        size = max(1, int(round((LARGE if j < n_large else SMALL) * len(pool))))
        for _ in range(100):
            removed = rng.choice(pool, size, replace=False)
            if keeps_classes(np.concatenate([queries, removed])):
                break
        masks[j, removed] = True
    return queries, masks, n_large


class _NetMeasurement:
    """``measure(fitted_ensemble)``: the influence's own measurement of the query rows
    under every member (picklable, for :func:`skdtda.ensemble.retrain_sets`)."""

    def __init__(self, X, y, measurement, task):
        self.X, self.y, self.measurement, self.task = X, y, measurement, task

    def __call__(self, ensemble):
        members = [functional_member(net, self.measurement, self.task)
                   for net in member_nets(ensemble)]
        return measure_all(members, self.X, self.y)


def _set_sums(member, X, y, masks, centre, chunk):
    """Each set's ``sum_k (g_k - c_s)`` in the member's blocks, float64, flattened:
    a list of ``(n_sets, block size)``."""
    weights = torch.as_tensor(masks, dtype=torch.float64)
    sums = None
    for t in chunks(n_rows(X), chunk):
        grads = member.grads("loss", X[t], y[t])
        # each chunk's product in the member's dtype (its 0/1 weights are exact), the
        # chunks' sums in float64: 2x faster than the product in float64 for float32 nets
        part = [(weights[:, t].to(g.device, g.dtype) @ g.reshape(len(g), -1)).double()
                for g in grads]
        sums = part if sums is None else [a + b for a, b in zip(sums, part)]
    counts = weights.sum(dim=1, keepdim=True)
    return [s - counts.to(s.device) * c.double().reshape(1, -1) for s, c in zip(sums, centre)]


def _member_shifts(member, curvature, centre, X, y, X_query, y_query, masks, dampings, chunk):
    """One member's first-order change of each query for each set and damping,
    ``(n_dampings, n_sets, nq)``; its set sums are formed once."""
    sums = _set_sums(member, X, y, masks, centre, chunk)
    queries = member.grads("measurement", X_query, y_query)
    shifts = np.empty((len(dampings), len(masks), n_rows(X_query)))
    for i, shift in enumerate(curvature.bilinear_dampings(queries, sums, dampings)):
        shifts[i] = shift.T.cpu().numpy() / n_rows(X)
    return shifts


def predicted_samples(members, curvatures, centres, X, y, X_query, y_query, masks, dampings,
                      chunk, verbose=0, first=None):
    """First-order samples after each set for each damping: ``before`` (S, nq) and
    ``after`` (n_dampings, n_sets, S, nq). ``first``: the first member's shifts, where
    they are already known."""
    before = measure_all(members, X_query, y_query)
    shifts = np.zeros((len(dampings), len(masks)) + before.shape)
    with progress(len(members), "calibration: scoring the candidates", "seed",
                  verbose) as bar:
        for s, (member, curvature, centre) in enumerate(zip(members, curvatures, centres)):
            shifts[:, :, s] = first if s == 0 and first is not None else _member_shifts(
                member, curvature, centre, X, y, X_query, y_query, masks, dampings, chunk)
            bar.update()
    return before, before[None, None] + shifts


def correlations(before, after, actual, sets, statistic, method, q=0.5):
    """Per-query correlation over the removal sets ``sets`` (a slice) of the predicted
    change of ``statistic`` (samples ``before`` (S, nq), ``after`` (n_sets, S, nq))
    with the retrained one (``actual``: the retraining's ``(before, after)``), (nq,)."""
    predicted = distribution_change((before, after[sets]), statistic, q=q)
    retrained = distribution_change((actual[0], actual[1][sets]), statistic, q=q)
    return per_query_correlation(predicted, retrained, method)


def _summary(r, rng, predictive=False):
    """Mean over queries and its 95% interval (queries resampled; ``predictive``: for the
    mean over another draw of as many queries); NaN where undefined."""
    if np.all(np.isnan(r)):
        return np.nan, (np.nan, np.nan)
    return float(np.nanmean(r)), query_interval(r, 1000, 0.95, rng, predictive=predictive)


def _smooth(values):
    """A [1, 2, 1] moving average over neighbouring candidates (axis 0; ends: [2, 1])."""
    v = np.asarray(values, dtype=np.float64)
    out = v.copy()
    if len(v) > 2:
        out[1:-1] = (v[:-2] + 2 * v[1:-1] + v[2:]) / 4
        out[0], out[-1] = (2 * v[0] + v[1]) / 3, (2 * v[-1] + v[-2]) / 3
    return out


def _ceiling(actual, statistic, q, method, seeds, deterministic):
    """How well the calibration's few retrained seeds can agree with any prediction: the
    noise ceiling of their changes (split-half, Spearman-Brown); 1 for a deterministic
    model's exact retraining, None below 4 seeds."""
    if deterministic:
        return 1.0
    if seeds < 4:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(noise_ceiling(actual, statistic, q=q, method=method,
                                   random_state=0).ceiling)


def _members_factor(before, after, statistic, q, method, n_members):
    """How much closer to the retraining the prediction of all ``n_members`` members
    ranks than that of the ``k`` scored ones (samples ``before`` (k, nq), ``after``
    (n_sets, k, nq)): ``sqrt(rho_n / rho_k)``, with ``rho_k`` the reliability of the
    scored members' predicted changes (their split-half correlation, Spearman-Brown)
    and ``rho_n`` that of ``n_members`` members' (Spearman-Brown from one member's),
    classical test theory as for the retrained side's ceiling. 1 where all members
    are scored, below 4 members, or where the halves do not agree (nothing to scale).

    On nine choice recipes of ``benchmarks/recipes.py``, against the truth's mean-LDS
    (256 seeds, test rows) at the chosen damping, the calibration's (the ceiling's
    correction applied) went from a bias of -0.065 (mean absolute error 0.080; 16 of
    32 members scored, uncorrected) to -0.021 (0.053; 8 scored, corrected), the truth
    inside its interval on 7/9 -> 9/9 (2026-12-07; docs/benchmarks.md, "Sixth round").
    """
    k = len(before)
    if k >= n_members or k < 4:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = noise_ceiling((before, after), statistic, q=q, method=method,
                          random_state=0).split_half
    if not r > 0:
        return 1.0
    reliability = 2 * r / (1 + r)
    one = reliability / (k - (k - 1) * reliability)
    return float(np.sqrt(n_members * one / (1 + (n_members - 1) * one) / reliability))


def _disattenuated(value, ceiling, members=1.0):
    """A correlation against the few seeds' noisy changes, divided by their ceiling and
    scaled by the members' factor (:func:`_members_factor`): the correlation expected of
    the transformer's every member against a retraining with many seeds (classical test
    theory), within [-1, 1]; where the ceiling is unknown or vanishes, only scaled."""
    if not np.isfinite(value):
        return value
    scale = members / ceiling if ceiling is not None and ceiling > 0 else members
    return float(np.clip(value * scale, -1, 1))


def _objective(large, small):
    """The objective of each candidate: the mean of its two mean correlations over the
    queries (``large``, ``small``: per-query correlations, (..., n_candidates,
    n_queries)); -1 where neither is defined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        both = np.stack([np.nanmean(large, axis=-1), np.nanmean(small, axis=-1)])
        return np.nan_to_num(np.nanmean(both, axis=0), nan=-1.0)


def _changes_of_mean(before, after):
    """``mean(after) - mean(before)`` over the seeds (axis -2 of ``after``, 0 of
    ``before``): (..., n_sets, nq) from ``before`` (S, nq), ``after`` (..., n_sets, S, nq)."""
    return after.mean(axis=-2) - before.mean(axis=0)


def _objectives(predicted, retrained, n_large):
    """The objective of each candidate (:func:`_objective`) from its predicted changes of
    the mean ``predicted`` (n_candidates, n_sets, nq) and the retrained ones (n_sets, nq):
    Spearman over the large sets, Pearson over the small ones, per query."""
    n_cand, n_sets, nq = predicted.shape
    flat = np.moveaxis(predicted, 1, 0).reshape(n_sets, n_cand * nq)
    tiled = np.tile(retrained, (1, n_cand))
    with np.errstate(invalid="ignore", divide="ignore"):
        large = per_query_correlation(flat[:n_large], tiled[:n_large], "spearman")
        small = per_query_correlation(flat[n_large:], tiled[n_large:], "pearson")
    return _objective(large.reshape(n_cand, nq), small.reshape(n_cand, nq))


def best_penalised(smoothed, factors):
    """Index of the largest smoothed objective less :data:`PENALTY` per decade away from
    the rule's value (``factors`` = 1): the candidate the guard then checks."""
    return int(np.argmax(smoothed - PENALTY * np.abs(np.log10(factors))))


def choose(predicted, retrained, n_large, factors, n_resamples=500, random_state=0):
    """The chosen candidate, and each candidate's gain over the rule's value.

    The objective (:func:`_objective`) is smoothed over neighbouring candidates;
    the largest, less :data:`PENALTY` per decade away from the rule's value
    (``factors`` = 1), is taken where the lower end of its gain's :data:`GUARD`
    interval lies above zero; else the rule's value is kept. The interval
    resamples both draws that every candidate's score shares: the query rows and
    the few retrained seeds (resampling the queries alone misses the seeds' noise,
    common to all queries: on the digits CNN of the choice recipes it gave
    [0.02, 0.17] for a move that lost 0.08 against the truth).

    Parameters
    ----------
    predicted : ndarray of shape (n_candidates, n_sets, n_queries)
        Each candidate's predicted change of the mean (the first ``n_large`` sets
        large, the rest small).
    retrained : tuple of (before, after)
        The retraining's samples: (R, n_queries) and (n_sets, R, n_queries).
    n_large : int
    factors : ndarray of shape (n_candidates,)
        The candidates as multiples of the rule's damping (one of them 1).

    Returns
    -------
    chosen : int
    gain : ndarray of shape (n_candidates,)
        The smoothed objective less the rule's.
    interval : ndarray of shape (n_candidates, 2)
        Its interval.
    guarded : bool
        Whether the guard kept the rule's value over a candidate that scored higher.
    """
    before, after = (np.asarray(a, dtype=np.float64) for a in retrained)
    rule = int(np.argmin(np.abs(np.log10(factors))))
    smoothed = _smooth(_objectives(predicted, _changes_of_mean(before, after), n_large))
    best = best_penalised(smoothed, factors)
    rng = check_random_state(random_state)
    n_seeds, nq = before.shape
    gains = np.empty((n_resamples, len(factors)))
    for b in range(n_resamples):
        seeds, queries = rng.randint(n_seeds, size=n_seeds), rng.randint(nq, size=nq)
        changes = _changes_of_mean(before[seeds], after[:, seeds])
        drawn = _smooth(_objectives(predicted[:, :, queries], changes[:, queries], n_large))
        gains[b] = drawn - drawn[rule]
    interval = np.quantile(gains, [(1 - GUARD) / 2, (1 + GUARD) / 2], axis=0).T
    clear = best == rule or interval[best, 0] > 0
    return (best if clear else rule), smoothed - smoothed[rule], interval, not clear


def calibrate(influence, X, y, X_net, y_net, center, *, budget, options, ratio=1.0,
              statistic="mean", q=0.5, folder=None, n_jobs=None, verbose=0, max_seconds=None,
              query=None):
    """Score the candidate dampings of a fitted influence against a small retraining.

    Parameters
    ----------
    influence : InfluenceTransformer
        Fitted (its members, curvatures and centres are used; they are not changed).
    X, y : arrays
        The training rows as the ensemble takes them, and their targets.
    X_net, y_net : arrays
        The same rows in the nets' form.
    center : float
        The rule's damping for the statistics of location (positive).
    budget : float
        ``calibration_budget``.
    options : dict or None
        ``calibration_options``.
    ratio : float, default=1.0
        The estimator's final damping is the chosen one times ``ratio`` (its
        statistic's multiple of the location's damping).
    statistic, q : as the estimator's
        What :attr:`fidelity_` reports, at the final damping.
    folder : path-like, default=None
        Where the retrained sets are kept.
    n_jobs, verbose : as the estimator's
    max_seconds : float, default=None
        Give up (:class:`CalibrationUnavailable`) when the calibration would take
        longer: the retraining estimated from its first fit (without the queries), the
        scoring from the first member's, both in CPU seconds of the calling thread.
    query : tuple (X_query, y_query) or None, default=None
        Rows to measure in the nets' form, and their targets: the rows the user
        will ask about (at most ``queries`` of them, drawn at random). The
        retraining then fits every training row less each set, and the
        fidelity's intervals are for these rows (confidence intervals). None
        draws training rows and holds them out of the retraining.

    Returns
    -------
    result : Bunch
        ``damping`` (the final damping: the chosen one times ``ratio``), ``table``
        (``InfluenceTransformer.calibration_``) and ``fidelity``
        (``InfluenceTransformer.fidelity_``).
    """
    options = _options(options)
    ens = influence.estimator_
    deterministic = len(ens.estimators_) == 1
    seeds, n_sets = plan_size(len(ens.estimators_), deterministic, budget, options)
    n = n_rows(X_net)
    rng = check_random_state(int(np.asarray(ens.seeds_).reshape(-1)[0]) % (2**31 - 1))
    classifier = is_classifier(ens)
    if query is None:
        n_queries = min(options["queries"], n // 5)
        if n_queries < MIN_QUERIES:
            raise CalibrationUnavailable(
                f"damping='calibrate' needs at least {5 * MIN_QUERIES} training rows, got {n}: "
                f"it measures a fifth of them ({MIN_QUERIES} at least) and removes sets of "
                "the others; use damping='auto' or give query rows (X_query)")
        queries, masks, n_large = draw_sets(y, n_sets, n_queries, rng, classifier)
        X_query, y_query = take_rows(X_net, queries), y_net[queries]
    else:  # the user's rows: every training row can go, and the retraining keeps the others
        given = n_rows(query[0])
        if given < MIN_QUERIES:
            raise CalibrationUnavailable(f"damping='calibrate' measures at least {MIN_QUERIES} "
                                         f"query rows, got X_query with {given}")
        n_queries = min(options["queries"], given)
        picked = np.sort(rng.choice(given, n_queries, replace=False))
        X_query, y_query = take_rows(query[0], picked), query[1][picked]
        queries, masks, n_large = draw_sets(y, n_sets, 0, rng, classifier)
    # the retraining holds any training queries out: it fits the other rows, less each set
    kept = np.setdiff1d(np.arange(n), queries)
    X_kept, y_kept, kept_masks = take_rows(X, kept), np.asarray(y)[kept], masks[:, kept]
    template = clone(ens).set_params(n_seeds=seeds, random_state=int(rng.randint(2**31 - 1)),
                                     memory=None, verbose=0, n_jobs=None)
    task = "classifier" if classifier else "regressor"
    measure = _NetMeasurement(X_query, y_query, influence.measurement, task)
    if folder is not None:
        rows = queries if query is None else (X_query, y_query)
        folder = Path(folder) / joblib.hash((settings_key(template), X_net, y_net, rows,
                                             repr(influence.measurement), "held out"))[:16]
        folder.mkdir(parents=True, exist_ok=True)
    logger.info("damping='calibrate': retraining %d removal sets (%d of %d%%, %d of %d%% of "
                "the rows) with %d seeds, %d query rows %s", n_sets, n_large, LARGE * 100,
                n_sets - n_large, SMALL * 100, seeds, n_queries,
                "held out" if query is None else "given")
    dampings = center * FACTORS
    # the candidates, and each times the ratio (the final damping of every choice)
    solved = dampings if ratio == 1 else np.concatenate([dampings, dampings * ratio])
    scored = slice(0, SCORED_MEMBERS)
    members = influence._members[scored]
    args = (X_net, y_net, X_query, y_query, masks, solved,
            influence._train_chunk())
    # timed in this thread's CPU seconds: what they take on a machine with nothing else
    # running, so that whether "auto" calibrates does not depend on the other jobs
    tic = time.thread_time()
    first = _member_shifts(members[0], influence.curvatures_[0], influence._centres[0], *args)
    scoring = (time.thread_time() - tic) * len(members)
    tic = time.thread_time()
    before = retrain_sets(template, X_kept, y_kept, kept_masks[:0], measure, folder=folder)[0]
    seconds = time.thread_time() - tic
    # the sets train on fewer rows: their steps scale with the kept rows
    estimate = seconds * (n_large * (1 - LARGE) + (n_sets - n_large) * (1 - SMALL))
    if max_seconds is not None and estimate + scoring > max_seconds:
        raise CalibrationUnavailable(
            f"it would take about {estimate + scoring:.0f} s, more than {max_seconds:g} s: "
            f"{estimate:.0f} s to retrain {n_sets} sets (the fit without the queries took "
            f"{seconds:.1f} s) and {scoring:.0f} s to score the candidates with "
            f"{len(members)} members")
    actual = retrain_sets(template, X_kept, y_kept, kept_masks, measure, before=before,
                          folder=folder, n_jobs=n_jobs, verbose=verbose,
                          desc="calibration: retraining removal sets")
    before, after = predicted_samples(members, influence.curvatures_[scored],
                                      influence._centres[scored], *args, verbose=verbose,
                                      first=first)
    parts = {"large": slice(0, n_large), "small": slice(n_large, n_sets)}
    score_rng = check_random_state(0)

    def score(i, part, stat, method, predictive=False):
        return _summary(correlations(before, after[i], actual, parts[part], stat, method, q),
                        score_rng, predictive)

    large, small = (np.array([correlations(before, after[i], actual, parts[part], "mean",
                                           method, q) for i in range(len(dampings))])
                    for part, method in (("large", "spearman"), ("small", "pearson")))
    table = {key: [] for key in ("mean", "mean_interval", "variance", "wasserstein",
                                 "small", "small_interval")}
    for i in range(len(dampings)):
        for key, r in (("mean", large[i]), ("small", small[i])):
            value, interval = _summary(r, score_rng)
            table[key].append(value)
            table[f"{key}_interval"].append(interval)
        for stat in ("variance", "wasserstein"):
            table[stat].append(score(i, "large", stat, "spearman")[0])
    table["objective"] = _objective(large, small)
    predicted = _changes_of_mean(before, after[:len(dampings)])
    chosen, gain, gain_interval, guarded = choose(predicted, actual, n_large, FACTORS)
    table.update(gain=gain, gain_interval=gain_interval, guarded=guarded)
    if guarded:
        best = best_penalised(gain, FACTORS)  # the gain is the smoothed objective, shifted
        logger.info("damping='calibrate' keeps the rule's %.4g: %.4g scored %.2f higher, within "
                    "its noise (95%% interval [%.2f, %.2f])", center, dampings[best],
                    gain[best], *gain_interval[best])
    logger.info("damping='calibrate' chose %.4g (%.3g x the rule's %.4g): mean-LDS %.2f, "
                "small-set correlation %.2f", dampings[chosen], FACTORS[chosen], center,
                table["mean"][chosen], table["small"][chosen])
    final = chosen if ratio == 1 else len(dampings) + chosen
    name = statistic if isinstance(statistic, str) else getattr(statistic, "__name__",
                                                                 "callable")
    fidelity = Bunch(statistic=name, damping=float(solved[final]), n_sets=int(n_large),
                     n_small_sets=int(n_sets - n_large), n_seeds=int(seeds),
                     n_queries=int(n_queries),
                     queries="training rows held out" if query is None else "given")
    for key, part, stat, method in (("lds", "large", statistic, "spearman"),
                                    ("small_sets", "small", "mean", "pearson")):
        # what an independent retraining measures on other rows (a prediction interval),
        # or on the rows given (the mean's confidence interval)
        measured, interval = score(final, part, stat, method, predictive=query is None)
        ceiling = _ceiling((actual[0], actual[1][parts[part]]), stat, q, method, seeds,
                           deterministic)
        factor = _members_factor(before, after[final][parts[part]], stat, q, method,
                                 len(influence._members))
        fidelity.update({key: _disattenuated(measured, ceiling, factor),
                         f"{key}_interval" if key != "lds" else "interval": tuple(
                             _disattenuated(bound, ceiling, factor) for bound in interval),
                         f"{key}_measured": measured, f"{key}_ceiling": ceiling,
                         f"{key}_members_factor": factor})
    table = {key: np.asarray(value) for key, value in table.items()}
    table.update(damping=dampings, factor=FACTORS.copy(), chosen=chosen, rule=center,
                 n_seeds=seeds, n_sets=n_sets, n_large=n_large, n_queries=n_queries,
                 query_rows=queries if query is None else None)
    return Bunch(damping=float(solved[final]), table=Bunch(**table), fidelity=fidelity)
