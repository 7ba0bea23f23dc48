"""Sparse (CSR) rows end to end: the same scores as the dense copy, through sparse
products, without ever densifying the whole matrix.

- :class:`~skdtda.model.layers.SparsePatches` against :class:`DensePatches` of the
  same rows (input factor, rotations, row gradients);
- influence scores on a CSR matrix against its dense copy, and against the dense
  patch path (no sparse products at all), for the batched and the loop ensemble;
- a spy on every densification of a CSR matrix: no call sees all the rows;
- a spy on every new tensor as large as the solved queries: as many for one chunk of
  training rows as for twelve.
"""

import numpy as np
import pytest
import torch
from scipy import sparse, stats
from scipy.sparse import _compressed
from skorch import NeuralNetClassifier
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda._inputs import SparseRows
from skdtda.model.layers import (DensePatches, SparsePatches, _base, accumulate,
                                 one_patch_per_row, patches_of)
from skdtda.nets import MLP

RTOL = 1e-5  # float32 nets; sparse and dense products differ in summation order only
# mean Spearman of the diagonal against the full input factor, per seed and query, on
# the wide-middle net below: measured 0.82; the bound leaves room for other BLAS builds
RHO_WIDE_MIDDLE = 0.7


def _rows(n=240, d=200, density=0.01, seed=0):
    rng = np.random.default_rng(seed)
    X = sparse.random(n, d, density=density, format="csr", random_state=rng, dtype=np.float32)
    X.data = rng.exponential(size=X.nnz).astype(np.float32)
    y = np.asarray(X @ rng.normal(size=(d, 3))).argmax(axis=1)
    return X, y


def _ensemble(vectorize, n_seeds=2):
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(8,),
                              criterion=nn.CrossEntropyLoss, optimizer=torch.optim.SGD, lr=0.2,
                              max_epochs=3, batch_size=32, train_split=None, verbose=0)
    return SeedEnsembleClassifier(net, n_seeds=n_seeds, random_state=0, vectorize=vectorize)


def _close(a, b, rtol=RTOL):
    scale = np.abs(b).max()
    assert scale > 0
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)


def test_sparse_patches_match_dense():
    X, _ = _rows(n=64, d=30, density=0.01)
    a = torch.from_numpy(X.toarray())[:, None]
    dense, sparse_ = DensePatches(a), patches_of(a)
    assert isinstance(sparse_, SparsePatches) and one_patch_per_row(sparse_)
    g = torch.randn(64, 1, 5, generator=torch.Generator().manual_seed(0))
    q = torch.linalg.qr(torch.randn(30, 30, generator=torch.Generator().manual_seed(1)))[0]
    total = accumulate(accumulate(None, sparse_.input_sum()), sparse_.input_sum())
    torch.testing.assert_close(total, 2 * dense.input_sum().double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sparse_.rotated(q), dense.rotated(q), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sparse_.row_grads(g), dense.row_grads(g))
    for patches in (sparse_, dense):
        torch.testing.assert_close(patches.grad_sum(g), dense.row_grads(g).sum(dim=0),
                                   rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sparse_.concat(dense).a, torch.cat([a, a], dim=1))
    # mostly nonzero inputs stay dense
    assert isinstance(patches_of(torch.ones(4, 1, 3)), DensePatches)


@pytest.mark.parametrize("vectorize", [True, False], ids=["batched", "loop"])
def test_scores_on_csr_equal_dense(vectorize, monkeypatch):
    X, y = _rows()
    X_dense = X.toarray()
    ens = _ensemble(vectorize).fit(X, y)
    assert ens.vectorized_ == vectorize
    ens_dense = _ensemble(vectorize).fit(X_dense, y)
    np.testing.assert_allclose(ens.predict_proba(X), ens_dense.predict_proba(X_dense),
                               rtol=1e-5, atol=1e-6)
    used = []
    rotated = SparsePatches.rotated
    monkeypatch.setattr(SparsePatches, "rotated", lambda self, q: used.append(q.shape)
                        or rotated(self, q))
    influence = InfluenceTransformer(ens, curvature="ekfac").fit(X, y)
    scores = influence.influence_samples(X[:7], y[:7])
    assert used  # the first layer's patches were sparse
    on_dense = InfluenceTransformer(ens_dense, curvature="ekfac").fit(X_dense, y)
    _close(scores, on_dense.influence_samples(X_dense[:7], y[:7]))
    # truth: no sparse product anywhere (every patch dense, as before sparse patches)
    monkeypatch.setattr(_base, "SPARSE_DENSITY", -1.0)
    truth = InfluenceTransformer(ens_dense, curvature="ekfac").fit(X_dense, y)
    _close(scores, truth.influence_samples(X_dense[:7], y[:7]))


