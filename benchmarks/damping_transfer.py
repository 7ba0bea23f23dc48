"""Fidelity against damping, per recipe and curvature: the data a damping rule is chosen on.

    OMP_NUM_THREADS=1 python benchmarks/damping_transfer.py --truth /tmp/truth \
        --out /tmp/study [--recipes a,b] [--curvatures auto,ekfac]

For every recipe of ``benchmarks/recipes.py`` (its ground truth from
``recipes.py --truth``), the recipe's ensemble is fitted once and attributed
with each curvature; the fitted curvature is then re-damped over a grid of
half-decades from 1e-5 to 1 (plus 3e-2 and 0.3, the grid of the targets) and
scored at each damping: LOO correlation, mean-LDS, variance-LDS and
Wasserstein-LDS against the 256-seed truth (``predict_distributions``; the
scores of every statistic come from the same per-seed samples). ``damping="auto"``
is fitted too, for the mean and, as its own transformer, for the variance
(statistics of the spread take their own damping). Each recipe's results go to
``--out/<recipe>.json``; a recipe already there is not recomputed.
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

import recipes
from skdtda import InfluenceTransformer
from skdtda.evaluation import lds, loo_correlation, noise_ceiling, predict_distributions

GRID = sorted({*(10.0 ** (k / 2) for k in range(-10, 1)), 3e-2, 0.3})
#: the fixed dampings the targets compare against
TARGET_GRID = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3)
SCORES = ("loo", "mean", "variance", "wasserstein")


def redamp(influence, damping):
    """The fitted transformer's curvatures at another damping (in place)."""
    influence.curvatures_ = [c.with_damping(damping) for c in influence.curvatures_]
    influence.damping_ = damping
    return influence


def score(influence, r, truth_loo, truth_lds, spread=None):
    """``{score name: value}`` of a fitted transformer (``spread``: the transformer whose
    variance-LDS is read, when it differs)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*constant changes.*")
        pred_loo = predict_distributions(influence, r.X_query, r.y_query, remove=r.loo)
        pred_lds = predict_distributions(influence, r.X_query, r.y_query, remove=r.subsets)
        pred_var = pred_lds if spread is None else predict_distributions(
            spread, r.X_query, r.y_query, remove=r.subsets)
        return {"loo": loo_correlation(pred_loo, truth_loo),
                "mean": lds(pred_lds, truth_lds, "mean"),
                "variance": lds(pred_var, truth_lds, "variance"),
                "wasserstein": lds(pred_lds, truth_lds, "wasserstein")}


def ceilings(truth_loo, truth_lds):
    """Split-half noise ceilings of the truth, per score."""
    out = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        for key, truth, statistic in (("loo", truth_loo, "mean"), ("mean", truth_lds, "mean"),
                                      ("variance", truth_lds, "variance"),
                                      ("wasserstein", truth_lds, "wasserstein")):
            out[key] = float(noise_ceiling(truth, statistic, random_state=0).split_half)
    return out


def study(name, truth_folder, curvatures):
    r = recipes.recipe(name)
    truth_loo, truth_lds = recipes.truth(r, truth_folder)
    ens, fit_seconds = recipes.fit_ensemble(r)
    result = {"recipe": name, "group": r.group, "what": r.what, "model": r.model,
              "fit_seconds": fit_seconds, "ceiling": ceilings(truth_loo, truth_lds),
              "curvatures": {}}
    for spec in curvatures:
        # "ekfac:relative": EK-FAC with each layer damped in proportion to its curvature
        curvature, _, layer_damping = spec.partition(":")
        # "auto" here is the rule alone: fidelity_defaults.py scores the calibrated default
        kwargs = dict(curvature=curvature, measurement=r.measurement, calibration_budget=0)
        if layer_damping:
            kwargs["curvature_options"] = {"layer_damping": layer_damping}
        tic = time.perf_counter()
        auto = InfluenceTransformer(ens, damping="auto", **kwargs).fit(r.X_train, r.y_train)
        auto_seconds = time.perf_counter() - tic
        resolved = auto.curvature_ + (f":{layer_damping}" if layer_damping else "")
        if resolved in result["curvatures"]:
            continue
        spread = InfluenceTransformer(ens, damping="auto", statistic="variance",
                                      **kwargs).fit(r.X_train, r.y_train)
        entry = {"auto_damping": auto.damping_, "auto_spread_damping": spread.damping_,
                 "auto_seconds": auto_seconds,
                 "auto": score(auto, r, truth_loo, truth_lds, spread), "grid": {}}
        del auto, spread  # one fitted transformer at a time (the kernel form's Jacobians)
        tic = time.perf_counter()
        fixed = InfluenceTransformer(ens, damping=GRID[0], **kwargs).fit(r.X_train, r.y_train)
        entry["fit_seconds"] = time.perf_counter() - tic
        for damping in GRID:
            entry["grid"][repr(damping)] = score(redamp(fixed, damping), r, truth_loo, truth_lds)
        result["curvatures"][resolved] = entry
        print(f"{name} {resolved}: auto {entry['auto_damping']:.3g} "
              + " ".join(f"{k} {v:.2f}" for k, v in entry["auto"].items()), flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--recipes", default=",".join(recipes.CHOICE))
    parser.add_argument("--curvatures", default="auto,ekfac",
                        help="comma-separated; 'name:relative' damps each K-FAC/EK-FAC layer "
                             "in proportion to its mean eigenvalue")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.recipes.split(","):
        path = out / f"{name}.json"
        if path.exists():
            continue
        result = study(name, args.truth, args.curvatures.split(","))
        path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
