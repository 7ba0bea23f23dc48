"""Damping against retraining on several recipes: fixed values, "auto", kronfluence's rule.

    OMP_NUM_THREADS=1 python benchmarks/damping_study.py --cache /tmp/damping [--recipes ...]

For each recipe, the ground truth is retrained with 256 seeds for 20
leave-one-out rows and 20 random 30% removals (``retrain_distributions``, the
same seeds for every removal). A 16-seed ensemble is attributed with the
default curvature (``"auto"``: the exact Gauss-Newton on these small nets) at
each damping of {1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3}, at ``damping="auto"``
(``1 / tau``, the members' training time), and at kronfluence's heuristic
(0.1 times the mean eigenvalue of the Gauss-Newton, per member's mean).
Printed per recipe and setting: LOO correlation, mean-LDS and variance-LDS
(query loss), and for ``auto`` the gap to the best fixed damping on each.

Recipes (``--recipes``, comma-separated):

* ``digits-sgd``: 300 digits rows, MLP 64-32-10, SGD momentum 0.9, lr 0.05,
  batch 32, 30 epochs (the protocol of ``fidelity_influence.py``, whose
  ``--cache`` it shares); 20 queries.
* ``digits-adam``: the same with Adam, lr 0.005.
* ``digits-short``: the same SGD, 10 epochs.
* ``digits-sklearn``: scikit-learn's ``MLPClassifier`` with the SGD recipe.
* ``diabetes-sgd``: 300 diabetes rows (scaled), MLP 10-32-1, MSE, SGD momentum
  0.9, lr 0.01, batch 32, 30 epochs; 20 queries.
* ``diabetes-adam``: the same with Adam, lr 0.01, 100 epochs (long training).
"""

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_diabetes, load_digits
from skorch import NeuralNetRegressor

from skdtda import InfluenceTransformer, SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.evaluation import (leave_one_out, lds, loo_correlation, predict_distributions,
                               random_subsets, retrain_distributions)
from skdtda.nets import MLP

FIXED = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3)
RECIPES = ("digits-sgd", "digits-adam", "digits-short", "digits-sklearn", "diabetes-sgd",
           "diabetes-adam")


def _recipe(name):
    from fidelity_influence import _net  # benchmarks/ is the script's folder

    if name.startswith("digits"):
        X, y = load_digits(return_X_y=True)
        X = X / 16
        ensemble_class = SeedEnsembleClassifier
        net = {"digits-sgd": lambda: _net("mlp"), "digits-adam": lambda: _net("mlp", "adam"),
               "digits-short": lambda: _net("mlp", "sgd", 10),
               "digits-sklearn": lambda: _net("sklearn-mlp")}[name]()
    else:
        X, y = load_diabetes(return_X_y=True)
        X = (X - X.mean(0)) / X.std(0)
        y = (y - y.mean()) / y.std()
        ensemble_class = SeedEnsembleRegressor
        if name == "diabetes-sgd":
            training = dict(optimizer=torch.optim.SGD, optimizer__momentum=0.9, lr=0.01,
                            max_epochs=30)
        else:
            training = dict(optimizer=torch.optim.Adam, lr=0.01, max_epochs=100)
        net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(32,),
                                 criterion=torch.nn.MSELoss, batch_size=32, train_split=None,
                                 verbose=0, **training)
    # the protocol of fidelity_influence.py: the same rows, queries and removal sets
    rng = np.random.RandomState(0)
    order = rng.permutation(len(X))
    train, test = order[:300], order[300:320]
    n = 300
    loo = leave_one_out(n, rng.choice(n, 20, replace=False))
    subsets = random_subsets(n, 20, keep_fraction=0.7, random_state=rng)
    return (X[train], y[train], X[test], y[test], loo, subsets,
            ensemble_class(net, n_seeds=32, random_state=3))


