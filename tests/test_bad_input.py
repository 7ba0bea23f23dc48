"""Bad input to every public class and function: a clear error that names the problem.

Each case asserts the exception type and a phrase of its message. Inputs that
look unusual but are valid (string, integer and boolean labels, read-only
memmaps, pandas, float16) must work. Everything runs on one set of tiny fitted
objects built once for the module.
"""

import types

import joblib
import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.datasets import load_iris
from sklearn.exceptions import NotFittedError
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler, scale
from skorch import NeuralNetClassifier, NeuralNetRegressor

from _data import Pairs

from skdtda import (DataPruner, InfluenceTransformer, PrunedEstimator, SeedEnsembleClassifier,
                    SeedEnsembleRegressor, UndertrainedWarning, UnrolledInfluence)
from skdtda import evaluation as ev
from skdtda.discrepancy import check_statistic, discrepancy
from skdtda.nets import MLP

N = 45  # training rows of the shared fixture


def _clf_net(optimizer=torch.optim.SGD):
    return NeuralNetClassifier(MLP, module__hidden_layer_sizes=(4,),
                               criterion=torch.nn.CrossEntropyLoss, optimizer=optimizer, lr=0.1,
                               max_epochs=2, batch_size=16, train_split=None, verbose=0)


def _reg_net():
    return NeuralNetRegressor(MLP, module__hidden_layer_sizes=(4,), criterion=torch.nn.MSELoss,
                              optimizer=torch.optim.SGD, lr=0.05, max_epochs=2, batch_size=16,
                              train_split=None, verbose=0)


def _ens(**params):
    return SeedEnsembleClassifier(_clf_net(), n_seeds=2, random_state=0, **params)


def _reg(**params):
    return SeedEnsembleRegressor(_reg_net(), n_seeds=2, random_state=0, **params)


@pytest.fixture(scope="module")
def f():
    """Tiny data and one fitted object of each kind, shared by every case."""
    X, y = load_iris(return_X_y=True)
    rows = np.random.RandomState(0).permutation(len(X))[:N]
    X, y = scale(X[rows]), y[rows]
    ens = _ens().fit(X, y)
    influence = InfluenceTransformer(ens, curvature="ggn").fit(X, y)
    Xr, yr = X[:, 1:], 0.5 * X[:, 0]
    nan, inf = X.copy(), X.copy()
    nan[0, 0], inf[1, 1] = np.nan, np.inf
    before = np.random.RandomState(0).normal(size=(4, 5))
    after = before[None] + np.random.RandomState(1).normal(size=(6, 4, 5))
    return types.SimpleNamespace(
        X=X, y=y, nan=nan, inf=inf, ens=ens, influence=influence,
        unrolled=UnrolledInfluence(ens).fit(X, y),
        Xr=Xr, yr=yr, reg=_reg().fit(Xr, yr),
        pruned=PrunedEstimator(DataPruner(influence, objective="self", fraction=0.2),
                               LogisticRegression()).fit(X, y),
        before=before, after=after, truth=(before, after))


def _with_nan(y):
    y = np.asarray(y, dtype=float).copy()
    y[0] = np.nan
    return y


def _pruner(f, **params):
    return DataPruner(f.influence, **params)


def _scorer(f, n_train=N):
    remove = ev.random_subsets(n_train, 6, random_state=0)
    return ev.make_lds_scorer(f.truth, remove=remove, X_query=f.X[:5], y_query=f.y[:5])


def _search(f, **params):
    """An AttributionSearchCV over the fixture's truth (6 sets of N rows, 5 queries)."""
    settings = dict(actual=f.truth, remove=ev.random_subsets(N, 6, random_state=0),
                    X_query=f.X[:5], y_query=f.y[:5], n_splits=2, random_state=0)
    settings.update(params)
    return ev.AttributionSearchCV(InfluenceTransformer(f.ens), {"curvature": ["ggn"]},
                                  **settings)


def _rmsprop_unrolled(f):
    net = _clf_net(torch.optim.RMSprop).set_params(max_epochs=1)
    ens = SeedEnsembleClassifier(net, n_seeds=1, random_state=0).fit(f.X, f.y)
    return UnrolledInfluence(ens).fit(f.X, f.y)


class _NotPairs(Pairs):
    def __getitem__(self, i):
        return torch.as_tensor(self.X[i])


class _NoLength(torch.utils.data.Dataset):
    def __getitem__(self, i):
        return torch.zeros(4), 0


class _Sampler(BaseEstimator):
    """A step that changes the rows, as imbalanced-learn's samplers do."""

    def fit_resample(self, X, y):
        return X[::2], y[::2]


def _to_logistic(f=None):
    return make_pipeline(StandardScaler(), LogisticRegression())


def _sampled(f=None):
    return Pipeline([("undersample", _Sampler()), ("ensemble", _ens())])


_LAST_STEP = ("the Pipeline's last step 'logisticregression' is a LogisticRegression, not a "
              "seed ensemble")
_SAMPLER = ("the Pipeline's step 'undersample' \\(_Sampler\\) is a sampler, which changes the "
            "training rows")
_DATASET_Y = r"X is a torch Dataset \(Pairs\), whose items hold the targets, so y must be None"


