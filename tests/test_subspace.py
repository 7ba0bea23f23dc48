"""EK-FAC on the leading Kronecker subspace (``curvature_options={"subspace": k}``).

Tested against the truth: the exact GGN (dense, by autograd) projected onto the
kept directions ``Q_Gk (x) Q_Ak`` of each layer, on a CNN and on attention over a
sequence; against the full EK-FAC where every direction is kept; and the scores'
agreement with the full EK-FAC rising with ``k``.
"""

import joblib
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits, make_classification
from skorch import NeuralNetClassifier

from _models import DigitsCNN, LinearAttention
from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.curvature import KroneckerCurvature, dense_ggn
from skdtda.influence._store import _layout, row_numbers
from skdtda.model import functional_member
from skdtda.nets import MLP


def _digits(n=60):
    X, y = load_digits(return_X_y=True)
    return (X[:n] / 16).astype(np.float32), y[:n]


def _ensemble(module, X, y, n_seeds=1, epochs=2, **kwargs):
    net = NeuralNetClassifier(module, criterion=torch.nn.CrossEntropyLoss,
                              optimizer=torch.optim.Adam, lr=0.01, max_epochs=epochs,
                              batch_size=16, train_split=None, verbose=0,
                              **{f"module__{k}": v for k, v in kwargs.items()})
    return SeedEnsembleClassifier(net, n_seeds=n_seeds, random_state=0).fit(X, y)


def _in_block_order(ggn, spec, module):
    """The exact GGN's block of one layer, rows and columns in (out, in) order (its
    parameters are consecutive in the module's flat order)."""
    offsets, start = {}, 0
    for name, p in module.named_parameters():
        offsets[name], start = start, start + p.numel()
    start = offsets[f"{spec.name}.weight"]
    index = torch.arange(spec.size).reshape(1, *spec.shape)
    order = torch.cat([p.reshape(-1) for p in spec.kind.to_params(spec.module, index)])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(spec.size)
    block = ggn[start:start + spec.size, start:start + spec.size]
    return block[inverse][:, inverse]


@pytest.mark.parametrize("case", ["cnn", "attention"])
def test_subspace_inverse_is_the_exact_ggn_on_the_leading_kronecker_block(float64, case):
    """Each layer keeps the top-k eigenvectors of its factors; the refit eigenvalues
    are diag(B^T GGN B) of the exact GGN block for B = Q_Gk (x) Q_Ak, and a solve is
    B diag(1 / (eig + damping)) B^T v: zero outside the kept directions."""
    if case == "cnn":
        X, y = _digits(40)
        ens = _ensemble(DigitsCNN, X.astype(np.float64), y, width=2, hidden=6)
    else:  # a sequence of 4 positions: 4 patches a row on every projection
        X, y = make_classification(n_samples=40, n_features=8, n_informative=3,
                                   n_redundant=0, n_classes=3, random_state=0)
        ens = _ensemble(LinearAttention, X, y)
    X = X.astype(np.float64)
    est = ens.estimators_[0]
    member = functional_member(est, "loss", "classifier", layered=True, probe_X=X[:8])
    flat = functional_member(est, "loss", "classifier")
    y_net = ens._net_targets(y)
    ggn = dense_ggn(flat, X, y_net)
    k, damping = 3, 1e-2
    full = KroneckerCurvature(member, X, y_net, damping, corrected=True, samples=None)
    sub = KroneckerCurvature(member, X, y_net, damping, corrected=True, samples=None,
                             subspace=k)
    rng = torch.Generator().manual_seed(0)
    v = [torch.randn(2, *spec.shape, generator=rng) for spec in member.layers]
    solved = sub.solve_blocks(v)
    truncated = 0
    for spec, f, g, vi, got in zip(member.layers, sub.factors, full.factors, v, solved):
        out, width = spec.shape
        k_out, k_in = min(k, out), min(k, width)
        assert f["q_g"].shape == (out, k_out) and f["q_a"].shape == (width, k_in)
        truncated += k_out < out or k_in < width
        # the leading eigenvectors of the full fit's factors (up to sign)
        for kept, every in ((f["q_g"], g["q_g"]), (f["q_a"], g["q_a"])):
            overlap = (kept.T @ every[:, -kept.shape[1]:]).abs()
            torch.testing.assert_close(overlap, torch.eye(kept.shape[1]), atol=1e-6, rtol=0)
        block = _in_block_order(ggn, spec, est.module_)
        basis = torch.kron(f["q_g"], f["q_a"])  # (out * in, k_out * k_in)
        torch.testing.assert_close(f["eig"].reshape(-1), torch.diagonal(basis.T @ block @ basis),
                                   rtol=1e-6, atol=1e-10)
        inverse = basis @ torch.diag(1 / (f["eig"].reshape(-1) + damping)) @ basis.T
        expected = vi.reshape(2, -1) @ inverse
        torch.testing.assert_close(got.reshape(2, -1), expected, rtol=1e-8,
                                   atol=1e-10 * float(expected.abs().max()))
    assert truncated  # the test would not see a subspace that kept everything


