"""Seed ensembles against the truth: plain skorch fits, torch's DataLoader, closed forms."""

import logging
import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits, load_iris, make_regression
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier, NeuralNetRegressor
from skorch.callbacks import EpochScoring
from skorch.dataset import ValidSplit
from torch import nn
from torch.utils.data import DataLoader

from skdtda import (SeedEnsembleClassifier, SeedEnsembleRegressor, TrainingDivergedError,
                    UndertrainedWarning)
from skdtda.model import batch_order
from skdtda.nets import MLP


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X).astype(np.float32), y


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:400] / 16).astype(np.float32), y[:400]


def _net(module=MLP, optimizer=torch.optim.SGD, max_epochs=4, **kwargs):
    params = dict(module__hidden_layer_sizes=(8,)) if module is MLP else {}
    params.update(criterion=nn.CrossEntropyLoss, optimizer=optimizer, lr=0.05,
                  max_epochs=max_epochs, batch_size=16, train_split=None, verbose=0)
    params.update(kwargs)
    return NeuralNetClassifier(module, **params)


class TanhNet(nn.Module):
    """A module with its own forward: runs on the vmap path, not the matmul path."""

    def __init__(self, n_features=4, n_outputs=3):
        super().__init__()
        self.hidden = nn.Linear(n_features, 6)
        self.out = nn.Linear(6, n_outputs)

    def forward(self, X):
        return self.out(torch.tanh(self.hidden(X.to(self.hidden.weight.dtype))))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 3, kernel_size=3)
        self.out = nn.Linear(3 * 62, 10)

    def forward(self, X):
        X = X.to(self.conv.weight.dtype).unsqueeze(1)
        return self.out(torch.relu(self.conv(X)).flatten(1))


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, X):
        return self.lin(nn.functional.dropout(X.to(self.lin.weight.dtype), 0.5, self.training))


def _params(net):
    return [p.detach() for p in net.module_.parameters()]


def _assert_same_params(a, b, rtol):
    for p, q in zip(_params(a), _params(b)):
        scale = p.abs().max()
        assert (p - q).abs().max() <= rtol * scale, (p - q).abs().max() / scale


# -- seeding ------------------------------------------------------------------------------

@pytest.mark.parametrize("vectorize", [False, True])
def test_member_equals_plain_skorch_fit(iris, vectorize):
    X, y = iris
    ens = SeedEnsembleClassifier(_net(), n_seeds=3, random_state=0, vectorize=vectorize)
    ens.fit(X, y)
    for i in range(3):
        plain = _net(iterator_train__shuffle=True,
                     iterator_train__generator=torch.Generator().manual_seed(
                         int(ens.order_seeds_[i])),
                     module__n_features=4, module__n_outputs=3)
        torch.manual_seed(int(ens.init_seeds_[i]))
        plain.fit(X, y)
        # the loop is bit-identical; the batched path reorders float32 reductions
        _assert_same_params(ens.estimators_[i], plain, rtol=0 if not vectorize else 1e-4)


def test_same_random_state_same_ensemble_bit_for_bit(iris):
    X, y = iris
    a = SeedEnsembleClassifier(_net(), n_seeds=3, random_state=7).fit(X, y)
    b = SeedEnsembleClassifier(_net(), n_seeds=3, random_state=7).fit(X, y)
    c = SeedEnsembleClassifier(_net(), n_seeds=3, random_state=8).fit(X, y)
    np.testing.assert_array_equal(a.seeds_, b.seeds_)
    np.testing.assert_array_equal(a.predict_proba_members(X), b.predict_proba_members(X))
    assert not np.array_equal(a.predict_proba_members(X), c.predict_proba_members(X))


def test_fit_leaves_global_torch_rng_alone(iris):
    X, y = iris
    state = torch.get_rng_state()
    SeedEnsembleClassifier(_net(), n_seeds=2, random_state=0, vectorize=False).fit(X, y)
    SeedEnsembleClassifier(_net(), n_seeds=2, random_state=0, vectorize=True).fit(X, y)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("vary", ["both", "init", "order"])
