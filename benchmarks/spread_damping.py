"""Variance-LDS at multiples of ``damping="auto"``: how much more damping statistics
of the spread over seeds want than the mean does.

    OMP_NUM_THREADS=1 python benchmarks/spread_damping.py --cache /tmp/damping \\
        --recipes diabetes-sgd,diabetes-adam,digits-sgd

On the damping study's recipes, truth and protocol (``damping_study.py``: 256
retrained seeds for 20 leave-one-out rows and 20 random 30% removals, a 16-seed
ensemble, the default curvature), this prints LOO correlation, mean-LDS and
variance-LDS at 1, 2, 3 and 5 times the value ``damping="auto"`` takes for the
mean (``1 / tau``, or the eigenvalue floor), and at each fixed damping of the
study's grid. The factor for ``statistic="variance"``/``"std"``
(``skdtda.influence._damping.SPREAD_FACTOR``) was chosen on diabetes SGD,
diabetes Adam and digits SGD, then checked on the six other recipes
(docs/benchmarks.md, "Damping").
"""

import argparse
import time
import warnings

import torch

from damping_study import FIXED, RECIPES, HELD_OUT, _ground_truth, _recipe, _scores
from skdtda import InfluenceTransformer

MULTIPLES = (1, 2, 3, 5)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", help="folder keeping the retrained ground truth")
    parser.add_argument("--recipes", default=",".join(RECIPES + HELD_OUT))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
    for name in args.recipes.split(","):
        recipe = _recipe(name)
        X_tr, y_tr, X_q, y_q, loo, subsets, template = recipe
        tic = time.perf_counter()
        truth = _ground_truth(recipe, args.cache)
        truth_seconds = time.perf_counter() - tic
        ens = template.set_params(n_seeds=16).fit(X_tr, y_tr)
        auto = InfluenceTransformer(ens).fit(X_tr, y_tr).damping_  # the mean's
        print(f"\n{name} (ground truth {truth_seconds:.0f} s)")
        settings = [(f"auto x {k}", k * auto) for k in MULTIPLES]
        for label, damping in settings + [("fixed", d) for d in FIXED]:
            influence = InfluenceTransformer(ens, damping=damping).fit(X_tr, y_tr)
            loo_r, mean_r, var_r = _scores(influence, X_q, y_q, loo, subsets, *truth)
            print(f"  {label:>9s} {damping:9.3g} LOO {loo_r:5.2f} mean {mean_r:5.2f} "
                  f"var {var_r:5.2f}", flush=True)


if __name__ == "__main__":
    main()
