"""curvature="pcg": EK-FAC-preconditioned CG on the exact GGN, against the truth.

The truth is the dense GGN over the same parameters (the layers EK-FAC
attributes) solved by Cholesky: PCG run to convergence must give it, on an MLP,
on a CNN (convolution blocks) and on a residual net whose LayerNorm is held
fixed. Where EK-FAC is the exact GGN (one Linear layer, one output, MSE) the
preconditioner is the inverse and one step is the solution.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, load_iris, make_classification, make_regression
from sklearn.preprocessing import scale
from skorch import NeuralNetClassifier, NeuralNetRegressor

from _models import DigitsCNN, ResidualLN
from skdtda import InfluenceTransformer, SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.curvature import KRONECKER, LAYERED, NEWTON_SETS, PCGCurvature, fit_curvature
from skdtda.model import functional_member
from skdtda.nets import MLP


def _fit(module, X, y, **kw):
    params = dict(criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD, lr=0.05,
                  optimizer__momentum=0.9, optimizer__weight_decay=1e-3, max_epochs=10,
                  batch_size=16, train_split=None, verbose=0)
    params.update(kw)
    net = NeuralNetClassifier(module, **params)
    return SeedEnsembleClassifier(net, n_seeds=1, random_state=0).fit(X, y)


def _problem(case):
    """A fitted net, its layered member and a flat member over the same parameters,
    their training rows in the nets' form, and test vectors as blocks and flat rows."""
    if case == "mlp":
        X, y = load_iris(return_X_y=True)
        ens = _fit(MLP, scale(X), y, module__hidden_layer_sizes=(6,))
    elif case == "cnn":
        X, y = load_digits(return_X_y=True)
        ens = _fit(DigitsCNN, X[:40] / 16, y[:40], module__width=2, module__hidden=8,
                   max_epochs=3)
    else:
        X, y = make_classification(n_samples=50, n_features=4, n_informative=3, n_redundant=0,
                                   n_classes=3, random_state=0)
        ens = _fit(ResidualLN, X, y, module__width=6)
    net = ens.estimators_[0]
    layered = functional_member(net, "loss", "classifier", layered=True, probe_X=X[:8])
    flat = functional_member(net, "loss", "classifier",
                             modules=[spec.name for spec in layered.layers])
    assert flat.names == layered.names  # the same parameters, in the same order
    X_net, y_net = (t.numpy() for t in layered.tensors(X, y))
    v = torch.randn(3, layered.n_params, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    blocks = [torch.stack(b) for b in zip(*(layered.to_blocks(row) for row in v))]
    return layered, flat, X_net, y_net, v, blocks


def _flat(blocks, member):
    """Per-layer blocks back to (n, P) through the member's own ``to_blocks`` map."""
    index = member.to_blocks(torch.arange(1, member.n_params + 1, dtype=torch.float64))
    out = torch.zeros(len(blocks[0]), member.n_params, dtype=torch.float64)
    for block, where in zip(blocks, index):
        mask = where > 0
        out[:, where[mask].long() - 1] = block[:, mask].double()
    return out


@pytest.mark.parametrize("case", ["mlp", "cnn", "residual_ln"])
def test_many_steps_give_the_dense_ggn_solve(float64, case):
    layered, flat, X, y, v, blocks = _problem(case)
    damping = 1e-2
    dense = fit_curvature("ggn", flat, X, y, damping, {"form": "dense"}).solve(v)
    solver = fit_curvature("pcg", layered, X, y, damping,
                           {"maxiter": 4 * layered.n_params, "tol": 1e-11})
    got = _flat(solver.solve_blocks(blocks), layered)
    np.testing.assert_allclose(got, dense, rtol=1e-7, atol=1e-8 * float(dense.abs().max()))
    assert solver.residual_ <= 1e-11 and solver.n_iter_ < 4 * layered.n_params
    # a few steps sit between EK-FAC and the solution
    ekfac = _flat(fit_curvature("ekfac", layered, X, y, damping).solve_blocks(blocks), layered)
    few = _flat(fit_curvature("pcg", layered, X, y, damping, {"maxiter": 10})
                .solve_blocks(blocks), layered)
    assert float((few - dense).norm()) < float((ekfac - dense).norm())


def test_one_step_where_ekfac_is_exact(float64):
    """One Linear layer, one output, MSE: the GGN is ``2/N A^T A`` (Kronecker with a
    constant output factor), EK-FAC is exact, so PCG's first step is the solve."""
    X, y = make_regression(n_samples=60, n_features=5, noise=1.0, random_state=0)
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(), criterion=torch.nn.MSELoss,
                             optimizer=torch.optim.SGD, optimizer__weight_decay=1e-2, lr=0.01,
                             max_epochs=5, batch_size=16, train_split=None, verbose=0)
    y = (y / y.std()).reshape(-1, 1)
    ens = SeedEnsembleRegressor(net, n_seeds=1, random_state=0).fit(X, y)
    member = functional_member(ens.estimators_[0], "loss", "regressor", layered=True,
                               probe_X=X[:8])
    flat = functional_member(ens.estimators_[0], "loss", "regressor")
    X_net, y_net = (t.numpy() for t in member.tensors(X, y))
    v = torch.randn(4, member.n_params, generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64)
    blocks = [torch.stack(b) for b in zip(*(member.to_blocks(row) for row in v))]
    dense = fit_curvature("ggn", flat, X_net, y_net, 1e-3, {"form": "dense"}).solve(v)
    solver = fit_curvature("pcg", member, X_net, y_net, 1e-3, {"maxiter": 1})
    got = _flat(solver.solve_blocks(blocks), member)
    np.testing.assert_allclose(got, dense, rtol=1e-9, atol=1e-12 * float(dense.abs().max()))
    assert solver.n_iter_ == 1 and solver.residual_ < 1e-9


