"""SeedEnsemble*(memory=...): finished members survive a killed fit, and only matching ones load."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_iris, make_regression
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier, NeuralNetRegressor
from torch import nn

import skdtda
from skdtda import SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.ensemble import _batched
from skdtda.nets import MLP

# The same script fits in the test process and, killed part-way, in a child.
_SETUP = """
import numpy as np
import torch
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier
from torch import nn

from skdtda import SeedEnsembleClassifier
from skdtda.nets import MLP

torch.set_num_threads(1)
X, y = load_iris(return_X_y=True)
X = StandardScaler().fit_transform(X)


def make_ensemble(memory, vectorize, n_seeds):
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(8,),
                              criterion=nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                              optimizer__momentum=0.9, lr=0.05, max_epochs=3, batch_size=16,
                              train_split=None, verbose=0)
    return SeedEnsembleClassifier(net, n_seeds=n_seeds, random_state=0, vectorize=vectorize,
                                  memory=memory)
"""

_KILL = """
import os
import signal
import sys

import skorch
from skdtda.ensemble import _batched

memory, vectorize, n_seeds, kill_after = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), \\
    int(sys.argv[4])
torch.set_default_dtype(torch.float64)
calls = []


def killing(original):
    def run(*args, **kwargs):
        if len(calls) == kill_after:  # every earlier unit of work is on disk by now
            os.kill(os.getpid(), signal.SIGKILL)
        calls.append(1)
        return original(*args, **kwargs)
    return run


if vectorize:
    _batched.fit_batched = killing(_batched.fit_batched)
else:
    skorch.NeuralNetClassifier.fit = killing(skorch.NeuralNetClassifier.fit)
