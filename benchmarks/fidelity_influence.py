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
  variance and Wasserstein distance (``lds``), averaged over queries. The
  ``wasserstein_smooth`` column applies that estimator to the predicted pairs
  and compares with the retrained truth's plain ``wasserstein`` (256 seeds:
  its finite-sample floor, the W2 between two halves of one distribution, is
  a sixth of the typical change, so the truth needs no smoothing).
* ``--same-steps``: the LDS sets are retrained for 43 epochs, so that training on
  the 210 kept rows takes as many optimizer steps as the full-data run (301
  against 300); fixed epochs and batch size otherwise make every removal also
  a cut of the training time.
* ``--retraining``: the ``retraining=`` values each curvature is scored with
  (``auto``, the default, reads ``same_epochs`` from this minibatch recipe;
  ``same_steps`` predicts retraining for as many steps: docs/influence.md).
* ``--diagnose``: the terms of the predicted and retrained W2, and LDS of their
  parts (docs/benchmarks.md, "Wasserstein-LDS: which retraining is predicted").
* Beside every score: a 95% bootstrap interval over queries and the noise
  ceiling of the 256-seed ground truth (``score_report``).

``--model cnn``: the same protocol for ``DigitsCNN`` of
``benchmarks/_architectures.py`` (Conv2d-ReLU-MaxPool x2, Linear x2, 6,058
parameters; SGD with momentum, 30 epochs, batch 32), where the default takes
EK-FAC over its four layers, and ``--kronfluence-python`` adds kronfluence's
EK-FAC looped over the same 32 seeds (its pairwise scores ``s_k`` give the
per-seed change ``s_k / N``; the same damping), averaged over seeds and per seed.

``--model sklearn-mlp``: the same recipe as scikit-learn's own ``MLPClassifier``
(64-32-10, SGD with momentum 0.9, lr 0.05, batch 32, 30 epochs, its default
``alpha=1e-4`` L2 term), members trained by scikit-learn, attributed through
the torch function each fitted member computes.

``--corrections none,newton`` scores each curvature both first order and with
``correction="newton"`` (each removal set re-solved with the kept rows' curvature).

``--optimizer adam`` and ``--epochs N`` change the skorch recipe's training (Adam
with lr 0.005; N epochs instead of 30): the recipes of the damping study.

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
from skdtda.discrepancy import discrepancy
from skdtda.evaluation import (distribution_change, leave_one_out, lds, noise_ceiling,
                               predict_distributions, random_subsets, retrain_distributions,
                               score_report)
from skdtda.nets import MLP

STATISTICS = ("mean", "variance", "wasserstein", "wasserstein_smooth")
# What the retrained side of each column uses (see the module docstring).
TRUTH_STATISTIC = {"wasserstein_smooth": "wasserstein"}
_LABELS = {"wasserstein_smooth": "W2-smooth", "wasserstein": "Wasserstein"}


def _net(model="mlp", optimizer="sgd", epochs=30):
    if model == "sklearn-mlp":
        from sklearn.neural_network import MLPClassifier

        # the skorch recipe in scikit-learn: SGD with momentum 0.9, lr 0.05, batch 32, and
        # every one of the 30 epochs (no early stop on a stalled loss)
        return MLPClassifier(hidden_layer_sizes=(32,), solver="sgd", momentum=0.9,
                             nesterovs_momentum=False, learning_rate_init=0.05, batch_size=32,
                             max_iter=30, n_iter_no_change=30, tol=0.0)
    if model == "cnn":
        from _architectures import DigitsCNN  # benchmarks/ is the script's folder

        module, extra = DigitsCNN, {}
    else:
        module, extra = MLP, {"module__hidden_layer_sizes": (32,)}
    training = (dict(optimizer=torch.optim.Adam, lr=0.005) if optimizer == "adam"
                else dict(optimizer=torch.optim.SGD, optimizer__momentum=0.9, lr=0.05))
    return NeuralNetClassifier(module, criterion=torch.nn.CrossEntropyLoss, max_epochs=epochs,
                               batch_size=32, train_split=None, verbose=0, **training, **extra)


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


def _damping(text):
    """The ``@`` suffix of a curvature spec: a float, "auto", or 1e-3 when absent."""
    if not text:
        return 1e-3
    return text if text == "auto" else float(text)


def _shifted(before, delta, sets):
    """Distributions from per-seed changes: before + the sum over each set."""
    from skdtda.evaluation import removal_masks
    from skdtda.evaluation._retrain import Distributions

    masks = removal_masks(sets, delta.shape[2])
    return Distributions(before, before[None] + np.einsum("sqn,jn->jsq", delta, masks))


def _cell(report):
    return f"{report.score:5.2f} [{report.ci[0]:5.2f},{report.ci[1]:5.2f}]"


