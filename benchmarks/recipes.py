"""The recipes of the fidelity studies, with their retrained ground truth.

    OMP_NUM_THREADS=1 python benchmarks/recipes.py --truth /tmp/truth [--recipes a,b] [--list]

A recipe is a dataset split (300 training rows, more where ``_N_TRAIN`` says, 40
query rows), a seed ensemble (its net and training), a measurement, 20 leave-one-out
rows and 20 random 30% removals. Its ground truth retrains 256 seeds for every removal set
(:func:`skdtda.evaluation.retrain_distributions`, the same seeds for every set:
``random_state=1`` for the leave-one-out sets, ``2`` for the random ones) and is
kept as one ``.npz`` per recipe in ``--truth`` (plus the retrained sets
themselves under ``--truth/sets``, so an interrupted run resumes).

Two groups. ``CHOICE``: the recipes that rules and defaults are chosen on (the
damping study's nine, all seen before 2026-12-06, and the digits CNN of the
fidelity benchmark). ``HELD_OUT``: recipes written on 2026-12-06 before any
attribution was scored on them; a rule chosen on ``CHOICE`` is scored on them
once, after it is written down (docs/benchmarks.md says when). ``HELD_OUT_2``: two
recipes written on 2026-12-06 at 23:45, after the first held-out round had been
scored, to score what was changed after that round on recipes nothing was chosen on.
``HELD_OUT_3``: four recipes written on 2026-12-07 at 05:38, before anything of
that day's round was scored or changed; scored once.
``HELD_OUT_4``: four recipes written on 2026-12-07 at 11:25, after the calibration's
queries were held out of its retraining, to score what is chosen after that.
``HELD_OUT_5``: four recipes written on 2026-12-07 at 14:08 (a new session), after the
calibration's scoring moved to 8 members, before anything was scored on them.
``HELD_OUT_6``: four recipes written on 2026-12-07 at 15:54 (a new session), before
anything was scored on them. ``HELD_OUT_7``: four recipes written on 2026-12-07 at 20:40
(a new session), before anything was scored on them, with 520-1000 training rows.
``HELD_OUT_8``: three recipes written on 2026-12-07 at 20:44, before anything was scored
on them, whose exact GGN is past ``curvature="auto"``'s budget. ``HELD_OUT_9``: three
more such recipes, written on 2026-12-07 at 21:28 before anything was scored on them.
``HELD_OUT_10``: three EK-FAC models with 7-12 outputs, written on 2026-12-07 at 22:30
before anything was scored on them. ``HELD_OUT_11``: three EK-FAC models with 3-16
outputs, written on 2026-12-08 at 00:33 before anything was scored on them.

The ensembles have 32 seeds (16 for the CNNs and the transformer), as the
attributions scored against this truth use.
"""

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import (load_breast_cancer, load_diabetes, load_digits, make_blobs,
                              make_classification, make_friedman1, make_friedman2,
                              make_friedman3, make_gaussian_quantiles, make_hastie_10_2,
                              make_moons, make_regression)
from skorch import NeuralNetClassifier, NeuralNetRegressor

from skdtda import SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.evaluation import Distributions, leave_one_out, random_subsets, retrain_distributions
from skdtda.nets import MLP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _architectures import DigitsCNN, DigitsTransformer  # noqa: E402

N_TRAIN, N_QUERY, N_SETS, N_TRUTH = 300, 40, 20, 256


@dataclass
class Recipe:
    """One recipe: data, ensemble, measurement, removal sets."""

    name: str
    group: str
    what: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_query: np.ndarray
    y_query: np.ndarray
    ensemble: object
    measurement: str
    loo: np.ndarray
    subsets: np.ndarray

    @property
    def model(self):
        """"cnn", "transformer" or "mlp" (what the ensemble's members are)."""
        net = self.ensemble.net
        module = getattr(net, "module", None)
        return {DigitsCNN: "cnn", DigitsTransformer: "transformer"}.get(module, "mlp")


def _scaled(X):
    return (X - X.mean(0)) / X.std(0)


def _split(X, y, seed=0, n_train=N_TRAIN):
    """``n_train`` training rows and 40 queries, drawn as the damping study draws them."""
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(X))
    train, query = order[:n_train], order[n_train:n_train + N_QUERY]
    loo = leave_one_out(n_train, rng.choice(n_train, N_SETS, replace=False))
    subsets = random_subsets(n_train, N_SETS, keep_fraction=0.7, random_state=rng)
    return X[train], y[train], X[query], y[query], loo, subsets


def _classifier(module, epochs, batch=32, **training):
    return NeuralNetClassifier(module, criterion=torch.nn.CrossEntropyLoss, max_epochs=epochs,
                               batch_size=batch, train_split=None, verbose=0, **training)


def _regressor(module, epochs, batch=32, **training):
    return NeuralNetRegressor(module, criterion=torch.nn.MSELoss, max_epochs=epochs,
                              batch_size=batch, train_split=None, verbose=0, **training)


_SGD = dict(optimizer=torch.optim.SGD, optimizer__momentum=0.9)


def _digits(dtype=np.float64):
    X, y = load_digits(return_X_y=True)
    return (X / 16).astype(dtype), y


