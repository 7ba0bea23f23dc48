"""The written curvature interface: every backend re-damps as a fresh fit would.

``with_damping(d)`` must solve as ``fit_curvature(..., d)`` does, for every
backend and whichever of its factorisations it takes: the dense and kernel
forms factor the first damping solved with by Cholesky and every other one
through one shared eigendecomposition; K-FAC, EK-FAC and CG only change a
number. Backends factor lazily, so a damping chosen after fitting costs no
refactorisation.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.preprocessing import scale
from skorch import NeuralNetClassifier

from skdtda import SeedEnsembleClassifier
from skdtda.curvature import BACKENDS, Curvature, fit_curvature
from skdtda.model import L2Penalty, functional_member
from skdtda.nets import MLP

KINDS = ["ggn:dense", "exact", "ggn:kernel", "ggn:kernel+penalty", "ggn:dense+penalty",
         "kfac", "ekfac", "cg", "pcg"]


@pytest.fixture(scope="module")
def fitted_net():
    X, y = load_iris(return_X_y=True)
    X = scale(X)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(6,),
                                  criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                                  lr=0.05, max_epochs=8, batch_size=32, train_split=None,
                                  optimizer__weight_decay=1e-3, verbose=0)
        ens = SeedEnsembleClassifier(net, n_seeds=1, random_state=0).fit(X, y)
    finally:
        torch.set_default_dtype(previous)
    return ens.estimators_[0], X, y


def _problem(fitted_net, kind):
    """A member, its training rows, the backend's name and options, and test vectors."""
    net, X, y = fitted_net
    name, _, variant = kind.partition(":")
    form, _, penalised = variant.partition("+")
    net.l2_penalty_ = None
    if penalised:  # weights penalised, biases not: a parameter-wise D
        net.l2_penalty_ = L2Penalty({n: 0.02 for n, _ in net.module_.named_parameters()
                                     if n.endswith("weight")}, normalised=True)
    layered = name in ("kfac", "ekfac", "pcg")
    member = functional_member(net, "loss", "classifier", layered=layered,
                               probe_X=X[:8] if layered else None)
    X_net, y_net = (t.numpy() for t in member.tensors(X, y))
    options = {"form": form} if form else {"samples": None} if layered else None
    if name == "pcg":
        options["maxiter"] = 3
    v = torch.randn(3, member.n_params, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    blocks = ([torch.stack(b) for b in zip(*(member.to_blocks(row) for row in v))]
              if layered else [v])
    return member, X_net, y_net, name, options, blocks


def _flat(blocks):
    return torch.cat([b.reshape(len(b), -1) for b in blocks], dim=1)


def test_every_backend_implements_the_interface():
    for name, backend in BACKENDS.items():
        assert issubclass(backend, Curvature), name
        assert not backend.__abstractmethods__, name


@pytest.mark.parametrize("solved_first", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_with_damping_solves_as_a_fresh_fit(fitted_net, kind, solved_first):
    """A copy with another damping solves as a backend fitted with that damping, the
    original keeps its own, and neither damping enters the mean eigenvalue. With
    ``solved_first`` the original is factored before the copy is made (the dense
    and kernel copies then go through the eigendecomposition)."""
    member, X, y, name, options, blocks = _problem(fitted_net, kind)
    solver = fit_curvature(name, member, X, y, 1e-3, options)
    if solved_first:
        before = _flat(solver.solve_blocks(blocks))
    copy = solver.with_damping(0.05)
    assert (copy.damping, solver.damping) == (0.05, 1e-3)
    got = _flat(copy.solve_blocks(blocks))
    want = _flat(fit_curvature(name, member, X, y, 0.05, options).solve_blocks(blocks))
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10 * float(want.abs().max()))
    own = _flat(solver.solve_blocks(blocks))
    fresh = _flat(fit_curvature(name, member, X, y, 1e-3, options).solve_blocks(blocks))
    np.testing.assert_allclose(own, fresh, rtol=1e-8, atol=1e-10 * float(fresh.abs().max()))
    if solved_first:
        torch.testing.assert_close(own, before, rtol=0, atol=0)
    if name != "cg":  # a Hutchinson estimate: the same probes, the same number
        assert copy.mean_eigenvalue() == pytest.approx(solver.mean_eigenvalue(), rel=1e-10)


@pytest.mark.parametrize("kind", ["ggn:dense", "ggn:kernel", "ggn:dense+penalty"])
def test_a_damping_chosen_before_the_first_solve_takes_the_cholesky_path(fitted_net, kind,
                                                                          monkeypatch):
    """Fitting factors nothing; a copy made before any solve is factored by Cholesky
    as a fit with its damping would be, to the bit (damping='auto''s floor)."""
    member, X, y, name, options, blocks = _problem(fitted_net, kind)
    calls = []

    def counting(name):
        original = getattr(torch.linalg, name)
        return lambda *args, **kwargs: calls.append(name) or original(*args, **kwargs)

    for function in ("cholesky", "cholesky_ex", "eigh"):
        monkeypatch.setattr(torch.linalg, function, counting(function))
    solver = fit_curvature(name, member, X, y, 1e-3, options)
    assert calls == []
    got = solver.with_damping(0.05).solve_blocks(blocks)[0]
    assert calls in (["cholesky"], ["cholesky_ex"])
    want = fit_curvature(name, member, X, y, 0.05, options).solve_blocks(blocks)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["ggn:dense", "ggn:kernel"])