def test_with_damping_equals_a_fresh_fit_and_shares_the_factors(float64):
    layered, _, X, y, _, blocks = _problem("mlp")
    options = {"maxiter": 4, "samples": None}
    solver = fit_curvature("pcg", layered, X, y, 1e-3, options)
    copy = solver.with_damping(0.05)
    assert (copy.damping, solver.damping) == (0.05, 1e-3)
    assert copy.preconditioner.factors is solver.preconditioner.factors
    assert copy.ggn.chunks is solver.ggn.chunks
    fresh = fit_curvature("pcg", layered, X, y, 0.05, options)
    for got, want in zip(copy.solve_blocks(blocks), fresh.solve_blocks(blocks)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # EK-FAC's refitted eigenvalues sum to the exact GGN's trace
    ekfac = fit_curvature("ekfac", layered, X, y, 1e-3, {"samples": None})
    assert solver.mean_eigenvalue() == pytest.approx(ekfac.mean_eigenvalue(), rel=1e-12)
    assert copy.mean_eigenvalue() == pytest.approx(solver.mean_eigenvalue(), rel=1e-12)


def test_it_is_layered_and_refits_sets_but_is_not_kronecker():
    assert "pcg" in LAYERED and "pcg" in NEWTON_SETS and "pcg" not in KRONECKER
    assert PCGCurvature.options == ("maxiter", "tol", "samples", "chunk")


@pytest.mark.parametrize("options, message", [
    ({"maxiter": 0}, "maxiter, an int >= 1"),
    ({"maxiter": 2.5}, "maxiter, an int >= 1"),
    ({"maxiter": True}, "maxiter, an int >= 1"),
    ({"tol": -1e-3}, r"tol, a number in \[0, 1\)"),
    ({"tol": 1.0}, r"tol, a number in \[0, 1\)"),
    ({"chunk": 0}, "chunk, an int >= 1"),
    ({"steps": 3}, r"curvature='pcg' takes curvature_options 'maxiter', 'tol', 'samples' and "
                   r"'chunk', got \['steps'\]"),
])
def test_bad_options_raise(float64, options, message):
    layered, _, X, y, _, _ = _problem("mlp")
    with pytest.raises(ValueError, match=message):
        fit_curvature("pcg", layered, X, y, 1e-3, options)


def test_zero_damping_without_weight_decay_raises():
    X, y = load_iris(return_X_y=True)
    ens = _fit(MLP, scale(X).astype(np.float32), y, module__hidden_layer_sizes=(4,),
               optimizer__weight_decay=0, max_epochs=2)
    with pytest.raises(ValueError, match=r"curvature='pcg' needs damping > 0"):
        InfluenceTransformer(ens, curvature="pcg", damping=0).fit(scale(X).astype(np.float32),
                                                                  y)
    influence = InfluenceTransformer(ens, curvature="pcg", damping=1e-2).fit(
        scale(X).astype(np.float32), y)
    with pytest.raises(ValueError, match=r"curvature='pcg' needs damping > 0"):
        influence.curvatures_[0].with_damping(0.0)


def test_transformer_scores_converge_to_the_ggn_of_the_same_layers(float64):
    """End to end: the scores of PCG run to convergence are those of the exact GGN over
    the layers EK-FAC attributes; a LayerNorm held fixed by both."""
    X, y = make_classification(n_samples=50, n_features=4, n_informative=3, n_redundant=0,
                               n_classes=3, random_state=0)
    net = NeuralNetClassifier(ResidualLN, module__width=6, criterion=torch.nn.CrossEntropyLoss,
                              optimizer=torch.optim.Adam, lr=0.01, max_epochs=10, batch_size=16,
                              train_split=None, verbose=0)
    ens = SeedEnsembleClassifier(net, n_seeds=2, random_state=0).fit(X, y)
    pcg = InfluenceTransformer(ens, curvature="pcg", damping=1e-2,
                               curvature_options={"maxiter": 500, "tol": 1e-12}).fit(X, y)
    assert pcg.fixed_parameters_ and pcg.attributed_layers_
    ggn = InfluenceTransformer(ens, curvature="ggn", damping=1e-2,
                               modules=pcg.attributed_layers_).fit(X, y)
    assert ggn.n_params_attributed_ == pcg.n_params_attributed_
    want = ggn.influence_samples(X[:6], y[:6])
    np.testing.assert_allclose(pcg.influence_samples(X[:6], y[:6]), want, rtol=1e-6,
                               atol=1e-8 * np.abs(want).max())


def test_auto_damping_treats_it_as_the_exact_ggn():
    """It solves the exact GGN, so damping="auto" gives it the exact forms' multiple,
    not the Kronecker one."""
    from skdtda.influence._damping import curvature_factor

    for statistic in ("mean", "variance"):
        assert curvature_factor("pcg", statistic) == curvature_factor("ggn", statistic)
        assert curvature_factor("pcg", statistic) != curvature_factor("ekfac", statistic)
