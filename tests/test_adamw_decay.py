"""AdamW's decoupled weight decay, read as the parameter-wise L2 term its fixed point
implies (skdtda.model.decoupled_decay), against the optimizer's own fixed point."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification, make_regression
from skorch import NeuralNetClassifier, NeuralNetRegressor

from _models import Conv1dNet
from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.model import decoupled_decay, functional_member
from skdtda.nets import MLP


def _adamw_regressor(X, y, weight_decay=0.5, epochs=1500, batch_size=None, **kwargs):
    torch.manual_seed(0)
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(), module__n_features=4,
                             module__n_outputs=1, criterion=torch.nn.MSELoss,
                             optimizer=torch.optim.AdamW, lr=3e-3,
                             optimizer__weight_decay=weight_decay, max_epochs=epochs,
                             batch_size=batch_size or len(X), train_split=None, verbose=0,
                             **kwargs)
    return net.fit(X, y)


@pytest.fixture(scope="module")
def regression():
    X, y = make_regression(n_samples=60, n_features=4, noise=5.0, random_state=0)
    return X.astype(np.float32), (y / y.std()).astype(np.float32).reshape(-1, 1)


def test_the_decay_is_the_l2_term_whose_gradient_vanishes_at_adamws_fixed_point(regression):
    X, y = regression
    net = _adamw_regressor(X, y)
    member = functional_member(net, "loss", "regressor")
    state = net.optimizer_.state
    weight = net.module_[0].weight
    v_hat = state[weight]["exp_avg_sq"].double() / (1 - 0.999 ** float(state[weight]["step"]))
    assert member.weight_decay == 0.0 and not member.penalty_normalised
    np.testing.assert_allclose(member.penalty[:4].numpy(),
                               (0.5 * (v_hat.sqrt() + 1e-8)).reshape(-1).numpy(), rtol=1e-6)
    theta = member.theta.double()
    (loss_grad,) = member.mean_grads(X, y)
    # the objective with the parameter-wise term is stationary where AdamW stopped ...
    stationary = loss_grad + member.fixed_diagonal() * theta
    # ... and the uniform reading (loss + wd/2 |theta|^2) is far from it
    uniform = loss_grad + 0.5 * theta
    assert float(stationary.norm()) < 0.05 * float(uniform.norm())
    assert float(uniform.norm()) > 0.1


def test_other_optimizers_keep_the_uniform_weight_decay(regression):
    X, y = regression
    for optimizer in (torch.optim.Adam, torch.optim.SGD):
        net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(), module__n_features=4,
                                 module__n_outputs=1, criterion=torch.nn.MSELoss,
                                 optimizer=optimizer, lr=1e-3, optimizer__weight_decay=0.1,
                                 max_epochs=2, train_split=None, verbose=0).fit(X, y)
        assert decoupled_decay(net) is None
        member = functional_member(net, "loss", "regressor")
        assert member.weight_decay == pytest.approx(0.1) and member.penalty is None
    # AdamW without decay, and AdamW before any step: nothing to read
    net = _adamw_regressor(X, y, weight_decay=0.0, epochs=2)
    assert decoupled_decay(net) is None
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(), module__n_features=4,
                             module__n_outputs=1, criterion=torch.nn.MSELoss,
                             optimizer=torch.optim.AdamW, max_epochs=0, train_split=None,
                             verbose=0).fit(X, y)
    assert decoupled_decay(net) is None
    assert functional_member(net, "loss", "regressor").weight_decay == pytest.approx(0.01)


@pytest.mark.parametrize("curvature", ["ggn", "ekfac", "cg"])
def test_every_curvature_takes_the_decay_of_a_minibatch_adamw_ensemble(curvature):
    # a model the decay was not written for: strided and dilated 1-d convolutions
    X, y = make_classification(n_samples=80, n_features=8, n_informative=4, random_state=1)
    X = X.astype(np.float32)
    net = NeuralNetClassifier(Conv1dNet, module__n_classes=2, criterion=torch.nn.CrossEntropyLoss,
                              optimizer=torch.optim.AdamW, lr=1e-2,
                              optimizer__weight_decay=0.05, max_epochs=5, batch_size=16,
                              train_split=None, verbose=0)
    ens = SeedEnsembleClassifier(net, n_seeds=2, random_state=0).fit(X, y)
    influence = InfluenceTransformer(ens, curvature=curvature, damping=1e-3).fit(X, y)
    for c in influence.curvatures_:
        member = c.member
        assert member.weight_decay == 0.0 and member.penalty is not None
        assert 0 < float(member.penalty.max()) < 0.05
    scores = influence.transform(X[:5])
    assert scores.shape == (5, 80) and np.isfinite(scores).all()
