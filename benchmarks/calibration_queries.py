"""The calibration on the rows asked about against the calibration on held-out training rows.

    OMP_NUM_THREADS=1 python benchmarks/calibration_queries.py --truth /tmp/truth \
        --grids /tmp/study5,/tmp/study11 --out /tmp/queries --recipes a,b [--report]

For each recipe of ``benchmarks/recipes.py`` (its 256-seed truth from
``recipes.py --truth``), the recipe's ensemble is fitted once and attributed by
``InfluenceTransformer(damping="calibrate")`` twice: as by default (the
calibration measures training rows that its retraining holds out), and with the
truth's own query rows given (``fit(X, y, X_query=..., y_query=...)``: what a user
who knows the rows they will ask about does). Each is scored on the truth (LOO and
mean-LDS), and ``fidelity_``'s mean-LDS with its interval is set beside the
truth's. ``--out/<recipe>.queries.json`` keeps each run.

``--report`` reads them with the fixed damping grid of ``damping_transfer.py``
(``<recipe>.json``, the first found in ``--grids``): per recipe, both
calibrations against the best fixed damping of {1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3};
the cells within 0.03 of it; whether the truth lies in ``fidelity_``'s interval,
and ``fidelity_``'s absolute error.
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import recipes
from damping_transfer import TARGET_GRID, score
from skdtda import InfluenceTransformer

SCORES = ("loo", "mean")
KINDS = ("held_out", "given")


def run(name, truth_folder):
    r = recipes.recipe(name)
    truth_loo, truth_lds = recipes.truth(r, truth_folder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
        tic = time.perf_counter()
        ens = r.ensemble.fit(r.X_train, r.y_train)
        result = {"recipe": name, "fit_seconds": time.perf_counter() - tic}
        for kind in KINDS:
            query = {} if kind == "held_out" else {"X_query": r.X_query, "y_query": r.y_query}
            tic = time.perf_counter()
            influence = InfluenceTransformer(ens, measurement=r.measurement,
                                             damping="calibrate").fit(r.X_train, r.y_train,
                                                                      **query)
            seconds = time.perf_counter() - tic
            scores = score(influence, r, truth_loo, truth_lds)
            fidelity = influence.fidelity_
            result[kind] = {**{s: scores[s] for s in SCORES}, "damping": influence.damping_,
                            "seconds": seconds, "fidelity": fidelity.lds,
                            "interval": list(fidelity.interval)}
            print(name, kind, {k: round(v, 3) if isinstance(v, float) else v
                               for k, v in result[kind].items()}, flush=True)
            del influence
    return result


def _best_fixed(name, grids):
    for folder in grids:
        path = Path(folder) / f"{name}.json"
        if path.exists():
            study = json.loads(path.read_text())
            (curvature, entry), = study["curvatures"].items()
            grid = {float(k): v for k, v in entry["grid"].items()}
            return {s: max(grid[t][s] for t in TARGET_GRID) for s in SCORES}
    return None


def report(names, out, grids):
    gaps = {kind: [] for kind in KINDS}
    hits = {kind: [] for kind in KINDS}
    errors = {kind: [] for kind in KINDS}
    print("| recipe | best fixed (LOO / mean) | held-out training rows: LOO / mean [damping] | "
          "`fidelity_` (truth in it?) | the truth's rows given: LOO / mean [damping] | "
          "`fidelity_` (truth in it?) |")
    print("|---|---|---|---|---|---|")
    for name in names:
        d = json.loads((out / f"{name}.queries.json").read_text())
        best = _best_fixed(name, grids)
        row = [name, " / ".join(f"{best[s]:.2f}" for s in SCORES) if best else "-"]
        for kind in KINDS:
            run_ = d[kind]
            if best:
                gaps[kind] += [run_[s] - best[s] for s in SCORES]
            low, high = run_["interval"]
            hit = low <= run_["mean"] <= high
            hits[kind].append(hit)
            errors[kind].append(abs(run_["fidelity"] - run_["mean"]))
            row.append(" / ".join(f"{run_[s]:.2f}" for s in SCORES) + f" [{run_['damping']:.2g}]")
            row.append(f"{run_['fidelity']:.2f} [{low:.2f}, {high:.2f}] "
                       f"({'yes' if hit else 'no'}: {run_['mean']:.2f})")
        print("| " + " | ".join(row) + " |")
    print()
    for kind in KINDS:
        g = np.asarray(gaps[kind])
        print(f"- {kind}: within 0.03 of the best fixed damping on {np.sum(g >= -0.03)} of "
              f"{len(g)} cells, worst {g.min():+.2f}; the truth inside fidelity_'s interval on "
              f"{sum(hits[kind])} of {len(hits[kind])}; fidelity_'s mean absolute error "
              f"{np.mean(errors[kind]):.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--grids", default="", help="folders of damping_transfer.py's output")
    parser.add_argument("--recipes", default=",".join(recipes.HELD_OUT_6))
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.recipes.split(",")
    if args.report:
        report(names, out, [g for g in args.grids.split(",") if g])
        return
    recipes.run_missing(names, out, ".queries.json", run, args.truth)


if __name__ == "__main__":
    main()
