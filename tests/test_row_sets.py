"""Small ensembles of several row sets trained in shared batched passes
(skdtda.ensemble._seed_ensemble.fit_row_sets, used by retrain_sets): each set's
ensemble is the one a fit on its own rows gives."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.neural_network import MLPClassifier
from skorch import NeuralNetClassifier, NeuralNetRegressor

from _models import Conv1dNet
from skdtda import SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda._inputs import take_rows
from skdtda.ensemble import QueryMeasurement, retrain_sets
from skdtda.ensemble import _retrain
from skdtda.ensemble._seed_ensemble import ROW_SETS_MEMBERS, fit_row_sets
from skdtda.nets import MLP


def _classification():
    X, y = make_classification(n_samples=120, n_features=8, n_informative=5, n_classes=3,
                               n_clusters_per_class=1, random_state=0)
    return X.astype(np.float32), y


def _masks(n, sizes, seed=0):
    rng = np.random.RandomState(seed)
    keeps = np.ones((len(sizes), n), dtype=bool)
    for keep, size in zip(keeps, sizes):
        keep[rng.choice(n, size, replace=False)] = False
    return keeps


def _same_ensembles(template, X, y, keeps):
    shared = dict(fit_row_sets(template, X, y, keeps))
    assert sorted(shared) == list(range(len(keeps)))
    for j, keep in enumerate(keeps):
        alone = clone(template).fit(take_rows(X, keep), y[keep])
        got = shared[j]
        assert len(got.estimators_) == len(alone.estimators_)
        assert got.training_fingerprint_.key() == alone.training_fingerprint_.key()
        for a, b in zip(got.estimators_, alone.estimators_):
            for (name, p), q in zip(a.module_.named_parameters(), b.module_.parameters()):
                np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(),
                                           rtol=1e-4, atol=1e-5, err_msg=name)
            assert len(a.history) == len(b.history)
        np.testing.assert_allclose(got.predict_proba(X) if hasattr(got, "predict_proba")
                                   else got.predict(X),
                                   alone.predict_proba(X) if hasattr(alone, "predict_proba")
                                   else alone.predict(X), rtol=1e-4, atol=1e-5)


# Conv1dNet: a model the shared passes were not written for (strided, dilated convolutions)
@pytest.mark.parametrize("module", [MLP, Conv1dNet])
def test_each_set_gets_the_ensemble_its_own_fit_gives(module):
    X, y = _classification()
    kwargs = dict(module__hidden_layer_sizes=(8,)) if module is MLP else {}
    net = NeuralNetClassifier(module, criterion=torch.nn.CrossEntropyLoss,
                              optimizer=torch.optim.Adam, lr=1e-2, max_epochs=4, batch_size=16,
                              train_split=None, verbose=0, **kwargs)
    # two sizes of set: 84 and 108 kept rows, trained in two shared passes
    keeps = _masks(len(X), [36, 12, 36, 12, 36])
    _same_ensembles(SeedEnsembleClassifier(net, n_seeds=3, random_state=1), X, y, keeps)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_regressor_and_the_paths_that_train_alone():
    X, y = make_regression(n_samples=80, n_features=5, noise=1.0, random_state=0)
    X, y = X.astype(np.float32), (y / y.std()).astype(np.float32)
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(8,), criterion=torch.nn.MSELoss,
                             optimizer=torch.optim.SGD, lr=1e-2, max_epochs=3, batch_size=16,
                             train_split=None, verbose=0)
    keeps = _masks(len(X), [20, 20, 20])
    _same_ensembles(SeedEnsembleRegressor(net, n_seeds=2, random_state=0), X, y, keeps)
    # more seeds than half a pass holds, and scikit-learn members: each set alone
    X, y = _classification()
    keeps = _masks(len(X), [30, 30])
    _same_ensembles(SeedEnsembleClassifier(
        NeuralNetClassifier(MLP, module__hidden_layer_sizes=(4,),
                            criterion=torch.nn.CrossEntropyLoss, max_epochs=1,
                            train_split=None, verbose=0),
        n_seeds=ROW_SETS_MEMBERS // 2 + 1, random_state=0), X, y, keeps)
    mlp = SeedEnsembleClassifier(MLPClassifier(hidden_layer_sizes=(4,), max_iter=5),
                                 n_seeds=2, random_state=0)
    shared = dict(fit_row_sets(mlp, X, y, keeps))
    for j, keep in enumerate(keeps):
        alone = clone(mlp).fit(X[keep], y[keep])
        np.testing.assert_allclose(shared[j].predict_proba(X), alone.predict_proba(X))


def test_retrain_sets_shares_passes_and_measures_what_one_by_one_does(monkeypatch):
    X, y = _classification()
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(8,),
                              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam,
                              lr=1e-2, max_epochs=5, batch_size=16, train_split=None, verbose=0)
    template = SeedEnsembleClassifier(net, n_seeds=4, random_state=2)
    masks = ~_masks(len(X), [36] * 4 + [6] * 4, seed=3)
    measure = QueryMeasurement(X[:10], y[:10], "loss")
    calls = []
    original = _retrain.fit_row_sets
    monkeypatch.setattr(_retrain, "fit_row_sets",
                        lambda *a: calls.append(1) or original(*a))
    before, shared = retrain_sets(template, X, y, masks, measure)
    assert calls  # the shared passes ran
    one_by_one = np.stack([measure(clone(template).fit(X[~m], y[~m])) for m in masks])
    np.testing.assert_allclose(shared, one_by_one, rtol=1e-4, atol=1e-5)
