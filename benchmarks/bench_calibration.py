"""The calibration's cost against fitting the ensemble and against the rule alone.

    OMP_NUM_THREADS=1 python benchmarks/bench_calibration.py [--recipes a,b] [--alone]

For each recipe of ``benchmarks/recipes.py``, in a fresh subprocess (its peak
resident memory its own): the ensemble's own fit, then ``InfluenceTransformer`` with
the rule alone (``calibration_budget=0``: the curvatures every damping needs) and
with ``damping="calibrate"`` at its default budget, each timed. Printed: the
seconds of each and their ratio to the ensemble's fit (the issue's target: at most
4x), the calibration's own cost (``calibrate`` less the rule), the chosen damping
and the peak memory. ``--alone`` adds a second ``calibrate`` with each removal set
trained alone (``ROW_SETS_MEMBERS = 0``, the path before 2026-12-07's shared
passes).
"""

import argparse
import time
import warnings

import torch

import recipes
from _memory import in_subprocess, peak_rss_mib, reset_peak

DEFAULT = ("circles-adam-long", "tabular-adam-long", "friedman1-sgd-long", "diabetes-adam",
           "breast-adamw", "moons-sgd-long", "digits-adam", "digits-cnn")


def _run(name, shared, queue):
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from skdtda import InfluenceTransformer
    from skdtda.ensemble import _seed_ensemble

    if not shared:
        _seed_ensemble.ROW_SETS_MEMBERS = 0
    r = recipes.recipe(name)
    tic = time.perf_counter()
    ens = r.ensemble.fit(r.X_train, r.y_train)
    fit = time.perf_counter() - tic
    tic = time.perf_counter()
    InfluenceTransformer(ens, measurement=r.measurement,
                         calibration_budget=0).fit(r.X_train, r.y_train)
    rule = time.perf_counter() - tic
    reset_peak()
    tic = time.perf_counter()
    influence = InfluenceTransformer(ens, measurement=r.measurement,
                                     damping="calibrate").fit(r.X_train, r.y_train)
    queue.put({"fit": fit, "rule": rule, "calibrate": time.perf_counter() - tic,
               "damping": float(influence.damping_), "peak": peak_rss_mib()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default=",".join(DEFAULT))
    parser.add_argument("--alone", action="store_true")
    args = parser.parse_args(argv)
    print(f"{'recipe':22s} {'fit s':>6} | {'rule s':>7} {'x fit':>6} | {'calibrate s':>11} "
          f"{'x fit':>6} | {'own s':>6} {'x fit':>6} | {'damping':>9} {'peak MiB':>8}"
          + (f" | {'alone s':>8} {'x fit':>6}" if args.alone else ""))
    for name in args.recipes.split(","):
        shared = in_subprocess(_run, name, True, label=f" {name}")
        fit = shared["fit"]
        own = shared["calibrate"] - shared["rule"]
        line = (f"{name:22s} {fit:6.2f} | {shared['rule']:7.2f} {shared['rule'] / fit:6.1f} | "
                f"{shared['calibrate']:11.2f} {shared['calibrate'] / fit:6.1f} | "
                f"{own:6.2f} {own / fit:6.1f} | {shared['damping']:9.3g} {shared['peak']:8.0f}")
        if args.alone:
            alone = in_subprocess(_run, name, False, label=f" {name} alone")
            same = "" if shared["damping"] == alone["damping"] else " (damping differs!)"
            line += f" | {alone['calibrate']:8.2f} {alone['calibrate'] / alone['fit']:6.1f}{same}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
