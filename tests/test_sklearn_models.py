"""scikit-learn's own models as ensemble members and attribution targets.

Truths: scikit-learn's own predictions and losses (the torch function a member
becomes must compute them), scikit-learn's own objective (its gradient, penalty
included, vanishes at the fitted optimum; its Hessian in closed form), and
leave-one-out retraining by scikit-learn itself.
"""

import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import (LinearRegression, LogisticRegression, Ridge, SGDClassifier,
                                  SGDRegressor)
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler, scale

from skdtda import (DataPruner, InfluenceTransformer, PrunedEstimator, SeedEnsembleClassifier,
                    SeedEnsembleRegressor, UnrolledInfluence)
from skdtda.evaluation import leave_one_out, retrain_distributions
from skdtda.model import functional_member as FunctionalMember


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _iris(binary=False):
    X, y = load_iris(return_X_y=True)
    X = scale(X)
    # versicolor against the rest: not linearly separable, so probabilities stay inside (0, 1)
    return (X, (y == 1).astype(int)) if binary else (X, y)


def _noisy(binary=False):
    # labels partly random: no model saturates its probabilities
    X, y = make_classification(n_samples=150, n_features=4, n_informative=3, n_redundant=0,
                               n_classes=2 if binary else 3, flip_y=0.3, random_state=0)
    return scale(X), y


def _diabetes(n_targets=1):
    X, y = load_diabetes(return_X_y=True)
    X, y = scale(X), scale(y)
    if n_targets == 2:
        y = np.column_stack([y, np.tanh(X[:, 2] + 0.5 * X[:, 3])])
    return X, y


CLASSIFIERS = {
    "mlp-relu": MLPClassifier(hidden_layer_sizes=(6,), max_iter=60),
    "mlp-tanh-lbfgs": MLPClassifier(hidden_layer_sizes=(5, 4), activation="tanh",
                                    solver="lbfgs", max_iter=80),
    "mlp-logistic-sgd": MLPClassifier(hidden_layer_sizes=(5,), activation="logistic",
                                      solver="sgd", max_iter=40),
    "logistic": LogisticRegression(C=0.5),
    "logistic-liblinear": LogisticRegression(solver="liblinear"),
    "logistic-unpenalised": LogisticRegression(C=np.inf, max_iter=300),
    "sgd-log": SGDClassifier(loss="log_loss", max_iter=50),
    "sgd-huber-no-intercept": SGDClassifier(loss="modified_huber", fit_intercept=False,
                                            max_iter=50),
}
REGRESSORS = {
    "mlp": MLPRegressor(hidden_layer_sizes=(6,), max_iter=80),
    "mlp-identity-lbfgs": MLPRegressor(hidden_layer_sizes=(4,), activation="identity",
                                       solver="lbfgs", max_iter=50),
    "sgd": SGDRegressor(max_iter=50),
    "sgd-huber": SGDRegressor(loss="huber", epsilon=0.5, max_iter=50),
    "ridge": Ridge(alpha=3.0),
    "ridge-no-intercept": Ridge(alpha=0.5, fit_intercept=False),
    "linear": LinearRegression(),
}


