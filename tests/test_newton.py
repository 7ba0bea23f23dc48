"""correction="newton": one Newton step with the curvature of the kept rows, against the truth.

The truth is a refit computed independently of the library: ridge regression
in closed form (a quadratic objective, where one Newton step is exact), and
L2-logistic regression refitted by Newton's method in numpy.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, make_regression
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from skorch import NeuralNetClassifier, NeuralNetRegressor

from skdtda import InfluenceTransformer, SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.evaluation import leave_one_out, predict_distributions
from skdtda.nets import MLP

WEIGHT_DECAY = 0.05


def _set_linear(ens, weight, bias):
    layer = ens.estimators_[0].module_[0]
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))


def _ridge_theta(A, y, wd):
    """Minimiser of mean_i (a_i^T theta - y_i)^2 + wd/2 |theta|^2 (MSELoss is a mean,
    the optimizer's weight decay a fixed term on every parameter, bias included)."""
    n = len(A)
    return np.linalg.solve(2 / n * A.T @ A + wd * np.eye(A.shape[1]), 2 / n * A.T @ y)


@pytest.fixture
def ridge(float64):
    X, y = make_regression(n_samples=60, n_features=4, noise=1.0, random_state=0)
    X[:3] *= 5  # a few high-leverage rows
    y = y / y.std()
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(), criterion=torch.nn.MSELoss,
                             optimizer=torch.optim.SGD, optimizer__weight_decay=WEIGHT_DECAY,
                             lr=0.01, max_epochs=1, batch_size=-1, train_split=None, verbose=0)
    ens = SeedEnsembleRegressor(net, n_seeds=1, random_state=0).fit(X, y)
    A = np.hstack([X, np.ones((len(X), 1))])
    theta = _ridge_theta(A, y, WEIGHT_DECAY)
    _set_linear(ens, theta[None, :-1], theta[-1:])  # the exact optimum
    queries = np.random.RandomState(1).normal(size=(5, X.shape[1])) * 2
    return ens, X, y, A, theta, queries


def _refit_change(A, y, theta, keep, queries):
    refit = _ridge_theta(A[keep], y[keep], WEIGHT_DECAY)
    Aq = np.hstack([queries, np.ones((len(queries), 1))])
    return Aq @ (refit - theta)


SOLVERS = [("exact", None), ("ggn", {"form": "dense"}), ("ggn", {"form": "kernel"})]