# (id, call on the fixture, exception, phrase of the message)
CASES = [
    # -- SeedEnsembleClassifier --------------------------------------------------------
    ("clf-fit-nan", lambda f: _ens().fit(f.nan, f.y), ValueError, "Input X contains NaN"),
    ("clf-fit-inf", lambda f: _ens().fit(f.inf, f.y), ValueError, "Input X contains infinity"),
    ("clf-fit-empty", lambda f: _ens().fit(f.X[:0], f.y[:0]), ValueError,
     r"0 sample\(s\) \(shape=\(0, 4\)\)"),
    ("clf-fit-one-row", lambda f: _ens().fit(f.X[:1], f.y[:1]), ValueError,
     "at least 2 classes"),
    ("clf-fit-one-class", lambda f: _ens().fit(f.X, np.zeros(N, dtype=int)), ValueError,
     "only one class: 0$"),
    ("clf-fit-one-object-class", lambda f: _ens().fit(f.X, np.array(["a"] * N, dtype=object)),
     ValueError, "only one class: 'a'$"),
    ("clf-fit-lengths", lambda f: _ens().fit(f.X, f.y[:-1]), ValueError,
     r"inconsistent numbers of samples: \[45, 44\]"),
    ("clf-fit-1d-X", lambda f: _ens().fit(f.X[:, 0], f.y), ValueError, "Expected 2D array"),
    ("clf-fit-sparse-nan", lambda f: _ens().fit(sparse.csr_matrix(f.nan), f.y), ValueError,
     "Input X contains NaN"),
    ("clf-fit-continuous-y", lambda f: _ens().fit(f.X, f.X[:, 0]), ValueError,
     "Unknown label type: continuous"),
    ("clf-fit-nan-y", lambda f: _ens().fit(f.X, _with_nan(f.y)), ValueError,
     "Input y contains NaN"),
    ("clf-n_seeds-0", lambda f: _ens().set_params(n_seeds=0).fit(f.X, f.y), ValueError,
     "'n_seeds' parameter of SeedEnsembleClassifier must be an int in the range"),
    ("clf-vary", lambda f: _ens(vary="all").fit(f.X, f.y), ValueError,
     "'vary' parameter of SeedEnsembleClassifier must be a str among"),
    ("clf-net-unsupported", lambda f: SeedEnsembleClassifier(KNeighborsClassifier()).fit(f.X, f.y),
     ValueError, "'net' parameter of SeedEnsembleClassifier must be an instance of"),
    ("clf-net-sklearn-regressor", lambda f: SeedEnsembleClassifier(Ridge()).fit(f.X, f.y),
     ValueError, "'net' parameter of SeedEnsembleClassifier must be an instance of"),
    ("clf-net-regressor", lambda f: SeedEnsembleClassifier(_reg_net()).fit(f.X, f.y),
     ValueError, "'net' parameter of SeedEnsembleClassifier"),
    ("clf-predict-unfitted", lambda f: _ens().predict(f.X), NotFittedError,
     "SeedEnsembleClassifier instance is not fitted yet"),
    ("clf-measure-unfitted", lambda f: _ens().measure(f.X), NotFittedError, "not fitted yet"),
    ("clf-predict-features", lambda f: f.ens.predict(f.X[:, :3]), ValueError,
     "X has 3 features, but SeedEnsembleClassifier is expecting 4 features"),
    ("clf-predict-proba-nan", lambda f: f.ens.predict_proba(f.nan), ValueError,
     "Input X contains NaN"),
    ("clf-predict-empty", lambda f: f.ens.predict_members(f.X[:0]), ValueError,
     r"0 sample\(s\)"),
    ("clf-measure-lengths", lambda f: f.ens.measure(f.X, f.y[:-1]), ValueError,
     "y has 44 samples but X has 45"),
    ("clf-measure-unseen-label", lambda f: f.ens.measure(f.X[:3], [0, 1, 7]), ValueError,
     r"labels not seen in fit: \[7\]"),
    ("clf-measure-unknown", lambda f: f.ens.measure(f.X, f.y, measurement="lossy"), ValueError,
     "measurement='lossy' is not one of"),
    ("clf-measure-regression-only", lambda f: f.ens.measure(f.X, measurement="prediction"),
     ValueError, "measurement='prediction' does not apply to a classifier"),
    ("clf-fit-dataset-y", lambda f: _ens().fit(Pairs(f.X, f.y), f.y), ValueError,
     _DATASET_Y),
    ("clf-fit-dataset-items", lambda f: _ens().fit(_NotPairs(f.X, f.y), None), ValueError,
     "the torch Dataset's items must be \\(x, y\\) pairs, as skorch's are; item 0 of _NotPairs "
     "is a Tensor"),
    ("clf-fit-dataset-length", lambda f: _ens().fit(_NoLength(), None), TypeError,
     "a torch Dataset must have a length \\(a map-style dataset\\); _NoLength has none"),
    ("clf-fit-dict-empty", lambda f: _ens().fit({}, f.y), ValueError,
     "X is an empty dict; a dict input holds one array per argument"),
    ("clf-fit-dict-keys", lambda f: _ens().fit({0: f.X}, f.y), ValueError,
     "a dict input's keys name the module's forward arguments and must be strings, got 0"),
    ("clf-fit-dict-lengths", lambda f: _ens().fit({"a": f.X, "b": f.X[:-1]}, f.y), ValueError,
     "the arrays of a dict input must have one row per sample each, got \\{'a': 45, 'b': 44\\}"),
    ("clf-predict-dict-on-array", lambda f: f.ens.predict({"a": f.X}), ValueError,
     r"SeedEnsembleClassifier was fitted on an array, X is a dict of arrays \(arguments \['a'\]\)"),
    # -- SeedEnsembleRegressor ---------------------------------------------------------
    ("reg-fit-nan-y", lambda f: _reg().fit(f.Xr, _with_nan(f.yr)), ValueError,
     "Input y contains NaN"),
    ("reg-fit-nan-X", lambda f: _reg().fit(f.nan[:, :3], f.yr), ValueError,
     "Input X contains NaN"),
    ("reg-fit-string-y", lambda f: _reg().fit(f.Xr, np.array(["a"] * N)), ValueError,
     "could not convert string to float: .*'a'"),
    ("reg-fit-empty", lambda f: _reg().fit(f.Xr[:0], f.yr[:0]), ValueError, r"0 sample\(s\)"),
    ("reg-predict-unfitted", lambda f: _reg().predict(f.Xr), NotFittedError,
     "SeedEnsembleRegressor instance is not fitted yet"),
    ("reg-predict-features", lambda f: f.reg.predict(f.X), ValueError,
     "X has 4 features, but SeedEnsembleRegressor is expecting 3 features"),
    ("reg-measure-nan-y", lambda f: f.reg.measure(f.Xr[:3], [np.nan, 0, 0]), ValueError,
     "y contains NaN or infinity"),
    ("reg-measure-lengths", lambda f: f.reg.measure(f.Xr[:3], [0, 0]), ValueError,
     "y has 2 samples but X has 3"),
    ("reg-measure-classifier-only", lambda f: f.reg.measure(f.Xr, measurement="margin"),
     ValueError, "measurement='margin' does not apply to a regressor"),
    # -- InfluenceTransformer ----------------------------------------------------------
    ("if-fit-nan", lambda f: InfluenceTransformer(f.ens).fit(f.nan, f.y), ValueError,
     "Input X contains NaN"),
    ("if-fit-features", lambda f: InfluenceTransformer(f.ens).fit(f.X[:, :3], f.y), ValueError,
     "the fitted estimator has 4 features but X has 3"),
    ("if-fit-lengths", lambda f: InfluenceTransformer(f.ens).fit(f.X, f.y[:-1]), ValueError,
     "inconsistent numbers of samples"),
    ("if-fit-one-class", lambda f: InfluenceTransformer(_ens()).fit(f.X, np.zeros(N, int)),
     ValueError, "only one class: 0$"),
    ("if-curvature", lambda f: InfluenceTransformer(f.ens, curvature="hessian").fit(f.X, f.y),
     ValueError, "'curvature' parameter of InfluenceTransformer must be a str among"),
    ("if-damping-negative", lambda f: InfluenceTransformer(f.ens, damping=-1).fit(f.X, f.y),
     ValueError, r"'damping' parameter .* range \[0.0, inf\) or a str among {.*'auto'.*}\. Got -1"),
    ("if-damping-nan", lambda f: InfluenceTransformer(f.ens, damping=np.nan).fit(f.X, f.y),
     ValueError, "'damping' parameter .* Got nan"),
    ("if-statistic", lambda f: InfluenceTransformer(f.ens, statistic="median").fit(f.X, f.y),
     ValueError, "'statistic' parameter of InfluenceTransformer .* Got 'median'"),
    ("if-q", lambda f: InfluenceTransformer(f.ens, q=2).fit(f.X, f.y), ValueError,
     r"'q' parameter .* range \[0.0, 1.0\]\. Got 2"),
    ("if-seed_index", lambda f: InfluenceTransformer(f.ens, seed_index=5).fit(f.X, f.y),
     ValueError, "seed_index=5 but the ensemble has only 2 members"),
    ("if-estimator", lambda f: InfluenceTransformer(LogisticRegression()).fit(f.X, f.y),
     ValueError, "'estimator' parameter of InfluenceTransformer must be an instance of"),
    ("if-measurement", lambda f: InfluenceTransformer(f.ens, measurement="lossy").fit(f.X, f.y),
     ValueError, "'measurement' parameter .* Got 'lossy'"),
    ("if-measurement-kind", lambda f: InfluenceTransformer(
        f.ens, curvature="ggn", measurement="prediction").fit(f.X, f.y).transform(f.X[:2]),
     ValueError, "measurement='prediction' does not apply to a classifier"),
    ("if-options-for-ggn", lambda f: InfluenceTransformer(
        f.ens, curvature="ggn", curvature_options={"maxiter": 3}).fit(f.X, f.y), ValueError,
     r"curvature='ggn' takes no curvature_options, got \['maxiter'\]"),
    ("if-options-unknown", lambda f: InfluenceTransformer(
        f.ens, curvature="cg", curvature_options={"maxiters": 3}).fit(f.X, f.y),
     ValueError, r"curvature='cg' takes curvature_options .*maxiters"),
    ("if-options-unknown-ekfac", lambda f: InfluenceTransformer(
        f.ens, curvature="ekfac", curvature_options={"maxiter": 3}).fit(f.X, f.y),
     ValueError, r"curvature='ekfac' takes curvature_options 'samples'"),
    ("if-fit-other-rows", lambda f: InfluenceTransformer(f.ens).fit(f.X[:-1], f.y[:-1]),
     ValueError, "rows"),
    ("if-modules-unknown", lambda f: InfluenceTransformer(f.ens, modules=["nope"]).fit(f.X, f.y),
     ValueError, "modules='nope' names no submodule"),
    ("if-modules-bad-type", lambda f: InfluenceTransformer(f.ens, modules=[3]).fit(f.X, f.y),
     ValueError, "modules= takes module names or classes"),
    ("if-transform-unfitted", lambda f: InfluenceTransformer().transform(f.X), NotFittedError,
     "InfluenceTransformer instance is not fitted yet"),
    ("if-samples-unfitted", lambda f: InfluenceTransformer().influence_samples(f.X),
     NotFittedError, "not fitted yet"),
    ("if-names-unfitted", lambda f: InfluenceTransformer().get_feature_names_out(),
     NotFittedError, "not fitted yet"),
    ("if-transform-nan", lambda f: f.influence.transform(f.nan), ValueError,
     "Input X contains NaN"),
    ("if-transform-features", lambda f: f.influence.transform(f.X[:, :3]), ValueError,
     "X has 3 features, but InfluenceTransformer is expecting 4 features"),
    ("if-transform-empty", lambda f: f.influence.transform(f.X[:0]), ValueError,
     r"0 sample\(s\)"),
    ("if-transform-1d", lambda f: f.influence.transform(f.X[0]), ValueError,
     "Expected 2D array, got 1D array"),
    ("if-samples-lengths", lambda f: f.influence.influence_samples(f.X[:3], f.y[:2]),
     ValueError, "y has 2 samples but X has 3"),
    ("if-samples-string-labels", lambda f: f.influence.influence_samples(f.X[:2], ["a", "b"]),
     ValueError, r"labels not seen in fit: \['a', 'b'\]"),
    ("if-callable-statistic-shape", lambda f: InfluenceTransformer(
        f.ens, curvature="ggn", statistic=lambda before, after: before).fit(
        f.X, f.y).transform(f.X[:2]), ValueError, "returned shape .* expected"),
    ("if-removal-missing", lambda f: f.influence.predict_removal(f.X[:3]), ValueError,
     "predict_removal needs remove="),
    ("if-removal-range", lambda f: f.influence.predict_removal(f.X[:3], remove=[0, 99]),
     ValueError, r"remove must hold indices in \[0, 45\), got \[0, 99\]"),
    ("if-removal-negative", lambda f: f.influence.predict_removal(f.X[:3], remove=[-1]),
     ValueError, r"indices in \[0, 45\), got \[-1\]"),
    ("if-removal-float", lambda f: f.influence.predict_removal(f.X[:3], remove=[0.5]),
     ValueError, r"indices in \[0, 45\), got \[0.5\]"),
    ("if-removal-mask-length", lambda f: f.influence.predict_removal(
        f.X[:3], remove=np.ones(10, bool)), ValueError,
     r"boolean remove mask must have shape \(45,\), got \(10,\)"),
    ("if-removal-string", lambda f: f.influence.predict_removal(f.X[:3], remove="all"),
     ValueError, r"remove must be one set: a 1-D array of row indices .* got shape \(\)"),
    ("if-removal-2d", lambda f: f.influence.predict_removal(f.X[:3], remove=[[0, 1], [2, 3]]),
     ValueError, r"one set: .* got shape \(2, 2\)"),
    ("if-removal-everything", lambda f: f.influence.predict_removal(
        f.X[:3], remove=np.ones(N, bool)), ValueError,
     "remove removes every one of the 45 training rows"),
    ("if-pipeline-last-step", lambda f: InfluenceTransformer(_to_logistic()).fit(f.X, f.y),
     ValueError, "InfluenceTransformer: " + _LAST_STEP),
    ("if-pipeline-sampler", lambda f: InfluenceTransformer(_sampled()).fit(f.X, f.y),
     ValueError, "InfluenceTransformer: " + _SAMPLER),
    ("if-pipeline-other-rows", lambda f: InfluenceTransformer(
        make_pipeline(StandardScaler(), _ens()).fit(f.X[:40], f.y[:40])).fit(f.X, f.y),
     ValueError, "InfluenceTransformer: the ensemble was fitted on 40 rows, X has 45"),
    ("if-fit-dataset-y", lambda f: InfluenceTransformer(_ens()).fit(Pairs(f.X, f.y), f.y),
     ValueError, _DATASET_Y),
    ("if-query-dict-on-array", lambda f: f.influence.transform({"a": f.X[:2]}), ValueError,
     r"InfluenceTransformer was fitted on an array, X is a dict of arrays"),
    # -- UnrolledInfluence -------------------------------------------------------------
    ("ui-fit-nan", lambda f: UnrolledInfluence(f.ens).fit(f.nan, f.y), ValueError,
     "Input X contains NaN"),
    ("ui-mode", lambda f: UnrolledInfluence(f.ens, mode="sideways").fit(f.X, f.y), ValueError,
     "'mode' parameter of UnrolledInfluence must be a str among"),
    ("ui-n_tangents", lambda f: UnrolledInfluence(f.ens, n_tangents=0).fit(f.X, f.y),
     ValueError, "'n_tangents' parameter of UnrolledInfluence must be an int"),
    ("ui-memory", lambda f: UnrolledInfluence(f.ens, memory=3).fit(f.X, f.y), ValueError,
     "'memory' parameter of UnrolledInfluence"),
    ("ui-seed_index", lambda f: UnrolledInfluence(f.ens, seed_index=3).fit(f.X, f.y),
     ValueError, "seed_index=3 but the ensemble has only 2 members"),
    ("ui-optimizer", _rmsprop_unrolled, ValueError,
     "cannot replay this net's training: optimizer RMSprop is not one of SGD, Adam, AdamW"),
    ("ui-transform-unfitted", lambda f: UnrolledInfluence().transform(f.X), NotFittedError,
     "UnrolledInfluence instance is not fitted yet"),
    ("ui-transform-features", lambda f: f.unrolled.transform(f.X[:, :3]), ValueError,
     "X has 3 features, but UnrolledInfluence is expecting 4 features"),
    ("ui-removal-range", lambda f: f.unrolled.predict_removal(f.X[:3], remove=[45]),
     ValueError, r"indices in \[0, 45\), got \[45\]"),
    ("ui-pipeline-last-step", lambda f: UnrolledInfluence(_to_logistic()).fit(f.X, f.y),
     ValueError, "UnrolledInfluence: " + _LAST_STEP),
    # -- DataPruner --------------------------------------------------------------------
    ("dp-fraction-0", lambda f: _pruner(f, fraction=0).fit(f.X, f.y), ValueError,
     r"'fraction' parameter of DataPruner must be a float in the range \(0.0, 1.0\)"),
    ("dp-fraction-nan", lambda f: _pruner(f, fraction=np.nan).fit(f.X, f.y), ValueError,
     "'fraction' parameter .* Got nan"),
    ("dp-fraction-no-row", lambda f: _pruner(f, fraction=0.001).fit(f.X, f.y), ValueError,
     "fraction=0.001 removes no rows of the 45 samples"),
    ("dp-fraction-every-row", lambda f: _pruner(f, fraction=0.999).fit(f.X, f.y), ValueError,
     "fraction=0.999 removes every one of the 45 samples"),
    ("dp-objective", lambda f: _pruner(f, objective="val").fit(f.X, f.y), ValueError,
     "'objective' parameter of DataPruner"),
    ("dp-mode", lambda f: _pruner(f, mode="fixed").fit(f.X, f.y), ValueError,
     "'mode' parameter of DataPruner"),
    ("dp-validation_fraction", lambda f: _pruner(f, validation_fraction=0.9).fit(f.X, f.y),
     ValueError, r"'validation_fraction' parameter .* \(0.0, 0.5\]"),
    ("dp-seed_index", lambda f: _pruner(f, mode="fixed_seed", seed_index=7,
                                        objective="self").fit(f.X, f.y), ValueError,
     "seed_index=7 but the ensemble has only 2 members"),
    ("dp-influence", lambda f: DataPruner(LogisticRegression()).fit(f.X, f.y), ValueError,
     "'influence' parameter of DataPruner must be an object implementing"),
    ("dp-validation-not-pair", lambda f: _pruner(f, validation_data=(f.X,)).fit(f.X, f.y),
     ValueError, r"validation_data must be a pair \(X_val, y_val\), got 1 items"),
    ("dp-validation-features", lambda f: _pruner(
        f, validation_data=(f.X[:, :3], f.y)).fit(f.X, f.y), ValueError,
     "X has 3 features, but DataPruner is expecting 4 features"),
    ("dp-validation-unseen-label", lambda f: _pruner(
        f, validation_data=(f.X[:3], [0, 1, 5])).fit(f.X, f.y), ValueError,
     r"validation_data has labels not in the training y: \[5\]"),
    ("dp-validation-lengths", lambda f: _pruner(
        f, validation_data=(f.X[:5], f.y[:4])).fit(f.X, f.y), ValueError,
     r"inconsistent numbers of samples: \[5, 4\]"),
    ("dp-validation-nan", lambda f: _pruner(f, validation_data=(f.nan, f.y)).fit(f.X, f.y),
     ValueError, "Input X contains NaN"),
    ("dp-fit-nan", lambda f: _pruner(f, objective="self").fit(f.nan, f.y), ValueError,
     "Input X contains NaN"),
    ("dp-fit-empty", lambda f: _pruner(f).fit(f.X[:0], f.y[:0]), ValueError,
     r"0 sample\(s\)"),
    ("dp-fit-one-row", lambda f: _pruner(f).fit(f.X[:1], f.y[:1]), ValueError,
     "fraction=0.1 removes no rows of the 1 sample passed"),
    ("dp-fit-lengths", lambda f: _pruner(f).fit(f.X, f.y[:-1]), ValueError,
     "inconsistent numbers of samples"),
    ("dp-folds-rare-class", lambda f: _pruner(f, fraction=0.2, validation_fraction=0.5).fit(
        f.X[:5], [0, 0, 1, 1, 2]), ValueError,
     "class 2 has 1 rows, fewer than the 2 validation folds"),
    ("dp-pipeline-last-step", lambda f: DataPruner(InfluenceTransformer(_to_logistic()),
                                                    objective="self").fit(f.X, f.y),
     ValueError, "DataPruner: " + _LAST_STEP),
    ("dp-pipeline-sampler", lambda f: DataPruner(InfluenceTransformer(_sampled()),
                                                  objective="self").fit(f.X, f.y),
     ValueError, "DataPruner: " + _SAMPLER),
    # -- PrunedEstimator ---------------------------------------------------------------
    ("pe-predict-unfitted", lambda f: PrunedEstimator().predict(f.X), NotFittedError,
     "PrunedEstimator instance is not fitted yet"),
    ("pe-fit-nan", lambda f: PrunedEstimator(_pruner(f, objective="self")).fit(f.nan, f.y),
     ValueError, "Input X contains NaN"),
    ("pe-fit-lengths", lambda f: PrunedEstimator(_pruner(f)).fit(f.X, f.y[:-1]), ValueError,
     "inconsistent numbers of samples"),
    ("pe-pruner", lambda f: PrunedEstimator(LogisticRegression()).fit(f.X, f.y), ValueError,
     "'pruner' parameter of PrunedEstimator must be an object implementing 'fit' and "
     "'fit_resample'"),
    ("pe-estimator", lambda f: PrunedEstimator(_pruner(f), "svm").fit(f.X, f.y), ValueError,
     "'estimator' parameter of PrunedEstimator must be an object implementing 'fit'"),
    ("pe-predict-features", lambda f: f.pruned.predict(f.X[:, :3]), ValueError,
     "X has 3 features, but LogisticRegression is expecting 4 features"),
    ("pe-predict-nan", lambda f: f.pruned.predict_proba(f.nan), ValueError,
     "Input X contains NaN"),
    ("pe-no-predict_proba", lambda f: PrunedEstimator(_pruner(f), Ridge()).predict_proba(f.X),
     AttributeError, "has no attribute 'predict_proba'"),
    ("pe-sample_weight-length", lambda f: PrunedEstimator(
        _pruner(f, objective="self"), LogisticRegression()).fit(
        f.X, f.y, sample_weight=np.ones(3)), ValueError,
     r"sample_weight.shape == \(3,\), expected \(45,\)"),
    # -- skdtda.evaluation: removal sets -------------------------------------------------
    ("ev-subsets-n_train", lambda f: ev.random_subsets(0, 3), ValueError,
     "n_train=0 must be a positive integer"),
    ("ev-subsets-float-n_train", lambda f: ev.random_subsets(10.0, 3), ValueError,
     "n_train=10.0 must be a positive integer"),
    ("ev-subsets-n_sets", lambda f: ev.random_subsets(10, 0), ValueError,
     "n_sets=0 must be a positive integer"),
    ("ev-subsets-keep-1", lambda f: ev.random_subsets(10, 3, keep_fraction=1.0), ValueError,
     "keep_fraction=1.0 must lie strictly between 0 and 1"),
    ("ev-subsets-keep-nan", lambda f: ev.random_subsets(10, 3, keep_fraction=np.nan),
     ValueError, "keep_fraction=nan must lie strictly between 0 and 1"),
    ("ev-subsets-no-row", lambda f: ev.random_subsets(10, 3, keep_fraction=0.99), ValueError,
     "keep_fraction=0.99 of n_train=10 rows removes no row"),
    ("ev-loo-range", lambda f: ev.leave_one_out(10, [10]), ValueError,
     r"removal set 0 must hold row indices in \[0, 10\), got \[10\]"),
    ("ev-loo-negative", lambda f: ev.leave_one_out(10, [3, -1]), ValueError,
     r"removal set 1 must hold row indices in \[0, 10\), got \[-1\]"),
    ("ev-loo-float", lambda f: ev.leave_one_out(10, [1.5]), ValueError,
     r"rows must be integer row indices, got \[1.5\]"),
    ("ev-loo-empty", lambda f: ev.leave_one_out(10, []), ValueError,
     "remove holds no removal set"),
    ("ev-loo-only-row", lambda f: ev.leave_one_out(1, [0]), ValueError,
     "removal set 0 removes every training row"),
    ("ev-masks-none", lambda f: ev.removal_masks(None, 10), ValueError,
     r"remove= is required: a boolean matrix of shape \(n_sets, n_train\)"),
    ("ev-masks-flat", lambda f: ev.removal_masks([1, 2], 10), ValueError,
     "remove must list one index array per removal set"),
    ("ev-masks-shape", lambda f: ev.removal_masks(np.zeros((2, 9), bool), 10), ValueError,
     r"boolean remove matrix must have shape \(n_sets, 10\), got \(2, 9\)"),
    ("ev-masks-1d-bool", lambda f: ev.removal_masks(np.zeros(10, bool), 10), ValueError,
     r"must have shape \(n_sets, 10\), got \(10,\)"),
    ("ev-masks-every-row", lambda f: ev.removal_masks(np.ones((1, 10), bool), 10), ValueError,
     "removal set 0 removes every training row"),
    ("ev-masks-string", lambda f: ev.removal_masks("all", 10), ValueError,
     "remove must be a boolean matrix .* got str"),
    ("ev-masks-int-matrix", lambda f: ev.removal_masks(np.array([[0, 1], [1, 0]]), 2),
     ValueError, r"got ndarray \(2, 2\)"),
    ("ev-masks-nested-set", lambda f: ev.removal_masks([[[0, 1]]], 10), ValueError,
     r"removal set 0 must be a 1-D array of row indices, got shape \(1, 2\)"),
    ("ev-masks-float-set", lambda f: ev.removal_masks([[3.0]], 10), ValueError,
     r"removal set 0 must hold row indices in \[0, 10\), got \[3.0\]"),
    ("ev-masks-no-rows", lambda f: ev.removal_masks([[0]], 0), ValueError,
     r"row indices in \[0, 0\)"),
    # -- skdtda.evaluation: scores -------------------------------------------------------
    ("ev-change-not-pair", lambda f: ev.distribution_change((f.before,)), ValueError,
     "expected a Distributions .* pair; got tuple"),
    ("ev-change-shapes", lambda f: ev.distribution_change((f.before, f.after[:, :3])),
     ValueError, r"got \(4, 5\) and \(6, 3, 5\)"),
    ("ev-change-nan", lambda f: ev.distribution_change((f.before * np.nan, f.after)),
     ValueError, "the distributions hold NaN or inf"),
    ("ev-change-statistic", lambda f: ev.distribution_change(f.truth, "median"), ValueError,
     "Unknown statistic 'median'"),
    ("ev-change-q", lambda f: ev.distribution_change(f.truth, "quantile", q=2), ValueError,
     r"q must be a number in \[0, 1\]; got q=2"),
    ("ev-lds-shapes", lambda f: ev.lds(np.ones((5, 3)), np.ones((5, 4))), ValueError,
     r"predicted changes have shape \(5, 3\) but the retrained ones \(5, 4\)"),
    ("ev-lds-two-sets", lambda f: ev.lds(f.after[:2, 0], f.after[:2, 1]), ValueError,
     "needs at least 3 sets, got 2"),
    ("ev-lds-constant", lambda f: ev.lds(np.ones((6, 5)), f.after[:, 0]), ValueError,
     "every query's changes are constant"),
    ("ev-lds-method", lambda f: ev.lds(f.truth, f.truth, method="kendall"), ValueError,
     "method='kendall' must be one of"),
    ("ev-lds-nan", lambda f: ev.lds(np.full((6, 5), np.nan), f.after[:, 0]), ValueError,
     "the changes hold NaN or inf"),
    ("ev-lds-1d", lambda f: ev.lds(f.after[:, 0, 0], f.after[:, 1, 0]), ValueError,
     r"expected changes of shape \(n_sets, n_query\) .* shape \(6,\)"),
    ("ev-lds-ragged", lambda f: ev.lds([f.before, f.after, f.after], f.truth), ValueError,
     "expected changes of shape .* got a list that is neither"),
    ("ev-lds-discrepancy", lambda f: ev.lds(f.truth, f.truth, discrepancy="median"),
     ValueError, "Unknown statistic 'median'"),
    ("ev-loo-corr-shapes", lambda f: ev.loo_correlation(np.ones((5, 3)), np.ones((4, 3))),
     ValueError, r"have shape \(5, 3\) but the retrained ones \(4, 3\)"),
    ("ev-ceiling-seeds", lambda f: ev.noise_ceiling((f.before[:3], f.after[:, :3])),
     ValueError, "needs at least 4 seeds, got 3"),
    ("ev-ceiling-n_seeds", lambda f: ev.noise_ceiling(f.truth, n_seeds=9), ValueError,
     "n_seeds=9 must lie between 4 and the 4 seeds retrained"),
    ("ev-ceiling-changes", lambda f: ev.noise_ceiling(f.after[:, 0]), ValueError,
     "expected a Distributions .* pair; got ndarray"),
    ("ev-ceiling-n_splits", lambda f: ev.noise_ceiling(f.truth, n_splits=0), ValueError,
     "n_splits=0 must be a positive integer"),
    ("ev-ci-confidence", lambda f: ev.bootstrap_ci(f.truth, f.truth, confidence=1.5),
     ValueError, "confidence=1.5 must lie strictly between 0 and 1"),
    ("ev-ci-over", lambda f: ev.bootstrap_ci(f.truth, f.truth, over="sets"), ValueError,
     "over='sets' must be 'queries' or 'seeds'"),
    ("ev-ci-seeds-changes", lambda f: ev.bootstrap_ci(f.after[:, 0], f.after[:, 1],
                                                      over="seeds"), ValueError,
     "over='seeds' needs the retrained Distributions, not changes"),
    ("ev-ci-n_resamples", lambda f: ev.bootstrap_ci(f.truth, f.truth, n_resamples=0),
     ValueError, "n_resamples=0 must be a positive integer"),
    ("ev-report-confidence", lambda f: ev.score_report(f.truth, f.truth, confidence=0),
     ValueError, "confidence=0 must lie strictly between 0 and 1"),
    ("ev-report-changes", lambda f: ev.score_report(f.after[:, 0], f.after[:, 1]), ValueError,
     "expected a Distributions .* pair; got ndarray"),
    ("ev-report-n_resamples", lambda f: ev.score_report(f.truth, f.truth, n_resamples=2.5),
     ValueError, "n_resamples=2.5 must be a positive integer"),
    # -- skdtda.evaluation: predictions, retraining, search ------------------------------
    ("ev-predict-not-influence", lambda f: ev.predict_distributions(
        LogisticRegression(), f.X[:3], remove=[[0]]), ValueError,
     "influence must be a fitted InfluenceTransformer or UnrolledInfluence, got "
     "LogisticRegression"),
    ("ev-predict-unfitted", lambda f: ev.predict_distributions(
        InfluenceTransformer(), f.X[:3], remove=[[0]]), NotFittedError, "not fitted yet"),
    ("ev-predict-remove", lambda f: ev.predict_distributions(
        f.influence, f.X[:3], remove=np.zeros((2, 44), bool)), ValueError,
     r"must have shape \(n_sets, 45\), got \(2, 44\)"),
    ("ev-predict-features", lambda f: ev.predict_distributions(
        f.influence, f.X[:3, :2], remove=[[0]]), ValueError,
     "X has 2 features, but InfluenceTransformer is expecting 4"),
    ("ev-retrain-ensemble", lambda f: ev.retrain_distributions(
        LogisticRegression(), f.X, f.y, f.X[:3], remove=[[0]]), ValueError,
     "ensemble must be a SeedEnsembleClassifier, a SeedEnsembleRegressor or a Pipeline "
     "ending in one, got LogisticRegression"),
    ("ev-retrain-features", lambda f: ev.retrain_distributions(
        _ens(), f.X, f.y, f.X[:3, :2], remove=[[0]]), ValueError,
     "X_query has 2 features but X has 4"),
    ("ev-retrain-y_query", lambda f: ev.retrain_distributions(
        _ens(), f.X, f.y, f.X[:3], f.y[:2], remove=[[0]]), ValueError,
     "y_query has 2 rows but X_query has 3"),
    ("ev-retrain-query-nan", lambda f: ev.retrain_distributions(
        _ens(), f.X, f.y, f.nan[:3], remove=[[0]]), ValueError,
     "Input X_query contains NaN"),
    ("ev-retrain-nan", lambda f: ev.retrain_distributions(
        _ens(), f.nan, f.y, f.X[:3], remove=[[0]]), ValueError, "Input X contains NaN"),
    ("ev-retrain-lengths", lambda f: ev.retrain_distributions(
        _ens(), f.X, f.y[:-1], f.X[:3], remove=[[0]]), ValueError,
     "inconsistent numbers of samples"),
    ("ev-retrain-class-removed", lambda f: ev.retrain_distributions(
        _ens(), f.X, f.y, f.X[:3], remove=[np.flatnonzero(f.y == 0)]), ValueError,
     "removal set 0 removes every row of class 0"),
    ("ev-retrain-n_seeds", lambda f: ev.retrain_distributions(
        _ens(), f.X, f.y, f.X[:3], remove=[[0]], n_seeds=0), ValueError,
     "n_seeds=0 must be a positive integer"),
    ("ev-retrain-cache-seed", lambda f: ev.retrain_distributions(
        _ens(), f.X, f.y, f.X[:3], remove=[[0]], cache_dir="unused", random_state=None),
     ValueError, "memory needs an integer random_state"),
    ("ui-rows-reordered", lambda f: UnrolledInfluence(f.ens).fit(f.X[::-1], f.y[::-1]),
     ValueError, "same rows as the training data but in another order"),
    ("ev-folds-features", lambda f: ev.query_folds(f.X, f.y, f.X[:3, :2], f.y[:3]),
     ValueError, "X_query has 2 features but X_train has 4"),
    ("ev-folds-y_query", lambda f: ev.query_folds(f.X, f.y, f.X[:10], f.y[:9]), ValueError,
     "y_query has 9 rows but X_query has 10"),
    ("ev-folds-y_train", lambda f: ev.query_folds(f.X, f.y[:-1], f.X[:10], f.y[:10]),
     ValueError, "y_train has 44 rows but X_train has 45"),
    ("ev-scorer-remove", lambda f: ev.make_lds_scorer(
        f.truth, remove=[[0]], X_query=f.X[:5], y_query=f.y[:5]), ValueError,
     r"remove must be the boolean matrix \(n_sets, n_train\)"),
    ("ev-scorer-sets", lambda f: ev.make_lds_scorer(
        f.truth, remove=np.zeros((3, N), bool), X_query=f.X[:5], y_query=f.y[:5]), ValueError,
     "the ground truth covers 6 sets and 5 queries, but remove has 3 sets"),
    ("ev-scorer-y_query", lambda f: ev.make_lds_scorer(
        f.truth, remove=np.zeros((6, N), bool), X_query=f.X[:5], y_query=f.y[:4]), ValueError,
     "y_query has 4 rows but X_query has 5"),
    ("ev-scorer-other-train", lambda f: _scorer(f, n_train=40)(f.influence, f.X[:5], f.y[:5]),
     ValueError,
     "the influence attributes 45 training rows but the ground truth removes rows of 40"),
    ("ev-scorer-unknown-query", lambda f: _scorer(f)(f.influence, f.X[10:15], f.y[10:15]),
     ValueError, "the scorer got rows that are not among the ground truth's query points"),
    ("ev-search-rows", lambda f: _search(f).fit(f.X[:40], f.y[:40]), ValueError,
     "X has 40 rows but the removal sets of the ground truth remove rows of 45"),
    ("ev-search-remove", lambda f: _search(f, remove=[[0]]).fit(f.X, f.y), ValueError,
     r"remove must be the boolean matrix \(n_sets, n_train\)"),
    ("ev-search-sets", lambda f: _search(f, remove=np.zeros((3, N), bool)).fit(f.X, f.y),
     ValueError, "the ground truth covers 6 sets and 5 queries, but remove has 3 sets"),
    ("ev-search-y_query", lambda f: _search(f, y_query=f.y[:4]).fit(f.X, f.y), ValueError,
     "y_query has 4 rows but X_query has 5"),
    ("ev-search-y", lambda f: _search(f).fit(f.X, f.y[:-1]), ValueError,
     "y_train has 44 rows but X_train has 45"),
    ("ev-search-features", lambda f: _search(f, X_query=f.X[:5, :2]).fit(f.X, f.y),
     ValueError, "X_query has 2 features but X_train has 4"),
    ("ev-search-n_splits", lambda f: _search(f, n_splits=1).fit(f.X, f.y), ValueError,
     r"The 'n_splits' parameter of AttributionSearchCV must be an int in the range \[2, inf\)"),
    ("ev-search-too-many-splits", lambda f: _search(f, n_splits=6).fit(f.X, f.y), ValueError,
     "Cannot have number of splits n_splits=6 greater than the number of samples: "
     "n_samples=5"),
    ("ev-search-transform-unfitted", lambda f: _search(f).transform(f.X), NotFittedError,
     "not fitted yet"),
    ("ev-search-score-unfitted", lambda f: _search(f).score(f.X[:5], f.y[:5]), NotFittedError,
     "not fitted yet"),
    ("ev-retrain-pipeline-last-step", lambda f: ev.retrain_distributions(
        _to_logistic(), f.X, f.y, f.X[:3], remove=[[0]]), ValueError,
     "retrain_distributions: " + _LAST_STEP),
    ("ev-retrain-pipeline-sampler", lambda f: ev.retrain_distributions(
        _sampled(), f.X, f.y, f.X[:3], remove=[[0]]), ValueError,
     "retrain_distributions: " + _SAMPLER),
    ("ev-retrain-preprocessing", lambda f: ev.retrain_distributions(
        make_pipeline(StandardScaler(), _ens()), f.X, f.y, f.X[:3], remove=[[0]],
        preprocessing="frozen"), ValueError, "preprocessing='frozen' must be 'refit' or 'fixed'"),
    ("ev-retrain-dataset-y", lambda f: ev.retrain_distributions(
        _ens(), Pairs(f.X, f.y), f.y, f.X[:3], remove=[[0]]), ValueError, _DATASET_Y),
    ("ev-retrain-no-y", lambda f: ev.retrain_distributions(
        _ens(), f.X, None, f.X[:3], remove=[[0]]), ValueError,
     "retrain_distributions requires y to be passed, but the target y is None"),
    # -- skdtda.discrepancy --------------------------------------------------------------
    ("dc-shapes", lambda f: discrepancy(f.before, f.before[:, :3]), ValueError,
     r"same shape .* got before.shape=\(4, 5\) and after.shape=\(4, 3\)"),
    ("dc-scalar", lambda f: discrepancy(1.0, 2.0), ValueError,
     r"need a seed axis .* got shape \(\)"),
    ("dc-no-seed", lambda f: discrepancy(np.zeros((0, 3)), np.zeros((0, 3))), ValueError,
     r"at least 1 seed; got shape \(0, 3\)"),
    ("dc-nan", lambda f: discrepancy(f.before, f.before * np.nan), ValueError,
     r"after contains 20 non-finite value\(s\)"),
    ("dc-inf", lambda f: discrepancy(f.before + np.inf, f.before), ValueError,
     r"before contains 20 non-finite value\(s\) \(NaN or inf\)"),
    ("dc-statistic", lambda f: discrepancy(f.before, f.before, "median"), ValueError,
     "Unknown statistic 'median'; expected a callable or one of 'mean'"),
    ("dc-statistic-array", lambda f: discrepancy(f.before, f.before, np.array(["mean"])),
     ValueError, "Unknown statistic array"),
    ("dc-check-statistic", lambda f: check_statistic(3), ValueError, "Unknown statistic 3;"),
    ("dc-q-range", lambda f: discrepancy(f.before, f.before, "quantile", q=-0.1), ValueError,
     r"q must be a number in \[0, 1\]; got q=-0.1"),
    ("dc-q-nan", lambda f: discrepancy(f.before, f.before, "quantile", q=np.nan), ValueError,
     "got q=nan"),
    ("it-flip-on-loss", lambda f: InfluenceTransformer(_ens(), statistic="flip").fit(f.X, f.y),
     ValueError, r"statistic='flip' counts .* but measurement='loss' never does .* "
     r"Use measurement='margin'"),
    ("it-flip-on-proba", lambda f: InfluenceTransformer(
        f.ens, statistic="flip", measurement="proba").fit(f.X, f.y),
     ValueError, "measurement='proba' never does"),
    ("ui-flip-on-log-proba", lambda f: UnrolledInfluence(
        f.ens, statistic="flip", measurement="log_proba").fit(f.X, f.y),
     ValueError, "measurement='log_proba' never does"),
    ("dp-flip-on-loss", lambda f: DataPruner(InfluenceTransformer(f.ens), statistic="flip",
                                             fraction=0.2).fit(f.X, f.y),
     ValueError, "measurement='loss' never does"),
    ("dc-q-string", lambda f: discrepancy(f.before, f.before, "quantile", q="half"),
     ValueError, "got q='half'"),
    ("dc-callable-shape", lambda f: discrepancy(f.before, f.before, lambda b, a: b),
     ValueError, r"returned shape \(4, 5\); expected before.shape\[1:\] = \(5,\)"),
    ("dc-strings", lambda f: discrepancy(np.array([["a"]]), np.array([["b"]])), ValueError,
     "could not convert string to float"),
]