@pytest.fixture(scope="module")
def cnn():
    X, y = _digits(120)
    return _ensemble(DigitsCNN, X, y, n_seeds=2, epochs=4), X, y


def test_every_direction_kept_is_the_full_ekfac(cnn):
    ens, X, y = cnn
    full = InfluenceTransformer(ens, curvature="ekfac", damping=1e-3).fit(X, y)
    every = InfluenceTransformer(ens, curvature="ekfac", damping=1e-3,
                                 curvature_options={"subspace": 10**6}).fit(X, y)
    want = full.influence_samples(X[:7], y[:7])
    # float32 nets: the same numbers to rounding, summed in another order
    np.testing.assert_allclose(every.influence_samples(X[:7], y[:7]), want, rtol=1e-5,
                               atol=1e-6 * np.abs(want).max())


def test_scores_approach_the_full_ekfac_as_the_subspace_grows(cnn):
    """Rank agreement with the full EK-FAC over the training rows rises with k, and
    every scoring path agrees with the queries' scores (self-influence is their
    diagonal on the training rows; the store changes nothing)."""
    ens, X, y = cnn
    full = InfluenceTransformer(ens, curvature="ekfac", damping=1e-3).fit(X, y)
    want = full.influence_samples(X[:20], y[:20]).mean(axis=0)
    agreement = []
    for k in (1, 4, 32):
        sub = InfluenceTransformer(ens, curvature="ekfac", damping=1e-3, precompute=False,
                                   curvature_options={"subspace": k}).fit(X, y)
        got = sub.influence_samples(X[:20], y[:20])
        agreement.append(np.mean([spearmanr(a, b)[0] for a, b in zip(got.mean(axis=0), want)]))
        np.testing.assert_allclose(sub.self_influence_samples()[:, :20],
                                   np.diagonal(got, axis1=1, axis2=2), rtol=1e-4,
                                   atol=1e-4 * np.abs(got).max())
        stored = InfluenceTransformer(ens, curvature="ekfac", damping=1e-3, precompute=True,
                                      curvature_options={"subspace": k}).fit(X, y)
        np.testing.assert_allclose(stored.influence_samples(X[:20], y[:20]), got, rtol=1e-4,
                                   atol=1e-5 * np.abs(got).max())
        # the compressed store: a layer's rows in its kept directions, as rotated patches
        # (k_in + k_out numbers a patch) or the projected k_out x k_in block, the smaller
        layout = stored._store.layouts[0]
        member = stored._members[0]
        raw = _layout(member, X, ens._net_targets(y))
        patches, _ = member.grad_patches("loss", X[:2], ens._net_targets(y[:2]))
        for form, exact, spec, p in zip(layout, raw, member.layers, patches):
            k_out, k_in = min(k, spec.shape[0]), min(k, spec.shape[1])
            forms = [("projected", k_out, k_in), ("rotated", p.n_pos, k_in, k_out)]
            assert form == min(forms, key=lambda f: row_numbers([f]))
            assert row_numbers([form]) <= row_numbers([exact])
        if k < 8:  # the first convolution (64 patches a row) as its block
            assert layout[0] == ("projected", min(k, 8), min(k, 10))
        assert stored.store_nbytes_ == 2 * 4 * len(X) * row_numbers(layout)
        np.testing.assert_allclose(stored.mean_influence_samples(X[:20], y[:20]),
                                   got.mean(axis=1), rtol=1e-4, atol=1e-5 * np.abs(got).max())
    assert agreement[0] < agreement[1] < agreement[2], agreement
    assert agreement[2] > 0.95 and agreement[0] < 0.9, agreement


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "4"])
def test_a_subspace_that_is_not_a_positive_int_is_refused(cnn, value):
    ens, X, y = cnn
    with pytest.raises(ValueError, match="subspace"):
        InfluenceTransformer(ens, curvature="ekfac",
                             curvature_options={"subspace": value}).fit(X, y)


