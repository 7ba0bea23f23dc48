"""UnrolledInfluence against the member's own training, finite differences of
perturbed training runs, and the exact-Hessian influence function."""

import numpy as np
import pytest
from joblib import parallel_config
import torch
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks
from skorch import NeuralNetClassifier, NeuralNetRegressor

from skdtda import (InfluenceTransformer, SeedEnsembleClassifier, SeedEnsembleRegressor,
                    UnrolledInfluence)
from skdtda.model import batch_order
from skdtda.ensemble import initialize_member as _initialize_member
from skdtda.influence import unrolled_response
from skdtda.measurements import get_measurement
from skdtda.nets import MLP


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _net(optimizer=torch.optim.SGD, hidden=(6,), epochs=4, batch_size=32, lr=0.05, **kw):
    return NeuralNetClassifier(MLP, module__hidden_layer_sizes=hidden,
                               criterion=torch.nn.CrossEntropyLoss, optimizer=optimizer, lr=lr,
                               max_epochs=epochs, batch_size=batch_size, train_split=None,
                               verbose=0, **kw)


OPTIMIZERS = {
    "sgd-momentum-wd": (torch.optim.SGD, dict(optimizer__momentum=0.9,
                                              optimizer__weight_decay=1e-2)),
    "sgd-nesterov-dampening": (torch.optim.SGD, dict(optimizer__momentum=0.8,
                                                     optimizer__nesterov=True,
                                                     optimizer__weight_decay=1e-3)),
    "sgd-dampening": (torch.optim.SGD, dict(optimizer__momentum=0.5,
                                            optimizer__dampening=0.3)),
    "adam-wd": (torch.optim.Adam, dict(optimizer__weight_decay=1e-2)),
    "adamw": (torch.optim.AdamW, {}),  # AdamW's default weight_decay is 0.01
}


@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_replay_reproduces_each_members_training(iris, float64, name, vectorize):
    X, y = iris
    optimizer, kw = OPTIMIZERS[name]
    lr = 0.01 if optimizer is not torch.optim.SGD else 0.05
    ens = SeedEnsembleClassifier(_net(optimizer, lr=lr, epochs=2, **kw), n_seeds=2,
                                 random_state=0, vectorize=vectorize).fit(X, y)
    influence = UnrolledInfluence(ens, n_tangents=151).fit(X, y)
    # same initialisation, same minibatches, same arithmetic: float64 round-off only
    assert influence.replay_error_.max() < 1e-12, influence.replay_error_


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_hand_written_step_equals_torch_func(iris, float64, activation, kind):
    """Plain MLPs take a hand-written forward-over-reverse step; it must give the
    tangents that vmap(jvp(grad)) gives."""
    from skdtda.influence.unrolled._replay import _Replay, _removal_directions

    X, y = iris
    if kind == "classifier":
        ens = SeedEnsembleClassifier(_net(torch.optim.Adam, hidden=(6, 5), lr=0.02, epochs=2,
                                          module__activation=activation), n_seeds=1,
                                     random_state=0).fit(X, y)
    else:
        y = X[:, 0] - X[:, 1] ** 2
        X = X[:, 1:]
        net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(6, 5),
                                 module__activation=activation, criterion=torch.nn.MSELoss,
                                 optimizer=torch.optim.SGD, optimizer__momentum=0.9, lr=0.02,
                                 max_epochs=2, batch_size=32, train_split=None, verbose=0)
        ens = SeedEnsembleRegressor(net, n_seeds=1, random_state=0).fit(X, y)
    replay = _Replay(ens.estimators_[0], ens.init_seeds_[0], ens.order_seeds_[0], X,
                     ens._net_targets(y), kind)
    assert replay.fast is not None
    directions = torch.cat([_removal_directions(np.arange(10), len(X), torch.float64),
                            torch.ones(1, len(X))])
    theta_fast, fast = replay.run(directions)
    replay.fast = None
    theta_func, func = replay.run(directions)
    np.testing.assert_allclose(theta_fast, theta_func, rtol=0, atol=1e-13)
    np.testing.assert_allclose(fast, func, rtol=0, atol=1e-12 * func.abs().max().item())