def _case(entry):
    return entry if isinstance(entry, type(pytest.param())) else pytest.param(*entry,
                                                                               id=entry[0])


@pytest.mark.parametrize("name, call, error, message", [_case(c) for c in CASES])
def test_bad_input_raises_a_clear_error(f, name, call, error, message):
    with pytest.raises(error, match=message):
        call(f)


# (id, call on the fixture, warning, phrase of the message)
WARNINGS = [
    ("clf-fit-column-y", lambda f: _ens().fit(f.X, f.y[:, None]), UserWarning,
     "A column-vector y was passed when a 1d array was expected"),
    ("ev-lds-constant-query", lambda f: ev.lds(
        np.column_stack([np.ones(6), f.after[:, 0, 0]]), f.after[:, 1, :2]), RuntimeWarning,
     "1 of 2 queries have constant changes over the removal sets"),
    ("clf-fit-undertrained", lambda f: _ens().set_params(net__lr=1e-6).fit(f.X, f.y),
     UndertrainedWarning, r"2 of 2 members barely trained .* best constant prediction"),
    ("reg-fit-undertrained", lambda f: _reg().set_params(net__lr=1e-6).fit(f.Xr, f.yr + 3),
     UndertrainedWarning, r"under 5% of the loss of the best constant prediction, with a "
     r"training mean squared error of"),
    ("dp-validation-missing-class", lambda f: _pruner(
        f, validation_data=(f.X[f.y < 2], f.y[f.y < 2]), fraction=0.2).fit(f.X, f.y),
     UserWarning, r"validation_data has no rows of the classes \[2\]"),
]