@pytest.mark.parametrize("kind", ["sparse", "tokens", "conv1d"])
def test_mean_grads_from_factors(kind):
    """The mean training gradient summed from each layer's patches and output gradients
    (no per-row blocks) equals the mean of the per-row blocks."""
    from _models import BagOfTokens, Conv1dNet

    from skdtda.model import functional_member

    rng = np.random.default_rng(0)
    if kind == "sparse":
        X, y = _rows(n=80)
        module, params = MLP, dict(module__hidden_layer_sizes=(8,))
    elif kind == "tokens":
        X, y = rng.integers(0, 12, size=(80, 5)).astype(np.float32), rng.integers(0, 3, 80)
        module, params = BagOfTokens, {}
    else:
        X, y = rng.normal(size=(80, 8)).astype(np.float32), rng.integers(0, 3, 80)
        module, params = Conv1dNet, {}
    net = _fit_module(module, X, y, **params).estimators_[0]
    member = functional_member(net, "loss", "classifier", layered=True, probe_X=X[:8])
    from_factors = member.mean_grads(X, y, chunk=32)
    blocks = member.grads("loss", X, y)
    for got, block in zip(from_factors, blocks):
        torch.testing.assert_close(got, block.double().mean(dim=0), rtol=1e-5, atol=1e-7)


def test_whole_matrix_never_densified(monkeypatch):
    """Every densification of a CSR matrix (SciPy's toarray, the torch view's rows)
    is recorded: training (batched and loop), curvature and scoring each see
    chunks of rows, never all of them."""
    from skdtda.ensemble import _fingerprint

    # the fingerprint hashes blocks of 8 MiB; here a block of 64 rows, so that a
    # whole-matrix block would show
    monkeypatch.setattr(_fingerprint, "_BLOCK_BYTES", 64 * 200 * 4)
    seen = []
    toarray = _compressed._cs_matrix.toarray

    def spy(self, *args, **kwargs):
        seen.append(self.shape[0])
        return toarray(self, *args, **kwargs)

    dense = SparseRows.dense

    def spy_dense(self):
        seen.append(len(self))
        return dense(self)

    monkeypatch.setattr(_compressed._cs_matrix, "toarray", spy)
    monkeypatch.setattr(SparseRows, "dense", spy_dense)
    X, y = _rows(n=1500)
    for vectorize in (True, False):
        ens = _ensemble(vectorize).fit(X, y)
        influence = InfluenceTransformer(ens, curvature="ekfac", batch_size=128).fit(X, y)
        influence.transform(X[:5])
    # the largest chunk is the precompute store's pass (at least 1024 rows)
    assert seen and max(seen) <= 1024 < X.shape[0]


# -- wide inputs: a diagonal input factor ----------------------------------------------


class OneHotNet(nn.Module):
    """A first layer without bias on one-hot-like rows: its input factor is diagonal."""

    def __init__(self, n_features=40, n_classes=3):
        super().__init__()
        self.first = nn.Linear(n_features, 8, bias=False)
        self.head = nn.Linear(8, n_classes)

    def forward(self, x):
        return self.head(torch.relu(self.first(x)))


class WideMiddle(nn.Module):
    """A narrow input, a wide hidden layer: the wide input factor is the middle one's."""

    def __init__(self, n_features=10, n_classes=3, width=300):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(n_features, width), nn.Tanh(),
                                   nn.Linear(width, 6), nn.Tanh())
        self.head = nn.Linear(6, n_classes)

    def forward(self, x):
        return self.head(self.inner(x))


class _LargeTensors(TorchDispatchMode):
    """Records every torch operation that allocates a strided tensor of at least
    ``nbytes`` (views and in-place results, which share an input's storage, are not
    counted)."""

    def __init__(self, nbytes):
        super().__init__()
        self.nbytes, self.seen = nbytes, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor) and t.layout == torch.strided}
        for t in tree_leaves(out):
            if (isinstance(t, torch.Tensor) and t.layout == torch.strided
                    and t.untyped_storage().nbytes() >= self.nbytes
                    and t.untyped_storage().data_ptr() not in inputs):
                self.seen.append(str(func))
        return out


