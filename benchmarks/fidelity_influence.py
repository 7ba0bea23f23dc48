"""Fidelity of InfluenceTransformer against retraining (leave-one-out and distributional LDS).

    OMP_NUM_THREADS=1 python benchmarks/fidelity_influence.py [--quick] [--cache DIR]

Setting (issue: "small MLP, 32 seeds, ground truth retrained with >= 256 seeds"):
300 training rows of scikit-learn's digits, MLP 64-32-10, SGD with momentum,
30 epochs, batch 32; 20 test queries, measurement = query loss. Everything
goes through :mod:`skdtda.evaluation`:

* Attribution: a 32-seed ensemble, per-seed influence for each curvature, and
  the fixed-seed baseline (member 0 only).
* Leave-one-out: 40 training rows; for each, 256 seeds retrained without it
  (``retrain_distributions``, seeds shared with the full-data run); Pearson
  correlation per query over the 40 rows between the predicted and retrained
  change of the mean loss, averaged over queries (``loo_correlation``).
* LDS (the paper's Eq. 11): 40 random subsets removing 30% of the rows, 256
  seeds each; Spearman over subsets of the change of the loss's mean,
  variance and Wasserstein distance (``lds``), averaged over queries.
* Beside every score: a 95% bootstrap interval over queries and the noise
  ceiling of the 256-seed ground truth (``score_report``).

``--cache DIR`` keeps every retrained set, so an interrupted run resumes and
later runs (other curvatures) skip the retraining.
"""

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits
from skorch import NeuralNetClassifier

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.evaluation import (leave_one_out, noise_ceiling, predict_distributions,
                               random_subsets, retrain_distributions, score_report)
from skdtda.nets import MLP

STATISTICS = ("mean", "variance", "wasserstein")


def _net():
    return NeuralNetClassifier(MLP, module__hidden_layer_sizes=(32,),
                               criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                               optimizer__momentum=0.9, lr=0.05, max_epochs=30, batch_size=32,
                               train_split=None, verbose=0)


def _cell(report):
    return f"{report.score:5.2f} [{report.ci[0]:5.2f},{report.ci[1]:5.2f}]"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 removals, 64 seeds")
    parser.add_argument("--cache", help="folder keeping the retrained ground truth")
    parser.add_argument("--curvatures", default="auto,ekfac,kfac,cg,ggn,exact,identity",
                        help="comma-separated; 'name@damping' overrides the damping")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # CG at its default 100 iterations warns once per query chunk and seed; the
    # residual it reaches is reported in docs/benchmarks.md instead.
    warnings.filterwarnings("ignore", message="curvature='cg' stopped")
    n_truth = 64 if args.quick else 256
    n_sets = 8 if args.quick else 40
    X, y = load_digits(return_X_y=True)
    X = X / 16
    rng = np.random.RandomState(0)
    order = rng.permutation(len(X))
    train, test = order[:300], order[300:320]
    X_tr, y_tr, X_q, y_q = X[train], y[train], X[test], y[test]
    n = len(X_tr)
    loo = leave_one_out(n, rng.choice(n, n_sets, replace=False))
    subsets = random_subsets(n, n_sets, keep_fraction=0.7, random_state=rng)

    tic = time.perf_counter()
    ensemble = SeedEnsembleClassifier(_net(), n_seeds=32, random_state=3)
    truth_loo = retrain_distributions(ensemble, X_tr, y_tr, X_q, y_q, remove=loo,
                                      n_seeds=n_truth, random_state=1, memory=args.cache,
                                      verbose=1)
    truth_lds = retrain_distributions(ensemble, X_tr, y_tr, X_q, y_q, remove=subsets,
                                      n_seeds=n_truth, random_state=2, memory=args.cache,
                                      verbose=1)
    print(f"ground truth: 2 x {n_sets} removal sets x {n_truth} seeds (+ full data) in "
          f"{time.perf_counter() - tic:.0f} s (cached sets are loaded, not retrained)")

    ensemble.fit(X_tr, y_tr)
    header = (f"{'method':20s} {'LOO corr':>17s} " + " ".join(f"{s + '-LDS':>17s}"
                                                             for s in STATISTICS)
              + f" {'seconds':>8s}")
    print(header)
    ceilings = [noise_ceiling(truth_loo, "mean", method="pearson", random_state=0).ceiling]
    ceilings += [noise_ceiling(truth_lds, s, random_state=0).ceiling for s in STATISTICS]
    print(f"{'noise ceiling':20s} " + " ".join(f"{c:17.2f}" for c in ceilings))
    for spec in args.curvatures.split(","):
        curvature, _, damping = spec.partition("@")
        for seed_index in (None, 0):
            label = spec if seed_index is None else f"{spec} fixed-seed"
            tic = time.perf_counter()
            influence = InfluenceTransformer(ensemble, curvature=curvature,
                                             damping=float(damping or 1e-3),
                                             seed_index=seed_index).fit(X_tr, y_tr)
            pred_loo = predict_distributions(influence, X_q, y_q, remove=loo)
            pred_lds = predict_distributions(influence, X_q, y_q, remove=subsets)
            seconds = time.perf_counter() - tic
            cells = [_cell(score_report(pred_loo, truth_loo, "mean", method="pearson",
                                        random_state=0))]
            for statistic in STATISTICS:
                if seed_index is not None and statistic != "mean":
                    cells.append(f"{'-':>17s}")  # one seed: no spread to change
                else:
                    cells.append(_cell(score_report(pred_lds, truth_lds, statistic,
                                                    random_state=0)))
            print(f"{label:20s} " + " ".join(cells) + f" {seconds:8.1f}", flush=True)


if __name__ == "__main__":
    main()