@pytest.mark.parametrize("name, call, warning, message", WARNINGS, ids=[w[0] for w in WARNINGS])
def test_suspicious_input_warns(f, name, call, warning, message):
    with pytest.warns(warning, match=message):
        call(f)


def test_there_are_many_cases():
    assert len(CASES) >= 50


# -- inputs that look unusual but are valid ----------------------------------------------

@pytest.mark.parametrize("labels", [np.array(["setosa", "versicolor", "virginica"]),
                                    np.array([10, 20, 30]), np.array([-1, 0, 7])],
                         ids=["strings", "integers", "negative-integers"])
def test_string_and_integer_labels_work(f, labels):
    y = labels[f.y]
    ens = _ens().fit(f.X, y)
    np.testing.assert_array_equal(ens.classes_, np.sort(labels))
    assert set(ens.predict(f.X)) <= set(labels)
    # the labels are encoded, never used as numbers: the same nets as with 0, 1, 2
    np.testing.assert_array_equal(ens.predict_proba(f.X), f.ens.predict_proba(f.X))
    influence = InfluenceTransformer(ens, curvature="ggn").fit(f.X, y)
    np.testing.assert_allclose(influence.influence_samples(f.X[:3], y[:3]),
                               f.influence.influence_samples(f.X[:3], f.y[:3]))
    X_kept, y_kept = DataPruner(influence, objective="self", fraction=0.2).fit_resample(f.X, y)
    assert X_kept.shape == (36, 4) and set(y_kept) <= set(labels)