@pytest.mark.parametrize("path", ["hand-written", "torch.func"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_reverse_sweep_is_the_transpose_of_the_forward_replay(iris, float64, name, path):
    """c^T (d theta_T / d w_n) from one backward sweep equals the forward tangents
    contracted with c, for every row n: checkpointed recomputation, the optimizer
    adjoints and the per-row derivatives together."""
    from skdtda.influence.unrolled._replay import _Replay

    X, y = iris
    optimizer, kw = OPTIMIZERS[name]
    lr = 0.01 if optimizer is not torch.optim.SGD else 0.05
    # 3 epochs of 5 batches: 15 steps
    ens = SeedEnsembleClassifier(_net(optimizer, hidden=(6, 5), lr=lr, epochs=3, **kw),
                                 n_seeds=1, random_state=0).fit(X, y)
    replay = _Replay(ens.estimators_[0], ens.init_seeds_[0], ens.order_seeds_[0], X,
                     ens._net_targets(y), "classifier")
    if path == "torch.func":
        replay.fast = None
    theta, tangents = replay.run(torch.eye(len(X)))  # (n, P): d theta_T / d w_n
    cotangents = torch.randn(5, len(theta), generator=torch.Generator().manual_seed(0))
    expected = cotangents @ tangents.T
    # 15 steps held whole (budget 64), in two levels (10), in deeper levels that end
    # in the quadratic fallback (6, 4)
    for budget in (None, 10, 6, 4):
        theta_reverse, weights_bar = replay.adjoint(cotangents, budget=budget)
        # the sweep's primal replay takes the gradient without vmap: round-off apart
        np.testing.assert_allclose(theta_reverse, theta, rtol=0, atol=1e-14)
        np.testing.assert_allclose(weights_bar, expected, rtol=0,
                                   atol=1e-12 * expected.abs().max().item())


def test_reverse_sweep_of_a_single_step(iris, float64):
    """One full-batch step: the sweep's edge case (one snapshot)."""
    from skdtda.influence.unrolled._replay import _Replay

    X, y = iris
    ens = SeedEnsembleClassifier(_net(batch_size=-1, epochs=1, optimizer__momentum=0.9),
                                 n_seeds=1, random_state=0).fit(X, y)
    replay = _Replay(ens.estimators_[0], ens.init_seeds_[0], ens.order_seeds_[0], X,
                     ens._net_targets(y), "classifier")
    _, tangents = replay.run(torch.eye(len(X)))
    cotangents = torch.randn(3, tangents.shape[1], generator=torch.Generator().manual_seed(1))
    _, weights_bar = replay.adjoint(cotangents)
    expected = cotangents @ tangents.T
    np.testing.assert_allclose(weights_bar, expected, rtol=0,
                               atol=1e-12 * expected.abs().max().item())


def test_reverse_and_forward_modes_give_the_same_scores(iris, float64):
    X, y = iris
    optimizer, kw = OPTIMIZERS["adam-wd"]
    ens = SeedEnsembleClassifier(_net(optimizer, lr=0.01, **kw), n_seeds=3,
                                 random_state=0).fit(X, y)
    forward = UnrolledInfluence(ens, mode="forward", statistic="wasserstein").fit(X, y)
    # 70 queries in two sweeps of 64 cotangents
    reverse = UnrolledInfluence(ens, mode="reverse", statistic="wasserstein").fit(X, y)
    assert (forward.mode_, reverse.mode_) == ("forward", "reverse")
    assert not hasattr(reverse, "responses_")
    np.testing.assert_array_equal(reverse.replay_error_, forward.replay_error_)
    queries = np.arange(0, 140, 2)
    expected = forward.influence_samples(X[queries], y[queries])
    np.testing.assert_allclose(reverse.influence_samples(X[queries], y[queries]), expected,
                               rtol=1e-9, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(reverse.transform(X[:5]), forward.transform(X[:5]),
                               rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(reverse.predict_removal(X[:5], remove=[3, 40]),
                               forward.predict_removal(X[:5], remove=[3, 40]), rtol=1e-10)
    # auto: forward when two replays hold every row, reverse otherwise
    assert UnrolledInfluence(ens, n_tangents=76).fit(X, y).mode_ == "forward"
    assert UnrolledInfluence(ens, n_tangents=75).fit(X, y).mode_ == "reverse"
    # refitting in the other mode drops the forward responses
    forward.set_params(mode="reverse").fit(X, y)
    assert not hasattr(forward, "responses_")


def _perturbed_run(net, init_seed, order_seed, X, y, weights):
    """Train a copy of ``net`` with torch's own optimizer, rows weighted in each batch mean.

    Independent of the replay: torch.optim performs the updates, autograd the
    gradients; only the initialisation and the minibatch order are shared with
    the member's training.
    """
    from sklearn.base import clone

    start = _initialize_member(clone(net), init_seed)
    module = start.module_
    optimizer = start.optimizer_
    loss_fn = get_measurement("loss", "classifier")
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    weights = torch.as_tensor(weights)
    generator = torch.Generator().manual_seed(int(order_seed))
    for _ in range(net.max_epochs):
        order = batch_order(generator, len(X), True)
        for s in range(0, len(X), net.batch_size):
            idx = order[s:s + net.batch_size]
            optimizer.zero_grad()
            loss = (loss_fn(start, module(X[idx]), y[idx]) * weights[idx]).mean()
            loss.backward()
            optimizer.step()
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).numpy()


@pytest.mark.parametrize("name", ["sgd-momentum-wd", "adam-wd", "adamw"])
def test_response_equals_finite_differences_of_perturbed_training(iris, float64, name):
    """The exact truth for the first-order unrolled derivative: the training run
    itself, with the removed row's weight moved by +-h (central differences)."""
    X, y = iris
    optimizer, kw = OPTIMIZERS[name]
    lr = 0.01 if optimizer is not torch.optim.SGD else 0.05
    ens = SeedEnsembleClassifier(_net(optimizer, lr=lr, epochs=3, **kw), n_seeds=1,
                                 random_state=0).fit(X, y)
    influence = UnrolledInfluence(ens, mode="forward").fit(X, y)
    member = ens.estimators_[0]
    n, h = len(X), 1e-5
    for k in (7, 80):
        # removing k from the mean over the rest: w = -e_k + 1/N at eps = 1
        direction = np.full(n, 1 / n)
        direction[k] -= 1
        plus, minus = (_perturbed_run(member, ens.init_seeds_[0], ens.order_seeds_[0], X, y,
                                      1 + sign * h * direction) for sign in (1, -1))
        finite_difference = (plus - minus) / (2 * h)
        response = influence.responses_[0][k].numpy()
        np.testing.assert_allclose(response, finite_difference, rtol=1e-5,
                                   atol=1e-7 * np.abs(finite_difference).max())


def test_set_removal_is_the_replayed_set_direction(iris, float64):
    """A set carried as one tangent equals the sum of its rows' tangents, and
    predict_removal adds the per-row measurement changes."""
    X, y = iris
    optimizer, kw = OPTIMIZERS["sgd-momentum-wd"]
    ens = SeedEnsembleClassifier(_net(optimizer, **kw), n_seeds=2, random_state=0).fit(X, y)
    influence = UnrolledInfluence(ens, mode="forward").fit(X, y)
    removed = [3, 50, 120]
    theta, response = unrolled_response(ens.estimators_[1], ens.init_seeds_[1],
                                        ens.order_seeds_[1], X, ens._net_targets(y),
                                        remove=[removed, [3]])
    np.testing.assert_allclose(response[0], influence.responses_[1][removed].sum(0),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(response[1], influence.responses_[1][3], rtol=1e-9, atol=1e-12)
    mask = np.zeros(len(X), dtype=bool)
    mask[removed] = True
    _, from_mask = unrolled_response(ens.estimators_[1], ens.init_seeds_[1],
                                     ens.order_seeds_[1], X, ens._net_targets(y),
                                     remove=mask[None])
    np.testing.assert_allclose(from_mask[0], response[0])
    samples = influence.predict_removal(X[:4], y[:4], remove=removed)
    delta = influence.influence_samples(X[:4], y[:4])
    np.testing.assert_allclose(samples, influence.measure(X[:4], y[:4])
                               + delta[:, :, removed].sum(axis=2))


def _logistic(batch_size, lr, epochs, momentum=0.0):
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(),
                              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                              optimizer__weight_decay=0.1, optimizer__momentum=momentum, lr=lr,
                              batch_size=batch_size, max_epochs=epochs, train_split=None,
                              verbose=0)
    return SeedEnsembleClassifier(net, n_seeds=1, random_state=0)


def test_long_full_batch_training_converges_to_the_exact_influence_function(iris, float64):
    """Theorem 2 on L2-logistic regression: gradient descent run to convergence."""
    X, y = iris
    ens = _logistic(batch_size=-1, lr=0.5, epochs=600, momentum=0.9).fit(X, y)
    exact = InfluenceTransformer(ens, curvature="exact", damping=0).fit(X, y)
    queries = [0, 60, 120, 75]
    inf = exact.influence_samples(X[queries], y[queries])
    for mode in ("forward", "reverse"):
        unrolled = UnrolledInfluence(ens, mode=mode).fit(X, y)
        ud = unrolled.influence_samples(X[queries], y[queries])
        np.testing.assert_allclose(ud, inf, rtol=1e-6, atol=1e-9 * np.abs(inf).max())


def test_long_small_step_sgd_approaches_the_exact_influence_function(iris, float64):
    """Minibatch SGD with a small step: the unrolled response converges to the IF."""
    X, y = iris
    queries = [0, 60, 120, 75]
    errors, correlations = {}, {}
    for epochs in (5, 300):
        ens = _logistic(batch_size=50, lr=0.05, epochs=epochs).fit(X, y)
        ud = UnrolledInfluence(ens, n_tangents=151).fit(X, y).influence_samples(
            X[queries], y[queries])
        inf = InfluenceTransformer(ens, curvature="exact", damping=0).fit(X, y) \
            .influence_samples(X[queries], y[queries])
        errors[epochs] = np.linalg.norm(ud - inf) / np.linalg.norm(inf)
        correlations[epochs] = np.corrcoef(ud.ravel(), inf.ravel())[0, 1]
    # 0.5% and 0.99999 when written; 900 steps of SGD noise remain
    assert errors[300] < 0.02, errors
    assert correlations[300] > 0.9995, correlations
    # and it is the training length that closes the gap
    assert errors[5] > 10 * errors[300], errors


def test_regressor_and_measurements(float64):
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X, y = StandardScaler().fit_transform(X)[:80], (y[:80] - y.mean()) / y.std()
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(5,), criterion=torch.nn.MSELoss,
                             optimizer=torch.optim.Adam, lr=0.01, max_epochs=3, batch_size=16,
                             train_split=None, verbose=0)
    ens = SeedEnsembleRegressor(net, n_seeds=2, random_state=0).fit(X, y)
    influence = UnrolledInfluence(ens, measurement="prediction", statistic="variance").fit(X, y)
    assert influence.replay_error_.max() < 1e-12
    assert influence.transform(X[:5]).shape == (5, 80)
    delta = influence.influence_samples(X[:5])
    assert delta.shape == (2, 5, 80) and np.all(np.isfinite(delta))


def test_module_instance_replays_from_the_untrained_weights(iris, float64):
    """A module passed as an instance: the start is the ensemble's template, not a
    clone of the trained member (which would carry the trained weights)."""
    X, y = iris
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    net = NeuralNetClassifier(module, criterion=torch.nn.CrossEntropyLoss, max_epochs=3, lr=0.1,
                              train_split=None, verbose=0)
    ens = SeedEnsembleClassifier(net, n_seeds=2, random_state=0).fit(X, y)
    influence = UnrolledInfluence(ens).fit(X, y)
    assert influence.replay_error_.max() < 1e-12, influence.replay_error_


def test_unsupported_nets_raise_naming_the_reason(iris):
    X, y = iris
    cases = {
        "RMSprop": _net(torch.optim.RMSprop),
        "amsgrad": _net(torch.optim.Adam, optimizer__amsgrad=True),
        "Dropout": NeuralNetClassifier(
            torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5),
                                torch.nn.Linear(8, 3)),
            criterion=torch.nn.CrossEntropyLoss, max_epochs=1, train_split=None, verbose=0),
        "maximize": _net(torch.optim.SGD, optimizer__maximize=True),
    }
    for word, net in cases.items():
        ens = SeedEnsembleClassifier(net, n_seeds=1, random_state=0, vectorize=False)
        with pytest.raises(ValueError, match=word):
            UnrolledInfluence(ens).fit(X, y)


