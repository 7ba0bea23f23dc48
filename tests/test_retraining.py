"""retraining=: which retraining without the rows the influence predicts.

Against closed forms on linear regression (first order and the Newton step,
computed in numpy), against the members' own recipes ("auto"), and against
retraining an under-trained model with fewer rows for as many epochs.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, make_regression
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neural_network import MLPClassifier
from skorch import NeuralNetRegressor

from skdtda import InfluenceTransformer, SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.evaluation import (leave_one_out, lds, predict_distributions, random_subsets,
                               retrain_distributions)
from skdtda.influence._retraining import retraining_protocol
from skdtda.nets import MLP

WEIGHT_DECAY = 0.05
DAMPING = 0.1


@pytest.fixture
def linear(float64):
    """A linear regression trained in minibatches with weight decay, with its
    parameters set to half the optimum (training stopped short: grad L != 0)."""
    X, y = make_regression(n_samples=60, n_features=4, noise=1.0, random_state=0)
    y = y / y.std()
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(), criterion=torch.nn.MSELoss,
                             optimizer=torch.optim.SGD, optimizer__weight_decay=WEIGHT_DECAY,
                             lr=0.01, max_epochs=1, batch_size=16, train_split=None, verbose=0)
    ens = SeedEnsembleRegressor(net, n_seeds=1, random_state=0).fit(X, y)
    A = np.hstack([X, np.ones((len(X), 1))])
    n = len(X)
    optimum = np.linalg.solve(2 / n * A.T @ A + WEIGHT_DECAY * np.eye(5), 2 / n * A.T @ y)
    theta = optimum / 2
    layer = ens.estimators_[0].module_[0]
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(theta[None, :-1]))
        layer.bias.copy_(torch.as_tensor(theta[-1:]))
    queries = np.random.RandomState(1).normal(size=(5, X.shape[1]))
    return ens, X, y, A, theta, queries


def _closed_form(A, y, theta, queries, removed, retraining, newton=True):
    """``a_q^T H^{-1} (1/N') sum_{k removed} (g_k - c)``: one Newton step with the
    curvature of the kept rows and ``N'`` of them, or, with ``newton=False``, first
    order with the curvature of all rows and ``N``."""
    rows = ~removed if newton else np.ones(len(A), dtype=bool)
    n_rows = rows.sum()
    g = 2 * A * (A @ theta - y)[:, None]  # per-row gradients of the squared error
    centre = (-WEIGHT_DECAY * theta if retraining == "same_epochs" else g.mean(axis=0))
    H = 2 / n_rows * A[rows].T @ A[rows] + (WEIGHT_DECAY + DAMPING) * np.eye(A.shape[1])
    step = np.linalg.solve(H, (g[removed] - centre).sum(axis=0) / n_rows)
    return np.hstack([queries, np.ones((len(queries), 1))]) @ step


@pytest.mark.parametrize("retraining", ["same_epochs", "same_steps"])
@pytest.mark.parametrize("curvature, options", [
    ("exact", None), ("ggn", {"form": "dense"}), ("ggn", {"form": "kernel"}), ("ekfac", None)])
def test_first_order_and_newton_match_the_closed_form(linear, retraining, curvature, options):
    ens, X, y, A, theta, queries = linear
    n = len(X)
    influence = InfluenceTransformer(ens, curvature=curvature, damping=DAMPING,
                                     curvature_options=options, measurement="prediction",
                                     retraining=retraining).fit(X, y)
    assert influence.retraining_ == retraining
    delta = influence.influence_samples(queries)[0]
    for k in (0, 7, 33):
        first = _closed_form(A, y, theta, queries, np.arange(n) == k, retraining, newton=False)
        np.testing.assert_allclose(delta[:, k], first, rtol=1e-6, atol=1e-9)
    remove = np.random.RandomState(0).choice(n, 18, replace=False)
    removed = np.isin(np.arange(n), remove)
    newton = InfluenceTransformer(ens, curvature=curvature, damping=DAMPING,
                                  curvature_options=options, measurement="prediction",
                                  retraining=retraining, correction="newton").fit(X, y)
    change = newton.predict_removal(queries, remove=remove)[0] - newton.measure(queries)[0]
    np.testing.assert_allclose(change, _closed_form(A, y, theta, queries, removed, retraining),
                               rtol=1e-6, atol=1e-9)
    if curvature != "ekfac":  # single rows: the low-rank (Woodbury) update
        pred = predict_distributions(newton, queries, remove=leave_one_out(n, [0, 7]))
        for i, k in enumerate([0, 7]):
            np.testing.assert_allclose(
                pred.after[i, 0] - pred.before[0],
                _closed_form(A, y, theta, queries, np.arange(n) == k, retraining),
                rtol=1e-6, atol=1e-9)


def test_the_protocols_differ_by_the_objective_gradient_and_agree_at_its_zero(linear):
    ens, X, y, A, theta, queries = linear
    n = len(X)

    def samples(retraining):
        return InfluenceTransformer(ens, curvature="exact", damping=DAMPING,
                                    measurement="prediction",
                                    retraining=retraining).fit(X, y).influence_samples(queries)

    # a shift common to every row: (1/N) a_q^T (H + damping I)^{-1} grad L
    gap = samples("same_epochs") - samples("same_steps")
    g = 2 * A * (A @ theta - y)[:, None]
    H = 2 / n * A.T @ A + (WEIGHT_DECAY + DAMPING) * np.eye(5)
    full = g.mean(axis=0) + WEIGHT_DECAY * theta
    expected = np.hstack([queries, np.ones((5, 1))]) @ np.linalg.solve(H, full) / n
    # a real difference: 5% of the largest row score here (each row carries 1/N of it)
    assert np.abs(expected).max() > 0.02 * np.abs(samples("same_steps")).max()
    np.testing.assert_allclose(gap[0], np.repeat(expected[:, None], n, axis=1), rtol=1e-6)
    # at the optimum grad L = 0 and the two are one prediction
    optimum = np.linalg.solve(2 / n * A.T @ A + WEIGHT_DECAY * np.eye(5), 2 / n * A.T @ y)
    layer = ens.estimators_[0].module_[0]
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(optimum[None, :-1]))
        layer.bias.copy_(torch.as_tensor(optimum[-1:]))
    np.testing.assert_allclose(samples("same_epochs"), samples("same_steps"), rtol=1e-7,
                               atol=1e-12)


def test_auto_reads_the_members_recipe(float64):
    X, y = make_regression(n_samples=80, n_features=4, random_state=0)
    y = y / y.std()
    labels = (y > 0).astype(int)

    def skorch(batch_size, **kwargs):
        net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(4,),
                                 criterion=torch.nn.MSELoss, lr=0.01, max_epochs=2,
                                 batch_size=batch_size, train_split=None, verbose=0, **kwargs)
        return SeedEnsembleRegressor(net, n_seeds=2, random_state=0).fit(X, y)

    def chosen(ens, n=len(X)):
        return retraining_protocol(ens.estimators_, n)[0]

    assert chosen(skorch(16)) == "same_epochs"
    assert chosen(skorch(-1)) == "same_steps"
    assert chosen(skorch(200)) == "same_steps"  # one batch holds every row
    assert chosen(skorch(200, iterator_train__batch_size=8)) == "same_epochs"
    sgd = SeedEnsembleClassifier(SGDClassifier(loss="log_loss", max_iter=5, tol=None), n_seeds=2,
                                 random_state=0).fit(X, labels)
    assert chosen(sgd) == "same_epochs"
    for model in (MLPClassifier((4,), solver="lbfgs", max_iter=20),
                  MLPClassifier((4,), batch_size=100, max_iter=5),
                  LogisticRegression()):
        ens = SeedEnsembleClassifier(model, n_seeds=2, random_state=0).fit(X, labels)
        assert chosen(ens) == "same_steps", model
    minibatch = SeedEnsembleClassifier(MLPClassifier((4,), batch_size=20, max_iter=5),
                                       n_seeds=2, random_state=0).fit(X, labels)
    assert chosen(minibatch) == "same_epochs"
    # the transformer records what "auto" chose, and a given value as given
    assert InfluenceTransformer(skorch(16)).fit(X, y).retraining_ == "same_epochs"
    assert InfluenceTransformer(skorch(16), retraining="same_steps").fit(X, y).retraining_ == (
        "same_steps")
    with pytest.raises(ValueError, match="retraining"):
        InfluenceTransformer(skorch(16), retraining="epochs").fit(X, y)


def test_same_epochs_predicts_the_offset_of_fewer_steps():
    """A linear model after 3 epochs of SGD is far from its optimum, so removing 30%
    of the rows and retraining for 3 epochs (30% fewer steps) raises the query loss
    on average. "same_epochs" predicts that offset (0.024 of the retrained 0.061
    when this test was written) and ranks the sets' Wasserstein distances as
    retraining does (0.75); "same_steps" centres the changes on zero (-0.004,
    Wasserstein-LDS 0.12)."""
    X, y = load_diabetes(return_X_y=True)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    y = ((y - y.mean()) / y.std()).astype(np.float32)
    order = np.random.RandomState(0).permutation(len(X))
    train, test = order[:200], order[200:240]
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(), criterion=torch.nn.MSELoss,
                             optimizer=torch.optim.SGD, lr=0.01, max_epochs=3, batch_size=20,
                             train_split=None, verbose=0)
    ens = SeedEnsembleRegressor(net, n_seeds=16, random_state=0).fit(X[train], y[train])
    sets = random_subsets(200, 8, keep_fraction=0.7, random_state=1)
    truth = retrain_distributions(ens, X[train], y[train], X[test], y[test], remove=sets,
                                  n_seeds=64, random_state=2)

    def offset(distributions):
        before, after = distributions
        return float((after.mean(axis=1) - before.mean(axis=0)[None]).mean())

    predicted = {}
    for retraining in ("same_epochs", "same_steps"):
        influence = InfluenceTransformer(ens, retraining=retraining).fit(X[train], y[train])
        predicted[retraining] = predict_distributions(influence, X[test], y[test], remove=sets)
    retrained = offset(truth)
    assert retrained > 0.02
    assert 0.2 * retrained < offset(predicted["same_epochs"]) < 1.2 * retrained
    assert abs(offset(predicted["same_steps"])) < 0.15 * retrained
    w2 = {r: lds(p, truth, "wasserstein") for r, p in predicted.items()}
    assert w2["same_epochs"] > 0.5 and w2["same_epochs"] > w2["same_steps"] + 0.3, w2
    # the mean-LDS does not depend on the protocol: the shift is common to the sets
    assert lds(predicted["same_epochs"], truth, "mean") == pytest.approx(
        lds(predicted["same_steps"], truth, "mean"), abs=1e-9)