def test_boolean_labels_work(f):
    y = f.y == 0
    ens = _ens().fit(f.X, y)
    np.testing.assert_array_equal(ens.classes_, [False, True])
    assert ens.predict(f.X).dtype == bool
    assert ens.measure(f.X[:4], y[:4]).shape == (2, 4)


@pytest.fixture(scope="module")
def memmapped(f, tmp_path_factory):
    path = tmp_path_factory.mktemp("memmap") / "data.pkl"
    joblib.dump((f.X, f.y), path)
    X, y = joblib.load(path, mmap_mode="r")
    assert isinstance(X, np.memmap) and not X.flags.writeable
    return X, y


def test_read_only_memmaps_work(f, memmapped):
    X, y = memmapped
    ens = _ens().fit(X, y)
    np.testing.assert_array_equal(ens.predict_proba(X), f.ens.predict_proba(f.X))
    influence = InfluenceTransformer(ens, curvature="ggn").fit(X, y)
    np.testing.assert_allclose(influence.transform(X[:3]), f.influence.transform(f.X[:3]))
    np.testing.assert_allclose(influence.predict_removal(X[:3], remove=np.arange(3)),
                               f.influence.predict_removal(f.X[:3], remove=np.arange(3)))
    unrolled = UnrolledInfluence(f.ens).fit(X, y)
    np.testing.assert_allclose(unrolled.transform(X[:2]), f.unrolled.transform(f.X[:2]))
    X_kept, _ = DataPruner(f.influence, objective="self", fraction=0.2).fit_resample(X, y)
    assert X_kept.shape == (36, 4)
    pruned = PrunedEstimator(DataPruner(f.influence, objective="self", fraction=0.2),
                             LogisticRegression()).fit(X, y)
    np.testing.assert_array_equal(pruned.predict(X), f.pruned.predict(f.X))