def test_vary_holds_the_other_source_fixed(iris, vary):
    X, y = iris
    ens = SeedEnsembleClassifier(_net(), n_seeds=4, vary=vary, random_state=0).fit(X, y)
    assert len(set(ens.init_seeds_)) == (1 if vary == "order" else 4)
    assert len(set(ens.order_seeds_)) == (1 if vary == "init" else 4)
    # Members still differ: each is its own sample of the trained-net distribution.
    proba = ens.predict_proba_members(X)
    assert not np.allclose(proba[0], proba[1])


def test_vary_init_shares_batch_order_and_vary_order_shares_init(iris):
    X, y = iris
    net = _net(max_epochs=1)
    init_only = SeedEnsembleClassifier(net, n_seeds=2, vary="order", random_state=0).fit(X, y)
    members = [clone(init_only.estimators_[0]) for _ in range(2)]
    for member, seed in zip(members, init_only.init_seeds_):
        torch.manual_seed(int(seed))
        member.initialize()
    # vary="order": identical initial weights
    for p, q in zip(_params(members[0]), _params(members[1])):
        assert torch.equal(p, q)


@pytest.mark.parametrize("shuffle", [True, False])
def test_batch_order_replays_dataloader(shuffle):
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    loader = DataLoader(np.arange(37), batch_size=5, shuffle=shuffle, generator=g1)
    for _ in range(3):  # several epochs: the generator state must stay in step
        from_loader = torch.cat(list(loader))
        assert torch.equal(from_loader, batch_order(g2, 37, shuffle))
    assert torch.equal(g1.get_state(), g2.get_state())


# -- batched path = loop ------------------------------------------------------------------

OPTIMIZERS = [
    (torch.optim.SGD, dict(optimizer__momentum=0.9, optimizer__weight_decay=1e-3,
                           optimizer__nesterov=True)),
    (torch.optim.SGD, dict(optimizer__momentum=0.5, optimizer__dampening=0.1)),
    (torch.optim.Adam, dict(lr=0.01)),
    (torch.optim.AdamW, dict(lr=0.01, optimizer__weight_decay=0.1)),
    (torch.optim.RMSprop, dict(lr=0.01, optimizer__momentum=0.5)),
    (torch.optim.Adagrad, dict(lr=0.05)),
]


@pytest.mark.parametrize("optimizer, kwargs", OPTIMIZERS,
                         ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("module", [MLP, TanhNet])
def test_batched_equals_loop_in_float64(iris, float64, optimizer, kwargs, module):
    X, y = iris
    net = _net(module=module, optimizer=optimizer, max_epochs=6, **kwargs)
    loop = SeedEnsembleClassifier(net, n_seeds=3, random_state=1, vectorize=False).fit(X, y)
    batched = SeedEnsembleClassifier(net, n_seeds=3, random_state=1, vectorize=True).fit(X, y)
    assert batched.vectorized_ and not loop.vectorized_
    for a, b in zip(loop.estimators_, batched.estimators_):
        assert next(a.module_.parameters()).dtype == torch.float64
        _assert_same_params(a, b, rtol=1e-8)
        np.testing.assert_allclose(a.history[:, "train_loss"], b.history[:, "train_loss"],
                                   rtol=1e-8)
        # optimizer state too: a member continues training exactly as the loop's would
        state_a, state_b = a.optimizer_.state_dict()["state"], b.optimizer_.state_dict()["state"]
        for key in state_a:
            for name in state_a[key]:
                np.testing.assert_allclose(state_a[key][name], state_b[key][name], rtol=1e-8,
                                           atol=1e-12)


def test_batched_equals_loop_for_convolution(digits, float64):
    X, y = digits
    net = _net(module=ConvNet, max_epochs=3, optimizer__momentum=0.9)
    loop = SeedEnsembleClassifier(net, n_seeds=2, random_state=0, vectorize=False).fit(X, y)
    batched = SeedEnsembleClassifier(net, n_seeds=2, random_state=0, vectorize=True).fit(X, y)
    for a, b in zip(loop.estimators_, batched.estimators_):
        _assert_same_params(a, b, rtol=1e-8)


def test_batched_equals_loop_for_regression(float64):
    X, y = make_regression(n_samples=120, n_features=5, noise=1.0, random_state=0)
    y = y / y.std()
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(8,), criterion=nn.MSELoss,
                             optimizer=torch.optim.SGD, optimizer__momentum=0.9, lr=0.01,
                             max_epochs=5, batch_size=16, train_split=None, verbose=0)
    loop = SeedEnsembleRegressor(net, n_seeds=3, random_state=0, vectorize=False).fit(X, y)
    batched = SeedEnsembleRegressor(net, n_seeds=3, random_state=0, vectorize=True).fit(X, y)
    for a, b in zip(loop.estimators_, batched.estimators_):
        _assert_same_params(a, b, rtol=1e-8)
    np.testing.assert_allclose(loop.predict_members(X), batched.predict_members(X), rtol=1e-8)


