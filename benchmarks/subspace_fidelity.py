"""EK-FAC on the leading Kronecker subspace against the full EK-FAC and retraining.

    OMP_NUM_THREADS=1 python benchmarks/subspace_fidelity.py --truth /tmp/truth \
        [--recipes digits-cnn,cnn-adam-margin] [--subspaces 2,4,8,16,32,64]

For each recipe of ``benchmarks/recipes.py`` (its 256-seed ground truth from
``recipes.py --truth``), the recipe's ensemble is fitted once and attributed
with the full EK-FAC at the damping its rule gives (``damping="auto"`` without
calibration), then with ``curvature_options={"subspace": k}`` at that same
damping for each ``k``. Printed per ``k``: LOO correlation and mean-LDS against the
truth, the rank agreement with the full EK-FAC (Spearman over the training rows of
the seed-averaged scores, median over the queries; and per seed), the store's size,
and the time of ``fit`` plus scoring the query rows.
"""

import argparse
import time
import warnings

import numpy as np
import torch
from scipy.stats import spearmanr

import recipes
from damping_transfer import score
from skdtda import InfluenceTransformer


def _agreement(a, b):
    """Median over queries of the Spearman over training rows: seed-averaged, per seed."""
    mean = np.median([spearmanr(x, y)[0] for x, y in zip(a.mean(axis=0), b.mean(axis=0))])
    per_seed = np.median([spearmanr(x, y)[0] for s in range(len(a)) for x, y in zip(a[s], b[s])])
    return mean, per_seed


def run(name, truth_folder, subspaces):
    r = recipes.recipe(name)
    truth_loo, truth_lds = recipes.truth(r, truth_folder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        ens = r.ensemble.fit(r.X_train, r.y_train)
        rule = InfluenceTransformer(ens, curvature="ekfac", measurement=r.measurement,
                                    calibration_budget=0).fit(r.X_train, r.y_train)
    damping = rule.damping_
    print(f"\n{name} ({r.what}): EK-FAC at the rule's damping {damping:.3g}")
    print(f"{'subspace':>9s} {'LOO':>6s} {'mean-LDS':>9s} {'Spearman (avg / seed)':>22s} "
          f"{'store MiB':>10s} {'fit + score s':>14s}")
    reference = None
    for k in [None, *subspaces]:
        options = None if k is None else {"subspace": k}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            tic = time.perf_counter()
            influence = InfluenceTransformer(
                ens, curvature="ekfac", damping=damping, measurement=r.measurement,
                curvature_options=options).fit(r.X_train, r.y_train)
            samples = influence.influence_samples(r.X_query, r.y_query)
            seconds = time.perf_counter() - tic
            scores = score(influence, r, truth_loo, truth_lds)
        if reference is None:
            reference = samples
        mean, per_seed = _agreement(samples, reference)
        print(f"{'full' if k is None else k:>9} {scores['loo']:6.3f} {scores['mean']:9.3f} "
              f"{mean:10.3f} / {per_seed:.3f} {influence.store_nbytes_ / 2**20:10.1f} "
              f"{seconds:14.2f}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", required=True)
    parser.add_argument("--recipes", default="digits-cnn,cnn-adam-margin")
    parser.add_argument("--subspaces", default="2,4,8,16,32,64")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.recipes.split(","):
        run(name, args.truth, [int(k) for k in args.subspaces.split(",")])


if __name__ == "__main__":
    main()
