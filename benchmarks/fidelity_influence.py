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

``--model cnn``: the same protocol for ``DigitsCNN`` of
``benchmarks/_architectures.py`` (Conv2d-ReLU-MaxPool x2, Linear x2, 6,058
parameters; SGD with momentum, 30 epochs, batch 32), where the default takes
EK-FAC over its four layers, and ``--kronfluence-python`` adds kronfluence's
EK-FAC looped over the same 32 seeds (its pairwise scores ``s_k`` give the
per-seed change ``s_k / N``; the same damping), averaged over seeds and per seed.

``--cache DIR`` keeps every retrained set, so an interrupted run resumes and
later runs (other curvatures) skip the retraining.
"""

import argparse
import json
import os
import subprocess
import tempfile
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


def _net(model="mlp"):
    if model == "cnn":
        from _architectures import DigitsCNN  # benchmarks/ is the script's folder

        module, extra = DigitsCNN, {}
    else:
        module, extra = MLP, {"module__hidden_layer_sizes": (32,)}
    return NeuralNetClassifier(module, criterion=torch.nn.CrossEntropyLoss,
                               optimizer=torch.optim.SGD, optimizer__momentum=0.9, lr=0.05,
                               max_epochs=30, batch_size=32, train_split=None, verbose=0,
                               **extra)


def _kronfluence_delta(ensemble, X_tr, y_tr, X_q, y_q, damping, python):
    """Per-seed changes (n_seeds, n_query, n_train) from kronfluence's EK-FAC scores."""
    with tempfile.TemporaryDirectory(prefix="fidelity_kf_") as folder:
        index, index_q = (np.searchsorted(ensemble.classes_, v) for v in (y_tr, y_q))
        np.savez(os.path.join(folder, "data.npz"), X_train=X_tr.astype(np.float32),
                 y_train=index, X_query=X_q.astype(np.float32), y_query=index_q)
        torch.save([{k: v.detach().clone() for k, v in est.module_.state_dict().items()}
                    for est in ensemble.estimators_], os.path.join(folder, "members.pt"))
        with open(os.path.join(folder, "meta.json"), "w") as f:
            json.dump(dict(model="DigitsCNN", kwargs={}), f)
        worker = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "_kronfluence_worker.py")
        proc = subprocess.run([python, worker, folder, "--damping", repr(damping),
                               "--batch", "300"], capture_output=True, text=True,
                              env=dict(os.environ, OMP_NUM_THREADS="1"), check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"kronfluence worker failed:\n{proc.stderr}")
        scores = np.load(os.path.join(folder, "kronfluence_scores.npy")).astype(np.float64)
    # s_k = g_q^T (F + damping)^{-1} g_k: removing row k changes the loss by +s_k / N
    return scores / len(X_tr)


def _shifted(before, delta, sets):
    """Distributions from per-seed changes: before + the sum over each set."""
    from skdtda.evaluation import removal_masks
    from skdtda.evaluation._retrain import Distributions

    masks = removal_masks(sets, delta.shape[2])
    return Distributions(before, before[None] + np.einsum("sqn,jn->jsq", delta, masks))


def _cell(report):
    return f"{report.score:5.2f} [{report.ci[0]:5.2f},{report.ci[1]:5.2f}]"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 removals, 64 seeds")
    parser.add_argument("--cache", help="folder keeping the retrained ground truth")
    parser.add_argument("--curvatures", default=None,
                        help="comma-separated; 'name@damping' overrides the damping (default: "
                             "auto,ekfac,kfac,cg,ggn,exact,identity; for the CNN "
                             "auto,ekfac,kfac,ggn,identity)")
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--sets", type=int, default=None,
                        help="leave-one-out rows and random subsets each (default 40; 8 quick)")
    parser.add_argument("--kronfluence-python", default=None,
                        help="with --model cnn: also score kronfluence's EK-FAC (its venv)")
    args = parser.parse_args(argv)
    if args.curvatures is None:
        args.curvatures = ("auto,ekfac,kfac,ggn,identity" if args.model == "cnn"
                           else "auto,ekfac,kfac,cg,ggn,exact,identity")
    torch.set_num_threads(1)
    # CG at its default 100 iterations warns once per query chunk and seed; the
    # residual it reaches is reported in docs/benchmarks.md instead.
    warnings.filterwarnings("ignore", message="curvature='cg' stopped")
    n_truth = 64 if args.quick else 256
    n_sets = args.sets or (8 if args.quick else 40)
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
    if args.model == "cnn":
        X = X.astype(np.float32)
        X_tr, X_q = X_tr.astype(np.float32), X_q.astype(np.float32)
    ensemble = SeedEnsembleClassifier(_net(args.model), n_seeds=32, random_state=3)
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
    if args.kronfluence_python and args.model == "cnn":
        tic = time.perf_counter()
        delta = _kronfluence_delta(ensemble, X_tr, y_tr, X_q, y_q, 1e-3,
                                   args.kronfluence_python)
        seconds = time.perf_counter() - tic
        before = ensemble.measure(X_q, y_q)
        for label, part in (("kronfluence", delta), ("kronfluence fixed-seed", delta[:1])):
            pred_loo, pred_lds = (_shifted(before[:len(part)], part, sets)
                                  for sets in (loo, subsets))
            cells = [_cell(score_report(pred_loo, truth_loo, "mean", method="pearson",
                                        random_state=0))]
            cells += [_cell(score_report(pred_lds, truth_lds, st, random_state=0))
                      if len(part) > 1 or st == "mean" else f"{'-':>17s}" for st in STATISTICS]
            print(f"{label:20s} " + " ".join(cells) + f" {seconds:8.1f}", flush=True)


if __name__ == "__main__":
    main()
