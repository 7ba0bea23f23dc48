"""damping="auto": the damping that the members' own training implies (1 / tau),
floored at a tenth of the curvature's mean eigenvalue.

Truths: the rule's value from the optimizer's settings and state, computed here
independently; and unrolled differentiation of the actual training run
(UnrolledInfluence), which the influence function approximates only for long
training (the paper's Theorem 2): for short training, the auto damping must
bring the influence function closer to it.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import scale
from skorch import NeuralNetClassifier

from skdtda import InfluenceTransformer, SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.evaluation import make_lds_scorer, query_folds, random_subsets, retrain_distributions
from skdtda.influence._damping import FALLBACK
from skdtda.nets import MLP


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return scale(X), y


def _net(optimizer=torch.optim.SGD, epochs=6, batch_size=32, lr=0.05, hidden=(6,), **kw):
    return NeuralNetClassifier(MLP, module__hidden_layer_sizes=hidden,
                               criterion=torch.nn.CrossEntropyLoss, optimizer=optimizer, lr=lr,
                               max_epochs=epochs, batch_size=batch_size, train_split=None,
                               verbose=0, **kw)


def test_sgd_with_momentum_and_dampening(iris):
    X, y = iris
    net = _net(optimizer__momentum=0.8, optimizer__dampening=0.5, epochs=7)
    ens = SeedEnsembleClassifier(net, n_seeds=2, random_state=0).fit(X, y)
    influence = InfluenceTransformer(ens, damping="auto").fit(X, y)
    steps = 7 * 5  # 150 rows in batches of 32
    assert influence.damping_ == pytest.approx((1 - 0.8) / (steps * 0.05 * (1 - 0.5)))


@pytest.mark.parametrize("iterator, steps_per_epoch", [
    ({"iterator_train__batch_size": 32}, 5),  # 150 rows: 4 full batches and one of 22
    ({"iterator_train__batch_size": 32, "iterator_train__drop_last": True}, 4),
    ({"batch_size": -1}, 1),
])
def test_steps_are_counted_as_the_training_iterator_draws_them(iris, iterator,
                                                               steps_per_epoch):
    """The step count follows the iterator the net trained with (skorch's
    ``iterator_train__*`` over ``batch_size``), as the retraining protocol reads it."""
    X, y = iris
    params = {"batch_size": 128, **iterator}
    net = _net(epochs=4, **params)
    ens = SeedEnsembleClassifier(net, n_seeds=2, random_state=0).fit(X, y)
    assert all(len(m.history[-1]["batches"]) == steps_per_epoch for m in ens.estimators_)
    influence = InfluenceTransformer(ens, damping="auto").fit(X, y)
    assert influence.damping_ == pytest.approx(1 / (4 * steps_per_epoch * 0.05))
    full_batch = steps_per_epoch == 1
    assert influence.retraining_ == ("same_steps" if full_batch else "same_epochs")


def test_adam_reads_the_second_moments_of_the_fitted_optimizer(iris):
    X, y = iris
    ens = SeedEnsembleClassifier(_net(torch.optim.Adam, lr=0.01), n_seeds=3,
                                 random_state=0).fit(X, y)
    influence = InfluenceTransformer(ens, damping="auto").fit(X, y)
    taus = []
    for member in ens.estimators_:
        opt = member.optimizer_
        rates = [(0.01 / ((opt.state[p]["exp_avg_sq"].double()
                           / (1 - 0.999 ** float(opt.state[p]["step"]))).sqrt() + 1e-8))
                 .reshape(-1) for p in opt.param_groups[0]["params"]]
        taus.append(6 * 5 * float(torch.cat(rates).median()))
    assert influence.damping_ == pytest.approx(1 / np.median(taus))


def test_scikit_learn_solvers(iris):
    X, y = iris
    converged = SeedEnsembleClassifier(LogisticRegression()).fit(X, y)
    assert InfluenceTransformer(converged, damping="auto").fit(X, y).damping_ == 0.0
    sgd = SeedEnsembleClassifier(SGDClassifier(loss="log_loss", learning_rate="constant",
                                               eta0=0.01, max_iter=5, tol=None),
                                 n_seeds=2, random_state=0).fit(X, y)
    assert InfluenceTransformer(sgd, damping="auto").fit(X, y).damping_ == pytest.approx(
        1 / (5 * 150 * 0.01))
    mlp = SeedEnsembleClassifier(MLPClassifier(hidden_layer_sizes=(5,), solver="sgd",
                                               momentum=0.5, learning_rate_init=0.02,
                                               batch_size=50, max_iter=8, tol=0,
                                               n_iter_no_change=8),
                                 n_seeds=2, random_state=0).fit(X, y)
    assert InfluenceTransformer(mlp, damping="auto").fit(X, y).damping_ == pytest.approx(
        (1 - 0.5) / (8 * 3 * 0.02))
    Xr, yr = X[:, :3], X[:, 3]
    ols = SeedEnsembleRegressor(LinearRegression()).fit(Xr, yr)
    assert InfluenceTransformer(ols, damping="auto").fit(Xr, yr).damping_ == FALLBACK


def test_unknown_optimizer_falls_back(iris):
    X, y = iris
    ens = SeedEnsembleClassifier(_net(torch.optim.RMSprop, lr=0.01), n_seeds=2,
                                 random_state=0).fit(X, y)
    assert InfluenceTransformer(ens, damping="auto").fit(X, y).damping_ == FALLBACK


def test_auto_damping_tracks_the_unrolled_response_of_short_training(iris, float64):
    """A few epochs of SGD: the influence function with the damping of the training
    time approximates what the run itself does (unrolled differentiation) better than
    a small fixed damping, and the gap closes as training grows longer."""
    from skdtda import UnrolledInfluence

    X, y = iris
    queries = [0, 60, 120, 75]
    errors = {}
    for epochs in (3, 40):
        net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(),
                                  criterion=torch.nn.CrossEntropyLoss,
                                  optimizer=torch.optim.SGD, optimizer__momentum=0.5,
                                  optimizer__weight_decay=1e-2, lr=0.05, batch_size=50,
                                  max_epochs=epochs, train_split=None, verbose=0)
        ens = SeedEnsembleClassifier(net, n_seeds=2, random_state=0).fit(X, y)
        truth = UnrolledInfluence(ens).fit(X, y).influence_samples(X[queries], y[queries])
        for damping in ("auto", 1e-3):
            pred = InfluenceTransformer(ens, curvature="exact", damping=damping).fit(X, y) \
                .influence_samples(X[queries], y[queries])
            errors[epochs, damping] = np.linalg.norm(pred - truth) / np.linalg.norm(truth)
    assert errors[3, "auto"] < 0.5 * errors[3, 1e-3], errors
    assert errors[40, "auto"] < errors[40, 1e-3], errors


def test_grid_search_tunes_damping_with_the_lds_scorer(iris):
    X, y = iris
    ens = SeedEnsembleClassifier(_net(epochs=10, optimizer__momentum=0.9), n_seeds=4,
                                 random_state=0).fit(X, y)
    queries = np.arange(0, 150, 6)
    remove = random_subsets(len(X), 10, keep_fraction=0.8, random_state=0)
    truth = retrain_distributions(ens, X, y, X[queries], y[queries], remove=remove, n_seeds=8)
    scorer = make_lds_scorer(truth, remove=remove, X_query=X[queries], y_query=y[queries])
    X_cv, y_cv, cv = query_folds(X, y, X[queries], y[queries], n_splits=3, random_state=0)
    search = GridSearchCV(InfluenceTransformer(ens, curvature="ggn"),
                          {"damping": [1e-4, 1e-2, 0.3, "auto"]}, scoring=scorer, cv=cv,
                          refit=False, error_score="raise")
    search.fit(X_cv, y_cv)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all() and len(set(np.round(scores, 12))) == 4
    assert list(search.cv_results_["param_damping"]) == [1e-4, 1e-2, 0.3, "auto"]


def _ggn_mean_eigenvalue(member, X, y):
    """trace(GGN + weight decay) / P by brute force: per row, trace(J^T H J) with the
    softmax cross-entropy output Hessian H = diag(p) - p p^T."""
    X, _ = member.tensors(X, y)
    total = 0.0
    for x in X:
        jac = torch.autograd.functional.jacobian(
            lambda theta: member.outputs(theta, x[None])[0], member.theta)
        p = torch.softmax(member.outputs(member.theta, x[None])[0].detach(), 0)
        hessian = torch.diag(p) - torch.outer(p, p)
        total += float((hessian * (jac @ jac.T)).sum())
    return total / len(X) / member.n_params + member.weight_decay


@pytest.mark.parametrize("kind", ["ggn:dense", "ggn:kernel", "ekfac", "kfac", "cg", "pcg"])
def test_mean_eigenvalue_and_redamping_of_every_backend(iris, float64, kind):
    """Each backend's trace / P against brute force (EK-FAC with every root column
    sums the exact GGN's diagonal in its eigenbasis; CG estimates it from 16 random
    products; K-FAC is its own approximation, so only its redamping is checked), and
    ``set_damping`` solves as a backend fitted with that damping."""
    from skdtda.curvature import fit_curvature, solve_blocks
    from skdtda.model import functional_member as FunctionalMember

    X, y = iris
    net = _net(epochs=8, optimizer__weight_decay=1e-3)
    ens = SeedEnsembleClassifier(net, n_seeds=1, random_state=0).fit(X, y)
    curvature, _, form = kind.partition(":")
    layered = curvature in ("kfac", "ekfac", "pcg")
    member = FunctionalMember(ens.estimators_[0], "loss", "classifier", layered=layered,
                              probe_X=X[:8].astype(np.float32) if layered else None)
    X_net, y_net = (t.numpy() for t in member.tensors(X, ens._net_targets(y)))
    options = {"form": form} if form else {"samples": None} if layered else None
    solver = fit_curvature(curvature, member, X_net, y_net, 1e-3, options)
    truth = _ggn_mean_eigenvalue(member, X_net, y_net)
    if curvature == "cg":
        assert solver.mean_eigenvalue() == pytest.approx(truth, rel=0.35)
    elif curvature in ("ekfac", "pcg") or form:
        assert solver.mean_eigenvalue() == pytest.approx(truth, rel=1e-8)
    solver.set_damping(0.05)
    fresh = fit_curvature(curvature, member, X_net, y_net, 0.05, options)
    v = torch.randn(3, member.n_params, generator=torch.Generator().manual_seed(1))
    if layered:
        v = [torch.stack(b) for b in zip(*(member.to_blocks(row) for row in v))]
        got, want = solve_blocks(solver, v), solve_blocks(fresh, v)
        got, want = torch.cat([g.flatten() for g in got]), torch.cat([w.flatten() for w in want])
    else:
        got, want = solver.solve(v), fresh.solve(v)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9 * float(want.abs().max()))


@pytest.mark.parametrize("form", ["dense", "kernel"])
def test_auto_damping_takes_the_eigenvalue_floor_after_long_adam_training(iris, float64, form):
    """Long Adam training makes 1 / tau small; damping='auto' then takes a tenth of
    the curvature's mean eigenvalue (kronfluence's rule), computed here by brute force.
    Both forms of the exact GGN are factored once, after the floor is known: the
    scores equal a fit given that damping as a float."""

    X, y = iris
    ens = SeedEnsembleClassifier(_net(torch.optim.Adam, lr=0.02, epochs=150), n_seeds=2,
                                 random_state=0).fit(X, y)
    options = {"form": form}
    influence = InfluenceTransformer(ens, curvature="ggn", damping="auto",
                                     curvature_options=options).fit(X, y)
    floor = 0.1 * np.mean([_ggn_mean_eigenvalue(m, X, ens._net_targets(y))
                           for m in influence._members])
    inverse_tau = InfluenceTransformer(ens, curvature="identity", damping="auto") \
        .fit(X, y).damping_  # the identity has no eigenvalues: 1 / tau alone
    assert inverse_tau < floor
    assert influence.damping_ == pytest.approx(floor, rel=1e-8)
    fixed = InfluenceTransformer(ens, curvature="ggn", damping=floor,
                                 curvature_options=options).fit(X, y)
    np.testing.assert_allclose(influence.transform(X[:5]), fixed.transform(X[:5]),
                               rtol=1e-7, atol=1e-12)


def test_statistics_of_the_spread_take_three_times_the_auto_damping(iris, float64):
    """statistic='variance' or 'std' take 3x what damping='auto' gives the mean, on
    1 / tau and on the eigenvalue floor alike, and score as a fit given that float;
    a float damping is used as given whatever the statistic."""
    X, y = iris
    short = SeedEnsembleClassifier(_net(), n_seeds=2, random_state=0).fit(X, y)
    long_adam = SeedEnsembleClassifier(_net(torch.optim.Adam, lr=0.02, epochs=150), n_seeds=2,
                                       random_state=0).fit(X, y)
    for ens in (short, long_adam):
        mean = InfluenceTransformer(ens, curvature="ggn").fit(X, y)
        for statistic in ("variance", "std"):
            spread = InfluenceTransformer(ens, curvature="ggn", statistic=statistic).fit(X, y)
            assert spread.damping_ == pytest.approx(3 * mean.damping_, rel=1e-10)
            fixed = InfluenceTransformer(ens, curvature="ggn", statistic=statistic,
                                         damping=spread.damping_).fit(X, y)
            assert fixed.damping_ == spread.damping_
            np.testing.assert_allclose(spread.transform(X[:5]), fixed.transform(X[:5]),
                                       rtol=1e-7, atol=1e-12)
        for statistic in ("wasserstein", "ks"):
            other = InfluenceTransformer(ens, curvature="ggn", statistic=statistic).fit(X, y)
            assert other.damping_ == mean.damping_
    floored = InfluenceTransformer(long_adam, curvature="identity").fit(X, y).damping_
    assert floored < InfluenceTransformer(long_adam, curvature="ggn").fit(X, y).damping_
