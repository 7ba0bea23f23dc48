"""The command-line demo and its output-layer influence."""

import numpy as np
import torch
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler

from skdtda import SeedEnsembleClassifier
from skdtda.__main__ import main, output_layer_influence


def test_output_layer_influence_equals_autograd_hessian_formula():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    ens = SeedEnsembleClassifier(n_seeds=2, random_state=0).fit(X, y)
    damping = 1e-2
    delta = output_layer_influence(ens, X, y, X[:5], y[:5], damping=damping)
    assert delta.shape == (2, 5, len(X))
    for s, member in enumerate(ens.estimators_):
        module = member.module_
        features = torch.nn.Sequential(*list(module)[:-1])(torch.as_tensor(X, dtype=torch.float32))
        features = features.detach().double()
        head = module[-1]
        theta = torch.cat([head.weight, head.bias[:, None]], dim=1).detach().double().flatten()
        n_classes = head.weight.shape[0]

        def losses(theta, rows):
            W = theta.reshape(n_classes, -1)
            logits = features[rows] @ W[:, :-1].T + W[:, -1]
            return torch.nn.functional.cross_entropy(logits, torch.as_tensor(y[rows]),
                                                     reduction="none")

        everything = np.arange(len(X))
        hessian = torch.autograd.functional.hessian(lambda t: losses(t, everything).mean(), theta)
        jac = torch.autograd.functional.jacobian(lambda t: losses(t, everything), theta)
        expected = jac[:5] @ torch.linalg.solve(
            hessian + damping * torch.eye(len(theta), dtype=theta.dtype), jac.T) / len(X)
        np.testing.assert_allclose(delta[s], expected.numpy(), rtol=1e-3, atol=1e-6)


def test_demo_command_runs(capsys):
    assert main(["demo", "--dataset", "iris", "--n-seeds", "3", "--queries", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "trained 3 seeds" in out
    assert out.count("most influential on the mean") == 2
    assert out.count("most influential on the variance") == 2