make_ensemble(memory, vectorize, n_seeds).fit(X, y)
"""

_namespace = {}
exec(_SETUP, _namespace)
make_ensemble, X_IRIS, Y_IRIS = _namespace["make_ensemble"], _namespace["X"], _namespace["y"]


def _params(ensemble):
    return [[p.detach().clone() for p in m.module_.parameters()] for m in ensemble.estimators_]


def _assert_bit_identical(a, b):
    assert len(a) == len(b)
    for pa, pb in zip(a, b):
        for x, y in zip(pa, pb):
            assert x.dtype == y.dtype and torch.equal(x, y)


class _Counter:
    """Counts training calls: one per member on the loop path, one per group batched."""

    def __init__(self, monkeypatch):
        self.calls = 0
        fit, fit_batched = NeuralNetClassifier.fit, _batched.fit_batched

        def count_fit(net, *args, **kwargs):
            self.calls += 1
            return fit(net, *args, **kwargs)

        def count_batched(*args, **kwargs):
            self.calls += 1
            return fit_batched(*args, **kwargs)

        monkeypatch.setattr(NeuralNetClassifier, "fit", count_fit)
        monkeypatch.setattr(_batched, "fit_batched", count_batched)


@pytest.mark.parametrize("vectorize, n_seeds, kill_after, n_units", [
    (False, 4, 2, 4),   # loop: one member per unit; killed while training the third
    (True, 10, 1, 3),   # batched: groups of 4, 4 and 2 members; killed in the second group
])
def test_a_killed_fit_resumes_and_equals_an_uninterrupted_one(tmp_path, monkeypatch, caplog,
                                                              float64, vectorize, n_seeds,
                                                              kill_after, n_units):
    memory = str(tmp_path / "members")
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(skdtda.__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    script = tmp_path / "fit.py"
    script.write_text(textwrap.dedent(_SETUP) + textwrap.dedent(_KILL))
    child = subprocess.run([sys.executable, str(script), memory, str(int(vectorize)),
                            str(n_seeds), str(kill_after)], env=env, capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr

    counter = _Counter(monkeypatch)
    with caplog.at_level(logging.INFO, logger="skdtda"):
        resumed = make_ensemble(memory, vectorize, n_seeds).fit(X_IRIS, Y_IRIS)
    assert resumed.vectorized_ is vectorize
    assert counter.calls == n_units - kill_after  # only the unfinished members were trained
    n_loaded = kill_after * (4 if vectorize else 1)
    assert f"{n_loaded} of {n_seeds} members loaded from memory" in caplog.text

    counter.calls = 0
    uninterrupted = make_ensemble(str(tmp_path / "other"), vectorize, n_seeds).fit(X_IRIS, Y_IRIS)
    assert counter.calls == n_units
    _assert_bit_identical(_params(resumed), _params(uninterrupted))
    if not vectorize:  # loop members do not depend on memory at all
        _assert_bit_identical(_params(resumed),
                              _params(make_ensemble(None, False, n_seeds).fit(X_IRIS, Y_IRIS)))


@pytest.mark.parametrize("vectorize", [False, True])
def test_other_settings_or_other_data_never_use_the_stored_members(tmp_path, monkeypatch,
                                                                   vectorize):
    memory = joblib.Memory(tmp_path, verbose=0)
    ens = make_ensemble(memory, vectorize, 2)
    first = clone(ens).fit(X_IRIS, Y_IRIS)
    counter = _Counter(monkeypatch)
    again = clone(ens).fit(X_IRIS, Y_IRIS)
    assert counter.calls == 0
    _assert_bit_identical(_params(first), _params(again))
    np.testing.assert_array_equal(first.predict_proba(X_IRIS), again.predict_proba(X_IRIS))

    n_units = 2 if not vectorize else 1
    changed = X_IRIS.copy()
    changed[7, 2] += 1e-3
    others = [
        (clone(ens), changed, Y_IRIS),                                    # one value differs
        (clone(ens), X_IRIS[::-1].copy(), Y_IRIS[::-1].copy()),            # rows reordered
        (clone(ens), X_IRIS, np.where(Y_IRIS == 2, 1, Y_IRIS)),           # labels differ
        (clone(ens).set_params(net__lr=0.06), X_IRIS, Y_IRIS),            # net setting
        (clone(ens).set_params(net__module__hidden_layer_sizes=(9,)), X_IRIS, Y_IRIS),
        (clone(ens).set_params(random_state=1), X_IRIS, Y_IRIS),          # member seeds
        (clone(ens).set_params(vary="init"), X_IRIS, Y_IRIS),
    ]
    for estimator, X, y in others:
        counter.calls = 0
        estimator.fit(X, y)
        assert counter.calls == n_units, estimator
    # the nets' dtype is part of the key too (torch's default dtype is no parameter)
    counter.calls = 0
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        clone(ens).fit(X_IRIS, Y_IRIS)
    finally:
        torch.set_default_dtype(previous)
    assert counter.calls == n_units


def test_loop_and_batched_members_are_stored_apart(tmp_path, monkeypatch, float64):
    # a batched member differs from its loop twin in the last bits: neither stands in
    loop = make_ensemble(str(tmp_path), False, 2).fit(X_IRIS, Y_IRIS)
    counter = _Counter(monkeypatch)
    batched = make_ensemble(str(tmp_path), True, 2).fit(X_IRIS, Y_IRIS)
    assert batched.vectorized_ and not loop.vectorized_ and counter.calls == 1


def test_memory_for_a_regressor_and_with_n_jobs(tmp_path, monkeypatch):
    X, y = make_regression(n_samples=60, n_features=3, noise=1.0, random_state=0)
    X, y = StandardScaler().fit_transform(X), y / y.std()
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(4,), criterion=nn.MSELoss,
                             optimizer=torch.optim.Adam, lr=0.01, max_epochs=2, batch_size=16,
                             train_split=None, verbose=0)
    ens = SeedEnsembleRegressor(net, n_seeds=6, random_state=0, memory=str(tmp_path))
    with joblib.parallel_config(backend="threading"):  # threads: no worker start-up
        first = clone(ens).set_params(n_jobs=2).fit(X, y)
    counter = _Counter(monkeypatch)
    # groups do not depend on n_jobs, so a rerun with another n_jobs loads them all
    again = clone(ens).fit(X, y)
    assert again.vectorized_ and counter.calls == 0
    np.testing.assert_array_equal(first.predict_members(X), again.predict_members(X))


def test_memory_is_validated():
    ens = make_ensemble(3, False, 2)
    with pytest.raises(ValueError, match="memory"):
        ens.fit(X_IRIS, Y_IRIS)


def test_default_settings_leave_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    SeedEnsembleClassifier(n_seeds=2, random_state=0).fit(load_iris(return_X_y=True)[0],
                                                          load_iris(return_X_y=True)[1])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["SeedEnsembleClassifier", "SeedEnsembleRegressor",
                                  "UnrolledInfluence", "DataPruner"])
def test_every_memory_takes_a_folder_or_a_joblib_memory(tmp_path, name):
    from sklearn.utils._param_validation import InvalidParameterError

    make = getattr(skdtda, name)
    for memory in (None, str(tmp_path), joblib.Memory(tmp_path, verbose=0)):
        make(memory=memory)._validate_params()
    with pytest.raises(InvalidParameterError, match="memory"):
        make(memory=3)._validate_params()
