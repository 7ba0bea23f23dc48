"""How much the seeds of an ensemble agree on their influence: digits MLP against CNN.

    OMP_NUM_THREADS=1 python benchmarks/seed_agreement.py --model mlp
    OMP_NUM_THREADS=1 python benchmarks/seed_agreement.py --model cnn

The fidelity protocol's ensemble (``fidelity_influence.py``: 300 digits rows,
32 seeds, SGD with momentum, 30 epochs; its 20 queries) is attributed with the
defaults, and the per-seed changes of the query loss ``delta_s`` (shape
``(n_query, n_train)`` per seed) are compared across seeds. Printed: each
seed's norm against the median seed's; each seed's correlation with the
seed-mean; the correlation of two 16-seed means (split halves) and of two
single seeds; the share of the squared norm held by the five largest
(seed, query) cells; and, for the largest seed, its query losses against the
median seed's. Where a few (seed, query) cells hold most of the norm, the
seed-mean change of a query is decided by the few seeds that misclassify it,
and 32 seeds estimate it poorly. Last, what a user can check on their own
model without retraining: ``noise_ceiling`` of the *predicted* distributions
(the split-half reliability of the seed-mean prediction).
"""

import argparse

import numpy as np
import torch
from fidelity_influence import _net  # benchmarks/ is the script's folder
from sklearn.datasets import load_digits

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.evaluation import leave_one_out, noise_ceiling, predict_distributions, random_subsets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    order = np.random.RandomState(0).permutation(len(X))
    train, test = order[:300], order[300:320]  # the fidelity protocol's rows
    ensemble = SeedEnsembleClassifier(_net(args.model), n_seeds=32, random_state=3)
    ensemble.fit(X[train], y[train])
    influence = InfluenceTransformer(ensemble).fit(X[train], y[train])
    delta = influence.influence_samples(X[test], y[test])  # (seeds, queries, rows)
    n_seeds = len(delta)
    flat = delta.reshape(n_seeds, -1)
    norms = np.linalg.norm(flat, axis=1)
    mean = flat.mean(0)
    with_mean = [np.corrcoef(f, mean)[0, 1] for f in flat]
    halves = np.corrcoef(flat[: n_seeds // 2].mean(0), flat[n_seeds // 2:].mean(0))[0, 1]
    pairs = np.mean([np.corrcoef(flat[i], flat[i + 1])[0, 1] for i in range(0, n_seeds, 2)])
    cells = np.sort((delta ** 2).sum(2).ravel())[::-1]
    print(f"{args.model}: curvature {influence.curvature_}, damping_ {influence.damping_:.3g}, "
          f"{n_seeds} seeds x {delta.shape[1]} queries x {delta.shape[2]} rows")
    print("  seed norm / median seed's (min, quartiles, max):",
          np.round(np.quantile(norms, [0, 0.25, 0.5, 0.75, 1]) / np.median(norms), 2))
    print(f"  correlation with the seed-mean: median {np.median(with_mean):.2f}, "
          f"min {min(with_mean):.2f}, max {max(with_mean):.2f}")
    print(f"  correlation of two {n_seeds // 2}-seed means {halves:.2f}; "
          f"of two single seeds {pairs:.2f}")
    print(f"  five largest of {cells.size} (seed, query) cells hold "
          f"{cells[:5].sum() / cells.sum():.0%} of the squared norm")
    loss = ensemble.measure(X[test], y[test])  # (seeds, queries)
    big = int(np.argmax(norms))
    print(f"  query losses of the largest seed ({big}):", np.round(loss[big], 2))
    print("  median seed's query losses:       ", np.round(np.median(loss, 0), 2))
    wrong = (loss > np.log(2)).mean(0)
    print("  share of seeds with a query loss above log 2, per query:", np.round(wrong, 2))
    # what a user can check without retraining: the split-half reliability of the
    # *predicted* distributions over the ensemble's seeds (noise_ceiling on predictions)
    rng = np.random.RandomState(0)
    for label, sets in (("20 leave-one-out rows", leave_one_out(300, rng.choice(300, 20, False))),
                        ("20 random 30% removals", random_subsets(300, 20, keep_fraction=0.7,
                                                                  random_state=rng))):
        predicted = predict_distributions(influence, X[test], y[test], remove=sets)
        report = noise_ceiling(predicted, "mean", method="pearson", random_state=0)
        print(f"  noise_ceiling of the predicted mean change, {label}: split-half "
              f"{report.split_half:.2f}, ceiling {report.ceiling:.2f}")


if __name__ == "__main__":
    main()
