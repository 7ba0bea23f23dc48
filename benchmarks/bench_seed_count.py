"""How many seeds? Agreement of influence rankings between independent ensembles.

For each ensemble size S, two ensembles of S seeds each are trained with
different random states on the same 400 digits rows, attributed with the
InfluenceTransformer with EK-FAC curvature, and their scores on 20 test losses are
compared: Spearman correlation over training rows, per query, averaged. A
ranking that two independent ensembles reproduce is a property of the data
and the training recipe, not of the seeds drawn. Prints one line per S and
statistic; ``--plot FILE`` draws the curves with skdtda.plotting.

    OMP_NUM_THREADS=1 python benchmarks/bench_seed_count.py
"""

import argparse
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.discrepancy import discrepancy

STATISTICS = ("mean", "variance", "wasserstein")


def scores_for(S, random_state, X_train, y_train, X_q, y_q):
    ens = SeedEnsembleClassifier(n_seeds=S, random_state=random_state).fit(X_train, y_train)
    influence = InfluenceTransformer(ens, curvature="ekfac").fit(X_train, y_train)
    before = influence.measure(X_q, y_q)[:, :, None]
    delta = influence.influence_samples(X_q, y_q)
    before = np.broadcast_to(before, delta.shape)
    return {s: discrepancy(before, before + delta, s) for s in STATISTICS}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,4,8,16,32")
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16, y, train_size=400, stratify=y,
                                                        random_state=0)
    X_q, y_q = X_test[:20], y_test[:20]
    sizes = [int(s) for s in args.sizes.split(",")]
    curves = {s: [] for s in STATISTICS}
    for S in sizes:
        tic = time.perf_counter()
        a = scores_for(S, 1, X_train, y_train, X_q, y_q)
        b = scores_for(S, 2, X_train, y_train, X_q, y_q)
        for s in STATISTICS:
            rho = np.mean([spearmanr(a[s][i], b[s][i]).statistic for i in range(len(X_q))])
            curves[s].append(rho)
        print(f"S={S:3d}: " + "  ".join(f"{s} {curves[s][-1]:.3f}" for s in STATISTICS)
              + f"   ({time.perf_counter() - tic:.1f} s)", flush=True)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from skdtda.plotting import plot_lds_vs_seeds

        ax = plot_lds_vs_seeds(sizes, curves, ylabel="Spearman between two ensembles")
        ax.figure.savefig(args.plot, dpi=100)
        print(f"saved {args.plot}")


if __name__ == "__main__":
    main()