@pytest.mark.parametrize("curvature, options", SOLVERS)
def test_newton_is_exact_leave_one_out_on_ridge_regression(ridge, curvature, options):
    ens, X, y, A, theta, queries = ridge
    influence = InfluenceTransformer(ens, curvature=curvature, damping=0,
                                     curvature_options=options, measurement="prediction",
                                     correction="newton").fit(X, y)
    delta = influence.influence_samples(queries)[0]  # (n_query, n_train)
    truth = np.stack([_refit_change(A, y, theta, np.arange(len(X)) != k, queries)
                      for k in range(len(X))], axis=1)
    np.testing.assert_allclose(delta, truth, rtol=1e-8, atol=1e-10 * np.abs(truth).max())
    first = InfluenceTransformer(ens, curvature=curvature, damping=0, curvature_options=options,
                                 measurement="prediction").fit(X, y)
    first_delta = first.influence_samples(queries)[0]
    # first order is visibly off on the high-leverage rows, which is what newton fixes
    assert np.abs(first_delta[:, :3] - truth[:, :3]).max() > 1e-2 * np.abs(truth[:, :3]).max()
    # transform ("mean" over one seed) is the same per-row change
    np.testing.assert_allclose(influence.transform(queries), delta, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("curvature, options", SOLVERS + [
    ("cg", {"maxiter": 50, "tol": 1e-13}), ("pcg", {"maxiter": 50, "tol": 1e-13}),
    ("kfac", None), ("ekfac", None)])
def test_newton_is_exact_for_removal_sets_on_ridge_regression(ridge, curvature, options):
    ens, X, y, A, theta, queries = ridge
    n = len(X)
    remove = np.random.RandomState(0).choice(n, int(0.3 * n), replace=False)
    remove = np.union1d(remove, [0, 1])  # with high-leverage rows
    keep = ~np.isin(np.arange(n), remove)
    influence = InfluenceTransformer(ens, curvature=curvature, damping=0,
                                     curvature_options=options, measurement="prediction",
                                     correction="newton").fit(X, y)
    before = influence.measure(queries)[0]
    after = influence.predict_removal(queries, remove=remove)[0]
    truth = _refit_change(A, y, theta, keep, queries)
    rtol = 1e-8 if curvature in ("exact", "ggn") else 1e-6
    np.testing.assert_allclose(after - before, truth, rtol=rtol,
                               atol=rtol * np.abs(truth).max())
    # the evaluation helper gives the same, for one-row and larger sets together
    masks = np.vstack([leave_one_out(n, [0, 5]), keep[None] == 0])
    pred = predict_distributions(influence, queries, remove=masks)
    np.testing.assert_allclose(pred.after[2, 0], after, rtol=1e-10)
    if curvature in ("exact", "ggn"):  # one-row sets go through the Woodbury update
        for i, k in enumerate([0, 5]):
            np.testing.assert_allclose(
                pred.after[i, 0] - before,
                _refit_change(A, y, theta, np.arange(n) != k, queries), rtol=1e-8,
                atol=1e-10)


def test_first_order_is_unchanged_by_default(ridge):
    ens, X, y, A, theta, queries = ridge
    remove = [0, 4, 9]
    default = InfluenceTransformer(ens, curvature="ggn", measurement="prediction").fit(X, y)
    explicit = InfluenceTransformer(ens, curvature="ggn", measurement="prediction",
                                    correction=None).fit(X, y)
    assert default.correction is None
    delta = default.influence_samples(queries)
    np.testing.assert_array_equal(delta, explicit.influence_samples(queries))
    np.testing.assert_array_equal(default.predict_removal(queries, remove=remove)[0],
                                  default.measure(queries)[0] + delta[0][:, remove].sum(axis=1))


def test_kfac_set_removal_equals_the_dense_newton_step(float64):
    """Single-output linear regression: K-FAC is the exact GGN, and so is its refit."""
    X, y = make_regression(n_samples=80, n_features=4, noise=0.5, random_state=0)
    y = y / y.std()
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(), criterion=torch.nn.MSELoss,
                             optimizer=torch.optim.SGD, optimizer__weight_decay=1e-2, lr=0.05,
                             max_epochs=20, batch_size=16, train_split=None, verbose=0)
    ens = SeedEnsembleRegressor(net, n_seeds=2, random_state=0).fit(X, y)
    remove = np.random.RandomState(0).choice(len(X), 24, replace=False)
    dense = InfluenceTransformer(ens, curvature="ggn", damping=1e-4,
                                 correction="newton").fit(X, y)
    expected = dense.predict_removal(X[:6], y[:6], remove=remove)
    first = InfluenceTransformer(ens, curvature="ggn", damping=1e-4).fit(X, y)
    assert not np.allclose(first.predict_removal(X[:6], y[:6], remove=remove), expected,
                           rtol=1e-3)
    for kind in ("kfac", "ekfac"):
        approx = InfluenceTransformer(ens, curvature=kind, damping=1e-4,
                                      correction="newton").fit(X, y)
        np.testing.assert_allclose(approx.predict_removal(X[:6], y[:6], remove=remove),
                                   expected, rtol=1e-6)
        with pytest.raises(ValueError, match="single rows"):
            approx.influence_samples(X[:2], y[:2])


def _softmax_newton(A, Y, wd, theta, steps=30):
    """Minimise mean_i CE(softmax(Theta a_i), y_i) + wd/2 |Theta|^2 by Newton's method.

    Theta is (K, d+1) = [weight | bias], flattened row-major in the Hessian."""
    n, d = A.shape
    k = Y.shape[1]
    for _ in range(steps):
        z = A @ theta.T
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - Y).T @ A / n + wd * theta
        cov = np.einsum("nk,kl->nkl", p, np.eye(k)) - np.einsum("nk,nl->nkl", p, p)
        hess = np.einsum("nkl,nj,nm->kjlm", cov, A, A).reshape(k * d, k * d) / n
        hess += wd * np.eye(k * d)
        step = np.linalg.solve(hess, grad.reshape(-1)).reshape(k, d)
        theta = theta - step
        if np.abs(step).max() < 1e-13:
            break
    return theta


