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
    return {"lds": fidelity.lds, "interval": list(fidelity.interval),
            "small_sets": fidelity.small_sets,
            "small_sets_interval": list(fidelity.small_sets_interval)}


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
    return result


def _best_fixed(study, curvature):
    grid = {float(k): v for k, v in study["curvatures"][curvature]["grid"].items()}
    return {s: max(grid[t][s] for t in TARGET_GRID) for s in SCORES + ("wasserstein",)}


def report(names, out):
    cells = {"default": [], "rule": [], "kronfluence": []}
    print(f"{'recipe':24s} {'best fixed (LOO/mean/var)':27s} {'default':22s} {'rule alone':22s}"
          f" {'kronfluence':16s} W2 (half ceiling)  fidelity_ (truth in interval)  cost")
    for name in names:
        d = json.loads((out / f"{name}.defaults.json").read_text())
        study = json.loads((out / f"{name}.json").read_text())
        curvature = d["default"]["curvature"]
        best = _best_fixed(study, curvature)
        row = f"{name:24s} " + "/".join(f"{best[s]:.2f}" for s in SCORES) + " " * 12
        for key in ("default", "rule"):
            gaps = [d[key][s] - best[s] for s in SCORES]
            cells[key] += gaps
            row += " " + "/".join(f"{d[key][s]:.2f}" for s in SCORES) + (
                " [cal]" if d[key]["calibrated"] else "      ") + " "
        kf_path = out / f"{name}.kronfluence.json"
        if kf_path.exists():
            kf = json.loads(kf_path.read_text())["dampings"]
            kbest = {s: max(v[s] for v in kf.values()) for s in ("loo", "mean")}
            cells["kronfluence"].append(
                (d["default"]["loo"] - kbest["loo"], d["default"]["mean"] - kbest["mean"]))
            row += f" {kbest['loo']:.2f}/{kbest['mean']:.2f}      "
        else:
            row += " " * 17
        half = d["ceiling"]["wasserstein"] / 2
        row += f" {d['default']['wasserstein']:.2f} ({half:.2f}) "
        fidelity = d["default"]["fidelity"]
        if fidelity is not None:
            low, high = fidelity["interval"]
            row += f"  {fidelity['lds']:.2f} [{low:.2f}, {high:.2f}] " + (
                "yes" if low <= d["default"]["mean"] <= high else "no ")
        row += f"  {d['default']['seconds'] / d['fit_seconds']:.1f}x fit"
        print(row)
    for key in ("default", "rule"):
        gaps = np.asarray(cells[key])
        print(f"{key}: within 0.03 of the best fixed damping on {np.sum(gaps >= -0.03)} of "
              f"{len(gaps)} cells ({np.mean(gaps >= -0.03):.0%}), worst {gaps.min():+.2f}")
    if cells["kronfluence"]:
        ahead = np.asarray(cells["kronfluence"])
        print(f"default minus kronfluence: LOO {np.round(ahead[:, 0], 2).tolist()}, "
              f"mean-LDS {np.round(ahead[:, 1], 2).tolist()}")


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
    for name in names:
        path = out / f"{name}.defaults.json"
        if not path.exists():
            path.write_text(json.dumps(run(name, args.truth), indent=1))


if __name__ == "__main__":
    main()