def test_a_compressed_store_is_read_back_only_for_the_same_bases(cnn, tmp_path, caplog):
    """The compressed store depends on the eigenbases: read back for the same settings,
    built anew (another folder) for another subspace or other sampled factors;
    query_rank on top of a subspace is refused."""
    ens, X, y = cnn
    kw = dict(curvature="ekfac", damping=1e-3, precompute=True, memory=str(tmp_path))
    first = InfluenceTransformer(ens, curvature_options={"subspace": 4}, **kw).fit(X, y)
    with caplog.at_level("INFO", logger="skdtda"):
        again = InfluenceTransformer(ens, curvature_options={"subspace": 4}, **kw).fit(X, y)
    assert "store is read back" in caplog.text
    other = InfluenceTransformer(ens, curvature_options={"subspace": 8}, **kw).fit(X, y)
    assert again._store.folder == first._store.folder != other._store.folder
    # the same k with other sampled factors: other eigenbases, another store
    sampled = InfluenceTransformer(ens, curvature_options={"subspace": 4, "samples": 1},
                                   **kw).fit(X, y)
    assert sampled._store.folder not in (first._store.folder, other._store.folder)
    assert joblib.load(first._store.folder / "store.pkl")["curvature"] == (
        "ekfac", repr({"subspace": 4}))
    np.testing.assert_array_equal(again.influence_samples(X[:3], y[:3]),
                                  first.influence_samples(X[:3], y[:3]))
    with pytest.raises(ValueError, match="query_rank and curvature_options"):
        InfluenceTransformer(ens, curvature="ekfac", query_rank=2,
                             curvature_options={"subspace": 4}).fit(X, y)


def test_a_subspace_on_sparse_rows_equals_the_same_rows_dense():
    """A sparse first layer (CSR rows, products through the nonzeros) is rotated into
    its kept input directions from its sparse patches: the same scores as on the rows
    made dense, with and without the store."""
    from scipy import sparse

    rng = np.random.default_rng(0)
    X = sparse.random(120, 60, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    y = np.asarray(X @ rng.normal(size=(60, 3))).argmax(axis=1)
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(8,),
                              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                              lr=0.2, max_epochs=3, batch_size=32, train_split=None, verbose=0)
    ens = SeedEnsembleClassifier(net, n_seeds=2, random_state=0).fit(X, y)
    kw = dict(curvature="ekfac", damping=1e-2, curvature_options={"subspace": 4})
    want = InfluenceTransformer(ens, precompute=False, **kw).fit(X.toarray(), y) \
        .influence_samples(X[:5].toarray(), y[:5])
    for precompute in (False, True):
        got = InfluenceTransformer(ens, precompute=precompute, **kw).fit(X, y) \
            .influence_samples(X[:5], y[:5])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
