"""The kernel (Woodbury) form of the exact GGN against the dense one."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification, make_regression
from skorch import NeuralNetClassifier, NeuralNetRegressor

from skdtda import InfluenceTransformer, SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.curvature import (EigenCurvature, KernelCurvature, dense_ggn, fit_curvature)
from skdtda.model import functional_member as FunctionalMember
from skdtda.nets import MLP


def _classifier(n_classes=3, hidden=(16,), weight_decay=1e-3, n_seeds=2):
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=hidden,
                              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                              optimizer__weight_decay=weight_decay, lr=0.1, max_epochs=15,
                              batch_size=16, train_split=None, verbose=0)
    return SeedEnsembleClassifier(net, n_seeds=n_seeds, random_state=0)


def _regressor(hidden=(12,)):
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=hidden, optimizer=torch.optim.SGD,
                             lr=0.01, max_epochs=15, batch_size=16, train_split=None, verbose=0)
    return SeedEnsembleRegressor(net, n_seeds=2, random_state=0)


def _classification(n_samples, n_classes, seed=0):
    return make_classification(n_samples=n_samples, n_features=6, n_informative=4,
                               n_redundant=0, n_classes=n_classes, random_state=seed)


def _member(ens, X, y):
    member = FunctionalMember(ens.estimators_[0], "loss",
                              "classifier" if hasattr(ens, "classes_") else "regressor")
    return member, *(t.numpy() for t in member.tensors(X, ens._net_targets(y)))


@pytest.mark.parametrize("n_classes, weight_decay, damping", [(2, 0.0, 1e-3), (3, 1e-3, 1e-2),
                                                               (5, 1e-2, 1e-4)])
def test_kernel_solve_equals_dense_solve(float64, n_classes, weight_decay, damping):
    X, y = _classification(150, n_classes, seed=n_classes)
    ens = _classifier(n_classes, weight_decay=weight_decay).fit(X, y)
    member, X_net, y_net = _member(ens, X, y)
    kernel = KernelCurvature(member, X_net, y_net, damping)
    # softmax cross-entropy: K - 1 rows per sample (the all-ones direction is null)
    assert kernel.factor.shape == (150 * (n_classes - 1), member.n_params)
    matrix = dense_ggn(member, X_net, y_net)
    matrix += weight_decay * torch.eye(len(matrix), dtype=matrix.dtype)
    dense = EigenCurvature(matrix, damping)
    v = torch.randn(7, member.n_params, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(kernel.solve(v), dense.solve(v), rtol=1e-8,
                               atol=1e-10 * float(dense.solve(v).abs().max()))


def test_kernel_solve_equals_dense_solve_for_a_regressor(float64):
    X, y = make_regression(n_samples=30, n_features=5, n_targets=2, random_state=0)
    y = (y - y.mean(0)) / y.std(0)
    ens = _regressor().fit(X, y)
    member, X_net, y_net = _member(ens, X, y)
    kernel = KernelCurvature(member, X_net, y_net, 1e-3)
    dense = EigenCurvature(dense_ggn(member, X_net, y_net), 1e-3)
    v = torch.randn(4, member.n_params, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(kernel.solve(v), dense.solve(v), rtol=1e-8,
                               atol=1e-10 * float(dense.solve(v).abs().max()))


def test_influence_scores_equal_with_the_kernel_forced_on_and_off(float64):
    X, y = _classification(30, 3)
    ens = _classifier(3, hidden=(16,)).fit(X, y)  # 6*16+16+16*3+3 = 163 > 30 * 3 parameters
    scores = {}
    for form in ("auto", "kernel", "dense"):
        influence = InfluenceTransformer(ens, curvature="ggn", damping=1e-3,
                                         curvature_options={"form": form}).fit(X, y)
        kinds = {type(c).__name__ for c in influence.curvatures_}
        assert kinds == {"EigenCurvature" if form == "dense" else "KernelCurvature"}
        scores[form] = influence.influence_samples(X[:8], y[:8])
    scale = np.abs(scores["dense"]).max()
    for form in ("auto", "kernel"):
        np.testing.assert_allclose(scores[form], scores["dense"], rtol=1e-8, atol=1e-11 * scale)
    default = InfluenceTransformer(ens, damping=1e-3).fit(X, y)  # "auto" picks "ggn" here
    assert default.curvature_ == "ggn"
    assert isinstance(default.curvatures_[0], KernelCurvature)
    np.testing.assert_allclose(default.influence_samples(X[:8], y[:8]), scores["dense"],
                               rtol=1e-8, atol=1e-11 * scale)


def test_dense_form_where_the_kernel_is_larger_or_needs_damping(float64):
    X, y = _classification(60, 3)
    ens = _classifier(3, hidden=(4,)).fit(X, y)  # 6*4+4+4*3+3 = 43 < 60 * 3 parameters
    member, X_net, y_net = _member(ens, X, y)
    assert isinstance(fit_curvature("ggn", member, X_net, y_net, 1e-3), EigenCurvature)
    small = _classifier(3, hidden=(16,), weight_decay=0.0).fit(X[:20], y[:20])
    member, X_net, y_net = _member(small, X[:20], y[:20])
    # damping=0 is the pseudo-inverse, which only the dense form gives
    assert isinstance(fit_curvature("ggn", member, X_net, y_net, 0.0), EigenCurvature)
    assert isinstance(fit_curvature("ggn", member, X_net, y_net, 1e-3), KernelCurvature)
    with pytest.raises(ValueError, match="damping \\+ weight decay > 0"):
        fit_curvature("ggn", member, X_net, y_net, 0.0, {"form": "kernel"})
    with pytest.raises(ValueError, match="form='woodbury'"):
        fit_curvature("ggn", member, X_net, y_net, 1e-3, {"form": "woodbury"})
    with pytest.raises(ValueError, match="takes no curvature_options"):
        fit_curvature("ggn", member, X_net, y_net, 1e-3, {"form": "kernel", "maxiter": 3})


@pytest.mark.parametrize("damping", [0.5, 0.0])
def test_dense_curvature_leaves_the_callers_matrix_and_solves_its_symmetric_part(damping):
    """EigenCurvature symmetrises and factors its own copy: the caller's float64 matrix
    is not touched, and the solve is that of (M + M^T) / 2 (the Cholesky path with a
    damping, the eigendecomposition's pseudo-inverse without), against NumPy; a
    Cholesky that fails (an indefinite matrix) leaves H as it was for the eigen path."""
    rng = np.random.RandomState(0)
    root = rng.normal(size=(300, 300))
    matrix = torch.tensor(root @ root.T / 300 + 0.01 * rng.normal(size=(300, 300)))
    given = matrix.clone()
    symmetric = ((matrix + matrix.T) / 2).numpy()
    vectors = torch.tensor(rng.normal(size=(3, 300)))
    solved = EigenCurvature(matrix, damping).solve(vectors).numpy()
    assert torch.equal(matrix, given)
    expected = np.linalg.pinv(symmetric + damping * np.eye(300)) @ vectors.numpy().T
    np.testing.assert_allclose(solved, expected.T, rtol=1e-6, atol=1e-8)
    indefinite = torch.tensor(symmetric - 2 * np.eye(300))
    curvature = EigenCurvature(indefinite, 0.5)
    np.testing.assert_allclose(curvature.solve(vectors).numpy(),
                               np.linalg.solve(symmetric - 1.5 * np.eye(300),
                                               vectors.numpy().T).T, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(curvature.matrix().numpy(), symmetric - 2 * np.eye(300),
                               atol=1e-12)


def test_rows_that_carry_nothing_are_left_out_within_the_bound(float64):
    """A model that fits its training rows closely: the rows of ``U`` of the rows it
    fits (a softmax near one-hot) carry almost nothing and are left out, the smallest
    first, while their summed trace stays within ``NEGLIGIBLE`` of the damping; every
    solve then moves by at most that much relative to itself (the truth: the dense GGN
    of every row)."""
    from skdtda.curvature._kernel import NEGLIGIBLE

    X, y = make_classification(n_samples=120, n_features=6, n_informative=4, n_redundant=0,
                               n_classes=3, class_sep=3.0, random_state=0)
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(16,),
                              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam,
                              lr=0.02, max_epochs=150, batch_size=16, train_split=None,
                              verbose=0)
    ens = SeedEnsembleClassifier(net, n_seeds=1, random_state=0).fit(X, y)
    member, X_net, y_net = _member(ens, X, y)
    damping = 1e-3
    kernel = KernelCurvature(member, X_net, y_net, damping)
    kept = len(kernel.factor)
    assert kept < 0.95 * 120 * 2  # rows left out (219 of 240 kept when written)
    assert len(kernel.sample_of_row) == kept
    dense = EigenCurvature(dense_ggn(member, X_net, y_net), damping)
    v = torch.randn(7, member.n_params, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    want = dense.solve(v)
    moved = (kernel.solve(v) - want).norm(dim=1) / want.norm(dim=1)
    assert 0 < float(moved.max()) <= 1.5 * NEGLIGIBLE
    # the dropped rows' terms: trace within the bound
    full = dense_ggn(member, X_net, y_net)
    kept_gram = kernel.factor.T @ kernel.factor
    assert 0 <= float(torch.trace(full - kept_gram)) <= NEGLIGIBLE * damping * (1 + 1e-6)
