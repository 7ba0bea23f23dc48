"""Damping against retraining on several recipes: fixed values, "auto", kronfluence's rule.

    OMP_NUM_THREADS=1 python benchmarks/damping_study.py --cache /tmp/damping [--recipes ...]

For each recipe, the ground truth is retrained with 256 seeds for 20
leave-one-out rows and 20 random 30% removals (``retrain_distributions``, the
same seeds for every removal). A 16-seed ensemble is attributed with the
default curvature (``"auto"``: the exact Gauss-Newton on these small nets) at
each damping of {1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3}, at ``damping="auto"``
(the larger of ``1 / tau``, the inverse of the members' training time, and
kronfluence's heuristic), and at each of its two parts alone: ``1 / tau``,
and kronfluence's 0.1 times the curvature's mean eigenvalue (averaged over
members). Printed per recipe and setting: LOO correlation, mean-LDS and
variance-LDS (query loss), and for the three rules the gap to the best fixed
damping on each. ``auto``'s variance-LDS comes from the transformer fitted for
``statistic="variance"``, which takes 3x the damping (a statistic of the spread).

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

Held out (added after ``1 / tau`` was chosen on the six above, to test it and
the floor proposed then, before their results were seen):

* ``digits-adam-long``: ``digits-adam`` for 100 epochs.
* ``breast-adam-long``: 300 breast-cancer rows (scaled), MLP 30-32-2, Adam,
  lr 0.01, batch 32, 100 epochs; 20 queries.
* ``friedman-adam-long``: ``diabetes-adam`` on ``make_friedman1`` (as many rows
  as diabetes, noise 1, scaled): regression, Adam, 100 epochs.
"""

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, make_friedman1
from skorch import NeuralNetClassifier, NeuralNetRegressor

from skdtda import InfluenceTransformer, SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.evaluation import (leave_one_out, lds, loo_correlation, predict_distributions,
                               random_subsets, retrain_distributions)
from skdtda.ensemble import member_nets
from skdtda.influence._damping import auto_damping, eigenvalue_floor
from skdtda.nets import MLP

FIXED = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3)
RECIPES = ("digits-sgd", "digits-adam", "digits-short", "digits-sklearn", "diabetes-sgd",
           "diabetes-adam")
HELD_OUT = ("digits-adam-long", "breast-adam-long", "friedman-adam-long")


def _data(name):
    """The recipe's dataset, scaled: ``(X, y, ensemble class)``."""
    if name.startswith("digits"):
        X, y = load_digits(return_X_y=True)
        return X / 16, y, SeedEnsembleClassifier
    if name.startswith("breast"):
        X, y = load_breast_cancer(return_X_y=True)
        return (X - X.mean(0)) / X.std(0), y, SeedEnsembleClassifier
    if name.startswith("friedman"):
        X, y = make_friedman1(n_samples=len(load_diabetes().target), noise=1.0, random_state=0)
    else:
        X, y = load_diabetes(return_X_y=True)
    return (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std(), SeedEnsembleRegressor


def _recipe(name):
    from fidelity_influence import _net  # benchmarks/ is the script's folder

    X, y, ensemble_class = _data(name)
    if name.startswith("digits"):
        net = {"digits-sgd": lambda: _net("mlp"), "digits-adam": lambda: _net("mlp", "adam"),
               "digits-short": lambda: _net("mlp", "sgd", 10),
               "digits-sklearn": lambda: _net("sklearn-mlp"),
               "digits-adam-long": lambda: _net("mlp", "adam", 100)}[name]()
    elif name.startswith("breast"):
        net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(32,),
                                  criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam,
                                  lr=0.01, max_epochs=100, batch_size=32, train_split=None,
                                  verbose=0)
    else:
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


def _ground_truth(recipe, cache):
    """The retrained truth of a :func:`_recipe`: 256 seeds for its leave-one-out rows
    and for its random removals (cached in ``cache``)."""
    X_tr, y_tr, X_q, y_q, loo, subsets, template = recipe
    return tuple(retrain_distributions(template, X_tr, y_tr, X_q, y_q, remove=sets,
                                       n_seeds=256, random_state=seed, memory=cache)
                 for seed, sets in ((1, loo), (2, subsets)))