def test_pandas_works(f):
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(f.X, columns=["a", "b", "c", "d"], index=[f"row{i}" for i in range(N)])
    y = pd.Series(f.y, index=X.index)
    influence = InfluenceTransformer(f.ens, curvature="ggn").fit(X, y)
    np.testing.assert_allclose(influence.transform(X.iloc[:3]), f.influence.transform(f.X[:3]))
    X_kept, y_kept = DataPruner(f.influence, objective="self", fraction=0.2).fit_resample(X, y)
    assert isinstance(X_kept, pd.DataFrame) and isinstance(y_kept, pd.Series)
    assert (X_kept.index == y_kept.index).all() and len(X_kept) == 36
    with pytest.raises(ValueError, match="feature names"):
        influence.transform(X.iloc[:3, ::-1])


def test_float16_works(f):
    X16 = f.X.astype(np.float16)
    as32 = X16.astype(np.float32)
    ens = _ens().fit(X16, f.y)
    # float16 is widened on input: the same numbers as its float32 values
    np.testing.assert_array_equal(ens.predict_proba(X16),
                                  _ens().fit(as32, f.y).predict_proba(as32))
    np.testing.assert_allclose(f.influence.transform(X16[:3]), f.influence.transform(as32[:3]))
    before, after = f.before.astype(np.float16), (f.before + 1).astype(np.float16)
    np.testing.assert_array_equal(discrepancy(before, after, "wasserstein"),
                                  discrepancy(before.astype(float), after.astype(float),
                                              "wasserstein"))


def test_an_empty_removal_set_removes_nothing(f):
    np.testing.assert_array_equal(ev.removal_masks([[], [2]], 4),
                                  [[False] * 4, [False, False, True, False]])
    np.testing.assert_allclose(f.influence.predict_removal(f.X[:3], remove=[]),
                               f.influence.measure(f.X[:3]))


def test_a_distributions_pair_may_be_a_list(f):
    assert ev.lds([f.before, f.after], f.truth) == pytest.approx(1.0)