def test_copies_share_one_eigendecomposition(fitted_net, kind, monkeypatch):
    """After the first damping's Cholesky factor, any number of other dampings cost
    one eigendecomposition between them (of H, or of the Gram matrix U U^T)."""
    member, X, y, name, options, blocks = _problem(fitted_net, kind)
    solver = fit_curvature(name, member, X, y, 1e-3, options)
    solver.solve_blocks(blocks)
    calls = []
    eigh = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda *a, **k: calls.append(1) or eigh(*a, **k))
    for damping in (0.01, 0.1, 1.0):
        got = solver.with_damping(damping).solve_blocks(blocks)[0]
        want = fit_curvature(name, member, X, y, damping, options).solve_blocks(blocks)[0]
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10 * float(want.abs().max()))
    assert len(calls) == 1  # the fresh fits take Cholesky factors


@pytest.mark.parametrize("kind", KINDS)
def test_solve_dampings_solves_as_fresh_fits(fitted_net, kind):
    """Scoring many candidate dampings (damping='calibrate') solves each as a backend
    fitted with it would: the dense and kernel forms through one float32
    eigendecomposition made for the call (float32 rounding), the others exactly,
    and the fitted solver keeps its own damping and factor."""
    member, X, y, name, options, blocks = _problem(fitted_net, kind)
    solver = fit_curvature(name, member, X, y, 1e-3, options)
    dampings = [1e-3, 0.02, 0.5]
    got = solver.solve_dampings(blocks, dampings)
    assert len(got) == len(dampings)
    dense = name in ("ggn", "exact") and kind != "ggn:kernel+penalty"
    for damping, solved in zip(dampings, got):
        want = _flat(fit_curvature(name, member, X, y, damping, options).solve_blocks(blocks))
        rtol = 1e-4 if dense else 1e-8
        np.testing.assert_allclose(_flat(solved), want, rtol=rtol,
                                   atol=rtol * float(want.abs().max()))
    assert solver.damping == 1e-3
    fresh = _flat(fit_curvature(name, member, X, y, 1e-3, options).solve_blocks(blocks))
    np.testing.assert_allclose(_flat(solver.solve_blocks(blocks)), fresh, rtol=1e-8,
                               atol=1e-10 * float(fresh.abs().max()))


@pytest.mark.parametrize("kind", KINDS)
def test_bilinear_dampings_are_products_with_fresh_solves(fitted_net, kind):
    """What the calibration scores a member's candidates by, ``a^T (H + d I)^{-1} b`` for
    query gradients ``a`` and summed set gradients ``b``: each damping's matrix equals
    the product with a solver fitted at that damping (the dense and kernel forms
    contract both sides in one float32 eigenbasis instead of solving per damping)."""
    member, X, y, name, options, blocks = _problem(fitted_net, kind)
    solver = fit_curvature(name, member, X, y, 1e-3, options)
    torch.manual_seed(0)
    right = [torch.randn(5, b[0].numel(), dtype=torch.float64) for b in blocks]
    dampings = [1e-3, 0.02, 0.5]
    got = solver.bilinear_dampings(blocks, right, dampings)
    assert len(got) == len(dampings)
    # the kernel form with a penalty: U^T U + penalty reduced in float32 (small P)
    dense = name in ("ggn", "exact")
    flat_right = torch.cat(right, dim=1)
    for damping, product in zip(dampings, got):
        solved = _flat(fit_curvature(name, member, X, y, damping, options).solve_blocks(blocks))
        want = solved.double() @ flat_right.T
        assert product.shape == (len(blocks[0]), 5) and product.dtype == torch.float64
        rtol = 1e-4 if dense else 1e-8
        np.testing.assert_allclose(product, want, rtol=rtol,
                                   atol=rtol * float(want.abs().max()))
    assert solver.damping == 1e-3