def _regression(name):
    if name == "diabetes":
        X, y = load_diabetes(return_X_y=True)
    elif name == "friedman1":
        X, y = make_friedman1(n_samples=442, noise=1.0, random_state=0)
    elif name == "friedman2":
        X, y = make_friedman2(n_samples=400, noise=30.0, random_state=1)
    elif name == "friedman3":
        X, y = make_friedman3(n_samples=400, noise=0.1, random_state=2)
    else:
        X, y = make_regression(n_samples=400, n_features=12, n_informative=6, noise=20.0,
                               random_state=4)
    return _scaled(X), (y - y.mean()) / y.std()


def _build(name):
    """``(group, what, X, y, ensemble, measurement)`` of a recipe."""
    mlp32 = dict(module__hidden_layer_sizes=(32,))
    if name in ("digits-sgd", "digits-adam", "digits-short", "digits-adam-long"):
        training = (dict(optimizer=torch.optim.Adam, lr=0.005) if "adam" in name
                    else dict(**_SGD, lr=0.05))
        epochs = {"digits-short": 10, "digits-adam-long": 100}.get(name, 30)
        X, y = _digits()
        what = f"digits MLP 64-32-10, {'Adam' if 'adam' in name else 'SGD'}, {epochs} epochs"
        return ("choice", what, X, y,
                SeedEnsembleClassifier(_classifier(MLP, epochs, **training, **mlp32),
                                       n_seeds=32, random_state=3), "loss")
    if name == "digits-sklearn":
        from sklearn.neural_network import MLPClassifier

        X, y = _digits()
        net = MLPClassifier(hidden_layer_sizes=(32,), solver="sgd", momentum=0.9,
                            nesterovs_momentum=False, learning_rate_init=0.05, batch_size=32,
                            max_iter=30, n_iter_no_change=30, tol=0.0)
        return ("choice", "digits, scikit-learn MLPClassifier 64-32-10, SGD, 30 epochs", X, y,
                SeedEnsembleClassifier(net, n_seeds=32, random_state=3), "loss")
    if name in ("diabetes-sgd", "diabetes-adam", "friedman-adam-long"):
        X, y = _regression("friedman1" if name.startswith("friedman") else "diabetes")
        training = (dict(**_SGD, lr=0.01, max_epochs=30) if name == "diabetes-sgd"
                    else dict(optimizer=torch.optim.Adam, lr=0.01, max_epochs=100))
        epochs = training.pop("max_epochs")
        what = f"{name.split('-')[0]} MLP 10-32-1, MSE, {name.split('-')[1]}, {epochs} epochs"
        return ("choice", what, X, y,
                SeedEnsembleRegressor(_regressor(MLP, epochs, **training, **mlp32), n_seeds=32,
                                      random_state=3), "loss")
    if name == "breast-adam-long":
        X, y = load_breast_cancer(return_X_y=True)
        return ("choice", "breast cancer MLP 30-32-2, Adam, 100 epochs", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 100, optimizer=torch.optim.Adam,
                                                   lr=0.01, **mlp32),
                                       n_seeds=32, random_state=3), "loss")
    if name == "digits-cnn":
        X, y = _digits(np.float32)
        return ("choice", "digits CNN (6,058 parameters), SGD, 30 epochs", X, y,
                SeedEnsembleClassifier(_classifier(DigitsCNN, 30, **_SGD, lr=0.05), n_seeds=16,
                                       random_state=3), "loss")
    # -- held out (written 2026-12-06, before any attribution was scored on them) ----------
    if name == "cnn-adam-margin":
        X, y = _digits(np.float32)
        return ("held-out", "digits CNN, Adam lr 2e-3, 20 epochs, margin", X, y,
                SeedEnsembleClassifier(_classifier(DigitsCNN, 20, optimizer=torch.optim.Adam,
                                                   lr=2e-3), n_seeds=16, random_state=5),
                "margin")
    if name == "cnn-sgd-wd-margin":
        X, y = _digits(np.float32)
        return ("held-out", "digits CNN, SGD lr 0.03 + weight decay 5e-4, 20 epochs, margin",
                X, y,
                SeedEnsembleClassifier(_classifier(DigitsCNN, 20, **_SGD, lr=0.03,
                                                   optimizer__weight_decay=5e-4),
                                       n_seeds=16, random_state=6), "margin")
    if name == "vit-adam-margin":
        X, y = _digits(np.float32)
        return ("held-out", "digits transformer (patches, attention, LayerNorm), Adam lr 3e-3, "
                "30 epochs, margin", X, y,
                SeedEnsembleClassifier(_classifier(DigitsTransformer, 30,
                                                   optimizer=torch.optim.Adam, lr=3e-3),
                                       n_seeds=16, random_state=7), "margin")
    if name == "tabular-sgd-wd":
        X, y = make_classification(n_samples=400, n_features=16, n_informative=8,
                                   n_classes=4, n_clusters_per_class=2, class_sep=1.2,
                                   flip_y=0.03, random_state=1)
        return ("held-out", "make_classification (16 features, 4 classes) MLP 16-64-64-4, SGD "
                "+ weight decay 5e-4, 40 epochs", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 40, **_SGD, lr=0.02,
                                                   optimizer__weight_decay=5e-4,
                                                   module__hidden_layer_sizes=(64, 64)),
                                       n_seeds=32, random_state=8), "loss")
    if name == "friedman2-sgd-wd":
        X, y = _regression("friedman2")
        return ("held-out", "make_friedman2 MLP 4-32-32-1, MSE, SGD + weight decay 1e-3, "
                "batch 16, 50 epochs", X, y,
                SeedEnsembleRegressor(_regressor(MLP, 50, batch=16, **_SGD, lr=0.01,
                                                 optimizer__weight_decay=1e-3,
                                                 module__hidden_layer_sizes=(32, 32)),
                                      n_seeds=32, random_state=9), "loss")
    if name == "friedman3-sklearn-adam":
        from sklearn.neural_network import MLPRegressor

        X, y = _regression("friedman3")
        net = MLPRegressor(hidden_layer_sizes=(64,), solver="adam", learning_rate_init=1e-3,
                           alpha=1e-3, batch_size=32, max_iter=200, n_iter_no_change=200,
                           tol=0.0)
        return ("held-out", "make_friedman3, scikit-learn MLPRegressor 4-64-1, Adam, alpha "
                "1e-3, 200 epochs", X, y,
                SeedEnsembleRegressor(net, n_seeds=32, random_state=10), "loss")
    if name == "digits-wide-adamw":
        X, y = _digits()
        return ("held-out", "digits MLP 64-128-10 (9,610 parameters), AdamW lr 1e-3 weight "
                "decay 1e-2, batch 64, 40 epochs", X, y,
                SeedEnsembleClassifier(_classifier(MLP, 40, batch=64, optimizer=torch.optim.AdamW,
                                                   lr=1e-3, optimizer__weight_decay=1e-2,
                                                   module__hidden_layer_sizes=(128,)),
                                       n_seeds=32, random_state=11), "loss")
    if name == "breast-sgd-short":
        X, y = load_breast_cancer(return_X_y=True)
        return ("held-out", "breast cancer MLP 30-16-2, plain SGD lr 0.05, batch 16, 10 epochs",
                _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 10, batch=16, optimizer=torch.optim.SGD,
                                                   lr=0.05, module__hidden_layer_sizes=(16,)),
                                       n_seeds=32, random_state=12), "loss")
    if name == "moons-sklearn-adam-long":
        from sklearn.neural_network import MLPClassifier

        X, y = make_moons(n_samples=400, noise=0.3, random_state=3)
        net = MLPClassifier(hidden_layer_sizes=(32, 32), activation="tanh", solver="adam",
                            learning_rate_init=5e-3, batch_size=32, max_iter=150,
                            n_iter_no_change=150, tol=0.0)
        return ("held-out", "make_moons (noise 0.3), scikit-learn MLPClassifier 2-32-32-2 tanh, "
                "Adam, 150 epochs", _scaled(X), y,
                SeedEnsembleClassifier(net, n_seeds=32, random_state=13), "loss")
    if name == "digits-tanh-sgd-long":
        X, y = _digits()
        return ("held-out", "digits MLP 64-64-64-10 tanh, plain SGD lr 0.1, batch 16, 60 epochs",
                X, y,
                SeedEnsembleClassifier(_classifier(MLP, 60, batch=16, optimizer=torch.optim.SGD,
                                                   lr=0.1, module__hidden_layer_sizes=(64, 64),
                                                   module__activation="tanh"),
                                       n_seeds=32, random_state=14), "loss")
    # -- held out, second round (written 2026-12-06 23:45, before any attribution was scored
    # on them; for the calibration's guard and time bound, chosen on CHOICE) -------------
    if name == "digits-margin-sgd":
        X, y = _digits()
        return ("held-out-2", "digits MLP 64-64-10, SGD lr 0.03 + momentum, 40 epochs, margin",
                X, y,
                SeedEnsembleClassifier(_classifier(MLP, 40, **_SGD, lr=0.03,
                                                   module__hidden_layer_sizes=(64,)),
                                       n_seeds=32, random_state=15), "margin")
    if name == "regression-adamw":
        X, y = _regression("linear")
        return ("held-out-2", "make_regression (12 features, 6 informative, noise 20) MLP "
                "12-64-64-1, MSE, AdamW lr 3e-3 weight decay 1e-2, 60 epochs", X, y,
                SeedEnsembleRegressor(_regressor(MLP, 60, optimizer=torch.optim.AdamW, lr=3e-3,
                                                 optimizer__weight_decay=1e-2,
                                                 module__hidden_layer_sizes=(64, 64)),
                                      n_seeds=32, random_state=16), "loss")
    # -- held out, third round (written 2026-12-07 05:38, before any attribution was scored
    # on them; no rule was changed in that round: they score the defaults as they stood) --
    if name == "circles-adam-long":
        from sklearn.datasets import make_circles

        X, y = make_circles(n_samples=400, noise=0.15, factor=0.5, random_state=17)
        return ("held-out-3", "make_circles (noise 0.15) MLP 2-32-32-2, Adam lr 1e-2, "
                "120 epochs", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 120, optimizer=torch.optim.Adam,
                                                   lr=1e-2, module__hidden_layer_sizes=(32, 32)),
                                       n_seeds=32, random_state=17), "loss")
    if name == "tabular-adam-long":
        X, y = make_classification(n_samples=400, n_features=6, n_informative=4,
                                   n_redundant=0, n_classes=3, n_clusters_per_class=1,
                                   class_sep=0.8, flip_y=0.05, random_state=18)
        return ("held-out-3", "make_classification (6 features, 3 classes) MLP 6-32-3 tanh, "
                "Adam lr 5e-3, batch 16, 100 epochs", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 100, batch=16,
                                                   optimizer=torch.optim.Adam, lr=5e-3,
                                                   module__activation="tanh", **mlp32),
                                       n_seeds=32, random_state=18), "loss")
    if name == "friedman1-sgd-long":
        X, y = _regression("friedman1")
        return ("held-out-3", "make_friedman1 MLP 10-32-32-1, MSE, SGD lr 5e-3 + momentum, "
                "80 epochs", X, y,
                SeedEnsembleRegressor(_regressor(MLP, 80, **_SGD, lr=5e-3,
                                                 module__hidden_layer_sizes=(32, 32)),
                                      n_seeds=32, random_state=19), "loss")
    if name == "digits-adamw-margin":
        X, y = _digits()
        return ("held-out-3", "digits MLP 64-48-10, AdamW lr 3e-3 weight decay 1e-3, "
                "60 epochs, margin", X, y,
                SeedEnsembleClassifier(_classifier(MLP, 60, optimizer=torch.optim.AdamW,
                                                   lr=3e-3, optimizer__weight_decay=1e-3,
                                                   module__hidden_layer_sizes=(48,)),
                                       n_seeds=32, random_state=20), "margin")
    # -- held out, fourth round (written 2026-12-07 11:25, before anything was scored on
    # them; they score what is chosen after the calibration's queries were held out) -----
    if name == "binary-adam-wd":
        X, y = make_classification(n_samples=400, n_features=10, n_informative=5,
                                   n_redundant=2, flip_y=0.03, random_state=21)
        return ("held-out-4", "make_classification (10 features, 2 classes) MLP 10-64-2, "
                "Adam lr 1e-3 weight decay 1e-4, 80 epochs", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 80, optimizer=torch.optim.Adam,
                                                   lr=1e-3, optimizer__weight_decay=1e-4,
                                                   module__hidden_layer_sizes=(64,)),
                                       n_seeds=32, random_state=21), "loss")
    if name == "moons-sgd-long":
        X, y = make_moons(n_samples=400, noise=0.25, random_state=22)
        return ("held-out-4", "make_moons (noise 0.25) MLP 2-32-32-2, SGD lr 0.05 + momentum, "
                "150 epochs", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 150, **_SGD, lr=0.05,
                                                   module__hidden_layer_sizes=(32, 32)),
                                       n_seeds=32, random_state=22), "loss")
    if name == "wide-regression-adam":
        X, y = make_regression(n_samples=400, n_features=20, n_informative=5, noise=10.0,
                               random_state=23)
        return ("held-out-4", "make_regression (20 features, 5 informative) MLP 20-64-1, MSE, "
                "Adam lr 3e-3, 100 epochs", _scaled(X), (y - y.mean()) / y.std(),
                SeedEnsembleRegressor(_regressor(MLP, 100, optimizer=torch.optim.Adam, lr=3e-3,
                                                 module__hidden_layer_sizes=(64,)),
                                      n_seeds=32, random_state=23), "loss")
    if name == "breast-adamw":
        X, y = load_breast_cancer(return_X_y=True)
        return ("held-out-4", "breast cancer MLP 30-32-2, AdamW lr 3e-3 weight decay 1e-2, "
                "80 epochs", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 80, optimizer=torch.optim.AdamW,
                                                   lr=3e-3, optimizer__weight_decay=1e-2,
                                                   **mlp32),
                                       n_seeds=32, random_state=24), "loss")
    # -- held out (written 2026-12-07 14:08, before anything was scored on them) ----------
    if name == "blobs-sgd-long":
        X, y = make_blobs(n_samples=400, n_features=5, centers=4, cluster_std=2.5,
                          random_state=31)
        return ("held-out-5", "make_blobs (5 features, 4 overlapping classes) MLP 5-32-4, "
                "SGD lr 0.05 + momentum, 100 epochs", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 100, **_SGD, lr=0.05, **mlp32),
                                       n_seeds=32, random_state=31), "loss")
    if name == "hastie-adam":
        X, y = make_hastie_10_2(n_samples=400, random_state=32)
        return ("held-out-5", "make_hastie_10_2 (10 features, 2 classes) MLP 10-32-32-2, "
                "Adam lr 1e-3, 60 epochs", _scaled(X), (y > 0).astype(np.int64),
                SeedEnsembleClassifier(_classifier(MLP, 60, optimizer=torch.optim.Adam,
                                                   lr=1e-3,
                                                   module__hidden_layer_sizes=(32, 32)),
                                       n_seeds=32, random_state=32), "loss")
    if name == "diabetes-adamw-long":
        X, y = load_diabetes(return_X_y=True)
        return ("held-out-5", "diabetes MLP 10-32-1, MSE, AdamW lr 3e-3 weight decay 1e-2, "
                "150 epochs", _scaled(X), (y - y.mean()) / y.std(),
                SeedEnsembleRegressor(_regressor(MLP, 150, optimizer=torch.optim.AdamW,
                                                 lr=3e-3, optimizer__weight_decay=1e-2,
                                                 **mlp32),
                                      n_seeds=32, random_state=33), "loss")
    if name == "digits-parity-sgd-wd":
        X, y = _digits()
        return ("held-out-5", "digits parity (even/odd) MLP 64-16-2, SGD lr 0.05 + momentum, "
                "weight decay 1e-3, 40 epochs", X, y % 2,
                SeedEnsembleClassifier(_classifier(MLP, 40, **_SGD, lr=0.05,
                                                   optimizer__weight_decay=1e-3,
                                                   module__hidden_layer_sizes=(16,)),
                                       n_seeds=32, random_state=34), "loss")
    # -- held out (written 2026-12-07 15:54, before anything was scored on them) ----------
    if name == "multiclass-sgd-wd":
        X, y = make_classification(n_samples=500, n_features=12, n_informative=6,
                                   n_redundant=2, n_classes=3, flip_y=0.03, random_state=41)
        return ("held-out-6", "make_classification (12 features, 3 classes) MLP 12-64-3, SGD "
                "lr 0.05 + momentum, weight decay 5e-4, 60 epochs", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 60, **_SGD, lr=0.05,
                                                   optimizer__weight_decay=5e-4,
                                                   module__hidden_layer_sizes=(64,)),
                                       n_seeds=32, random_state=41), "loss")
    if name == "sinusoid-sgd":
        rng = np.random.RandomState(42)
        X = rng.uniform(-2, 2, size=(400, 4))
        y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.3 * rng.randn(400)
        return ("held-out-6", "sin(2 x0) + x1 x2 + noise (4 features) MLP 4-64-1, MSE, SGD lr "
                "0.02 + momentum, 80 epochs", _scaled(X), (y - y.mean()) / y.std(),
                SeedEnsembleRegressor(_regressor(MLP, 80, **_SGD, lr=0.02,
                                                 module__hidden_layer_sizes=(64,)),
                                      n_seeds=32, random_state=42), "loss")
    if name == "digits5-adam-margin":
        X, y = _digits()
        keep = y < 5
        return ("held-out-6", "digits 0-4 MLP 64-32-5, Adam lr 3e-3 weight decay 1e-4, 40 "
                "epochs, margin", X[keep], y[keep],
                SeedEnsembleClassifier(_classifier(MLP, 40, optimizer=torch.optim.Adam,
                                                   lr=3e-3, optimizer__weight_decay=1e-4,
                                                   **mlp32),
                                       n_seeds=32, random_state=43), "margin")
    if name == "quantiles-adam-long":
        X, y = make_gaussian_quantiles(n_samples=400, n_features=4, n_classes=2,
                                       random_state=44)
        return ("held-out-6", "make_gaussian_quantiles (4 features, 2 classes) MLP 4-32-32-2, "
                "Adam lr 3e-3, 150 epochs", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 150, optimizer=torch.optim.Adam,
                                                   lr=3e-3,
                                                   module__hidden_layer_sizes=(32, 32)),
                                       n_seeds=32, random_state=44), "loss")
    # -- held out (written 2026-12-07 20:40, a new session, before anything was scored on
    # them): the first round with more than 300 training rows (_N_TRAIN) ------------------
    if name == "tabular-large-sgd-wd":
        X, y = make_classification(n_samples=1100, n_features=20, n_informative=8,
                                   n_redundant=4, n_classes=4, flip_y=0.05, random_state=51)
        return ("held-out-7", "make_classification (20 features, 4 classes), 1000 training "
                "rows, MLP 20-64-4, SGD lr 0.03 + momentum, weight decay 5e-4, batch 64, "
                "30 epochs", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 30, batch=64, **_SGD, lr=0.03,
                                                   optimizer__weight_decay=5e-4,
                                                   module__hidden_layer_sizes=(64,)),
                                       n_seeds=32, random_state=51), "loss")
    if name == "friedman1-large-adam":
        X, y = make_friedman1(n_samples=1000, noise=1.0, random_state=52)
        return ("held-out-7", "make_friedman1, 900 training rows, MLP 10-64-1, MSE, Adam lr "
                "3e-3, batch 64, 40 epochs", _scaled(X), (y - y.mean()) / y.std(),
                SeedEnsembleRegressor(_regressor(MLP, 40, batch=64,
                                                 optimizer=torch.optim.Adam, lr=3e-3,
                                                 module__hidden_layer_sizes=(64,)),
                                      n_seeds=32, random_state=52), "loss")
    if name == "digits-large-sgd":
        X, y = _digits()
        return ("held-out-7", "digits, 1000 training rows, MLP 64-32-10, SGD lr 0.05 + "
                "momentum, batch 64, 20 epochs", X, y,
                SeedEnsembleClassifier(_classifier(MLP, 20, batch=64, **_SGD, lr=0.05, **mlp32),
                                       n_seeds=32, random_state=53), "loss")
    if name == "breast-full-adamw-margin":
        X, y = load_breast_cancer(return_X_y=True)
        return ("held-out-7", "breast cancer, 520 training rows, MLP 30-16-2, AdamW lr 2e-3 "
                "weight decay 1e-2, 60 epochs, margin", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 60, optimizer=torch.optim.AdamW,
                                                   lr=2e-3, optimizer__weight_decay=1e-2,
                                                   module__hidden_layer_sizes=(16,)),
                                       n_seeds=32, random_state=54), "margin")
    # -- held out (written 2026-12-07 20:44, before anything was scored on them): models
    # whose exact GGN is past curvature="auto"'s budget (EK-FAC today) -----------------
    if name == "digits-wide-large-sgd":
        X, y = _digits()
        return ("held-out-8", "digits, 1000 training rows, MLP 64-128-10 (9,610 parameters), "
                "SGD lr 0.05 + momentum, batch 64, 20 epochs", X, y,
                SeedEnsembleClassifier(_classifier(MLP, 20, batch=64, **_SGD, lr=0.05,
                                                   module__hidden_layer_sizes=(128,)),
                                       n_seeds=32, random_state=61), "loss")
    if name == "tabular-deep-large-adam":
        X, y = make_classification(n_samples=1100, n_features=30, n_informative=12,
                                   n_classes=6, n_clusters_per_class=1, flip_y=0.03,
                                   random_state=62)
        return ("held-out-8", "make_classification (30 features, 6 classes), 1000 training "
                "rows, MLP 30-128-64-6 (12,614 parameters), Adam lr 2e-3, batch 64, 30 epochs",
                _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 30, batch=64, optimizer=torch.optim.Adam,
                                                   lr=2e-3, module__hidden_layer_sizes=(128, 64)),
                                       n_seeds=32, random_state=62), "loss")
    if name == "digits-wide-adamw-margin":
        X, y = _digits()
        return ("held-out-8", "digits, 900 training rows, MLP 64-96-10 (7,210 parameters), "
                "AdamW lr 2e-3 weight decay 1e-2, 30 epochs, margin", X, y,
                SeedEnsembleClassifier(_classifier(MLP, 30, optimizer=torch.optim.AdamW,
                                                   lr=2e-3, optimizer__weight_decay=1e-2,
                                                   module__hidden_layer_sizes=(96,)),
                                       n_seeds=32, random_state=63), "margin")
    # -- held out (written 2026-12-07 21:28, before anything was scored on them): more
    # models past the exact GGN's budget, for what HELD_OUT_8 leads to ------------------
    if name == "blobs-deep-large-adamw":
        X, y = make_blobs(n_samples=1100, n_features=16, centers=8, cluster_std=3.0,
                          random_state=71)
        return ("held-out-9", "make_blobs (16 features, 8 overlapping classes), 1000 training "
                "rows, MLP 16-128-128-8 (19,720 parameters), AdamW lr 1e-3 weight decay 1e-2, "
                "batch 64, 25 epochs", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 25, batch=64, optimizer=torch.optim.AdamW,
                                                   lr=1e-3, optimizer__weight_decay=1e-2,
                                                   module__hidden_layer_sizes=(128, 128)),
                                       n_seeds=32, random_state=71), "loss")
    if name == "digits-deep-sgd-wd":
        X, y = _digits()
        return ("held-out-9", "digits, 1200 training rows, MLP 64-64-64-10 tanh (8,970 "
                "parameters), SGD lr 0.05 + momentum, weight decay 5e-4, batch 64, 25 epochs",
                X, y,
                SeedEnsembleClassifier(_classifier(MLP, 25, batch=64, **_SGD, lr=0.05,
                                                   optimizer__weight_decay=5e-4,
                                                   module__hidden_layer_sizes=(64, 64),
                                                   module__activation="tanh"),
                                       n_seeds=32, random_state=72), "loss")
    if name == "classification-wide-margin":
        X, y = make_classification(n_samples=1100, n_features=40, n_informative=15,
                                   n_redundant=5, n_classes=5, flip_y=0.05, random_state=73)
        return ("held-out-9", "make_classification (40 features, 5 classes), 1000 training "
                "rows, MLP 40-256-5 (11,781 parameters), Adam lr 1e-3, 20 epochs, margin",
                _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 20, optimizer=torch.optim.Adam, lr=1e-3,
                                                   module__hidden_layer_sizes=(256,)),
                                       n_seeds=32, random_state=73), "margin")
    # -- held out (written 2026-12-07 22:30, before anything was scored on them): EK-FAC
    # models with 7-12 outputs, for the output-Hessian columns of EK-FAC (samples="auto") --
    if name == "tabular7-deep-sgd":
        X, y = make_classification(n_samples=1100, n_features=25, n_informative=12,
                                   n_redundant=3, n_classes=7, n_clusters_per_class=1,
                                   flip_y=0.04, random_state=81)
        return ("held-out-10", "make_classification (25 features, 7 classes), 1000 training "
                "rows, MLP 25-96-96-7 (12,487 parameters), SGD lr 0.03 + momentum, 20 epochs",
                _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 20, **_SGD, lr=0.03,
                                                   module__hidden_layer_sizes=(96, 96)),
                                       n_seeds=32, random_state=81), "loss")
    if name == "digits-adam-wd-margin-large":
        X, y = _digits()
        return ("held-out-10", "digits, 1100 training rows, MLP 64-100-10 (7,510 parameters), "
                "Adam lr 1e-3 weight decay 1e-4, batch 128, 40 epochs, margin", X, y,
                SeedEnsembleClassifier(_classifier(MLP, 40, batch=128, optimizer=torch.optim.Adam,
                                                   lr=1e-3, optimizer__weight_decay=1e-4,
                                                   module__hidden_layer_sizes=(100,)),
                                       n_seeds=32, random_state=82), "margin")
    if name == "blobs12-adamw":
        X, y = make_blobs(n_samples=1100, n_features=10, centers=12, cluster_std=2.5,
                          random_state=83)
        return ("held-out-10", "make_blobs (10 features, 12 overlapping classes), 1000 "
                "training rows, MLP 10-128-64-12 (10,444 parameters), AdamW lr 2e-3 weight "
                "decay 1e-3, batch 64, 30 epochs", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 30, batch=64, optimizer=torch.optim.AdamW,
                                                   lr=2e-3, optimizer__weight_decay=1e-3,
                                                   module__hidden_layer_sizes=(128, 64)),
                                       n_seeds=32, random_state=83), "loss")
    # -- held out (written 2026-12-08 00:33, before anything was scored on them): EK-FAC
    # models for curvature="auto"'s every-column EK-FAC as adopted that day, from 3
    # outputs (one combination before) to 16 (its bound) -------------------------------
    if name == "quantiles3-deep-adam":
        X, y = make_gaussian_quantiles(n_samples=1100, n_features=8, n_classes=3,
                                       random_state=91)
        return ("held-out-11", "make_gaussian_quantiles (8 features, 3 classes), 1000 "
                "training rows, MLP 8-128-128-3 (18,051 parameters), Adam lr 1e-3, batch 64, "
                "30 epochs", _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 30, batch=64, optimizer=torch.optim.Adam,
                                                   lr=1e-3, module__hidden_layer_sizes=(128, 128)),
                                       n_seeds=32, random_state=91), "loss")
    if name == "classes16-sgd":
        X, y = make_classification(n_samples=1100, n_features=20, n_informative=12,
                                   n_redundant=2, n_classes=16, n_clusters_per_class=1,
                                   flip_y=0.03, random_state=92)
        return ("held-out-11", "make_classification (20 features, 16 classes), 1000 training "
                "rows, MLP 20-128-16 (4,752 parameters), SGD lr 0.05 + momentum, 30 epochs",
                _scaled(X), y,
                SeedEnsembleClassifier(_classifier(MLP, 30, **_SGD, lr=0.05,
                                                   module__hidden_layer_sizes=(128,)),
                                       n_seeds=32, random_state=92), "loss")
    if name == "digits-relu-wd-margin-large":
        X, y = _digits()
        return ("held-out-11", "digits, 1000 training rows, MLP 64-80-40-10 (8,850 "
                "parameters), SGD lr 0.03 + momentum, weight decay 1e-3, batch 64, 30 "
                "epochs, margin", X, y,
                SeedEnsembleClassifier(_classifier(MLP, 30, batch=64, **_SGD, lr=0.03,
                                                   optimizer__weight_decay=1e-3,
                                                   module__hidden_layer_sizes=(80, 40)),
                                       n_seeds=32, random_state=93), "margin")
    raise ValueError(f"unknown recipe {name!r}; known: {ALL}")