def test_batched_float32_matches_loop_in_distribution(digits):
    X, y = digits
    net = _net(module__hidden_layer_sizes=(32,), max_epochs=10, optimizer__momentum=0.9)
    loop = SeedEnsembleClassifier(net, n_seeds=4, random_state=0, vectorize=False).fit(X, y)
    batched = SeedEnsembleClassifier(net, n_seeds=4, random_state=0, vectorize=True).fit(X, y)
    # same seeds, float32: predictions agree almost everywhere, and the
    # distributions over seeds of the loss agree closely
    agree = (loop.predict_members(X) == batched.predict_members(X)).mean()
    assert agree > 0.97
    m_loop, m_batched = loop.measure(X, y), batched.measure(X, y)
    np.testing.assert_allclose(m_loop.mean(axis=0), m_batched.mean(axis=0), atol=0.05)


def test_batched_member_continues_training_like_loop_member(iris, float64):
    X, y = iris
    net = _net(optimizer=torch.optim.Adam, lr=0.01, max_epochs=3)
    loop = SeedEnsembleClassifier(net, n_seeds=1, random_state=0, vectorize=False).fit(X, y)
    batched = SeedEnsembleClassifier(net, n_seeds=1, random_state=0, vectorize=True).fit(X, y)
    a, b = loop.estimators_[0], batched.estimators_[0]
    y_net = y.astype(np.int64)
    a.partial_fit(X, y_net, epochs=2)
    b.partial_fit(X, y_net, epochs=2)
    _assert_same_params(a, b, rtol=1e-8)


# -- fallback and its reasons -------------------------------------------------------------

@pytest.mark.parametrize("net, reason", [
    (_net(callbacks=[("acc", EpochScoring("accuracy", on_train=True))]), "callbacks"),
    (_net(train_split=ValidSplit(5)), "train_split"),
    (_net(optimizer=torch.optim.LBFGS), "elementwise optimizers"),
    (_net(module=DropoutNet), "random"),
    (_net(iterator_train__collate_fn=lambda b: b), "collate_fn"),
])
def test_unsupported_nets_fall_back_with_a_logged_reason(iris, caplog, net, reason):
    X, y = iris
    if net.optimizer is torch.optim.LBFGS:
        net.set_params(max_epochs=1)
    with caplog.at_level(logging.INFO, logger="skdtda"):
        if "collate_fn" in reason:
            # the loop cannot train with that collate_fn either; the reason is what matters
            ens = SeedEnsembleClassifier(net, n_seeds=2, random_state=0)
            with pytest.raises(ValueError, match=reason):
                clone(ens).set_params(vectorize=True).fit(X, y)
            return
        ens = SeedEnsembleClassifier(net, n_seeds=2, random_state=0).fit(X, y)
    assert not ens.vectorized_
    assert reason in caplog.text
    with pytest.raises(ValueError, match=f"vectorize=True.*{reason}"):
        clone(ens).set_params(vectorize=True).fit(X, y)