def _mean_eigenvalue(curvature, n_params):
    """trace(H) / P of a fitted dense or kernel-form Gauss-Newton (weight decay included)."""
    if hasattr(curvature, "matrix"):
        return float(torch.diagonal(curvature.matrix()).mean())
    trace = float(curvature.factor.pow(2).sum())  # kernel form: trace(U^T U)
    extra = curvature.shift - 1e-3 if curvature.diagonal is None else float(
        (curvature.diagonal - 1e-3).mean())
    return trace / n_params + extra


def _scores(influence, X_q, y_q, loo, subsets, truth_loo, truth_lds):
    pred_loo = predict_distributions(influence, X_q, y_q, remove=loo)
    pred_lds = predict_distributions(influence, X_q, y_q, remove=subsets)
    return (loo_correlation(pred_loo, truth_loo), lds(pred_lds, truth_lds, "mean"),
            lds(pred_lds, truth_lds, "variance"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", help="folder keeping the retrained ground truth")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
    summary = []
    for name in args.recipes.split(","):
        X_tr, y_tr, X_q, y_q, loo, subsets, template = _recipe(name)
        tic = time.perf_counter()
        truth_loo = retrain_distributions(template, X_tr, y_tr, X_q, y_q, remove=loo,
                                          n_seeds=256, random_state=1, memory=args.cache)
        truth_lds = retrain_distributions(template, X_tr, y_tr, X_q, y_q, remove=subsets,
                                          n_seeds=256, random_state=2, memory=args.cache)
        truth_seconds = time.perf_counter() - tic
        ens = template.set_params(n_seeds=16).fit(X_tr, y_tr)
        rows = {}
        for damping in FIXED + ("auto",):
            tic = time.perf_counter()
            influence = InfluenceTransformer(ens, damping=damping).fit(X_tr, y_tr)
            rows[damping] = (*_scores(influence, X_q, y_q, loo, subsets, truth_loo, truth_lds),
                             time.perf_counter() - tic, influence.damping_,
                             influence.curvature_)
            if damping == 1e-3:
                # kronfluence: 0.1 x the mean eigenvalue of the curvature (the GGN here)
                heuristic = 0.1 * float(np.mean([_mean_eigenvalue(c, influence.n_params_attributed_)
                                                 for c in influence.curvatures_]))
        influence = InfluenceTransformer(ens, damping=heuristic).fit(X_tr, y_tr)
        rows["kronfluence 0.1 x mean eig"] = (*_scores(influence, X_q, y_q, loo, subsets,
                                                       truth_loo, truth_lds), 0.0, heuristic,
                                              influence.curvature_)
        print(f"\n{name} (ground truth {truth_seconds:.0f} s; curvature "
              f"{rows['auto'][5]})")
        print(f"{'damping':>28s} {'value':>9s} {'LOO':>6s} {'mean':>6s} {'var':>6s} "
              f"{'seconds':>8s}")
        for key, (r_loo, r_mean, r_var, seconds, value, _) in rows.items():
            print(f"{str(key):>28s} {value:9.3g} {r_loo:6.2f} {r_mean:6.2f} {r_var:6.2f} "
                  f"{seconds:8.1f}", flush=True)
        best = [max(rows[d][i] for d in FIXED) for i in range(3)]
        gaps = [rows["auto"][i] - best[i] for i in range(3)]
        gaps_h = [rows["kronfluence 0.1 x mean eig"][i] - best[i] for i in range(3)]
        print(f"{'auto - best fixed':>28s} {'':9s} " + " ".join(f"{g:+6.2f}" for g in gaps))
        print(f"{'kronfluence - best fixed':>28s} {'':9s} "
              + " ".join(f"{g:+6.2f}" for g in gaps_h))
        summary.append((name, gaps, gaps_h))
    print("\nauto minus the best fixed damping (LOO / mean-LDS / variance-LDS):")
    for name, gaps, gaps_h in summary:
        print(f"  {name:16s} auto " + " / ".join(f"{g:+.2f}" for g in gaps)
              + "   kronfluence " + " / ".join(f"{g:+.2f}" for g in gaps_h))


if __name__ == "__main__":
    main()