def _report(pred, truth, statistic):
    truth_statistic = TRUTH_STATISTIC.get(statistic, statistic)
    if truth_statistic != statistic:
        pred = distribution_change(pred, statistic)
    return score_report(pred, truth, truth_statistic, random_state=0)


def _diagnose(pred, truth):
    """Print the parts of the predicted and retrained W2 and the LDS of each part."""
    def parts(distributions):
        before, after = distributions
        b = np.broadcast_to(before[:, None, :], (before.shape[0],) + after.shape[::2])
        a = np.moveaxis(after, 1, 0)
        return dict(w2=discrepancy(b, a, "wasserstein"),
                    smooth=discrepancy(b, a, "wasserstein_smooth"),
                    mean=discrepancy(b, a, "mean"),
                    rms=np.sqrt(np.mean((a - b) ** 2, axis=0)),
                    gap=np.median(np.diff(np.sort(before, axis=0), axis=0)))

    p, t = parts(pred), parts(truth)
    print("W2 diagnosis (medians over sets and queries):")
    for name, d in (("predicted", p), ("retrained", t)):
        offset = d["mean"].mean(axis=0)
        print(f"  {name}: W2 {np.median(d['w2']):.4f}, smooth {np.median(d['smooth']):.4f}, "
              f"|mean change| {np.median(np.abs(d['mean'])):.4f}, rms of per-seed shifts "
              f"{np.median(d['rms']):.4f}, W2 / rms {np.median(d['w2'] / d['rms']):.2f}, "
              f"gap between sorted seeds {d['gap']:.5f}; mean change > 0 in "
              f"{np.mean(d['mean'] > 0):.0%} of cells, its per-query mean over sets "
              f"{np.median(offset):+.4f} against a spread over sets of "
              f"{np.median(d['mean'].std(axis=0)):.4f}")
    print(f"  retrained W2 ranks like |mean change| (Spearman "
          f"{lds(t['w2'], np.abs(t['mean'])):.3f}) and like the smooth W2 "
          f"({lds(t['w2'], t['smooth']):.3f})")
    offset = t["mean"].mean(axis=0, keepdims=True)
    rows = [("predicted W2", p["w2"]), ("predicted smooth W2", p["smooth"]),
            ("|predicted mean change|", np.abs(p["mean"])),
            ("signed predicted mean change", p["mean"]),
            ("|predicted mean change + retrained offset| (oracle)", np.abs(p["mean"] + offset))]
    for label, values in rows:
        print(f"  LDS against the retrained W2 of {label}: {lds(values, t['w2']):.3f}")
    print(f"  LDS of |predicted mean change| against |retrained mean change|: "
          f"{lds(np.abs(p['mean']), np.abs(t['mean'])):.3f}; signed: "
          f"{lds(p['mean'], t['mean']):.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 removals, 64 seeds")
    parser.add_argument("--cache", help="folder keeping the retrained ground truth")
    parser.add_argument("--curvatures", default=None,
                        help="comma-separated; 'name@damping' overrides the damping (a float "
                             "or 'auto'; default 1e-3) (default: "
                             "auto,ekfac,kfac,cg,ggn,exact,identity; for the CNN "
                             "auto,ekfac,kfac,ggn,identity)")
    parser.add_argument("--model", choices=("mlp", "cnn", "sklearn-mlp"), default="mlp")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                        help="the skorch recipe's optimizer: SGD with momentum 0.9 and lr 0.05, "
                             "or Adam with lr 0.005")
    parser.add_argument("--epochs", type=int, default=None,
                        help="the skorch recipe's epochs (default 30)")
    parser.add_argument("--corrections", default="none",
                        help="comma-separated corrections to score each curvature with: "
                             "'none' (first order) and/or 'newton'")
    parser.add_argument("--retraining", default="auto",
                        help="comma-separated retraining= values to score each curvature "
                             "with: 'auto', 'same_epochs', 'same_steps'")
    parser.add_argument("--sets", type=int, default=None,
                        help="leave-one-out rows and random subsets each (default 40; 8 quick)")
    parser.add_argument("--kronfluence-python", default=None,
                        help="with --model cnn: also score kronfluence's EK-FAC (its venv)")
    parser.add_argument("--same-steps", action="store_true",
                        help="retrain the LDS removal sets with as many optimizer steps as "
                        "the full-data run (43 epochs instead of 30)")
    parser.add_argument("--diagnose", action="store_true",
                        help="print the parts of the W2 for the first curvature")
    args = parser.parse_args(argv)
    if args.curvatures is None:
        args.curvatures = ("auto,ekfac,kfac,ggn,identity" if args.model == "cnn"
                           else "auto,ekfac,kfac,cg,ggn,exact,identity")
    torch.set_num_threads(1)
    # CG at its default 100 iterations warns once per query chunk and seed; the
    # residual it reaches is reported in docs/benchmarks.md instead.
    warnings.filterwarnings("ignore", message="curvature='cg' stopped")
    # scikit-learn's MLP warns on every fit that 30 epochs did not converge (on purpose)
    warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
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
    if (args.optimizer == "adam" or args.epochs is not None) and args.model == "sklearn-mlp":
        parser.error("--optimizer and --epochs apply to the skorch models")
    net = _net(args.model, args.optimizer, args.epochs or 30)
    ensemble = SeedEnsembleClassifier(net, n_seeds=32, random_state=3)
    truth_loo = retrain_distributions(ensemble, X_tr, y_tr, X_q, y_q, remove=loo,
                                      n_seeds=n_truth, random_state=1, memory=args.cache,
                                      verbose=1)
    truth_lds = retrain_distributions(ensemble, X_tr, y_tr, X_q, y_q, remove=subsets,
                                      n_seeds=n_truth, random_state=2, memory=args.cache,
                                      verbose=1)
    if args.same_steps:
        # 210 kept rows at batch 32 take 7 steps an epoch against 10 for all 300, so
        # 43 epochs keep the 300 optimizer steps of the full-data run (301).
        batches = -(-n // 32)
        kept = -(-int(round(0.7 * n)) // 32)
        longer = SeedEnsembleClassifier(
            _net(args.model, args.optimizer).set_params(max_epochs=round(30 * batches / kept)),
            n_seeds=32, random_state=3)
        steps = retrain_distributions(longer, X_tr, y_tr, X_q, y_q, remove=subsets,
                                      n_seeds=n_truth, random_state=2, memory=args.cache,
                                      verbose=1)
        # the same seeds; before stays the full-data run with the usual epochs
        truth_lds = type(truth_lds)(truth_lds[0], steps[1])
    print(f"ground truth: 2 x {n_sets} removal sets x {n_truth} seeds (+ full data) in "
          f"{time.perf_counter() - tic:.0f} s (cached sets are loaded, not retrained)")

    ensemble.fit(X_tr, y_tr)
    header = (f"{'method':30s} {'LOO corr':>17s} " + " ".join(f"{_LABELS.get(s, s) + '-LDS':>17s}"
                                                             for s in STATISTICS)
              + f" {'seconds':>8s}")
    print(header)
    ceilings = [noise_ceiling(truth_loo, "mean", method="pearson", random_state=0).ceiling]
    ceilings += [noise_ceiling(truth_lds, TRUTH_STATISTIC.get(s, s), random_state=0).ceiling
                 for s in STATISTICS]
    print(f"{'noise ceiling':30s} " + " ".join(f"{c:17.2f}" for c in ceilings))
    runs = [(spec, correction, retraining) for spec in args.curvatures.split(",")
            for correction in args.corrections.split(",")
            for retraining in args.retraining.split(",")]
    for spec, correction, retraining in runs:
        curvature, _, damping = spec.partition("@")
        correction = None if correction == "none" else correction
        for seed_index in (None, 0):
            label = spec if correction is None else f"{spec}+{correction}"
            label = label if retraining == "auto" else f"{label}/{retraining}"
            label = label if seed_index is None else f"{label} fixed-seed"
            tic = time.perf_counter()
            influence = InfluenceTransformer(ensemble, curvature=curvature,
                                             damping=_damping(damping),
                                             seed_index=seed_index,
                                             correction=correction,
                                             retraining=retraining).fit(X_tr, y_tr)
            pred_loo = predict_distributions(influence, X_q, y_q, remove=loo)
            pred_lds = predict_distributions(influence, X_q, y_q, remove=subsets)
            seconds = time.perf_counter() - tic
            cells = [_cell(score_report(pred_loo, truth_loo, "mean", method="pearson",
                                        random_state=0))]
            for statistic in STATISTICS:
                if seed_index is not None and statistic != "mean":
                    cells.append(f"{'-':>17s}")  # one seed: no spread to change
                else:
                    cells.append(_cell(_report(pred_lds, truth_lds, statistic)))
            print(f"{label:30s} " + " ".join(cells) + f" {seconds:8.1f}", flush=True)
            if args.diagnose and seed_index is None:
                print(f"  retraining_={influence.retraining_!r}, "
                      f"damping_={influence.damping_:.4g}")
                _diagnose(pred_lds, truth_lds)
                args.diagnose = False
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
            cells += [_cell(_report(pred_lds, truth_lds, st))
                      if len(part) > 1 or st == "mean" else f"{'-':>17s}" for st in STATISTICS]
            print(f"{label:30s} " + " ".join(cells) + f" {seconds:8.1f}", flush=True)


if __name__ == "__main__":
    main()
