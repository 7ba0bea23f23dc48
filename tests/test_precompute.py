"""InfluenceTransformer(precompute=): the training rows' store against recomputing them."""

import logging
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification, make_regression
from skorch import NeuralNetClassifier, NeuralNetRegressor

from _models import BagOfTokens, Conv1dNet, ResidualLN, TorchTransformer
from skdtda import (DataPruner, InfluenceTransformer, SeedEnsembleClassifier,
                    SeedEnsembleRegressor)
from skdtda.influence._store import TrainingStore
from skdtda.nets import MLP

# scores agree to float32 rounding of the largest score (products in another order)
RTOL = 1e-5


def _close(actual, expected, rtol=RTOL):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * np.abs(expected).max())


def _net(module, regressor=False, **kw):
    params = dict(optimizer=torch.optim.Adam, lr=0.01, max_epochs=3, batch_size=16,
                  train_split=None, verbose=0)
    params.update(kw)
    if regressor:
        return NeuralNetRegressor(module, **params)
    return NeuralNetClassifier(module, criterion=torch.nn.CrossEntropyLoss, **params)


def _classification(n=120, n_features=8, seed=0):
    X, y = make_classification(n_samples=n, n_features=n_features, n_informative=4,
                               n_redundant=0, n_classes=3, random_state=seed)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def mlp():
    X, y = _classification()
    net = _net(MLP, module__hidden_layer_sizes=(16, 16))
    return SeedEnsembleClassifier(net, n_seeds=2, random_state=0).fit(X, y), X, y


def _pair(ens, X, y, **kw):
    kw.setdefault("damping", 0.1)
    plain = InfluenceTransformer(ens, precompute=False, **kw).fit(X, y)
    stored = InfluenceTransformer(ens, precompute=True, **kw).fit(X, y)
    assert stored.precompute_ and stored.store_nbytes_ > 0
    assert not plain.precompute_ and plain.store_nbytes_ == 0
    return plain, stored


def _row_by_row(member, X, y):
    """Reference per-row loss gradients of the attributed parameters, one autograd call
    a row, in ``member.names`` order."""
    params = dict(member.module.named_parameters())
    targets = [params[n] for n in member.names]
    rows = []
    for i in range(len(X)):
        x, t = member.tensors(X[i:i + 1], y[i:i + 1])
        value = member.loss_fn(member.net, member.module(x), t)[0]
        grads = torch.autograd.grad(value, targets, allow_unused=True)
        rows.append(torch.cat([torch.zeros(p.numel()) if g is None else g.reshape(-1)
                               for g, p in zip(grads, targets)]))
    return torch.stack(rows)


def _stored_gradients(influence, s, n):
    """Member ``s``'s per-row gradients rebuilt from the store, flat, names order."""
    store, member = influence._store, influence._members[s]
    blocks = []
    for form, arrays in zip(store.layouts[s], store.arrays[s]):
        parts = [torch.as_tensor(np.asarray(a[:n])) for a in arrays]
        if form[0] == "dense":
            blocks.append(parts[0])
        else:
            a, g = parts
            blocks.append(torch.bmm(g.transpose(1, 2), a))
    if not hasattr(member, "layers"):
        return blocks[0]
    flat = {}
    for spec, block in zip(member.layers, blocks):
        block = block.reshape((n,) + tuple(spec.shape))
        for name, part in zip(spec.param_names, spec.kind.to_params(spec.module, block)):
            flat[name] = part.reshape(n, -1)
    return torch.cat([flat[name] for name in member.names], dim=1)


ARCHITECTURES = {  # module, its data, the forms its blocks are stored in
    "residual_ln": (ResidualLN, dict(module__n_features=8), "float", {"factors"}),
    "torch_transformer": (TorchTransformer, {}, "float", {"factors", "dense"}),
    "bag_of_tokens": (BagOfTokens, {}, "tokens", {"dense", "factors"}),
    "conv1d": (Conv1dNet, {}, "float", {"dense", "factors"}),
}


