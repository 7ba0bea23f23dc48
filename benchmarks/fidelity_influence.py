"""Fidelity of InfluenceTransformer against retraining (leave-one-out and LDS).

    OMP_NUM_THREADS=1 python benchmarks/fidelity_influence.py [--quick]

Setting (issue: "small MLP, 32 seeds, ground truth retrained with >= 256 seeds"):
300 training rows of scikit-learn's digits, MLP 64-32-10, SGD with momentum,
30 epochs, batch 32; 20 test queries, measurement = query loss.

* Attribution: a 32-seed ensemble, per-seed influence for each curvature.
* Leave-one-out: 40 training rows; for each, 256 seeds retrained without it;
  correlation (Pearson, per query over the 40 rows, averaged over queries)
  between the predicted and the retrained change of the mean loss.
* LDS (the paper's Eq. 11): 40 random subsets removing 30% of the rows, 256
  seeds retrained on each; Spearman over subsets between predicted and
  retrained change of the loss's mean ("mean-LDS") and variance ("var-LDS"),
  averaged over queries.
* Noise ceiling: the same correlations between two independent halves (128
  seeds each) of the ground truth, i.e. how well a perfect method could score
  with this many seeds.
"""

import argparse
import time

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.datasets import load_digits
from skorch import NeuralNetClassifier

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.nets import MLP


def _net():
    return NeuralNetClassifier(MLP, module__hidden_layer_sizes=(32,),
                               criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                               optimizer__momentum=0.9, lr=0.05, max_epochs=30, batch_size=32,
                               train_split=None, verbose=0)


def _retrain(X, y, keep, X_q, y_q, n_seeds, random_state):
    ens = SeedEnsembleClassifier(_net(), n_seeds=n_seeds, random_state=random_state)
    return ens.fit(X[keep], y[keep]).measure(X_q, y_q)  # (n_seeds, n_query)


def _mean_corr(pred, true, fn):
    """Correlation over axis 0, per query (axis 1), averaged over queries."""
    values = [fn(pred[:, q], true[:, q])[0] for q in range(pred.shape[1])]
    return float(np.nanmean(values))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 removals, 64 seeds")
    parser.add_argument("--cache", help="npz file keeping the retrained ground truth, so "
                        "that later runs (other curvatures) skip the retraining")
    parser.add_argument("--curvatures", default="ekfac,kfac,ggn,identity",
                        help="comma-separated; 'name@damping' overrides the damping")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n_truth = 64 if args.quick else 256
    n_sets = 8 if args.quick else 40
    X, y = load_digits(return_X_y=True)
    X = X / 16
    rng = np.random.RandomState(0)
    order = rng.permutation(len(X))
    train, test = order[:300], order[300:320]
    X_tr, y_tr, X_q, y_q = X[train], y[train], X[test], y[test]
    n = len(X_tr)

    loo_rows = rng.choice(n, n_sets, replace=False)
    masks = np.stack([rng.permutation(n) < int(0.3 * n) for _ in range(n_sets)])
    try:
        cached = np.load(args.cache) if args.cache else None
    except FileNotFoundError:
        cached = None
    if cached is not None and cached["loo"].shape[:2] == (n_sets, n_truth):
        full, loo, full_lds, lds_truth = (cached[k] for k in ("full", "loo", "full_lds",
                                                                "lds_truth"))
        print(f"ground truth read from {args.cache}")
    else:
        tic = time.perf_counter()
        full = _retrain(X_tr, y_tr, np.arange(n), X_q, y_q, n_truth, 1)
        loo = np.stack([_retrain(X_tr, y_tr, np.setdiff1d(np.arange(n), [k]), X_q, y_q,
                                 n_truth, 1) for k in loo_rows])  # (n_sets, seeds, query)
        lds_truth = np.stack([_retrain(X_tr, y_tr, np.flatnonzero(~m), X_q, y_q, n_truth, 2)
                              for m in masks])
        full_lds = _retrain(X_tr, y_tr, np.arange(n), X_q, y_q, n_truth, 2)
        print(f"ground truth: {1 + 2 * n_sets} ensembles x {n_truth} seeds + 1 in "
              f"{time.perf_counter() - tic:.0f} s")
        if args.cache:
            np.savez(args.cache, full=full, loo=loo, full_lds=full_lds, lds_truth=lds_truth)

    true_loo = loo.mean(axis=1) - full.mean(axis=0)  # (n_sets, query)
    true_mean = lds_truth.mean(axis=1) - full_lds.mean(axis=0)
    true_var = lds_truth.var(axis=1) - full_lds.var(axis=0)
    half = n_truth // 2
    ceil_loo = _mean_corr(loo[:, :half].mean(1) - full[:half].mean(0),
                          loo[:, half:].mean(1) - full[half:].mean(0), pearsonr)
    ceil_mean = _mean_corr(lds_truth[:, :half].mean(1) - full_lds[:half].mean(0),
                           lds_truth[:, half:].mean(1) - full_lds[half:].mean(0), spearmanr)
    ceil_var = _mean_corr(lds_truth[:, :half].var(1) - full_lds[:half].var(0),
                          lds_truth[:, half:].var(1) - full_lds[half:].var(0), spearmanr)
    print(f"{'method':22s} {'LOO corr':>9s} {'mean-LDS':>9s} {'var-LDS':>9s} {'seconds':>8s}")
    print(f"{'noise ceiling (halves)':22s} {ceil_loo:9.3f} {ceil_mean:9.3f} {ceil_var:9.3f}")

    ens = SeedEnsembleClassifier(_net(), n_seeds=32, random_state=3).fit(X_tr, y_tr)
    for spec in args.curvatures.split(","):
        curvature, _, damping = spec.partition("@")
        tic = time.perf_counter()
        influence = InfluenceTransformer(ens, curvature=curvature,
                                         damping=float(damping or 1e-3)).fit(X_tr, y_tr)
        curvature = spec
        delta = influence.influence_samples(X_q, y_q)  # (32, query, n)
        m = influence.measure(X_q, y_q)
        seconds = time.perf_counter() - tic
        pred_loo = delta.mean(axis=0)[:, loo_rows].T
        summed = np.einsum("sqn,mn->msq", delta, masks.astype(float))  # (sets, seeds, query)
        pred_mean = summed.mean(axis=1)
        pred_var = (m[None] + summed).var(axis=1) - m.var(axis=0)[None]
        for label, idx in ((curvature, None), (f"{curvature} fixed-seed", 0)):
            if idx is None:
                r_loo = _mean_corr(pred_loo, true_loo, pearsonr)
                r_mean = _mean_corr(pred_mean, true_mean, spearmanr)
                r_var = _mean_corr(pred_var, true_var, spearmanr)
                print(f"{label:22s} {r_loo:9.3f} {r_mean:9.3f} {r_var:9.3f} {seconds:8.1f}")
            else:
                single = delta[idx]
                r_loo = _mean_corr(single[:, loo_rows].T, true_loo, pearsonr)
                r_mean = _mean_corr(masks.astype(float) @ single.T, true_mean, spearmanr)
                print(f"{label:22s} {r_loo:9.3f} {r_mean:9.3f} {'-':>9s}")


if __name__ == "__main__":
    main()
