"""Parameter-wise L2 penalties (scikit-learn's regularisers) in every curvature backend.

The truth is the dense damped GGN plus the penalty's diagonal, solved directly;
each backend must give the same solves (EK-FAC: the penalty's exact diagonal in
its eigenbasis).
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification, make_regression
from skorch import NeuralNetClassifier, NeuralNetRegressor

from skdtda import SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.curvature import dense_ggn, fit_curvature, solve_blocks
from skdtda.model import L2Penalty, functional_member as FunctionalMember
from skdtda.nets import MLP


def _fitted_member(kind="classifier", layered=False, penalty=None, modules=None):
    if kind == "classifier":
        X, y = make_classification(n_samples=60, n_features=5, n_informative=3, n_redundant=0,
                                   n_classes=3, random_state=0)
        net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(6,),
                                  criterion=torch.nn.CrossEntropyLoss,
                                  optimizer=torch.optim.SGD, lr=0.1, max_epochs=5,
                                  batch_size=16, train_split=None, verbose=0)
        ens = SeedEnsembleClassifier(net, n_seeds=1, random_state=0).fit(X, y)
    else:
        X, y = make_regression(n_samples=60, n_features=4, noise=0.5, random_state=0)
        net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(6,),
                                 optimizer=torch.optim.SGD, lr=0.01, max_epochs=5,
                                 batch_size=16, train_split=None, verbose=0)
        ens = SeedEnsembleRegressor(net, n_seeds=1, random_state=0).fit(X, y / y.std())
        y = y / y.std()
    member_net = ens.estimators_[0]
    member_net.l2_penalty_ = penalty
    X_net = np.asarray(X, dtype=np.float64)
    member = FunctionalMember(member_net, "loss", kind, modules=modules, layered=layered,
                              probe_X=X_net[:8] if layered else None)
    return member, X_net, ens._net_targets(y)


def _penalty(member_names):
    # weights penalised (one layer more than the other), biases not
    return L2Penalty({name: (0.05 if i == 0 else 0.2)
                      for i, name in enumerate(n for n in member_names if "weight" in n)},
                     normalised=False)


def test_penalty_vector_follows_the_attributed_parameters(float64):
    member, X, y = _fitted_member()
    names = member.names
    member, X, y = _fitted_member(penalty=_penalty(names))
    assert member.penalty.shape == (member.n_params,)
    offsets = np.cumsum([0] + member.sizes)
    for name, start, stop in zip(names, offsets[:-1], offsets[1:]):
        expected = 0.0 if "bias" in name else (0.05 if name == names[0] else 0.2)
        assert torch.all(member.penalty[start:stop] == expected), name


@pytest.mark.parametrize("kind, form", [("ggn", "dense"), ("ggn", "kernel"), ("cg", None)])
def test_flat_backends_solve_with_the_penalty(float64, kind, form):
    member, X, y = _fitted_member()
    member, X, y = _fitted_member(penalty=_penalty(member.names))
    damping = 1e-3
    truth = dense_ggn(member, X, y) + torch.diag(member.penalty) + damping * torch.eye(
        member.n_params, dtype=torch.float64)
    options = {"form": form} if kind == "ggn" else {"maxiter": 400, "tol": 1e-12}
    solver = fit_curvature(kind, member, X, y, damping, options)
    v = torch.randn(3, member.n_params, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    expected = torch.linalg.solve(truth, v.T).T
    np.testing.assert_allclose(solver.solve(v), expected, rtol=1e-6,
                               atol=1e-8 * float(expected.abs().max()))


def test_kernel_form_needs_a_positive_diagonal_everywhere(float64):
    member, X, y = _fitted_member()
    member, X, y = _fitted_member(penalty=_penalty(member.names))
    with pytest.raises(ValueError, match="on every parameter"):
        fit_curvature("ggn", member, X, y, 0.0, {"form": "kernel"})


def test_ekfac_adds_the_penalty_diagonal_in_its_eigenbasis(float64):
    member, X, y = _fitted_member(layered=True)
    member, X, y = _fitted_member(layered=True, penalty=_penalty(member.names))
    solver = fit_curvature("ekfac", member, X, y, 1e-3)
    for f, d, got in zip(solver.factors, member.to_blocks(member.penalty), solver.penalty):
        q = torch.kron(f["q_g"].double(), f["q_a"].double())  # row-major vec of (out, in)
        expected = torch.diagonal(q.T @ torch.diag(d.reshape(-1)) @ q).reshape(d.shape)
        np.testing.assert_allclose(got.double(), expected, rtol=1e-10, atol=1e-14)


def test_single_layer_ekfac_with_a_uniform_penalty_equals_the_dense_ggn(float64):
    """A one-output regressor's last layer: K-FAC is exact there, and a penalty that is
    uniform over the layer is exactly diagonal in any eigenbasis."""
    member, X, y = _fitted_member("regressor", modules=["2"])
    names = member.names
    penalty = L2Penalty({name: 0.3 for name in names}, normalised=False)
    dense, X, y = _fitted_member("regressor", modules=["2"], penalty=penalty)
    layered, X, y = _fitted_member("regressor", layered=True, modules=["2"],
                                   penalty=penalty)
    assert dense.names == layered.names == names
    g = dense.per_sample_grads("loss", X[:4], y[:4])
    exact = fit_curvature("ggn", dense, X, y, 1e-4, {"form": "dense"}).solve(g)
    blocks = solve_blocks(fit_curvature("ekfac", layered, X, y, 1e-4),
                          layered.grads("loss", X[:4], y[:4]))
    np.testing.assert_allclose(layered._flat(blocks, 4), exact, rtol=1e-8, atol=1e-12)


def test_normalised_penalty_enters_the_mean_gradient(float64):
    member, X, y = _fitted_member()
    names = member.names
    plain = member.mean_grads(X, y)[0]
    penalty = L2Penalty({names[0]: 0.1}, normalised=True)
    member, X, y = _fitted_member(penalty=penalty)
    np.testing.assert_allclose(member.mean_grads(X, y)[0],
                               plain + member.penalty * member.theta.double(), rtol=1e-12)
    fixed = L2Penalty({names[0]: 0.1}, normalised=False)
    member, X, y = _fitted_member(penalty=fixed)
    np.testing.assert_allclose(member.mean_grads(X, y)[0], plain, rtol=1e-12)