def _data(kind):
    if kind == "tokens":
        rng = np.random.default_rng(0)
        X = rng.integers(0, 12, size=(80, 8)).astype(np.float32)
        return X, (X[:, 0] % 3).astype(int)
    return _classification(80)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_store_holds_each_rows_gradient_and_scores_as_recomputing(name):
    module, kw, kind, forms = ARCHITECTURES[name]
    X, y = _data(kind)
    ens = SeedEnsembleClassifier(_net(module, **kw), n_seeds=2, random_state=0).fit(X, y)
    plain, stored = _pair(ens, X, y, curvature="ekfac")
    assert {form[0] for form in stored._store.layouts[0]} == forms
    # the stored form of every row is its gradient, against autograd row by row
    member = stored._members[1]
    torch.testing.assert_close(_stored_gradients(stored, 1, 7),
                               _row_by_row(member, X[:7], stored._y_train[:7]),
                               rtol=1e-4, atol=1e-6)
    _close(stored.influence_samples(X[:5], y[:5]), plain.influence_samples(X[:5], y[:5]))


def test_scores_equal_recomputing_on_every_method(mlp):
    ens, X, y = mlp
    plain, stored = _pair(ens, X, y, statistic="variance")
    assert stored.curvature_ == "ggn" and stored._store.layouts[0][0][0] == "dense"
    for curvature in ("ekfac", "identity"):
        plain, stored = _pair(ens, X, y, curvature=curvature, statistic="variance")
        _close(stored.transform(X[:7]), plain.transform(X[:7]))
        _close(stored.influence_samples(X[:7], y[:7]), plain.influence_samples(X[:7], y[:7]))
        remove = [1, 4, 50, 51]
        _close(stored.predict_removal(X[:7], y[:7], remove=remove),
               plain.predict_removal(X[:7], y[:7], remove=remove))
        masks = np.zeros((3, len(X)), dtype=bool)
        masks[0, :10] = masks[1, 20:60] = masks[2, [3, 99]] = True
        for a, b in zip(stored.predict_removal_sets(X[:7], y[:7], remove=masks),
                        plain.predict_removal_sets(X[:7], y[:7], remove=masks)):
            _close(a, b)
    # the stored rows are every row's loss gradient (Linear layers: g a^T per row)
    member = stored._members[0]
    torch.testing.assert_close(_stored_gradients(stored, 0, 9),
                               _row_by_row(member, X[:9], stored._y_train[:9]),
                               rtol=1e-4, atol=1e-6)


def test_regressor_and_exact_curvature():
    X, y = make_regression(n_samples=90, n_features=5, noise=0.3, random_state=0)
    X, y = X.astype(np.float32), (y / y.std()).astype(np.float32)
    net = _net(MLP, regressor=True, module__hidden_layer_sizes=(8,))
    ens = SeedEnsembleRegressor(net, n_seeds=2, random_state=0).fit(X, y)
    for curvature in ("ekfac", "exact"):
        plain, stored = _pair(ens, X, y, curvature=curvature, statistic="wasserstein")
        _close(stored.transform(X[:6]), plain.transform(X[:6]))
        _close(stored.influence_samples(X[:6], y[:6]), plain.influence_samples(X[:6], y[:6]))


def test_self_and_mean_influence_are_the_diagonal_and_the_mean(mlp):
    ens, X, y = mlp
    for curvature in ("ekfac", "ggn"):
        plain, stored = _pair(ens, X, y, curvature=curvature)
        full = plain.influence_samples(X, y)
        rows = np.arange(len(X))
        for influence in (plain, stored):
            _close(influence.self_influence_samples(), full[:, rows, rows])
            _close(influence.mean_influence_samples(X[:40], y[:40]), full[:, :40].mean(axis=1))
    # the pruner's self-influence scores are those of the old path (the diagonal)
    pruned = DataPruner(InfluenceTransformer(ens, damping=0.1), objective="self",
                        fraction=0.1).fit(X, y)
    _close(pruned.seed_scores_, full[:, rows, rows])


SELF_CASES = {  # architecture (as ARCHITECTURES) or the MLP, and the transformer's options
    "mlp-margin-kfac": ("mlp", dict(curvature="kfac", measurement="margin")),
    "mlp-diagonal-input": ("mlp", dict(curvature="ekfac",
                                       curvature_options={"diagonal_input_above": 0})),
    "conv1d": ("conv1d", dict(curvature="ekfac")),
    "torch_transformer": ("torch_transformer", dict(curvature="ekfac")),
    "bag_of_tokens": ("bag_of_tokens", dict(curvature="ekfac", measurement="margin")),
}