#: Training rows of the recipes that have more than :data:`N_TRAIN`.
_N_TRAIN = {"tabular-large-sgd-wd": 1000, "friedman1-large-adam": 900,
            "digits-large-sgd": 1000, "breast-full-adamw-margin": 520,
            "digits-wide-large-sgd": 1000, "tabular-deep-large-adam": 1000,
            "digits-wide-adamw-margin": 900, "blobs-deep-large-adamw": 1000,
            "digits-deep-sgd-wd": 1200, "classification-wide-margin": 1000,
            "tabular7-deep-sgd": 1000, "digits-adam-wd-margin-large": 1100,
            "blobs12-adamw": 1000, "quantiles3-deep-adam": 1000, "classes16-sgd": 1000,
            "digits-relu-wd-margin-large": 1000}


CHOICE = ("digits-sgd", "digits-adam", "digits-short", "digits-sklearn", "diabetes-sgd",
          "diabetes-adam", "digits-adam-long", "breast-adam-long", "friedman-adam-long",
          "digits-cnn")
HELD_OUT = ("cnn-adam-margin", "cnn-sgd-wd-margin", "vit-adam-margin", "tabular-sgd-wd",
            "friedman2-sgd-wd", "friedman3-sklearn-adam", "digits-wide-adamw",
            "breast-sgd-short", "moons-sklearn-adam-long", "digits-tanh-sgd-long")
