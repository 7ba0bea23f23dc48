"""Attribution on the modules users bring: CNNs, attention, embeddings, norms, dropout.

Tested against the truth: per-row gradient blocks from the hooks against
autograd row by row, EK-FAC's eigenvalues against the exact GGN in the same
basis, single-layer EK-FAC against the exact GGN where K-FAC is exact.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_classification, make_regression
from skorch import NeuralNetClassifier, NeuralNetRegressor

from _models import (BagOfTokens, Conv1dNet, DigitsCNN, LinearAttention, NestedMLP,
                     GRUNet, NormDropout, ResidualLN, SharedHead, TiedTokens,
                     TorchTransformer)
from skdtda import InfluenceTransformer, SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.exceptions import UnsupportedOperationError
from skdtda.model import functional_member as FunctionalMember

# module, n_features, data kind
CASES = {
    "cnn": (DigitsCNN, 64, "digits"),
    "nested": (NestedMLP, 4, "dense"),
    "residual_ln": (ResidualLN, 4, "dense"),
    "torch_transformer": (TorchTransformer, 8, "dense"),
    "linear_attention": (LinearAttention, 8, "dense"),
    "embeddings": (BagOfTokens, 5, "tokens"),
    "norm_dropout": (NormDropout, 4, "dense"),
    "conv1d": (Conv1dNet, 8, "dense"),
    "shared_head": (SharedHead, 4, "dense"),
    "tied_tokens": (TiedTokens, 5, "tokens"),
}


def _data(kind, n_features, n=60, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "digits":
        X, y = load_digits(return_X_y=True)
        return (X[:n] / 16).astype(np.float32), y[:n]
    if kind == "tokens":
        X = rng.integers(0, 12, size=(n, n_features)).astype(np.float32)
        return X, (X[:, 0] % 3).astype(int)
    X, y = make_classification(n_samples=n, n_features=n_features, n_informative=3,
                               n_redundant=0, n_classes=3, random_state=seed)
    return X.astype(np.float32), y


def _net(module, **kw):
    params = dict(criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=0.01,
                  max_epochs=3, batch_size=16, train_split=None, verbose=0)
    params.update(kw)
    return NeuralNetClassifier(module, **params)


@pytest.fixture(scope="module")
def fitted():
    out = {}
    for name, (module, n_features, kind) in CASES.items():
        X, y = _data(kind, n_features)
        ens = SeedEnsembleClassifier(_net(module), n_seeds=2, random_state=0).fit(X, y)
        out[name] = (ens, X, y)
    return out


def _row_by_row(member, fn, X, y):
    """Reference per-row gradients of the attributed parameters, one autograd call a row."""
    params = dict(member.module.named_parameters())
    targets = [params[n] for n in member.names]
    rows = []
    member.module.eval()
    for i in range(len(X)):
        x, t = member.tensors(X[i:i + 1], y[i:i + 1])
        value = fn(member.net, member.module(x), t)[0]
        grads = torch.autograd.grad(value, targets, allow_unused=True)
        rows.append(torch.cat([torch.zeros(p.numel()) if g is None else g.reshape(-1)
                               for g, p in zip(grads, targets)]))
    return torch.stack(rows)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("which", ["loss", "measurement"])
def test_hooked_row_gradients_equal_autograd_row_by_row(fitted, name, which):
    ens, X, y = fitted[name]
    member = FunctionalMember(ens.estimators_[0], "margin", "classifier", layered=True,
                              probe_X=X[:8])
    blocks = member.grads(which, X[:9], y[:9])
    fast = torch.cat([
        torch.cat([part.reshape(9, -1) for part in spec.kind.to_params(spec.module, b)], 1)
        for spec, b in zip(member.layers, blocks)], dim=1)
    # blocks come in layer order; the reference in member.names order, which is the same
    slow = _row_by_row(member, member._fn(which), X[:9], y[:9])
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)


def test_supported_layers_and_fixed_parameters_are_reported(fitted):
    ens, X, y = fitted["torch_transformer"]
    influence = InfluenceTransformer(ens, curvature="ekfac").fit(X, y)
    fixed = influence.fixed_parameters_
    assert fixed["pos"].startswith("a free parameter: 'pos' is registered directly on "
                                   "TorchTransformer (the model itself)")
    assert "encoder.self_attn.in_proj_weight" in fixed
    assert "MultiheadAttention" in fixed["encoder.self_attn.in_proj_weight"] or \
        "multi_head_attention" in fixed["encoder.self_attn.in_proj_weight"]
    assert "encoder.norm1.weight" in fixed
    assert set(influence.attributed_layers_) == {"embed", "encoder.linear1", "encoder.linear2",
                                                 "head"}
    module = ens.estimators_[0].module_
    sizes = dict((n, p.numel()) for n, p in module.named_parameters())
    assert influence.n_params_attributed_ == sum(sizes.values()) - sum(
        sizes[n] for n in fixed)


def test_free_parameters_and_overridden_layers_are_reported_as_such():
    """A parameter registered on the user's own module is a free parameter (named, with
    where it sits), a Linear subclass with its own forward is not a Linear, and torch's
    own unsupported modules are named by class."""
    from skdtda.model.layers import find_layers

    class Scaled(torch.nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = torch.nn.Parameter(torch.ones(3))
            self.fc = Scaled(3, 3)

    net = torch.nn.Sequential(torch.nn.Linear(4, 3), Block(), torch.nn.PReLU())
    specs, fixed = find_layers(net)
    assert [spec.name for spec in specs] == ["0"]
    assert fixed["1.gain"] == ("a free parameter: '1.gain' is registered directly on Block "
                               "(module '1'), not inside a supported layer (Linear, "
                               "Conv1d/2d, Embedding/Bag)")
    assert fixed["1.fc.weight"] == ("Scaled (module '1.fc') overrides Linear.forward, so it "
                                    "is not seen as a supported layer")
    assert fixed["2.weight"].startswith("PReLU is not a supported layer")


@pytest.mark.parametrize("name", sorted(CASES))
def test_ekfac_scores_every_architecture(fitted, name):
    ens, X, y = fitted[name]
    influence = InfluenceTransformer(ens, curvature="ekfac", damping=1e-2).fit(X, y)
    scores = influence.transform(X[:4])
    samples = influence.influence_samples(X[:4], y[:4])
    assert scores.shape == (4, len(X)) and samples.shape == (2, 4, len(X))
    assert np.isfinite(samples).all() and np.abs(samples).max() > 0
    # eval mode: scoring twice gives the same numbers (no dropout, running statistics)
    np.testing.assert_array_equal(samples, influence.influence_samples(X[:4], y[:4]))


class _FewPatchesCNN(torch.nn.Module):
    """A wide convolution on a 4x4 map: 4 patches of 145 inputs, where EK-FAC rotates
    the patches rather than each row's (out, in) gradient block."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 8, 3)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        h = torch.max_pool2d(torch.relu(self.conv1(x.reshape(-1, 1, 8, 8))), 2)
        return self.head(torch.relu(self.conv2(h)).flatten(1))


