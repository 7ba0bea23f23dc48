"""The defaults against the best fixed damping and kronfluence, recipe by recipe.

    OMP_NUM_THREADS=1 python benchmarks/fidelity_defaults.py --truth /tmp/truth \
        --out /tmp/study --recipes a,b [--report]

For each recipe of ``benchmarks/recipes.py`` (its 256-seed truth from
``recipes.py --truth``), the recipe's ensemble is fitted and attributed by
``InfluenceTransformer`` with its defaults (``damping="auto"``: calibrated where
the retraining is cheap, else the rule), once for ``statistic="mean"`` (scored
on LOO, mean-LDS and Wasserstein-LDS) and once for ``statistic="variance"``
(variance-LDS), and again with ``calibration_budget=0`` (the rule alone). Each
fit's damping, time, and ``fidelity_`` (the calibration's own LDS estimate with
its interval) go to ``--out/<recipe>.defaults.json``.

``--report`` prints, from those files, ``--out/<recipe>.json`` (the fixed
damping grid of ``damping_transfer.py``) and ``--out/<recipe>.kronfluence.json``
(``kronfluence_recipes.py``): per recipe the default, the rule alone and
kronfluence (the better of its own rule and 1e-3) against the best fixed damping
of {1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3}; the share of recipe x score cells within
0.03 of it; whether the truth's LDS lies in ``fidelity_``'s interval;
Wasserstein-LDS against half the truth's split-half ceiling; and the
calibration's cost against the ensemble's fit.
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import recipes
from damping_transfer import TARGET_GRID, ceilings, score
from skdtda import InfluenceTransformer

SCORES = ("loo", "mean", "variance")


def _fit(ens, r, **kwargs):
    tic = time.perf_counter()
    influence = InfluenceTransformer(ens, measurement=r.measurement, **kwargs).fit(
        r.X_train, r.y_train)
    return influence, time.perf_counter() - tic


def _fidelity(influence):
    fidelity = influence.fidelity_
    if fidelity is None:
        return None
    # how the estimate was built, to read its misses by: measured, the seeds' ceiling,
    # the members' factor (since 2026-12-07)
    return {"lds": fidelity.lds, "interval": list(fidelity.interval),
            "small_sets": fidelity.small_sets,
            "small_sets_interval": list(fidelity.small_sets_interval),
            **{key: fidelity[key] for key in ("lds_measured", "lds_ceiling", "lds_members_factor")
               if key in fidelity}}


def run(name, truth_folder):
    r = recipes.recipe(name)
    truth_loo, truth_lds = recipes.truth(r, truth_folder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
        tic = time.perf_counter()
        ens = r.ensemble.fit(r.X_train, r.y_train)
        fit_seconds = time.perf_counter() - tic
        result = {"recipe": name, "group": r.group, "fit_seconds": fit_seconds,
                  "ceiling": ceilings(truth_loo, truth_lds)}
        for key, kwargs in (("default", {}), ("rule", {"calibration_budget": 0})):
            mean, mean_seconds = _fit(ens, r, **kwargs)
            spread, spread_seconds = _fit(ens, r, statistic="variance", **kwargs)
            scores = score(mean, r, truth_loo, truth_lds, spread)
            result[key] = {**scores, "curvature": mean.curvature_, "damping": mean.damping_,
                           "variance_damping": spread.damping_, "seconds": mean_seconds,
                           "variance_seconds": spread_seconds,
                           "calibrated": mean.calibration_ is not None,
                           "fidelity": _fidelity(mean), "variance_fidelity": _fidelity(spread)}
            print(name, key, {k: round(v, 3) if isinstance(v, float) else v
                              for k, v in result[key].items() if "fidelity" not in k},
                  flush=True)
            # one pair of fitted transformers at a time: the exact GGN's kernel form keeps
            # each member's (N (K - 1), P) Jacobian (digits-wide-adamw: 32 x 0.2 GB)
            del mean, spread
    return result


def _best_fixed(study, curvature):
    grid = {float(k): v for k, v in study["curvatures"][curvature]["grid"].items()}
    return {s: max(grid[t][s] for t in TARGET_GRID) for s in SCORES + ("wasserstein",)}


def report(names, out):
    """A markdown table of the recipes, and the counts of the targets."""
    cells = {"default": [], "rule": []}
    ahead, fidelity_hits, w2_hits = [], [], []
    print("| recipe | curvature | best fixed | default | rule alone | kronfluence (LOO / mean) "
          "| W2-LDS (half ceiling) | `fidelity_` (truth in it?) | default's time (mean + "
          "variance) against the rule's; the ensemble's fit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        d = json.loads((out / f"{name}.defaults.json").read_text())
        curvature = d["default"]["curvature"]
        grid_path = out / f"{name}.json"  # missing where the grid did not run
        best = (_best_fixed(json.loads(grid_path.read_text()), curvature)
                if grid_path.exists() else None)
        row = [name, curvature, " / ".join(f"{best[s]:.2f}" for s in SCORES) if best else "-"]
        for key in ("default", "rule"):
            if best:
                cells[key] += [d[key][s] - best[s] for s in SCORES]
            row.append(" / ".join(f"{d[key][s]:.2f}" for s in SCORES)
                       + (f" [{d[key]['damping']:.2g}]"))
        kf_path = out / f"{name}.kronfluence.json"
        if kf_path.exists():
            kf = json.loads(kf_path.read_text())["dampings"]
            kbest = {s: max(v[s] for v in kf.values()) for s in ("loo", "mean")}
            ahead.append((name, d["default"]["loo"] - kbest["loo"],
                          d["default"]["mean"] - kbest["mean"]))
            row.append(f"{kbest['loo']:.2f} / {kbest['mean']:.2f}")
        else:
            row.append("-")
        half = d["ceiling"]["wasserstein"] / 2
        w2_hits.append(d["default"]["wasserstein"] >= half)
        row.append(f"{d['default']['wasserstein']:.2f} ({half:.2f})")
        fidelity = d["default"]["fidelity"]
        if fidelity is not None:
            low, high = fidelity["interval"]
            hit = low <= d["default"]["mean"] <= high
            fidelity_hits.append(hit)
            row.append(f"{fidelity['lds']:.2f} [{low:.2f}, {high:.2f}] "
                       f"({'yes' if hit else 'no'}: {d['default']['mean']:.2f})")
            seconds = [d[k][s] for k in ("default", "rule") for s in ("seconds",
                                                                     "variance_seconds")]
            row.append(f"{seconds[0]:.0f} + {seconds[1]:.0f} s against {seconds[2]:.0f} + "
                       f"{seconds[3]:.0f} s; fit {d['fit_seconds']:.1f} s")
        else:
            row += ["not calibrated", "-"]
        print("| " + " | ".join(row) + " |")
    print()
    for key in ("default", "rule"):
        gaps = np.asarray(cells[key])
        print(f"- {key}: within 0.03 of the best fixed damping on {np.sum(gaps >= -0.03)} of "
              f"{len(gaps)} cells ({np.mean(gaps >= -0.03):.0%}), worst {gaps.min():+.2f}, "
              f"{np.sum(gaps < -0.06)} more than 0.06 below")
    if ahead:
        print("- default minus kronfluence (LOO, mean-LDS): " + "; ".join(
            f"{n} {a:+.2f} / {b:+.2f}" for n, a, b in ahead))
    print(f"- Wasserstein-LDS at least half the split-half ceiling: {sum(w2_hits)} of "
          f"{len(w2_hits)}")
    print(f"- the truth's mean-LDS inside fidelity_'s interval: {sum(fidelity_hits)} of "
          f"{len(fidelity_hits)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--recipes", default=",".join(recipes.CHOICE))
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.recipes.split(",")
    if args.report:
        report(names, out)
        return
    recipes.run_missing(names, out, ".defaults.json", run, args.truth)


if __name__ == "__main__":
    main()