@pytest.mark.parametrize("binary", [False, True], ids=["multiclass", "binary"])
@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifier_members_compute_what_scikit_learn_predicts(name, binary):
    if name == "logistic-liblinear" and not binary:
        pytest.skip("liblinear fits binary problems only")
    X, y = _noisy(binary)
    ens = SeedEnsembleClassifier(CLASSIFIERS[name], n_seeds=2, random_state=0).fit(X, y)
    expected_members = 1 if name.startswith("logistic") else 2
    assert len(ens.estimators_) == expected_members
    proba = np.stack([m.predict_proba(X) for m in ens.estimators_])
    rows = np.arange(len(X))
    p_y = proba[:, rows, y]
    np.testing.assert_allclose(ens.measure(X, y, "proba"), p_y, atol=1e-12)
    # where no probability saturates (scikit-learn's 1 - p loses the digits there)
    fine = (proba > 1e-9).all(axis=2) & (proba < 1 - 1e-9).all(axis=2)
    assert fine.mean() > (0.02 if "huber" in name else 0.5)  # modified Huber clips to 0
    np.testing.assert_allclose(ens.measure(X, y, "log_proba")[fine], np.log(p_y[fine]),
                               rtol=1e-9, atol=1e-14)
    others = np.where(np.arange(proba.shape[2]) == y[:, None], -np.inf, np.log(proba))
    np.testing.assert_allclose(ens.measure(X, y, "margin")[fine],
                               (np.log(p_y) - others.max(axis=2))[fine], rtol=1e-7, atol=1e-9)
    loss = ens.measure(X, y, "loss")
    if name.startswith("sgd"):  # one-vs-rest: the sum of the binary problems' losses
        z = np.stack([m.decision_function(X).reshape(len(X), -1) for m in ens.estimators_])
        signs = np.where(np.arange(z.shape[2]) == y[:, None], 1, -1) if z.shape[2] > 1 \
            else (2 * y - 1)[:, None]
        m = z * signs
        per = (np.logaddexp(0, -m) if name == "sgd-log"
               else np.where(m >= -1, np.maximum(0, 1 - m) ** 2, -4 * m))
        np.testing.assert_allclose(loss, per.sum(axis=2), rtol=1e-9, atol=1e-12)
    else:  # the training loss of a probabilistic model is -log p(y)
        np.testing.assert_allclose(loss[fine], -np.log(p_y[fine]), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(ens.predict_proba(X), proba.mean(axis=0))


@pytest.mark.parametrize("n_targets", [1, 2])
@pytest.mark.parametrize("name", sorted(REGRESSORS))
def test_regressor_members_compute_what_scikit_learn_predicts(name, n_targets):
    if name.startswith("sgd") and n_targets == 2:
        pytest.skip("SGDRegressor fits one target")
    X, y = _diabetes(n_targets)
    ens = SeedEnsembleRegressor(REGRESSORS[name], n_seeds=2, random_state=0).fit(X, y)
    pred = np.stack([m.predict(X) for m in ens.estimators_]).reshape(len(ens.estimators_),
                                                                     len(X), -1)
    np.testing.assert_allclose(ens.predict_members(X).reshape(pred.shape), pred, atol=1e-12)
    if n_targets == 1:
        np.testing.assert_allclose(ens.measure(X, y, "prediction"), pred[..., 0], atol=1e-12)
    r = pred - y.reshape(len(X), -1)
    if name == "sgd-huber":
        per = np.where(np.abs(r) <= 0.5, 0.5 * r ** 2, 0.5 * np.abs(r) - 0.125)
    else:  # scikit-learn's squared loss: half the squared error, a mean over targets
        per = 0.5 * r ** 2
    np.testing.assert_allclose(ens.measure(X, y, "loss"), per.mean(axis=2), rtol=1e-9,
                               atol=1e-12)


# -- the objective, exactly as scikit-learn trains it ---------------------------------
STATIONARY = {
    "logistic": (LogisticRegression(C=0.3, tol=1e-12, max_iter=5000), "classifier"),
    "logistic-liblinear": (LogisticRegression(C=0.3, solver="liblinear", tol=1e-12,
                                              max_iter=5000, intercept_scaling=2.0),
                           "classifier"),
    "mlp-lbfgs": (MLPClassifier(hidden_layer_sizes=(4,), activation="tanh", solver="lbfgs",
                                alpha=0.5, tol=1e-12, max_iter=20000, max_fun=100000),
                  "classifier"),
    "mlp-regressor-lbfgs": (MLPRegressor(hidden_layer_sizes=(3,), activation="tanh",
                                         solver="lbfgs", alpha=0.5, tol=1e-12, max_iter=20000,
                                         max_fun=100000), "regressor"),
    "ridge": (Ridge(alpha=5.0), "regressor"),
}


@pytest.mark.parametrize("name", sorted(STATIONARY))
def test_objective_with_its_penalty_is_stationary_at_the_fitted_optimum(name):
    """The gradient of mean loss + penalty (as written for the member) vanishes where
    scikit-learn stopped: a wrong penalty scale, or penalised intercepts, would not."""
    estimator, kind = STATIONARY[name]
    X, y = _iris(binary=name == "logistic-liblinear") if kind == "classifier" else _diabetes()
    X, y = X[:120], y[:120]
    ens_class = SeedEnsembleClassifier if kind == "classifier" else SeedEnsembleRegressor
    ens = ens_class(estimator, n_seeds=1, random_state=0).fit(X, y)
    member = FunctionalMember(ens._torch_members()[0], "loss", kind)
    y_net = ens._net_targets(y)
    loss_grad = member.mean_loss_grad(X, y_net)
    total = member.mean_grads(X, y_net)[0]  # the normalised penalty's gradient included
    assert member.penalty_normalised
    # lbfgs on an MLP stops on the change of the loss, not of the gradient
    tol = 1e-2 if name.startswith("mlp") else 1e-4
    assert float(total.norm()) < tol * float(loss_grad.norm())
    if hasattr(ens.estimators_[0], "loss_"):  # an MLP's reported objective, penalty included
        X_t, y_t = member.tensors(X, y_net)
        objective = float(member.mean_loss(member.theta, X_t, y_t)) + 0.5 * float(
            (member.penalty * member.theta.double() ** 2).sum())
        assert objective == pytest.approx(ens.estimators_[0].loss_, rel=1e-12)


def test_logistic_curvature_equals_its_closed_form(float64):
    X, y = load_breast_cancer(return_X_y=True)
    X, y = scale(X[:200]), y[:200]
    ens = SeedEnsembleClassifier(LogisticRegression(C=0.2), random_state=0).fit(X, y)
    influence = InfluenceTransformer(ens, curvature="exact", damping=0.0).fit(X, y)
    # sklearn's objective / (C N): mean log-loss + |w|^2 / (2 C N); intercept unpenalised
    lr = ens.estimators_[0]
    p = lr.predict_proba(X)[:, 1]
    Xb = np.column_stack([X, np.ones(len(X))])
    H = Xb.T @ (Xb * (p * (1 - p))[:, None]) / len(X)
    H[:-1, :-1] += np.eye(X.shape[1]) / (lr.C * len(X))
    member = influence._members[0]
    g = member.per_sample_grads("loss", X[:5], y[:5]).double()
    # member parameters: weight (1, F) then bias
    expected = np.linalg.solve(H, g.numpy().T).T
    np.testing.assert_allclose(influence.curvatures_[0].solve(g), expected, rtol=1e-8)


def _loo_truth_and_prediction(estimator, X, y, kind, rows, X_query, y_query, correction=None,
                              measurement="loss"):
    ens_class = SeedEnsembleClassifier if kind == "classifier" else SeedEnsembleRegressor
    ens = ens_class(estimator, random_state=0).fit(X, y)
    influence = InfluenceTransformer(ens, curvature="exact", damping=0.0, correction=correction,
                                     measurement=measurement).fit(X, y)
    predicted = influence.influence_samples(X_query, y_query)[0][:, rows]
    truth = retrain_distributions(ens, X, y, X_query, y_query, measurement=measurement,
                                  remove=leave_one_out(len(X), rows))
    actual = truth.after[:, 0, :] - truth.before[0][None, :]  # (n_sets, n_query)
    return predicted.T, actual


@pytest.mark.parametrize("correction, min_corr, ratios", [
    # first order under-predicts the size of the change (high-leverage rows)
    (None, 0.98, (1.0, 1.6)),
    # one Newton step with the kept rows' curvature: the size within 5%
    ("newton", 0.99, (0.95, 1.05)),
])
def test_logistic_regression_influence_tracks_leave_one_out_retraining(correction, min_corr,
                                                                        ratios):
    X, y = load_breast_cancer(return_X_y=True)
    X, y = scale(X[:300]), y[:300]
    estimator = LogisticRegression(C=0.3, tol=1e-10, max_iter=2000)
    rows = np.arange(0, 300, 5)
    predicted, actual = _loo_truth_and_prediction(estimator, X, y, "classifier", rows,
                                                  X[300 - 20:], y[300 - 20:], correction)
    assert np.corrcoef(predicted.ravel(), actual.ravel())[0, 1] >= min_corr
    ratio = np.sum(actual * predicted) / np.sum(predicted ** 2)
    assert ratios[0] < ratio < ratios[1]


def test_ridge_influence_tracks_leave_one_out_retraining():
    X, y = _diabetes()
    X, y = X[:200], y[:200]
    rows = np.arange(0, 200, 4)
    predicted, actual = _loo_truth_and_prediction(Ridge(alpha=2.0), X, y, "regressor", rows,
                                                  X[:15], y[:15])
    assert np.corrcoef(predicted.ravel(), actual.ravel())[0, 1] >= 0.98
    # ridge is quadratic and its prediction linear in the weights: one Newton step with
    # the kept rows' curvature (alpha grows by N / N' with them) is scikit-learn's refit
    predicted, actual = _loo_truth_and_prediction(Ridge(alpha=2.0), X, y, "regressor", rows,
                                                  X[:15], y[:15], "newton", "prediction")
    np.testing.assert_allclose(predicted, actual, rtol=1e-7, atol=1e-10 * np.abs(actual).max())


def test_mlp_ensemble_members_differ_by_seed_and_attribute():
    X, y = _iris()
    ens = SeedEnsembleClassifier(MLPClassifier(hidden_layer_sizes=(8,), max_iter=100),
                                 n_seeds=3, random_state=0).fit(X, y)
    assert len(set(int(m.random_state) for m in ens.estimators_)) == 3
    values = ens.measure(X[:10], y[:10])
    assert np.ptp(values, axis=0).max() > 1e-3  # seeds give other nets
    again = SeedEnsembleClassifier(MLPClassifier(hidden_layer_sizes=(8,), max_iter=100),
                                   n_seeds=3, random_state=0).fit(X, y)
    np.testing.assert_array_equal(again.measure(X[:10], y[:10]), values)
    influence = InfluenceTransformer(ens, statistic="variance").fit(X, y)
    assert influence.curvature_ == "ggn"
    assert influence.fixed_parameters_ == {}
    scores = influence.transform(X[:4])
    assert scores.shape == (4, 150) and np.isfinite(scores).all()
    ekfac = InfluenceTransformer(ens, curvature="ekfac").fit(X, y)
    assert ekfac.attributed_layers_ == ["layers.0", "layers.1"]
    samples = ekfac.influence_samples(X[:4], y[:4])
    exact = InfluenceTransformer(ens, curvature="ggn").fit(X, y).influence_samples(X[:4], y[:4])
    assert np.corrcoef(samples.ravel(), exact.ravel())[0, 1] > 0.8


def test_memory_keeps_finished_scikit_learn_members(tmp_path, caplog):
    X, y = _iris()
    est = SGDClassifier(loss="log_loss", max_iter=30)
    tmp_path = str(tmp_path)
    first = SeedEnsembleClassifier(est, n_seeds=3, random_state=0, memory=tmp_path).fit(X, y)
    with caplog.at_level("INFO", logger="skdtda"):
        again = SeedEnsembleClassifier(est, n_seeds=3, random_state=0,
                                       memory=tmp_path).fit(X, y)
    assert "3 of 3 members loaded from memory" in caplog.text
    np.testing.assert_array_equal(first.predict_proba(X), again.predict_proba(X))
    caplog.clear()
    with caplog.at_level("INFO", logger="skdtda"):
        other = SeedEnsembleClassifier(clone(est).set_params(alpha=0.01), n_seeds=3,
                                       random_state=0, memory=tmp_path).fit(X, y)
    assert "loaded from memory" not in caplog.text  # other settings: other keys
    assert not np.allclose(other.predict_proba(X), first.predict_proba(X))


def test_pruning_with_scikit_learn_models_in_a_pipeline_and_grid_search():
    X, y = make_classification(n_samples=160, n_features=6, n_informative=4, random_state=0)
    rng = np.random.RandomState(0)
    flipped = rng.choice(len(y), 16, replace=False)
    y = y.copy()
    y[flipped] = 1 - y[flipped]
    ensemble = SeedEnsembleClassifier(SGDClassifier(loss="log_loss", alpha=1e-3, max_iter=30),
                                      n_seeds=3, random_state=0)
    pruner = DataPruner(InfluenceTransformer(ensemble), fraction=0.1, random_state=0)
    model = make_pipeline(StandardScaler(),
                          PrunedEstimator(pruner, LogisticRegression(max_iter=500)))
    model.fit(X, y)
    assert model[-1].pruner_.n_removed_ == 16
    search = GridSearchCV(model, {"prunedestimator__pruner__fraction": [0.05, 0.1]}, cv=2,
                          error_score="raise")
    search.fit(X, y)
    assert set(search.cv_results_["param_prunedestimator__pruner__fraction"]) == {0.05, 0.1}


# -- refusals -----------------------------------------------------------------------------
def test_refuses_what_scikit_learn_cannot_honour():
    X, y = _iris()
    with pytest.raises(ValueError, match="one random_state"):
        SeedEnsembleClassifier(MLPClassifier(max_iter=5), vary="init").fit(X, y)
    with pytest.raises(ValueError, match="has no predict_proba"):
        SeedEnsembleClassifier(SGDClassifier()).fit(X, y)
    with pytest.raises(ValueError, match="InfluenceTransformer"):
        UnrolledInfluence(SeedEnsembleClassifier(MLPClassifier(max_iter=5))).fit(X, y)
    fitted = SeedEnsembleClassifier(
        SGDClassifier(loss="log_loss", penalty="l1", max_iter=5), n_seeds=1).fit(X, y)
    with pytest.raises(ValueError, match="L1 term"):
        InfluenceTransformer(fitted).fit(X, y)
    fitted = SeedEnsembleClassifier(LogisticRegression(l1_ratio=0.5, solver="saga",
                                                       max_iter=20)).fit(X, y)
    with pytest.raises(ValueError, match="L1 term"):
        InfluenceTransformer(fitted).fit(X, y)
    fitted = SeedEnsembleClassifier(MLPClassifier(max_iter=20, early_stopping=True),
                                    n_seeds=1).fit(X, y)
    with pytest.raises(ValueError, match="early_stopping"):
        InfluenceTransformer(fitted).fit(X, y)
    fitted = SeedEnsembleClassifier(LogisticRegression(class_weight="balanced")).fit(X, y)
    with pytest.raises(ValueError, match="class_weight"):
        InfluenceTransformer(fitted).fit(X, y)
    from sklearn.svm import SVC
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="MLPClassifier"):
        SeedEnsembleClassifier(SVC()).fit(X, y)


def test_deterministic_models_are_one_member_ensembles():
    X, y = _diabetes()
    ens = SeedEnsembleRegressor(Ridge(), n_seeds=8, random_state=0).fit(X, y)
    assert len(ens.estimators_) == 1 and len(ens.seeds_) == 1
    influence = InfluenceTransformer(ens).fit(X, y)
    delta = influence.influence_samples(X[:3], y[:3])
    assert delta.shape == (1, 3, len(X))
    # one member: the mean and the fixed-seed statistics coincide
    np.testing.assert_allclose(influence.transform(X[:3]),
                               InfluenceTransformer(ens, seed_index=0).fit(X, y).transform(
                                   X[:3]))


def test_torch_member_module_is_float64_and_never_trained():
    X, y = _iris()
    ens = SeedEnsembleClassifier(MLPClassifier(hidden_layer_sizes=(5,), max_iter=30),
                                 n_seeds=1).fit(X, y)
    net = ens._torch_members()[0]
    assert all(p.dtype == torch.float64 for p in net.module_.parameters())
    np.testing.assert_array_equal(net.module_.layers[0].weight.detach().numpy(),
                                  ens.estimators_[0].coefs_[0].T)
    assert ens._torch_members()[0] is net  # built once