#: Written after the first held-out round had been scored, to score what changed after it
#: (the calibration's guard and its time bound) on recipes nothing was chosen on.
HELD_OUT_2 = ("digits-margin-sgd", "regression-adamw")
#: Written 2026-12-07 05:38, before anything was scored on them; scored once with the defaults.
HELD_OUT_3 = ("circles-adam-long", "tabular-adam-long", "friedman1-sgd-long",
              "digits-adamw-margin")
#: Written 2026-12-07 11:25, after the calibration's queries were held out of its
#: retraining, to score what is chosen after that on recipes nothing was seen on.
HELD_OUT_4 = ("binary-adam-wd", "moons-sgd-long", "wide-regression-adam", "breast-adamw")
#: Written 2026-12-07 14:08, after the calibration's scoring moved to 8 members, before
#: anything was scored on them.
HELD_OUT_5 = ("blobs-sgd-long", "hastie-adam", "diabetes-adamw-long", "digits-parity-sgd-wd")
#: Written 2026-12-07 15:54 (a new session), before anything was scored on them.
HELD_OUT_6 = ("multiclass-sgd-wd", "sinusoid-sgd", "digits5-adam-margin", "quantiles-adam-long")
#: Written 2026-12-07 20:40 (a new session), before anything was scored on them: 520-1000
#: training rows, where every earlier recipe has 300.
HELD_OUT_7 = ("tabular-large-sgd-wd", "friedman1-large-adam", "digits-large-sgd",
              "breast-full-adamw-margin")