@pytest.mark.parametrize("module, kwargs", [
    (DigitsCNN, {"module__width": 2, "module__hidden": 6}), (_FewPatchesCNN, {})])
def test_ekfac_eigenvalues_are_the_exact_ggn_diagonal_in_the_kronecker_basis(float64, module,
                                                                               kwargs):
    """EK-FAC's refit eigenvalues are diag(Q^T G Q) of the exact GGN block, on CNNs
    (both ways of rotating a convolution's per-row gradients)."""
    from skdtda.curvature import KroneckerCurvature, dense_ggn
    from skdtda.curvature._kfac import _rotate_patches_first

    X, y = _data("digits", 64, n=40)
    X = X.astype(np.float64)
    net = _net(module, max_epochs=1, **kwargs)
    ens = SeedEnsembleClassifier(net, n_seeds=1, random_state=0).fit(X, y)
    member = FunctionalMember(ens.estimators_[0], "loss", "classifier", layered=True,
                              probe_X=X[:8])
    flat = FunctionalMember(ens.estimators_[0], "loss", "classifier")
    assert member.names == flat.names
    y_net = ens._net_targets(y)
    ggn = dense_ggn(flat, X, y_net)
    kron = KroneckerCurvature(member, X, y_net, damping=0.0, corrected=True, samples=None)
    if module is _FewPatchesCNN:
        conv2 = member.layers[1]
        assert _rotate_patches_first(conv2.kind.patches(conv2.module, (torch.zeros(2, 16, 4, 4),),
                                                        {}, 0), 8)
    start = 0
    for spec, f in zip(member.layers, kron.factors):
        # the block's (out, in) layout against the parameters' flat order
        index = torch.arange(spec.size).reshape(1, *spec.shape)
        order = torch.cat([p.reshape(-1) for p in spec.kind.to_params(spec.module, index)])
        block = ggn[start:start + spec.size, start:start + spec.size]
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(spec.size)
        block = block[inverse][:, inverse]  # now in (out, in) row-major order
        basis = torch.kron(f["q_g"], f["q_a"])
        expected = torch.diagonal(basis.T @ block @ basis).reshape(spec.shape)
        torch.testing.assert_close(f["eig"], expected, rtol=1e-6, atol=1e-10)
        start += spec.size