# -- measurements -------------------------------------------------------------------------

def test_measurements_against_closed_forms(iris):
    X, y = iris
    ens = SeedEnsembleClassifier(_net(max_epochs=10), n_seeds=3, random_state=0).fit(X, y)
    proba = ens.predict_proba_members(X)
    mine = proba[:, np.arange(len(y)), y]
    np.testing.assert_allclose(ens.measure(X, y, "proba"), mine, rtol=1e-5)
    np.testing.assert_allclose(ens.measure(X, y, "log_proba"), np.log(mine), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(ens.measure(X, y, "loss"), -np.log(mine), rtol=1e-4, atol=1e-6)
    others = proba.copy()
    others[:, np.arange(len(y)), y] = 0
    np.testing.assert_allclose(ens.measure(X, y, "margin"),
                               np.log(mine) - np.log(others.max(axis=2)), rtol=1e-4, atol=1e-5)
    # margin > 0 exactly where a member predicts the true class
    np.testing.assert_array_equal(ens.measure(X, y, "margin") > 0, ens.predict_members(X) == y)
    # y=None measures against the ensemble's own prediction
    np.testing.assert_allclose(ens.measure(X, None, "proba"),
                               ens.measure(X, ens.predict(X), "proba"))


def test_measure_with_string_labels_and_callable(iris):
    X, y = iris
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    ens = SeedEnsembleClassifier(_net(), n_seeds=2, random_state=0).fit(X, labels)
    assert set(ens.predict(X)) <= set(labels)
    values = ens.measure(X, labels, lambda net, X_, y_: y_ * 1.0)
    np.testing.assert_array_equal(values, np.stack([y, y]))
    with pytest.raises(ValueError, match="labels not seen in fit"):
        ens.measure(X[:2], ["setosa", "rose"])


def test_regressor_measurements():
    X, y = make_regression(n_samples=100, n_features=4, noise=1.0, random_state=0)
    y = (y - y.mean()) / y.std()
    ens = SeedEnsembleRegressor(n_seeds=3, random_state=0).fit(X, y)
    pred = ens.predict_members(X)
    assert pred.shape == (3, 100)
    np.testing.assert_allclose(ens.measure(X, measurement="prediction"), pred, rtol=1e-5)
    np.testing.assert_allclose(ens.measure(X, y, "loss"), (pred - y) ** 2, rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(ens.predict(X), pred.mean(axis=0))
    with pytest.raises(ValueError, match="does not apply to a regressor"):
        ens.measure(X, y, "margin")
    multi = SeedEnsembleRegressor(n_seeds=2, random_state=0).fit(X, np.c_[y, -y])
    assert multi.predict_members(X).shape == (2, 100, 2)
    assert multi.predict(X).shape == (100, 2)


# -- errors -------------------------------------------------------------------------------

def test_clear_errors(iris):
    X, y = iris
    ens = SeedEnsembleClassifier(_net(), n_seeds=2, random_state=0)
    with pytest.raises(NotFittedError):
        ens.predict(X)
    with pytest.raises(NotFittedError):
        ens.measure(X, y)
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clone(ens).fit(X_nan, y)
    with pytest.raises(ValueError, match="n_seeds"):
        clone(ens).set_params(n_seeds=0).fit(X, y)
    with pytest.raises(ValueError, match="vary"):
        clone(ens).set_params(vary="weights").fit(X, y)
    with pytest.raises(ValueError, match="net"):
        SeedEnsembleClassifier(net="mlp").fit(X, y)
    with pytest.raises(ValueError, match="net"):
        SeedEnsembleClassifier(net=NeuralNetRegressor(MLP)).fit(X, y)
    fitted = clone(ens).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        fitted.predict(X[:, :2])
    with pytest.raises(ValueError, match="measurement"):
        fitted.measure(X, y, "accuracy")
    with pytest.raises(ValueError, match="at least 2 classes"):
        clone(ens).fit(X, np.zeros(len(X)))


@pytest.mark.parametrize("vectorize", [False, True])
def test_divergence_names_the_seed(iris, vectorize):
    X, y = iris
    net = _net(lr=1e6, max_epochs=5, optimizer__momentum=0.9)
    ens = SeedEnsembleClassifier(net, n_seeds=2, random_state=0, vectorize=vectorize)
    with pytest.raises(TrainingDivergedError, match=r"member \d \(init seed \d+, order seed"):
        ens.fit(X * 1e3, y)


def _no_undertrained_warning(fit):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndertrainedWarning)
        return fit()


@pytest.mark.parametrize("vectorize", [False, True])
def test_members_that_barely_trained_warn_with_their_log_loss(iris, vectorize):
    """The warning compares each member's training log-loss (here measured on its own:
    minus the mean log-probability of the true class) with the entropy of the class
    frequencies, the log-loss of the best constant prediction."""
    X, y = iris[0][:120], iris[1][:120]  # classes 50/50/20: the constant is not uniform
    share = np.bincount(y) / len(y)
    entropy = -np.sum(share * np.log(share))
    slow = SeedEnsembleClassifier(_net(lr=1e-4, max_epochs=2), n_seeds=3, random_state=0,
                                  vectorize=vectorize)
    with pytest.warns(UndertrainedWarning, match="3 of 3 members barely trained") as record:
        slow.fit(X, y)
    losses = -slow.measure(X, y, "log_proba").mean(axis=1)
    assert np.all(losses > 0.95 * entropy)
    message = str(record[0].message)
    assert f"log-loss of {losses.min():.4g} to {losses.max():.4g} against {entropy:.4g}" \
        in message, message
    trained = SeedEnsembleClassifier(_net(lr=0.1, max_epochs=10), n_seeds=3, random_state=0,
                                     vectorize=vectorize)
    _no_undertrained_warning(lambda: trained.fit(X, y))
    assert np.all(-trained.measure(X, y, "log_proba").mean(axis=1) < 0.95 * entropy)


def test_regressors_that_barely_trained_warn_with_their_squared_error():
    X, y = make_regression(n_samples=80, n_features=4, noise=1.0, random_state=0)
    X, y = X.astype(np.float32), y / y.std()
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(8,), criterion=nn.MSELoss,
                             optimizer=torch.optim.Adam, lr=1e-5, max_epochs=2, batch_size=16,
                             train_split=None, verbose=0)
    slow = SeedEnsembleRegressor(net, n_seeds=4, random_state=0)
    with pytest.warns(UndertrainedWarning) as record:
        slow.fit(X, y)
    error = np.mean((slow.predict_members(X) - y) ** 2, axis=1)
    low = np.flatnonzero(error > 0.95 * np.var(y))  # a random init may explain a little
    assert 0 < len(low) < 4
    span = f"{error[low].min():.4g}" + (f" to {error[low].max():.4g}" if len(low) > 1 else "")
    assert (f"{len(low)} of 4 members barely trained (members {low.tolist()})" in
            str(record[0].message))
    assert f"squared error of {span} against {np.var(y):.4g}" in str(record[0].message)
    trained = SeedEnsembleRegressor(net.set_params(lr=0.02, max_epochs=30), n_seeds=4,
                                    random_state=0)
    _no_undertrained_warning(lambda: trained.fit(X, y))


