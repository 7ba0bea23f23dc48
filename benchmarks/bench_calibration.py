"""The calibration's cost against fitting the ensemble, with its removal sets trained in
shared batched passes and one set at a time.

    OMP_NUM_THREADS=1 python benchmarks/bench_calibration.py [--recipes a,b]

For each recipe of ``benchmarks/recipes.py``: the ensemble's own fit (timed), then
``InfluenceTransformer(damping="calibrate")`` at its default budget, twice, each in a
fresh subprocess (its peak resident memory its own): with the removal sets' small
ensembles trained together (``fit_row_sets``, the default since 2026-12-07) and with
each set trained alone (``ROW_SETS_MEMBERS = 0``, the path before). Printed: the
seconds of each, their ratio to the ensemble's fit (the issue's target: at most 4x),
the speed-up, the chosen damping (the same on both paths) and the peak memory. The
transformer's fit includes the curvatures the rule would need anyway.
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
    reset_peak()
    tic = time.perf_counter()
    influence = InfluenceTransformer(ens, measurement=r.measurement,
                                     damping="calibrate").fit(r.X_train, r.y_train)
    queue.put({"fit": fit, "calibrate": time.perf_counter() - tic,
               "damping": float(influence.damping_), "peak": peak_rss_mib()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default=",".join(DEFAULT))
    args = parser.parse_args(argv)
    print(f"{'recipe':22s} {'fit s':>6} | {'shared s':>8} {'x fit':>6} | {'alone s':>8} "
          f"{'x fit':>6} | {'speed-up':>8} {'damping':>9} {'peak MiB':>14}")
    for name in args.recipes.split(","):
        shared = in_subprocess(_run, name, True, label=f" {name} shared")
        alone = in_subprocess(_run, name, False, label=f" {name} alone")
        fit = (shared["fit"] + alone["fit"]) / 2
        same = "" if shared["damping"] == alone["damping"] else " (differs!)"
        print(f"{name:22s} {fit:6.2f} | {shared['calibrate']:8.2f} "
              f"{shared['calibrate'] / fit:6.1f} | {alone['calibrate']:8.2f} "
              f"{alone['calibrate'] / fit:6.1f} | {alone['calibrate'] / shared['calibrate']:8.1f} "
              f"{shared['damping']:9.3g}{same} {shared['peak']:6.0f} / {alone['peak']:<6.0f}",
              flush=True)


if __name__ == "__main__":
    main()