@pytest.mark.parametrize("rows", [10, 150])
def test_kernel_forms_with_a_penalty_either_way(fitted_net, rows, monkeypatch):
    """The kernel form with a parameter-wise penalty scores dampings through one float32
    reduction of ``U^T U + penalty`` (P = 51 against M = 300 rows of U) or, where
    that costs more (M = 20), through a Gram matrix and factor per damping: either
    way the products with fresh solves."""
    from skdtda.curvature import _tridiagonal

    member, X, y, name, options, blocks = _problem(fitted_net, "ggn:kernel+penalty")
    X, y = X[:rows], y[:rows]
    solver = fit_curvature(name, member, X, y, 1e-3, options)
    reductions = []
    original = _tridiagonal.TridiagonalForms.__init__
    monkeypatch.setattr(_tridiagonal.TridiagonalForms, "__init__",
                        lambda self, m: reductions.append(len(m)) or original(self, m))
    right = [torch.randn(5, member.n_params, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(2))]
    dampings = [1e-3, 0.02, 0.5]
    got = solver.bilinear_dampings(blocks, right, dampings)
    assert reductions == ([member.n_params] if rows == 150 else [])
    rtol = 1e-4 if reductions else 1e-8
    for damping, product in zip(dampings, got):
        solved = _flat(fit_curvature(name, member, X, y, damping, options).solve_blocks(blocks))
        want = solved @ right[0].T
        np.testing.assert_allclose(product, want, rtol=rtol,
                                   atol=rtol * float(want.abs().max()))


@pytest.mark.parametrize("size", [1, 2, 7, 300])
@pytest.mark.parametrize("spectrum", ["definite", "low rank", "indefinite"])
def test_tridiagonal_forms_match_solves_at_every_shift(size, spectrum):
    """``a^T (A + c I)^{-1} b`` from one float32 tridiagonal reduction equals the float64
    solve at every shift: a definite matrix, a low-rank one (the GGN of few rows) at
    shifts far below its scale, and an indefinite one (a Hessian; the tridiagonal
    Cholesky fails and its eigenpairs take over)."""
    from skdtda.curvature._tridiagonal import TridiagonalForms

    generator = torch.Generator().manual_seed(size)
    basis, _ = torch.linalg.qr(torch.randn(size, size, dtype=torch.float64,
                                           generator=generator))
    values = torch.logspace(-3, 2, size, dtype=torch.float64)
    if spectrum == "low rank":
        values[: size // 2] = 0
    if spectrum == "indefinite":
        values = values * torch.where(torch.arange(size) % 3 == 0, -1.0, 1.0)
    matrix = (basis * values) @ basis.T
    left = torch.randn(size, 4, dtype=torch.float64, generator=generator)
    right = torch.randn(size, 3, dtype=torch.float64, generator=generator)
    shifts = [1e-3, 0.05, 1.0, 30.0] if spectrum != "indefinite" else [0.37, 150.0]
    got = TridiagonalForms(matrix).forms(left, right, shifts)
    for shift, form in zip(shifts, got):
        want = left.T @ torch.linalg.solve(matrix + shift * torch.eye(size, dtype=torch.float64),
                                           right)
        assert form.shape == (4, 3) and form.dtype == torch.float64
        # float32 rounding of A, amplified by the condition number of A + c I
        scale = float(values.abs().max()) / min(float((values + shift).abs().min()), shift)
        np.testing.assert_allclose(form, want, atol=2e-6 * scale * float(want.abs().max()))


def test_relative_layer_damping_is_kronfluences_per_module_rule(fitted_net):
    """layer_damping='relative' at 0.1 x the mean eigenvalue damps each layer by 0.1 x
    its own mean eigenvalue (kronfluence's heuristic): each layer's block solves as a
    uniform fit damped by that layer's own value."""
    member, X, y, _, _, blocks = _problem(fitted_net, "ekfac")
    uniform = fit_curvature("ekfac", member, X, y, 1.0, {"samples": None})
    eigs = [f["eig"].double() for f in uniform.factors]
    overall = float(sum(e.sum() for e in eigs)) / sum(e.numel() for e in eigs)
    relative = fit_curvature("ekfac", member, X, y, 0.1 * overall,
                             {"samples": None, "layer_damping": "relative"})
    got = relative.solve_blocks(blocks)
    assert len(eigs) > 1 and len({round(s, 6) for s in relative.layer_scale}) > 1
    for i, e in enumerate(eigs):
        want = uniform.with_damping(0.1 * float(e.mean())).solve_blocks(blocks)[i]
        torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-8)