# -- persistence, parallelism, progress, pandas -------------------------------------------

def test_pickle_and_joblib_round_trip(iris, tmp_path):
    X, y = iris
    ens = SeedEnsembleClassifier(_net(), n_seeds=2, random_state=0).fit(X, y)
    again = pickle.loads(pickle.dumps(ens))
    np.testing.assert_array_equal(ens.predict_proba_members(X), again.predict_proba_members(X))
    joblib.dump(ens, tmp_path / "ens.joblib")
    again = joblib.load(tmp_path / "ens.joblib")
    np.testing.assert_array_equal(ens.measure(X, y), again.measure(X, y))


@pytest.mark.parametrize("vectorize", [False, True])
def test_n_jobs_gives_the_same_members(iris, vectorize):
    X, y = iris
    one = SeedEnsembleClassifier(_net(), n_seeds=3, random_state=0, vectorize=vectorize)
    two = clone(one).set_params(n_jobs=2)
    np.testing.assert_allclose(one.fit(X, y).predict_proba_members(X),
                               two.fit(X, y).predict_proba_members(X), rtol=1e-5, atol=1e-6)


def test_dask_backend(iris):
    distributed = pytest.importorskip("dask.distributed")
    X, y = iris
    ens = SeedEnsembleClassifier(_net(), n_seeds=3, random_state=0, n_jobs=-1,
                                 vectorize=False)
    local = clone(ens).set_params(n_jobs=None).fit(X, y)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        with joblib.parallel_config(backend="dask"):
            remote = clone(ens).fit(X, y)
    np.testing.assert_array_equal(local.predict_proba_members(X),
                                  remote.predict_proba_members(X))