@pytest.mark.parametrize("name", ["few_patches_cnn", "linear_attention", "embeddings",
                                  "conv1d"])
def test_query_solves_from_patches_equal_the_dense_kronecker_inverse(fitted, name):
    """The queries' solves, rotated from their patches (one patch a row, few patches of
    many inputs, sequences, one-hot tokens), equal (Q (x) Q) diag(1 / (eig + damping))
    (Q (x) Q)^T built densely per layer and applied to the gradient blocks."""
    from skdtda.curvature import KroneckerCurvature
    from skdtda.curvature._kfac import _rotate_patches_first

    if name == "few_patches_cnn":
        X, y = _data("digits", 64, n=40)
        ens = SeedEnsembleClassifier(_net(_FewPatchesCNN, max_epochs=1), n_seeds=1,
                                     random_state=0).fit(X, y)
    else:
        ens, X, y = fitted[name]
    member = FunctionalMember(ens.estimators_[0], "margin", "classifier", layered=True,
                              probe_X=X[:8])
    y_net = ens._net_targets(y)
    kron = KroneckerCurvature(member, X, y_net, damping=1e-2, corrected=True)
    solved = kron.solve_rows("measurement", X[:5], y_net[:5])
    blocks = member.grads("measurement", X[:5], y_net[:5])
    if name == "few_patches_cnn":
        patches, gs = member.grad_patches("measurement", X[:5], y_net[:5])
        assert _rotate_patches_first(patches[1], gs[1].shape[-1])  # conv2: 4 patches of 145
        assert patches[2].n_pos == 1  # the head
    for spec, f, block, got in zip(member.layers, kron.factors, blocks, solved):
        q_g = f["q_g"].double().contiguous()
        q_a = torch.eye(spec.shape[1], dtype=torch.float64) if f["q_a"] is None else \
            f["q_a"].double().contiguous()
        basis = torch.kron(q_g, q_a)
        matrix = basis @ torch.diag(f["eig"].double().reshape(-1) + 1e-2) @ basis.T
        expected = torch.linalg.solve(matrix, block.double().reshape(5, -1).T).T
        torch.testing.assert_close(got.double().reshape(5, -1), expected, rtol=2e-3,
                                   atol=2e-3 * float(expected.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_is_the_sum_of_outer_products(dtype):
    from skdtda.curvature.layers import gram

    rows = torch.randn(300, 7, dtype=dtype, generator=torch.Generator().manual_seed(0))
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == torch.float32 else {}
    for r in (rows, rows[:, 1:6], rows.T.contiguous().T):  # contiguous or not
        torch.testing.assert_close(gram(r), r.T @ r, **tol)
    torch.testing.assert_close(gram(rows.int()), rows.int().T @ rows.int())  # no BLAS type


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("outer", [False, True])
def test_gram_sum_accumulates_blocks_and_is_exactly_symmetric(dtype, outer):
    """One triangle accumulated over the blocks and mirrored once (blocked, past the
    mirror's 256-row blocks): the sum of the blocks' products, symmetric to the bit."""
    from skdtda.model.layers import gram_sum

    generator = torch.Generator().manual_seed(0)
    shapes = [(n, 300) for n in (5, 400, 1)]  # b^T b: blocks of one width
    if outer:  # b b^T: blocks of one height
        shapes = [(300, n) for n in (5, 400, 1)]
    blocks = [torch.randn(*shape, dtype=dtype, generator=generator) for shape in shapes]
    got = gram_sum(blocks, outer=outer)
    want = sum((b @ b.T if outer else b.T @ b).double() for b in blocks)
    tol = {"rtol": 1e-5, "atol": 1e-3} if dtype == torch.float32 else {}
    assert got.dtype == dtype and torch.equal(got, got.T)
    torch.testing.assert_close(got.double(), want, **tol)
    with pytest.raises(ValueError, match="at least one block"):
        gram_sum([])
    # blocks of mixed kinds: a block of another dtype, or one that needs gradients,
    # continues the sum by the general product
    other = torch.float64 if dtype == torch.float32 else torch.float32
    for extra in (blocks[0].to(other), blocks[0].clone().requires_grad_()):
        mixed = gram_sum(blocks + [extra], outer=outer)
        added = (extra @ extra.T if outer else extra.T @ extra).detach().double()
        torch.testing.assert_close(mixed.detach().double(), want + added,
                                   rtol=1e-5, atol=1e-3)


def test_sampled_factors_converge_to_the_exact_ones(float64):
    """Random combinations of the root columns are unbiased: with more of them the
    K-FAC factors approach those of every column."""
    from skdtda.curvature import KroneckerCurvature

    X, y = _data("digits", 64, n=60)
    X = X.astype(np.float64)
    ens = SeedEnsembleClassifier(_net(DigitsCNN, module__width=2, module__hidden=6,
                                      max_epochs=1), n_seeds=1, random_state=0).fit(X, y)
    member = FunctionalMember(ens.estimators_[0], "loss", "classifier", layered=True,
                              probe_X=X[:8])
    y_net = ens._net_targets(y)

    def kfac(samples):
        return KroneckerCurvature(member, X, y_net, 0.0, corrected=False, samples=samples)

    exact = kfac(None)
    errors = []
    for samples in (1, 64):
        approx = kfac(samples)
        errors.append(max(float((a["eig"] - e["eig"]).abs().max() / e["eig"].abs().max())
                          for a, e in zip(approx.factors, exact.factors)))
    assert errors[1] < errors[0] and errors[1] < 0.1, errors


def test_modules_selects_layers_and_single_layer_ekfac_is_the_exact_ggn(float64):
    """With one attributed Linear layer and one output, K-FAC is exact: EK-FAC over
    modules=["out"] equals the dense GGN over the same parameters."""
    X, y = make_regression(n_samples=80, n_features=4, noise=0.5, random_state=0)
    y = y / y.std()
    net = NeuralNetRegressor(ResidualLN, module__n_classes=1, criterion=torch.nn.MSELoss,
                             optimizer=torch.optim.SGD, lr=0.05, max_epochs=10, batch_size=16,
                             train_split=None, verbose=0)
    ens = SeedEnsembleRegressor(net, n_seeds=2, random_state=0).fit(X, y)
    exact = InfluenceTransformer(ens, curvature="ggn", modules=["out"], damping=1e-4)
    approx = InfluenceTransformer(ens, curvature="ekfac", modules="out", damping=1e-4)
    exact.fit(X, y)
    approx.fit(X, y)
    assert exact.n_params_attributed_ == approx.n_params_attributed_ == 17
    assert approx.attributed_layers_ == ["out"]
    assert "inp.weight" in approx.fixed_parameters_
    np.testing.assert_allclose(approx.influence_samples(X[:5], y[:5]),
                               exact.influence_samples(X[:5], y[:5]), rtol=1e-8, atol=1e-14)
    by_type = InfluenceTransformer(ens, curvature="ekfac", modules=[torch.nn.Linear]).fit(X, y)
    assert set(by_type.attributed_layers_) == {"inp", "block.0", "block.2", "out"}
    with pytest.raises(ValueError, match="names no submodule"):
        InfluenceTransformer(ens, modules=["nope"]).fit(X, y)


def test_auto_takes_ekfac_on_a_cnn_beyond_the_dense_budget():
    # 3,658 parameters: the dense GGN's 1000 x 10 x P^2 = 1.3e11 multiply-adds and the
    # kernel form's 10,000 rows are both beyond the budget
    X, y = _data("digits", 64, n=1000)
    ens = SeedEnsembleClassifier(_net(DigitsCNN, max_epochs=1), n_seeds=2,
                                 random_state=0).fit(X, y)
    influence = InfluenceTransformer(ens).fit(X, y)
    assert influence.curvature_ == "ekfac"
    assert influence.fixed_parameters_ == {}
    assert influence.transform(X[:3]).shape == (3, 1000)


def test_cg_on_attention_runs_or_names_the_op(fitted):
    """Matrix-free paths use no forward-mode AD; an op without a batching rule gives a
    clear error that names the curvature that works, never a torch NotImplementedError."""
    ens, X, y = fitted["torch_transformer"]
    try:
        influence = InfluenceTransformer(ens, curvature="cg", damping=0.1,
                                         curvature_options={"maxiter": 5}).fit(X, y)
        with pytest.warns(Warning):
            assert np.isfinite(influence.transform(X[:2])).all()
    except UnsupportedOperationError as exc:
        assert "curvature='ekfac'" in str(exc)


def test_auto_takes_ekfac_where_the_exact_ggn_cannot_run_and_ggn_names_the_op(caplog):
    """torch's GRU cannot run under vmap: curvature='auto' (small enough for the exact
    GGN) takes EK-FAC over the Linear head and says why; 'ggn' asked for explicitly
    raises an UnsupportedOperationError (a ValueError) that names the op, never the
    torch error alone."""
    import logging

    X, y = _data("dense", 8)
    ens = SeedEnsembleClassifier(_net(GRUNet), n_seeds=2, random_state=0).fit(X, y)
    with caplog.at_level(logging.INFO, logger="skdtda"):
        influence = InfluenceTransformer(ens).fit(X, y)
    assert influence.curvature_ == "ekfac" and influence.attributed_layers_ == ["head"]
    assert "exact GGN would be cheap" in caplog.text
    assert np.isfinite(influence.transform(X[:3])).all()
    with pytest.raises(UnsupportedOperationError,
                       match=r"the op `_VF\.gru\(\.\.\.\)` in GRU\.forward \(module 'rnn'\) "
                             r"does not support .*broadcast shape.*curvature='ekfac'"):
        InfluenceTransformer(ens, curvature="ggn").fit(X, y)


def test_dense_ggn_over_all_parameters_of_a_norm_dropout_net(fitted):
    ens, X, y = fitted["norm_dropout"]
    influence = InfluenceTransformer(ens, curvature="ggn", damping=1e-2).fit(X, y)
    assert influence.fixed_parameters_ == {}
    total = sum(p.numel() for p in ens.estimators_[0].module_.parameters())
    assert influence.n_params_attributed_ == total
    assert np.isfinite(influence.transform(X[:3])).all()


@pytest.mark.parametrize("name", ["torch_transformer", "embeddings", "norm_dropout"])
def test_unrolled_refuses_what_it_cannot_replay(fitted, name):
    from skdtda import UnrolledInfluence

    ens, X, y = fitted[name]
    with pytest.raises(ValueError, match="replay|cannot|not"):
        UnrolledInfluence(ens).fit(X, y)


def test_unrolled_differentiates_through_a_cnn():
    """A CNN's training replays (torch.func step) and its responses are finite."""
    from skdtda import UnrolledInfluence

    X, y = _data("digits", 64, n=40)
    net = _net(DigitsCNN, module__width=2, module__hidden=8, max_epochs=2,
               optimizer=torch.optim.SGD)
    ens = SeedEnsembleClassifier(net, n_seeds=2, random_state=0).fit(X, y)
    influence = UnrolledInfluence(ens).fit(X, y)
    assert influence.replay_error_.max() < 1e-3
    assert np.isfinite(influence.influence_samples(X[:3], y[:3])).all()


@pytest.mark.slow
def test_scoring_a_million_parameter_cnn_with_16_seeds_adds_under_1_5_gib():
    """Per-layer blocks, chunked by parameter count: EK-FAC fit + transform of a
    1M-parameter CNN with 16 seeds raise the process's peak by less than 1.5 GiB
    over the fitted ensemble's (16 members' factors included)."""
    import json
    import os
    import subprocess
    import sys

    probe = os.path.join(os.path.dirname(__file__), "_memory_probe.py")
    out = subprocess.run([sys.executable, probe], capture_output=True, text=True, check=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n_params"] >= 1_000_000
    assert result["finite"] and result["shape"] == [40, 96]
    assert result["peak_mib"] - result["base_mib"] < 1536, result


def test_layers_whose_parameters_act_elsewhere_are_held_fixed(fitted):
    """A weight tied between two Linears, or an embedding read out through its own
    weight, gets part of its gradient outside the layer's calls: those layers are held
    fixed (the hooked gradients of the rest equal autograd, test above); a module
    called under two names is one layer with two calls."""
    ens, X, y = fitted["tied_tokens"]
    influence = InfluenceTransformer(ens, curvature="ekfac").fit(X, y)
    assert influence.attributed_layers_ == ["head"]
    for name in ("emb.weight", "a.weight", "a.bias", "b.bias"):
        assert name in influence.fixed_parameters_
    assert "outside its own calls" in influence.fixed_parameters_["emb.weight"]
    ens, X, y = fitted["shared_head"]
    influence = InfluenceTransformer(ens, curvature="ekfac").fit(X, y)
    assert influence.attributed_layers_ == ["inp", "head"] and not influence.fixed_parameters_
    assert np.isfinite(influence.transform(X[:3])).all()


@pytest.mark.parametrize("name", ["shared_head", "tied_tokens"])
def test_shared_and_tied_modules_batch_like_the_loop_and_stay_intact(name, float64):
    """torch.func.functional_call leaves a module registered under two names holding
    the tensors it was called with; the batched ensemble and the influence code must
    train and attribute such modules as the loop does and leave them intact."""
    module, n_features, kind = CASES[name]
    X, y = _data(kind, n_features)
    X = X.astype(np.float64)
    net = _net(module, optimizer=torch.optim.SGD, lr=0.05, optimizer__momentum=0.9)
    loop = SeedEnsembleClassifier(net, n_seeds=2, random_state=0, vectorize=False).fit(X, y)
    batched = SeedEnsembleClassifier(net, n_seeds=2, random_state=0).fit(X, y)
    assert batched.vectorized_
    for a, b in zip(loop.estimators_, batched.estimators_):
        for (na, pa), (nb, pb) in zip(a.module_.named_parameters(),
                                      b.module_.named_parameters()):
            assert na == nb and isinstance(pb, torch.nn.Parameter)
            torch.testing.assert_close(pa, pb, rtol=1e-8, atol=1e-10)
    InfluenceTransformer(batched, curvature="ggn").fit(X, y).transform(X[:2])
    for member in batched.estimators_:
        module = member.module_
        assert all(isinstance(p, torch.nn.Parameter) for p in module.parameters())
        if name == "shared_head":
            assert module.head_again.weight is module.head.weight
        else:
            assert module.b.weight is module.a.weight


def test_seed_ensembles_batch_pure_modules_and_loop_over_norm_and_dropout(fitted, caplog):
    """The batched path trains CNNs and Linear attention; BatchNorm (running statistics)
    and Dropout (per-member randomness) go to the loop, which says why."""
    import logging

    assert fitted["cnn"][0].vectorized_ and fitted["linear_attention"][0].vectorized_
    ens, X, y = fitted["norm_dropout"]
    assert not ens.vectorized_
    with caplog.at_level(logging.INFO, logger="skdtda"):
        SeedEnsembleClassifier(_net(NormDropout), n_seeds=2, random_state=0).fit(X, y)
    assert "buffers" in caplog.text or "Dropout" in caplog.text


@pytest.mark.parametrize("name", ["embeddings", "tied_tokens", "conv1d", "torch_transformer",
                                  "residual_ln"])
def test_a_subspace_scores_every_architecture_consistently(fitted, name):
    """curvature_options={"subspace": k} on modules it was not written for (one-hot
    embeddings with a diagonal input factor, tied weights, 1-d convolutions, attention
    with fixed parameters): the store and the recomputed rows give the same scores,
    self-influence is their diagonal, and keeping every direction is the full EK-FAC."""
    ens, X, y = fitted[name]
    kw = dict(curvature="ekfac", damping=1e-2, measurement="loss")
    full = InfluenceTransformer(ens, **kw).fit(X, y)
    every = InfluenceTransformer(ens, curvature_options={"subspace": 10**6}, **kw).fit(X, y)
    want = full.influence_samples(X[:6], y[:6])
    tol = 1e-5 * np.abs(want).max()
    np.testing.assert_allclose(every.influence_samples(X[:6], y[:6]), want, rtol=1e-4, atol=tol)
    stored = InfluenceTransformer(ens, curvature_options={"subspace": 2}, precompute=True,
                                  **kw).fit(X, y)
    recomputed = InfluenceTransformer(ens, curvature_options={"subspace": 2}, precompute=False,
                                      **kw).fit(X, y)
    got = recomputed.influence_samples(X[:6], y[:6])
    assert not np.allclose(got, want, atol=tol)  # k = 2 drops directions
    np.testing.assert_allclose(stored.influence_samples(X[:6], y[:6]), got, rtol=1e-4, atol=tol)
    np.testing.assert_allclose(recomputed.self_influence_samples()[:, :6],
                               np.diagonal(got, axis1=1, axis2=2), rtol=1e-4, atol=tol)
