"""Calibrating ``damping`` on a small retraining: does it close the gaps of ``"auto"``?

    OMP_NUM_THREADS=1 python benchmarks/calibration_study.py --cache /tmp/damping [--recipes ...]

The recipes, evaluation ground truth and damping grid of ``damping_study.py``
(256 retrained seeds for 20 leave-one-out rows and 20 random 30% removals, 20
queries; a 16-seed ensemble). A user who wants more than ``damping="auto"``
can calibrate with the library's own tools: retrain a few removal sets with a
few seeds (``retrain_distributions``), and let ``GridSearchCV`` with
``make_lds_scorer`` pick the damping. Here that calibration retrains
``--sets`` (8) random 30% removals with ``--seeds`` (16) seeds, on 20 *other*
queries and other removal sets than the evaluation's, and picks, among the
fixed grid and ``"auto"``, the damping with the best average of mean-LDS and
variance-LDS. Printed per recipe: LOO / mean-LDS / variance-LDS on the
evaluation truth for the best fixed damping (each column's own best), for
``"auto"`` and for the calibrated choice; the choice; and the calibration's
cost (its retraining and search) in fits of the 16-seed ensemble and its
influence. With ``--unrolled``, a second calibration: the damping whose
influence is closest to ``UnrolledInfluence`` (the members' own runs
differentiated) on 5 of those queries, and ``UnrolledInfluence``'s own scores.
"""

import argparse
import time
import warnings

import numpy as np
import torch
from damping_study import (FIXED, HELD_OUT, RECIPES, _data, _ground_truth, _recipe,
                           _scores)
from sklearn.model_selection import GridSearchCV

from skdtda import InfluenceTransformer, UnrolledInfluence
from skdtda.evaluation import make_lds_scorer, query_folds, random_subsets, retrain_distributions

GRID = (*FIXED, "auto")


def _calibration_queries(name, X_q):
    """20 query rows the evaluation does not use: ``order[320:340]`` of the
    permutation whose ``order[300:320]`` are the evaluation's queries."""
    X, y, _ = _data(name)
    order = np.random.RandomState(0).permutation(len(X))
    assert np.array_equal(X[order[300:320]], X_q)  # the same draw as _recipe's
    return X[order[320:340]], y[order[320:340]]


def calibrate(ensemble, X_tr, y_tr, X_cal, y_cal, n_sets, n_seeds, cache):
    """The damping a small retraining picks (GridSearchCV over GRID, mean- and
    variance-LDS averaged), that average per damping, and the seconds of the
    retraining and of the search."""
    remove = random_subsets(len(X_tr), n_sets, keep_fraction=0.7, random_state=100)
    tic = time.perf_counter()
    truth = retrain_distributions(ensemble, X_tr, y_tr, X_cal, y_cal, remove=remove,
                                  n_seeds=n_seeds, random_state=7, memory=cache)
    retrain_seconds = time.perf_counter() - tic
    scoring = {statistic: make_lds_scorer(truth, remove=remove, X_query=X_cal, y_query=y_cal,
                                          discrepancy=statistic)
               for statistic in ("mean", "variance")}
    X_cv, y_cv, cv = query_folds(X_tr, y_tr, X_cal, y_cal, n_splits=2, random_state=0)
    tic = time.perf_counter()
    search = GridSearchCV(InfluenceTransformer(ensemble), {"damping": list(GRID)},
                          scoring=scoring, cv=cv, refit=False, error_score="raise")
    search.fit(X_cv, y_cv)
    search_seconds = time.perf_counter() - tic
    results = search.cv_results_
    average = (results["mean_test_mean"] + results["mean_test_variance"]) / 2
    choice = results["params"][int(np.argmax(average))]["damping"]
    return choice, average, retrain_seconds, search_seconds