@pytest.mark.parametrize("case", sorted(SELF_CASES))
def test_self_influence_in_the_eigenbasis_is_the_diagonal(mlp, case):
    """K-FAC/EK-FAC score each row against itself in their eigenbases (no solve); the
    truth is the diagonal of every row scored as a query, solved and rotated back."""
    name, kw = SELF_CASES[case]
    if name == "mlp":
        ens, X, y = mlp
    else:
        module, options, kind, _ = ARCHITECTURES[name]
        X, y = _data(kind)
        X, y = X[:60], y[:60]
        ens = SeedEnsembleClassifier(_net(module, optimizer=torch.optim.SGD, lr=0.05,
                                          optimizer__weight_decay=1e-3, **options),
                                     n_seeds=2, random_state=0).fit(X, y)
    influence = InfluenceTransformer(ens, damping=0.1, precompute=False, **kw).fit(X, y)
    assert hasattr(influence.curvatures_[0], "self_products")
    full = influence.influence_samples(X, y)
    rows = np.arange(len(X))
    _close(influence.self_influence_samples(), full[:, rows, rows], rtol=1e-4)


def test_auto_falls_back_with_a_logged_reason_and_true_raises(mlp, caplog):
    ens, X, y = mlp
    with caplog.at_level(logging.INFO, logger="skdtda"):
        small = InfluenceTransformer(ens, damping=0.1, precompute_budget=1000).fit(X, y)
    assert not small.precompute_ and small._store is None
    assert "precompute='auto' stores nothing" in caplog.text
    assert "more than precompute_budget=1000" in caplog.text
    plain = InfluenceTransformer(ens, damping=0.1, precompute=False).fit(X, y)
    _close(small.transform(X[:3]), plain.transform(X[:3]))
    with pytest.raises(ValueError, match=r"precompute=True cannot store.*needs 0\.\d+ MiB"):
        InfluenceTransformer(ens, damping=0.1, precompute=True, precompute_budget=1000).fit(X, y)
    # the Newton correction needs more than the rows' gradients
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="skdtda"):
        newton = InfluenceTransformer(ens, curvature="ggn", damping=0.1,
                                      correction="newton").fit(X, y)
    assert not newton.precompute_ and "correction='newton'" in caplog.text
    with pytest.raises(ValueError, match="correction='newton'"):
        InfluenceTransformer(ens, curvature="ggn", damping=0.1, correction="newton",
                             precompute=True).fit(X, y)


def test_memory_keeps_a_memory_mapped_store_that_a_damping_change_reuses(mlp, tmp_path,
                                                                          caplog):
    ens, X, y = mlp
    stored = InfluenceTransformer(ens, curvature="ekfac", damping=0.1,
                                  memory=tmp_path).fit(X, y)
    assert stored.precompute_
    (folder,) = (tmp_path / "skdtda-store").iterdir()
    assert stored._store.folder == folder
    assert all(isinstance(a, np.memmap) for m in stored._store.arrays for b in m for a in b)
    files = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    plain = InfluenceTransformer(ens, curvature="ekfac", damping=0.1,
                                 precompute=False).fit(X, y)
    _close(stored.transform(X[:5]), plain.transform(X[:5]))
    # pickled by reference to its files, not their contents
    copy = pickle.loads(pickle.dumps(stored))
    assert isinstance(copy._store.arrays[0][0][0], np.memmap)
    assert len(pickle.dumps(stored._store)) < 2000 < stored.store_nbytes_
    _close(copy.transform(X[:5]), plain.transform(X[:5]))
    # another damping, curvature and statistic: the same rows' gradients, read back
    with caplog.at_level(logging.INFO, logger="skdtda"):
        stored.set_params(damping=1.0, curvature="kfac", statistic="std").fit(X, y)
    assert "read back" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == files
    plain.set_params(damping=1.0, curvature="kfac", statistic="std").fit(X, y)
    _close(stored.transform(X[:5]), plain.transform(X[:5]))
    # in memory, a new damping keeps the store too (as damping="calibrate" does)
    in_memory = InfluenceTransformer(ens, curvature="ekfac", damping=0.1).fit(X, y)
    store = in_memory._store
    in_memory._set_damping(1.0)
    assert in_memory._store is store
    plain.set_params(damping=1.0, curvature="ekfac", statistic="mean").fit(X, y)
    _close(in_memory.transform(X[:5]), plain.transform(X[:5]))