def _scores(influence, X_q, y_q, loo, subsets, truth_loo, truth_lds, spread=None):
    """LOO correlation, mean-LDS and variance-LDS; the last from ``spread``, the
    transformer fitted for ``statistic="variance"``, where it is given (its
    ``damping="auto"`` differs)."""
    pred_loo = predict_distributions(influence, X_q, y_q, remove=loo)
    pred_lds = predict_distributions(influence, X_q, y_q, remove=subsets)
    pred_var = pred_lds if spread is None else predict_distributions(spread, X_q, y_q,
                                                                     remove=subsets)
    return (loo_correlation(pred_loo, truth_loo), lds(pred_lds, truth_lds, "mean"),
            lds(pred_var, truth_lds, "variance"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", help="folder keeping the retrained ground truth")
    parser.add_argument("--recipes", default=",".join(RECIPES),
                        help=f"comma-separated, of {RECIPES + HELD_OUT}")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
    summary = []
    for name in args.recipes.split(","):
        recipe = _recipe(name)
        X_tr, y_tr, X_q, y_q, loo, subsets, template = recipe
        tic = time.perf_counter()
        truth_loo, truth_lds = _ground_truth(recipe, args.cache)
        truth_seconds = time.perf_counter() - tic
        ens = template.set_params(n_seeds=16).fit(X_tr, y_tr)
        rows = {}

        def row(key, damping):
            tic = time.perf_counter()
            influence = InfluenceTransformer(ens, damping=damping).fit(X_tr, y_tr)
            spread = None
            if damping == "auto":  # statistics of the spread take their own damping
                spread = InfluenceTransformer(ens, damping=damping,
                                              statistic="variance").fit(X_tr, y_tr)
            rows[key] = (*_scores(influence, X_q, y_q, loo, subsets, truth_loo, truth_lds,
                                  spread),
                         time.perf_counter() - tic, influence.damping_, influence.curvature_)
            return influence

        for damping in FIXED:
            fixed = row(damping, damping)
        row("auto", "auto")
        # the two parts of the rule, each alone
        inverse_tau = auto_damping([ens.estimators_[i] for i in fixed.members_],
                                   [member_nets(ens)[i] for i in fixed.members_],
                                   len(X_tr))[0]
        row("1 / tau alone", inverse_tau)
        row("kronfluence 0.1 x mean eig", eigenvalue_floor(fixed.curvatures_))
        print(f"\n{name} (ground truth {truth_seconds:.0f} s; curvature "
              f"{rows['auto'][5]})")
        print(f"{'damping':>28s} {'value':>9s} {'LOO':>6s} {'mean':>6s} {'var':>6s} "
              f"{'seconds':>8s}")
        for key, (r_loo, r_mean, r_var, seconds, value, _) in rows.items():
            print(f"{str(key):>28s} {value:9.3g} {r_loo:6.2f} {r_mean:6.2f} {r_var:6.2f} "
                  f"{seconds:8.1f}", flush=True)
        best = [max(rows[d][i] for d in FIXED) for i in range(3)]
        gaps = {key: [rows[key][i] - best[i] for i in range(3)]
                for key in ("auto", "1 / tau alone", "kronfluence 0.1 x mean eig")}
        for key, gap in gaps.items():
            print(f"{key.split(' 0.1')[0] + ' - best fixed':>28s} {'':9s} "
                  + " ".join(f"{g:+6.2f}" for g in gap))
        summary.append((name, gaps))
    print("\nminus the best fixed damping (LOO / mean-LDS / variance-LDS):")
    for name, gaps in summary:
        print(f"  {name:18s} " + "   ".join(
            key.split(" 0.1")[0] + " " + " / ".join(f"{g:+.2f}" for g in gap)
            for key, gap in gaps.items()))


if __name__ == "__main__":
    main()