def unrolled_choice(ensemble, X_tr, y_tr, X_cal, y_cal, n_query=5):
    """The damping whose per-seed influence is closest (relative Frobenius error)
    to unrolled differentiation of the members' own runs on ``n_query``
    calibration queries, the errors over GRID, the seconds, and the fitted
    UnrolledInfluence (it replays the recorded steps: compared at
    ``retraining="same_steps"``)."""
    tic = time.perf_counter()
    unrolled = UnrolledInfluence(ensemble).fit(X_tr, y_tr)
    truth = unrolled.influence_samples(X_cal[:n_query], y_cal[:n_query])
    seconds = time.perf_counter() - tic
    errors = []
    for damping in GRID:
        influence = InfluenceTransformer(ensemble, damping=damping,
                                         retraining="same_steps").fit(X_tr, y_tr)
        predicted = influence.influence_samples(X_cal[:n_query], y_cal[:n_query])
        errors.append(np.linalg.norm(predicted - truth) / np.linalg.norm(truth))
    return GRID[int(np.argmin(errors))], errors, seconds, unrolled


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", help="folder keeping the retrained ground truths")
    parser.add_argument("--recipes", default=",".join(RECIPES + HELD_OUT))
    parser.add_argument("--sets", type=int, default=8, help="calibration removal sets")
    parser.add_argument("--seeds", type=int, default=16, help="calibration retrained seeds")
    parser.add_argument("--unrolled", action="store_true",
                        help="also calibrate against UnrolledInfluence on 5 queries")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
    summary = []
    for name in args.recipes.split(","):
        recipe = _recipe(name)
        X_tr, y_tr, X_q, y_q, loo, subsets, template = recipe
        X_cal, y_cal = _calibration_queries(name, X_q)
        truth_loo, truth_lds = _ground_truth(recipe, args.cache)
        tic = time.perf_counter()
        ens = template.set_params(n_seeds=16).fit(X_tr, y_tr)
        ensemble_seconds = time.perf_counter() - tic
        rows = {}
        for damping in GRID:
            tic = time.perf_counter()
            influence = InfluenceTransformer(ens, damping=damping).fit(X_tr, y_tr)
            rows[damping] = (*_scores(influence, X_q, y_q, loo, subsets, truth_loo, truth_lds),
                             time.perf_counter() - tic, influence.damping_)
        choice, average, retrain_s, search_s = calibrate(ens, X_tr, y_tr, X_cal, y_cal,
                                                         args.sets, args.seeds, args.cache)
        fit_seconds = ensemble_seconds + rows["auto"][3]
        if args.unrolled:
            by_unrolled, errors, unrolled_s, unrolled = unrolled_choice(ens, X_tr, y_tr,
                                                                        X_cal, y_cal)
            own = _scores(unrolled, X_q, y_q, loo, subsets, truth_loo, truth_lds)
            print(f"\n{name}: UnrolledInfluence on 5 queries in {unrolled_s:.0f} s "
                  f"({unrolled_s / fit_seconds:.1f} fits); relative error of the influence "
                  "function against it, per damping: "
                  + ", ".join(f"{d}: {e:.2f}" for d, e in zip(GRID, errors))
                  + f"; closest {by_unrolled}, whose LOO / mean / var are "
                  + " / ".join(f"{v:.2f}" for v in rows[by_unrolled][:3])
                  + "; UnrolledInfluence's own LOO / mean / var: "
                  + " / ".join(f"{v:.2f}" for v in own), flush=True)
        best = [max(rows[d][i] for d in FIXED) for i in range(3)]
        print(f"\n{name}: calibration retrained {args.sets} sets x {args.seeds} seeds in "
              f"{retrain_s:.0f} s, searched in {search_s:.0f} s "
              f"({(retrain_s + search_s) / fit_seconds:.1f} fits of {fit_seconds:.1f} s)")
        print(f"{'damping':>10s} {'value':>9s} {'LOO':>6s} {'mean':>6s} {'var':>6s} "
              f"{'calibration score':>18s}")
        for damping, score in zip(GRID, average):
            r_loo, r_mean, r_var, _, value = rows[damping]
            mark = "  <- chosen" if damping == choice else ""
            print(f"{damping!s:>10s} {value:9.3g} {r_loo:6.2f} {r_mean:6.2f} {r_var:6.2f} "
                  f"{score:18.2f}{mark}", flush=True)
        gaps = {key: [rows[key][i] - best[i] for i in range(3)]
                for key in ("auto", choice)}
        summary.append((name, choice, rows[choice][4], gaps["auto"], gaps[choice],
                        (retrain_s + search_s) / fit_seconds))
    print("\nminus the best fixed damping (LOO / mean-LDS / variance-LDS):")
    for name, choice, value, auto, chosen, cost in summary:
        print(f"  {name:18s} auto " + " / ".join(f"{g:+.2f}" for g in auto)
              + f"   calibrated [{choice} = {value:.3g}] "
              + " / ".join(f"{g:+.2f}" for g in chosen) + f"   cost {cost:.1f} fits")
    for label, column in (("auto", 3), ("calibrated", 4)):
        hits = sum(round(g, 2) >= -0.03 for entry in summary for g in entry[column])
        print(f"{label}: {hits} of {3 * len(summary)} scores within 0.03 of the best fixed")


if __name__ == "__main__":
    main()
