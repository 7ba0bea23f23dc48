"""InfluenceTransformer(query_rank=): rank-R solved queries against their exact products.

The truth for a rank-``R`` score is the exact first-order score of the query whose
solved gradient is replaced, layer by layer, by its best rank-``R`` approximation
(NumPy's SVD): the factored products must equal it, with and without the store,
on sequence, convolution and sparse inputs.
"""

import numpy as np
import pytest
import torch
from scipy import sparse

from _models import Conv1dNet, TorchTransformer
from skdtda._inputs import n_rows
from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.influence._scoring import LowRank, _truncated_svd
from skdtda.model.layers import SparsePatches
from skdtda.nets import MLP
from test_precompute import _classification, _data, _net


def _best_rank(block, rank):
    """Each (out, in) matrix of ``block`` truncated to ``rank`` by NumPy's SVD."""
    u, s, vh = np.linalg.svd(block.double().numpy(), full_matrices=False)
    return torch.from_numpy((u[:, :, :rank] * s[:, None, :rank]) @ vh[:, :rank])


def _truth(influence, X, y, rank):
    """Per member, the exact scores of the rank-truncated solved queries:
    ``(n_seeds, n_query, n_train)``, through the exact products."""
    exact = influence._scoring()
    exact.query_rank = None
    Xn, yn = influence._query(X, y)
    out = []
    for s, (member, solver, centre) in enumerate(zip(influence._members,
                                                     influence.curvatures_,
                                                     influence._centres)):
        solved = solver.solve_rows("measurement", Xn, yn)
        flat = []
        for v in solved:
            if v.dim() == 3 and rank * (v.shape[1] + v.shape[2]) < v.shape[1] * v.shape[2]:
                v = _best_rank(v, rank)
            flat.append(v.reshape(n_rows(Xn), -1))
        offset = sum(f.double() @ m.reshape(-1).double() for f, m in zip(flat, centre))
        out.append(exact._train_response(s, [f.to(member.dtype) for f in flat], offset,
                                         slice(0, influence.n_train_)))
    return np.stack(out)


def _close(actual, expected, rtol):
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