def test_solved_queries_not_copied_per_training_chunk(monkeypatch):
    """Scoring against sparse inputs through ``_responses`` (no store) allocates no
    tensor as large as the solved queries per chunk of training rows: the
    input-major copy that the sparse product reads is made once per query chunk.
    Made per chunk, it was the cost of scoring a 50k-column first layer (issue 26;
    docs/benchmarks.md, "Sparse input end to end"). Scores stay those of dense
    patches (no sparse product)."""
    n_query, width, hidden = 8, 2000, 8
    X, y = _rows(n=240, d=width, density=0.005)
    ens = _ensemble(True).fit(X, y)
    # the solved queries of the first layer: n_query x hidden x (width + bias), float32;
    # a chunk of at most 60 densified rows stays below it
    nbytes = n_query * hidden * (width + 1) * 4
    allocations, scores = {}, {}
    for batch_size in (240, 60, 20):  # 1, 4 and 12 chunks of training rows
        influence = InfluenceTransformer(ens, curvature="ekfac", batch_size=batch_size,
                                         precompute=False,
                                         curvature_options={"diagonal_input_above": 64})
        influence.fit(X, y)
        with _LargeTensors(nbytes) as spy:
            scores[batch_size] = influence.influence_samples(X[:n_query], y[:n_query])
        allocations[batch_size] = len(spy.seen)
    assert allocations[20] == allocations[60], allocations
    monkeypatch.setattr(_base, "SPARSE_DENSITY", -1.0)
    dense = InfluenceTransformer(ens, curvature="ekfac", batch_size=20, precompute=False,
                                 curvature_options={"diagonal_input_above": 64})
    X_dense = X.toarray()
    truth = dense.fit(X_dense, y).influence_samples(X_dense[:n_query], y[:n_query])
    for got in scores.values():
        _close(got, truth)


def _fit_module(module, X, y, **params):
    net = NeuralNetClassifier(module, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                              lr=0.2, max_epochs=4, batch_size=32, train_split=None, verbose=0,
                              **params)
    return SeedEnsembleClassifier(net, n_seeds=2, random_state=0).fit(X, y)


def _ekfac(ens, X, y, above):
    return InfluenceTransformer(ens, curvature="ekfac",
                                curvature_options={"diagonal_input_above": above}).fit(X, y)


def test_diagonal_input_exact_for_diagonal_factor():
    """Rows with one nonzero each and no bias: the full input factor is diagonal, so
    keeping only its diagonal changes nothing (EK-FAC refits the eigenvalues in
    the same basis, up to the order of its columns)."""
    rng = np.random.default_rng(0)
    n, d = 200, 40
    X = np.zeros((n, d), dtype=np.float32)
    X[np.arange(n), rng.integers(0, d, n)] = rng.exponential(size=n) + 0.5
    y = rng.integers(0, 3, n)
    ens = _fit_module(OneHotNet, X, y)
    diagonal = _ekfac(ens, X, y, above=9)  # the head's 9 inputs stay full
    assert list(diagonal.curvatures_[0].diagonal_inputs) == ["first"]
    full = _ekfac(ens, X, y, above=None)
    assert full.curvatures_[0].diagonal_inputs == {}
    _close(diagonal.influence_samples(X[:6], y[:6]), full.influence_samples(X[:6], y[:6]),
           rtol=1e-4)


def test_diagonal_input_on_wide_middle_layer(caplog):
    """A model the option was not written for: its wide layer is in the middle. Only
    that layer goes diagonal, with a logged reason, and the scores keep their
    ranking against the full factor's."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 10)).astype(np.float32)
    y = (X[:, :3] @ rng.normal(size=(3, 3))).argmax(axis=1)
    ens = _fit_module(WideMiddle, X, y)
    with caplog.at_level("INFO", logger="skdtda"):
        diagonal = _ekfac(ens, X, y, above=100)
    assert list(diagonal.curvatures_[0].diagonal_inputs) == ["inner.2"]
    assert "keeps the input factor of layer 'inner.2' diagonal: 301 inputs" in caplog.text
    full = _ekfac(ens, X, y, above=None)
    a, b = diagonal.influence_samples(X[:8], y[:8]), full.influence_samples(X[:8], y[:8])
    rho = np.mean([stats.spearmanr(a[s, q], b[s, q])[0]
                   for s in range(a.shape[0]) for q in range(a.shape[1])])
    assert rho > RHO_WIDE_MIDDLE, rho


@pytest.mark.parametrize("above", [-1, 2.5, True, "wide"])
def test_diagonal_input_bad_value(above):
    X, y = _rows(n=60)
    ens = _ensemble(True).fit(X, y)
    with pytest.raises(ValueError, match=f"diagonal_input_above={above!r} must be an int"):
        _ekfac(ens, X, y, above)