def test_replay_warns_when_the_ensemble_saw_other_rows(iris):
    X, y = iris
    ens = SeedEnsembleClassifier(_net(), n_seeds=1, random_state=0).fit(X, y)
    # the training-data fingerprint refuses the rows at once ...
    with pytest.raises(ValueError, match="same rows .* in another order"):
        UnrolledInfluence(ens).fit(X[::-1], y[::-1])
    # ... and the replay still notices where there is none (an ensemble from before it)
    del ens.training_fingerprint_
    with pytest.warns(UserWarning, match="replay of member 0"):
        UnrolledInfluence(ens).fit(X[::-1], y[::-1])


def test_seed_index_and_unfitted_estimator(iris):
    X, y = iris
    ens = SeedEnsembleClassifier(_net(), n_seeds=2, random_state=0)
    one = UnrolledInfluence(ens, seed_index=1).fit(X, y)
    both = UnrolledInfluence(ens).fit(X, y)
    assert not hasattr(ens, "estimators_")  # the parameter is cloned, not fitted
    np.testing.assert_allclose(one.influence_samples(X[:3], y[:3])[0],
                               both.influence_samples(X[:3], y[:3])[1], rtol=1e-5)
    with pytest.raises(ValueError, match="seed_index=5"):
        UnrolledInfluence(ens, seed_index=5).fit(X, y)