MODELS = {  # module, its options, data, rank
    "mlp": (MLP, dict(module__hidden_layer_sizes=(16, 16)), "float", 3),
    "conv1d": (Conv1dNet, {}, "float", 1),
    "torch_transformer": (TorchTransformer, {}, "float", 2),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_rank_r_scores_are_the_truncated_queries_exact_scores(name):
    module, kw, kind, rank = MODELS[name]
    X, y = _data(kind)
    ens = SeedEnsembleClassifier(_net(module, **kw), n_seeds=2, random_state=0).fit(X, y)
    scores = {}
    for precompute in (False, True):
        influence = InfluenceTransformer(ens, curvature="ekfac", damping=0.1,
                                         precompute=precompute, query_rank=rank).fit(X, y)
        scores[precompute] = influence.influence_samples(X[:6], y[:6])
        _close(scores[precompute], _truth(influence, X[:6], y[:6], rank), 1e-4)
    _close(scores[True], scores[False], 1e-5)
    exact = InfluenceTransformer(ens, curvature="ekfac", damping=0.1).fit(X, y)
    assert not np.allclose(scores[True], exact.influence_samples(X[:6], y[:6]))


def test_error_falls_with_the_rank_and_dense_curvatures_stay_exact():
    X, y = _classification(160, n_features=12)
    ens = SeedEnsembleClassifier(_net(MLP, module__hidden_layer_sizes=(24, 24)), n_seeds=2,
                                 random_state=0).fit(X, y)
    exact = InfluenceTransformer(ens, curvature="ekfac", damping=0.01).fit(X, y)
    truth = exact.influence_samples(X[:10], y[:10])
    errors = []
    for rank in (1, 3, 8):
        approx = exact.set_params(query_rank=rank).influence_samples(X[:10], y[:10])
        errors.append(np.abs(approx - truth).max() / np.abs(truth).max())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05
    # every method of queries takes it; removal sets sum the rank-R changes
    influence = InfluenceTransformer(ens, curvature="ekfac", damping=0.01, query_rank=3)
    influence.fit(X, y)
    delta = influence.influence_samples(X[:4], y[:4])
    np.testing.assert_allclose(influence.predict_removal(X[:4], y[:4], remove=[0, 5]),
                               influence.measure(X[:4], y[:4]) + delta[:, :, [0, 5]].sum(-1),
                               rtol=1e-5, atol=1e-8)
    # the dense curvature's one block of all parameters is not a layer's: exact
    dense = InfluenceTransformer(ens, curvature="exact", damping=0.01)
    a = dense.fit(X, y).influence_samples(X[:4], y[:4])
    b = dense.set_params(query_rank=1).influence_samples(X[:4], y[:4])
    np.testing.assert_array_equal(a, b)


def test_sparse_first_layer_takes_rank_r_queries(monkeypatch):
    rng = np.random.default_rng(0)
    X = sparse.random(200, 150, density=0.005, format="csr", random_state=rng,
                      dtype=np.float32)
    y = np.asarray(X @ rng.normal(size=(150, 3))).argmax(axis=1)
    net = _net(MLP, module__hidden_layer_sizes=(8,), optimizer=torch.optim.SGD, lr=0.2,
               batch_size=32)
    ens = SeedEnsembleClassifier(net, n_seeds=2, random_state=0).fit(X, y)
    kw = dict(curvature="ekfac", damping=0.1, precompute=False, query_rank=2)
    on_csr = InfluenceTransformer(ens, **kw).fit(X, y)
    seen = []  # the first layer's patches, sparse, meet the V side of the queries
    rotated = SparsePatches.rotated
    monkeypatch.setattr(SparsePatches, "rotated",
                        lambda self, q: seen.append(q.shape) or rotated(self, q))
    _close(on_csr.influence_samples(X[:5], y[:5]), _truth(on_csr, X[:5], y[:5], 2), 1e-4)
    assert (151, 5 * 2) in seen


def test_randomized_svd_is_the_best_rank_r_on_falling_spectra():
    g = torch.Generator().manual_seed(0)
    U, V = torch.randn(5, 30, 12, generator=g), torch.randn(5, 12, 40, generator=g)
    M = (U * 0.5 ** torch.arange(12.0)) @ V
    u, s, vh = _truncated_svd(M, 3)
    best = _best_rank(M, 3).float()
    torch.testing.assert_close((u * s[:, None]) @ vh, best, rtol=1e-4, atol=1e-4)
    low = LowRank.truncate(M, 3)
    torch.testing.assert_close(low.dense().reshape(M.shape), best, rtol=1e-4, atol=1e-4)
    assert LowRank.truncate(M[:, :2], 3) is not None  # (2, 40) at rank 3: kept as it is
    assert torch.equal(LowRank.truncate(M[:, :2], 3), M[:, :2])


def test_query_rank_with_newton_or_a_bad_value_is_refused():
    X, y = _classification(60)
    ens = SeedEnsembleClassifier(_net(MLP, module__hidden_layer_sizes=(8,)), n_seeds=2,
                                 random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="query_rank approximates"):
        InfluenceTransformer(ens, correction="newton", query_rank=2).fit(X, y)
    with pytest.raises(ValueError, match="query_rank"):
        InfluenceTransformer(ens, query_rank=0).fit(X, y)


def test_query_chunks_hold_the_most_queries_and_both_orders_agree(monkeypatch):
    from skdtda.influence import _scoring

    # issue 27's 100k rows x 16 members of 21,252 float32 parameters: all members at
    # once hold 197 queries, one member at a time 20 (its responses over 100k rows)
    assert _scoring.query_chunk(21252, 4, 16, 100_000, 256) == (197, False)
    assert _scoring.query_chunk(21252, 4, 16, 1000, 256)[1]  # few rows: one member
    assert _scoring.query_chunk(21252, 4, 16, 1000, None)[1]
    X, y = _classification(90)
    ens = SeedEnsembleClassifier(_net(MLP, module__hidden_layer_sizes=(8,)), n_seeds=3,
                                 random_state=0).fit(X, y)
    scores = {}
    for rank in (None, 2):
        influence = InfluenceTransformer(ens, curvature="ekfac", damping=0.1, query_rank=rank,
                                         precompute=False).fit(X, y)
        scores[rank, "default"] = influence.influence_samples(X[:7], y[:7])
        for by_member in (False, True):
            monkeypatch.setattr(_scoring, "query_chunk",
                                lambda *args, by=by_member: (3, by))
            scores[rank, by_member] = influence.influence_samples(X[:7], y[:7])
            monkeypatch.undo()
            _close(scores[rank, by_member], scores[rank, "default"], 1e-6)