#: Written 2026-12-07 20:44, before anything was scored on them: models whose exact GGN is
#: past ``curvature="auto"``'s budget (it takes EK-FAC on them).
HELD_OUT_8 = ("digits-wide-large-sgd", "tabular-deep-large-adam", "digits-wide-adamw-margin")
#: Written 2026-12-07 21:28, before anything was scored on them: more models past the exact
#: GGN's budget, to score what HELD_OUT_8 (then seen) leads to.
HELD_OUT_9 = ("blobs-deep-large-adamw", "digits-deep-sgd-wd", "classification-wide-margin")
#: Written 2026-12-07 22:30, before anything was scored on them: EK-FAC models with 7-12
#: outputs, to score the output-Hessian columns proposed that day (docs/benchmarks.md).
HELD_OUT_10 = ("tabular7-deep-sgd", "digits-adam-wd-margin-large", "blobs12-adamw")
#: Written 2026-12-08 00:33, before anything was scored on them: EK-FAC models with 3-16
#: outputs, for curvature="auto"'s every-column EK-FAC as adopted that day.
HELD_OUT_11 = ("quantiles3-deep-adam", "classes16-sgd", "digits-relu-wd-margin-large")
ALL = (CHOICE + HELD_OUT + HELD_OUT_2 + HELD_OUT_3 + HELD_OUT_4 + HELD_OUT_5 + HELD_OUT_6
       + HELD_OUT_7 + HELD_OUT_8 + HELD_OUT_9 + HELD_OUT_10 + HELD_OUT_11)