@pytest.mark.parametrize("vectorize", [False, True])
def test_verbose_shows_progress(iris, capsys, vectorize):
    X, y = iris
    SeedEnsembleClassifier(_net(), n_seeds=2, random_state=0, vectorize=vectorize,
                           verbose=2).fit(X, y)
    err = capsys.readouterr().err
    assert ("epoch" if vectorize else "seed") in err and "loss=" in err


def test_pandas_feature_names(iris):
    pd = pytest.importorskip("pandas")
    X, y = iris
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    ens = SeedEnsembleClassifier(_net(), n_seeds=2, random_state=0).fit(frame, pd.Series(y))
    np.testing.assert_array_equal(ens.feature_names_in_, ["a", "b", "c", "d"])
    assert ens.measure(frame, y).shape == (2, len(y))
    with pytest.warns(UserWarning, match="feature names"):
        ens.predict(X)


def test_members_are_usable_on_their_own(digits):
    X, y = digits
    ens = SeedEnsembleClassifier(n_seeds=3, random_state=0).fit(X, y)
    assert ens.vectorized_
    assert ens.score(X, y) > 0.9
    for i, member in enumerate(ens.estimators_):
        np.testing.assert_array_equal(ens.classes_[member.predict(X)],
                                      ens.predict_members(X)[i])
        assert len(member.history) == member.max_epochs


class SoftmaxNet(nn.Module):
    """Outputs probabilities, for NLLLoss: the flattened per-sample loss path."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, X):
        return torch.softmax(self.lin(X.to(self.lin.weight.dtype)), dim=-1)


def test_batched_equals_loop_for_nll_on_probabilities(iris, float64):
    X, y = iris
    net = _net(module=SoftmaxNet, criterion=nn.NLLLoss, max_epochs=5)
    loop = SeedEnsembleClassifier(net, n_seeds=2, random_state=0, vectorize=False).fit(X, y)
    batched = SeedEnsembleClassifier(net, n_seeds=2, random_state=0, vectorize=True).fit(X, y)
    assert batched.vectorized_
    for a, b in zip(loop.estimators_, batched.estimators_):
        _assert_same_params(a, b, rtol=1e-8)


def test_member_outputs_of_one_array_equal_skorchs_loader(digits, monkeypatch):
    """One array goes to the nets in chunks without skorch's per-row loader: the same
    outputs as skorch's forward, across chunk boundaries."""
    from skdtda.ensemble import _seed_ensemble

    X, y = digits
    ens = SeedEnsembleClassifier(_net(), n_seeds=2, random_state=0).fit(X[:300], y[:300])
    monkeypatch.setattr(_seed_ensemble, "_EVAL_CHUNK", 128)  # 300 rows: three chunks
    fast = ens._member_outputs(np.ascontiguousarray(X[:300], dtype=np.float32))
    for member, out in zip(ens.estimators_, fast):
        torch.testing.assert_close(out, member.forward(X[:300], training=False),
                                   rtol=1e-6, atol=1e-6)
