"""``retraining=`` against retraining on the damping study's nine recipes.

    OMP_NUM_THREADS=1 python benchmarks/retraining_study.py --cache /tmp/damping [--recipes ...]

Each recipe of ``damping_study.py`` (same rows, queries, removal sets, 256-seed
ground truth, and ``--cache``: the two studies share it) is attributed with the
defaults (``curvature="auto"``, ``damping="auto"``) under ``retraining="auto"``
(what it reads from the recipe: ``same_epochs`` for every minibatch recipe
here) and under the other protocol. The ground truth retrains each removal set
with the recipe's own epochs, so a set removing 30% of the rows takes 30% fewer
optimizer steps. Printed per recipe and protocol: LOO correlation, mean-,
variance- and Wasserstein-LDS (query loss), and the mean change over the 20
random sets, its median over queries (the offset that fewer steps give), and the
share of (set, query) cells where the mean goes up, predicted and retrained.
"""

import argparse
import time
import warnings

import numpy as np
import torch

# benchmarks/ is the script's folder
from damping_study import HELD_OUT, RECIPES, _ground_truth, _recipe
from skdtda import InfluenceTransformer
from skdtda.evaluation import lds, loo_correlation, predict_distributions

OTHER = {"same_epochs": "same_steps", "same_steps": "same_epochs"}


def _offset(distributions):
    """Median over queries of the mean change over sets (seeds averaged first), and
    the fraction of (set, query) cells whose mean change is positive."""
    before, after = distributions
    change = after.mean(axis=1) - before.mean(axis=0)[None]
    return float(np.median(change.mean(axis=0))), float(np.mean(change > 0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", help="folder keeping the retrained ground truth")
    parser.add_argument("--recipes", default=",".join(RECIPES + HELD_OUT),
                        help=f"comma-separated, of {RECIPES + HELD_OUT}")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
    print(f"{'recipe':18s} {'retraining':>16s} {'LOO':>6s} {'mean':>6s} {'var':>6s} "
          f"{'W2':>6s} {'offset':>9s} {'retrained':>9s} {'up':>5s} {'retr.':>5s} "
          f"{'seconds':>8s}")
    gains = []
    for name in args.recipes.split(","):
        recipe = _recipe(name)
        X_tr, y_tr, X_q, y_q, loo, subsets, template = recipe
        truth_loo, truth_lds = _ground_truth(recipe, args.cache)
        ens = template.set_params(n_seeds=16).fit(X_tr, y_tr)

        def score(retraining):
            tic = time.perf_counter()
            influence = InfluenceTransformer(ens, retraining=retraining).fit(X_tr, y_tr)
            pred_loo = predict_distributions(influence, X_q, y_q, remove=loo)
            pred_lds = predict_distributions(influence, X_q, y_q, remove=subsets)
            row = (loo_correlation(pred_loo, truth_loo),
                   *(lds(pred_lds, truth_lds, s) for s in ("mean", "variance", "wasserstein")))
            return influence.retraining_, row, pred_lds, time.perf_counter() - tic

        chosen, *auto = score("auto")
        runs = {f"auto: {chosen}": auto, OTHER[chosen]: score(OTHER[chosen])[1:]}
        for label, (row, pred_lds, seconds) in runs.items():
            (offset, up), (true_offset, true_up) = _offset(pred_lds), _offset(truth_lds)
            print(f"{name:18s} {label:>16s} " + " ".join(f"{v:6.2f}" for v in row)
                  + f" {offset:+9.4f} {true_offset:+9.4f} {up:5.0%} {true_up:5.0%} "
                  f"{seconds:8.1f}", flush=True)
        gains.append((name, chosen, np.subtract(auto[0], runs[OTHER[chosen]][0])))
    print("\nauto minus the other protocol (LOO / mean / variance / Wasserstein-LDS):")
    for name, chosen, gain in gains:
        print(f"  {name:18s} ({chosen}) " + " / ".join(f"{g:+.2f}" for g in gain))


if __name__ == "__main__":
    main()