@pytest.mark.parametrize("on_disk", [False, True])
def test_store_built_by_parallel_jobs_is_the_same(mlp, tmp_path, capsys, on_disk):
    """Members are joblib jobs (processes here): each writes its own files, or returns
    its arrays; the bar counts them under verbose."""
    ens, X, y = mlp
    kw = dict(curvature="ekfac", damping=0.1, precompute=True)
    one = InfluenceTransformer(ens, **kw).fit(X, y)
    memory = tmp_path if on_disk else None
    two = InfluenceTransformer(ens, n_jobs=2, verbose=2, memory=memory, **kw).fit(X, y)
    assert "precompute: storing 120 training rows" in capsys.readouterr().err
    for a, b in zip(two._store.arrays, one._store.arrays):
        for block_a, block_b in zip(a, b):
            for x, z in zip(block_a, block_b):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(z))
    assert isinstance(two._store.arrays[1][0][0], np.memmap) == on_disk
    _close(two.transform(X[:5]), one.transform(X[:5]))


def test_a_store_for_other_data_is_refused(mlp, tmp_path):
    ens, X, y = mlp
    InfluenceTransformer(ens, damping=0.1, memory=tmp_path).fit(X, y)
    X2, y2 = _classification(seed=1)
    net = _net(MLP, module__hidden_layer_sizes=(16, 16))
    other = SeedEnsembleClassifier(net, n_seeds=2, random_state=0).fit(X2, y2)
    InfluenceTransformer(other, damping=0.1, memory=tmp_path).fit(X2, y2)
    first, second = sorted((tmp_path / "skdtda-store").iterdir(), key=os.path.getmtime)
    # other rows are stored apart; a store left where another's belongs is refused
    shutil.copy(first / "store.pkl", second / "store.pkl")
    with pytest.raises(ValueError, match="built for other data or settings: the training "
                                         "rows differ"):
        InfluenceTransformer(other, damping=0.1, memory=tmp_path).fit(X2, y2)


def test_store_products_in_every_form_equal_dense_products():
    """The factored products (few queries) and the outer products then one product
    (many queries) against the rows' dense gradients, with several patches a row."""
    from skdtda.influence._store import _product

    rng = torch.Generator().manual_seed(0)
    for n_pos, size, width in ((1, 5, 7), (1, 7, 5), (3, 6, 4), (2, 4, 9)):
        a = torch.randn(11, n_pos, size, generator=rng, dtype=torch.float64)
        g = torch.randn(11, n_pos, width, generator=rng, dtype=torch.float64)
        dense = torch.bmm(g.transpose(1, 2), a).reshape(11, -1)
        for n_query in (1, 2, 40):
            v = torch.randn(n_query, width * size, generator=rng, dtype=torch.float64)
            torch.testing.assert_close(_product(v, ("factors", n_pos, size, width), [a, g]),
                                       v @ dense.T)
    assert TrainingStore([], []).nbytes == 0


def test_precompute_takes_numpy_booleans_and_stores_scikit_learn_models(tmp_path):
    from sklearn.linear_model import LogisticRegression

    X, y = _classification(60)
    ens = SeedEnsembleClassifier(LogisticRegression(max_iter=500)).fit(X, y)
    off = InfluenceTransformer(ens, damping=0.1, precompute=np.False_).fit(X, y)
    assert not off.precompute_
    on = InfluenceTransformer(ens, damping=0.1, precompute=np.True_, memory=tmp_path).fit(X, y)
    assert on.precompute_ and on._store.folder is not None
    _close(on.transform(X[:4]), off.transform(X[:4]))
    _close(on.self_influence_samples(), off.self_influence_samples())