def recipe(name):
    """The :class:`Recipe` called ``name`` (the same arrays and sets on every call)."""
    group, what, X, y, ensemble, measurement = _build(name)
    X_train, y_train, X_query, y_query, loo, subsets = _split(
        X, y, n_train=_N_TRAIN.get(name, N_TRAIN))
    return Recipe(name, group, what, X_train, y_train, X_query, y_query, ensemble,
                  measurement, loo, subsets)


def fit_ensemble(r):
    """``(ensemble, seconds)``: recipe ``r``'s ensemble fitted on its training rows, with
    scikit-learn's MLP warning that it stopped at ``max_iter`` (the recipes' budget) silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
        tic = time.perf_counter()
        ens = r.ensemble.fit(r.X_train, r.y_train)
    return ens, time.perf_counter() - tic


def run_missing(names, out, suffix, run, *args):
    """``run(name, *args)`` for each recipe in ``names`` whose ``out/<name><suffix>`` is
    missing, its result written there as JSON: an interrupted study keeps what it
    finished and reruns only the rest."""
    for name in names:
        path = Path(out) / f"{name}{suffix}"
        if not path.exists():
            path.write_text(json.dumps(run(name, *args), indent=1))
            print(f"{name}: done", flush=True)


def truth(r, folder, verbose=0):
    """``(loo, lds)`` :class:`Distributions` of 256 retrained seeds for recipe ``r``, read
    from ``folder/<name>.npz`` or retrained (and written there)."""
    path = Path(folder) / f"{r.name}.npz"
    if path.exists():
        data = np.load(path)
        return (Distributions(data["loo_before"], data["loo_after"]),
                Distributions(data["lds_before"], data["lds_after"]))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
        loo, lds = (retrain_distributions(r.ensemble, r.X_train, r.y_train, r.X_query,
                                          r.y_query, remove=sets, n_seeds=N_TRUTH,
                                          random_state=seed, measurement=r.measurement,
                                          memory=Path(folder) / "sets", verbose=verbose)
                    for seed, sets in ((1, r.loo), (2, r.subsets)))
    np.savez(path, loo_before=loo.before, loo_after=loo.after, lds_before=lds.before,
             lds_after=lds.after)
    return loo, lds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", required=False, help="folder of the ground truth")
    parser.add_argument("--recipes", default=",".join(ALL))
    parser.add_argument("--list", action="store_true", help="describe the recipes and stop")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.recipes.split(",")
    if args.list:
        for name in names:
            r = recipe(name)
            print(f"{name:26s} {r.group:9s} {r.model:12s} {r.measurement:7s} {r.what}")
        return
    Path(args.truth).mkdir(parents=True, exist_ok=True)
    for name in names:
        tic = time.perf_counter()
        truth(recipe(name), args.truth, verbose=1)
        print(f"{name}: ground truth in {time.perf_counter() - tic:.0f} s", flush=True)


if __name__ == "__main__":
    main()