def test_newton_fixes_the_leave_one_out_size_on_logistic_regression(float64):
    """The issue's example: exact influence on L2-logistic regression against
    leave-one-out retraining. First order under-predicts the change on the
    high-leverage rows; one Newton step with the kept rows' curvature does not."""
    data = load_breast_cancer()
    X = StandardScaler().fit_transform(data.data)
    rng = np.random.RandomState(0)
    order = rng.permutation(len(X))
    train, query = order[:200], order[200:210]
    X_tr, y_tr, X_q, y_q = X[train], data.target[train], X[query], data.target[query]
    wd = 0.1
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(),
                              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                              optimizer__weight_decay=wd, lr=0.1, max_epochs=1, batch_size=-1,
                              train_split=None, verbose=0)
    ens = SeedEnsembleClassifier(net, n_seeds=1, random_state=0).fit(X_tr, y_tr)
    A = np.hstack([X_tr, np.ones((len(X_tr), 1))])
    Y = np.eye(2)[y_tr]
    theta = _softmax_newton(A, Y, wd, np.zeros((2, A.shape[1])))
    _set_linear(ens, theta[:, :-1], theta[:, -1])
    Aq = np.hstack([X_q, np.ones((len(X_q), 1))])

    def margin(t):
        z = Aq @ t.T
        return z[np.arange(len(z)), y_q] - z[np.arange(len(z)), 1 - y_q]

    truth = np.stack([margin(_softmax_newton(A[keep], Y[keep], wd, theta)) - margin(theta)
                      for keep in (np.arange(len(A)) != k for k in range(len(A)))], axis=1)
    scores = {}
    for correction in (None, "newton"):
        influence = InfluenceTransformer(ens, curvature="exact", damping=0, measurement="margin",
                                         correction=correction).fit(X_tr, y_tr)
        scores[correction] = influence.influence_samples(X_q, y_q)[0]
    top = np.argsort(-np.abs(truth).sum(axis=0))[:5]  # the highest-leverage rows

    def ratio(pred, rows=slice(None)):
        return np.linalg.norm(truth[:, rows]) / np.linalg.norm(pred[:, rows])

    def corr(pred):
        return np.corrcoef(pred.ravel(), truth.ravel())[0, 1]

    first, newton = scores[None], scores["newton"]
    assert ratio(first, top) > 1.1, ratio(first, top)
    assert abs(ratio(newton) - 1) < 0.05 and abs(ratio(newton, top) - 1) < 0.05
    assert corr(newton) >= 0.99 and corr(newton) > corr(first)


def test_correction_is_validated(ridge):
    ens, X, y, *_ = ridge
    with pytest.raises(InvalidParameterError, match="correction"):
        InfluenceTransformer(ens, correction="second-order").fit(X, y)
    with pytest.raises(ValueError, match="'exact', 'ggn', 'kfac', 'ekfac', 'cg'"):
        InfluenceTransformer(ens, curvature="identity", correction="newton").fit(X, y)


@pytest.mark.parametrize("normalised", [True, False])
def test_newton_rescales_a_normalised_penalty(ridge, normalised):
    """A penalty normalised with the losses grows by N/N' when rows leave; a fixed one
    does not (L2Penalty). Weights penalised, the bias not; no weight decay."""
    from skdtda.model import L2Penalty

    ens, X, y, A, _, queries = ridge
    n, c = len(X), 0.3
    ens.estimators_[0].optimizer_.param_groups[0]["weight_decay"] = 0.0
    ens.estimators_[0].l2_penalty_ = L2Penalty({"0.weight": c}, normalised=normalised)
    diagonal = np.r_[np.full(X.shape[1], c), 0.0]

    def fit(keep):  # mean squared error + (N/N' if normalised) c/2 |w|^2
        scale = n / keep.sum() if normalised else 1.0
        Ak, yk = A[keep], y[keep]
        return np.linalg.solve(2 / len(Ak) * Ak.T @ Ak + scale * np.diag(diagonal),
                               2 / len(Ak) * Ak.T @ yk)

    theta = fit(np.ones(n, dtype=bool))
    _set_linear(ens, theta[None, :-1], theta[-1:])
    Aq = np.hstack([queries, np.ones((len(queries), 1))])
    keep = np.ones(n, dtype=bool)
    keep[::3] = False
    for curvature in ("exact", "ggn", "cg"):
        influence = InfluenceTransformer(ens, curvature=curvature, damping=0 if curvature != "cg"
                                         else 1e-14, measurement="prediction",
                                         curvature_options={"maxiter": 50, "tol": 1e-14}
                                         if curvature == "cg" else None,
                                         correction="newton").fit(X, y)
        change = (influence.predict_removal(queries, remove=~keep)
                  - influence.measure(queries))[0]
        np.testing.assert_allclose(change, Aq @ (fit(keep) - theta), rtol=1e-7)
        if curvature != "cg":
            delta = influence.influence_samples(queries)[0][:, :4]
            truth = np.stack([Aq @ (fit(np.arange(n) != k) - theta) for k in range(4)], axis=1)
            np.testing.assert_allclose(delta, truth, rtol=1e-8)
