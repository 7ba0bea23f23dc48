"""curvature="auto"'s EK-FAC takes every output-Hessian column where those passes are
cheap (``skdtda.curvature.auto_options``).

The cost it is bounded by, ``LayerTracer.row_macs``, is checked against torch's own
count of a forward pass's multiply-adds (``FlopCounterMode``, the truth for Linear
and convolution layers), and the choice against explicit ``curvature_options``.
(That every column rebuilds the exact Gauss-Newton where K-FAC is exact is tested
in test_curvature.py and test_architectures.py.)
"""

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from _models import BagOfTokens, Conv1dNet, DigitsCNN, NestedMLP, ResidualLN, SharedHead
from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.curvature import AUTO_ALL_COLUMNS, auto_options
from skdtda.model import functional_member
from test_architectures import _data, _net

# module, its rows (test_architectures' kinds and widths)
CASES = {"mlp": (NestedMLP, "dense", 4), "cnn": (DigitsCNN, "digits", 64),
         "conv1d": (Conv1dNet, "dense", 8), "residual_ln": (ResidualLN, "dense", 4),
         "shared_head": (SharedHead, "dense", 4)}


def _member(module, X, y):
    net = _net(module, max_epochs=2).fit(X, y)
    member = functional_member(net, "loss", "classifier")
    member.supported_layers(X)
    return member


@pytest.mark.parametrize("name", sorted(CASES))
def test_row_macs_counts_the_layers_products_as_torch_does(name):
    """A row's multiply-adds through the traced Linear/conv layers (every product in
    these modules; a layer called twice counts twice): torch's count of the forward's
    products, plus one per output for each bias (the patches' column of ones)."""
    module, kind, n_features = CASES[name]
    X, y = _data(kind, n_features)
    member = _member(module, X, y)
    traced = {spec.module for spec in member.tracer.specs}
    biases, handles = [0], []
    for layer in traced:
        if getattr(layer, "bias", None) is not None:
            handles.append(layer.register_forward_hook(
                lambda mod, args, out: biases.append(out.numel() // 3)))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        member.module.eval()(torch.as_tensor(X[:3]))
    for h in handles:
        h.remove()
    counts = counter.get_flop_counts()
    # products of the traced layers: torch counts 2 per multiply-add
    layer_ops = {"aten.addmm", "aten.mm", "aten.convolution", "aten.bmm"}
    flops = sum(v for mod, ops in counts.items() if mod == "Global"
                for op, v in ops.items() if str(op).split(".default")[0] in layer_ops)
    assert flops > 0
    assert member.tracer.row_macs() == pytest.approx(flops / 2 / 3 + sum(biases), rel=1e-12)


def test_row_macs_counts_an_embeddings_lookup_once_a_position():
    """One-hot inputs: an embedding's product costs its width a position, not its
    vocabulary times its width."""
    X, y = _data("tokens", 5)
    member = _member(BagOfTokens, X, y)
    # bag (mean): one output position of width 6; emb: 5 positions of 6; head 12 + 1 -> 3
    assert member.tracer.row_macs() == 6 + 5 * 6 + 13 * 3


def test_auto_options_takes_every_column_only_where_cheap_and_asked_for(monkeypatch):
    X, y = _data("digits", 64)
    member = _member(DigitsCNN, X, y)
    assert auto_options(member, X) == {"samples": None}
    assert auto_options(member, X, {"layer_damping": "relative"}) == {
        "layer_damping": "relative", "samples": None}
    # an explicit choice stands
    assert auto_options(member, X, {"samples": 1}) == {"samples": 1}
    # over the cost bound, or more outputs than the bound: samples="auto" as asked
    cost = len(X) * 10 * member.tracer.row_macs()
    monkeypatch.setattr("skdtda.curvature._fit.AUTO_COLUMN_MACS", cost - 1)
    assert auto_options(member, X) is None
    assert auto_options(member, X, {"layer_damping": "relative"}) == {
        "layer_damping": "relative"}
    monkeypatch.setattr("skdtda.curvature._fit.AUTO_COLUMN_MACS", cost)
    assert auto_options(member, X) == {"samples": None}
    monkeypatch.setattr("skdtda.curvature._fit.AUTO_ALL_COLUMNS", 9)
    assert auto_options(member, X) is None
    assert AUTO_ALL_COLUMNS >= 10


def test_auto_ekfac_on_a_cnn_uses_every_column_and_explicit_ekfac_keeps_one(monkeypatch):
    """The digits CNN past the exact GGN's budget (made small here): ``"auto"`` fits
    EK-FAC from every column, to the bit what ``samples=None`` asked for gives;
    ``curvature="ekfac"`` keeps its one combination (another, cheaper curvature)."""
    monkeypatch.setattr("skdtda.curvature._fit.AUTO_MAX_PARAMS", 100)
    monkeypatch.setattr("skdtda.curvature._fit.AUTO_MAX_MACS", 1e3)
    X, y = _data("digits", 64, n=120)
    ens = SeedEnsembleClassifier(_net(DigitsCNN, max_epochs=2), n_seeds=2, random_state=0).fit(X, y)
    auto = InfluenceTransformer(ens, damping=1e-3).fit(X, y)
    assert auto.curvature_ == "ekfac" and auto.curvature_options_ == {"samples": None}
    every = InfluenceTransformer(ens, curvature="ekfac", damping=1e-3,
                                 curvature_options={"samples": None}).fit(X, y)
    np.testing.assert_array_equal(auto.transform(X[:4]), every.transform(X[:4]))
    one = InfluenceTransformer(ens, curvature="ekfac", damping=1e-3).fit(X, y)
    assert one.curvature_options_ is None
    assert not np.allclose(one.transform(X[:4]), every.transform(X[:4]), rtol=1e-3)