def test_n_jobs_gives_the_same_scores(iris):
    X, y = iris
    ens = SeedEnsembleClassifier(_net(), n_seeds=2, random_state=0).fit(X, y)
    one = UnrolledInfluence(ens, n_tangents=50).fit(X, y).influence_samples(X[:3], y[:3])
    # threads: worker processes would spend ~30 s importing torch on a 2-core machine
    with parallel_config(backend="threading"):
        two = UnrolledInfluence(ens, n_tangents=50, n_jobs=2).fit(X, y).influence_samples(
            X[:3], y[:3])
    np.testing.assert_array_equal(one, two)


def test_memory_resumes_an_interrupted_fit_and_caches_sweeps(iris, tmp_path, monkeypatch):
    """A long fit that is interrupted loses no finished replay; reverse-mode sweeps of
    the same queries are not repeated."""
    from skdtda.influence.unrolled import _replay

    X, y = iris
    ens = SeedEnsembleClassifier(_net(), n_seeds=2, random_state=0).fit(X, y)
    # 151 directions in 4 batches of 40, for 2 members: 8 replays
    expected = UnrolledInfluence(ens, mode="forward", n_tangents=40).fit(X, y).responses_
    calls, interrupt = [], [3]
    run, adjoint = _replay._Replay.run, _replay._Replay.adjoint

    def counting_run(self, directions):
        calls.append("run")
        if len(calls) == interrupt[0]:
            raise KeyboardInterrupt
        return run(self, directions)

    def counting_adjoint(self, cotangents, budget=None):
        calls.append("adjoint")
        return adjoint(self, cotangents, budget)

    monkeypatch.setattr(_replay._Replay, "run", counting_run)
    monkeypatch.setattr(_replay._Replay, "adjoint", counting_adjoint)
    cached = UnrolledInfluence(ens, mode="forward", n_tangents=40, memory=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        cached.fit(X, y)
    calls.clear()
    interrupt[0] = None
    cached.fit(X, y)
    assert calls == ["run"] * 6  # the 2 replays that had finished came from disk
    for resumed, direct in zip(cached.responses_, expected):
        np.testing.assert_array_equal(resumed, direct)

    reverse = UnrolledInfluence(ens, mode="reverse", memory=str(tmp_path)).fit(X, y)
    calls.clear()
    first = reverse.influence_samples(X[:5], y[:5])
    assert calls == ["adjoint"] * 2  # one sweep per member
    np.testing.assert_array_equal(reverse.influence_samples(X[:5], y[:5]), first)
    assert calls == ["adjoint"] * 2  # the second call swept nothing
    reverse.influence_samples(X[5:10], y[5:10])
    assert calls == ["adjoint"] * 4  # other queries are other sweeps
    with pytest.raises(ValueError, match="memory"):
        UnrolledInfluence(ens, memory=3).fit(X, y)


def _tiny_classifier():
    return SeedEnsembleClassifier(_net(torch.optim.SGD, hidden=(8,), epochs=5,
                                       optimizer__momentum=0.9), n_seeds=2, random_state=0)


def _tiny_regressor():
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(8,), criterion=torch.nn.MSELoss,
                             optimizer=torch.optim.Adam, lr=0.01, max_epochs=5, batch_size=32,
                             train_split=None, verbose=0)
    return SeedEnsembleRegressor(net, n_seeds=2, random_state=0)


# No expected failures: both pass check_methods_subset_invariance, which the
# float32 ensembles of test_common.py can fail (xfails are strict).
@parametrize_with_checks(
    [UnrolledInfluence(_tiny_classifier()),
     UnrolledInfluence(_tiny_regressor(), statistic="wasserstein")])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_param_validation():
    check_param_validation("UnrolledInfluence", UnrolledInfluence(_tiny_classifier()))
