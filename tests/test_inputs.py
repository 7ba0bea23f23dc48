"""Every input form a scikit-learn user fits, through ensembles, influence, evaluation
and pruning, checked against the same model on the plain array it stands for.

- a Pipeline ending in a seed ensemble against the ensemble fitted on the steps'
  output (the steps are held fixed while attributing), a ColumnTransformer over a
  DataFrame of categories and numbers included;
- a CSR matrix against its dense copy;
- a dict of arrays against one array for a one-argument ``forward``;
- a torch Dataset with ``y=None`` against the arrays it yields;
- integer token ids against the same ids as floats, cast inside the module.
"""

import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils import check_random_state
from skorch import NeuralNetClassifier
from torch import nn

from _data import Pairs as _Pairs

from skdtda import (DataPruner, InfluenceTransformer, PrunedEstimator, SeedEnsembleClassifier,
                    UnrolledInfluence)
from skdtda import evaluation as ev
from skdtda._inputs import n_rows
from skdtda.nets import MLP

RTOL = 1e-4  # float32 nets; the forms below give the same numbers up to summation order
N = 60


def _net(module=MLP, **params):
    settings = dict(criterion=nn.CrossEntropyLoss, optimizer=torch.optim.SGD, lr=0.2,
                    max_epochs=5, batch_size=32, train_split=None, verbose=0)
    if module is MLP:
        settings["module__hidden_layer_sizes"] = (8,)
    settings.update(params)
    return NeuralNetClassifier(module, **settings)


def _ens(module=MLP, n_seeds=3, **params):
    return SeedEnsembleClassifier(_net(module, **params), n_seeds=n_seeds, random_state=0)


def _close(actual, expected, rtol=RTOL):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= rtol * scale, (
        np.abs(actual - expected).max() / scale)


@pytest.fixture(scope="module")
def iris():
    """Unscaled rows (a scaler in front matters), the scaler, and the scaled rows."""
    X, y = load_iris(return_X_y=True)
    rows = np.random.RandomState(0).permutation(len(X))[:N]
    X, y = 3 * X[rows] + 1, y[rows]
    scaler = StandardScaler().fit(X)
    return X, y, scaler, scaler.transform(X)


@pytest.fixture(scope="module")
def sparse_rows():
    """A sparse binary-ish design (80% zeros) and a label that depends on it."""
    rng = np.random.RandomState(0)
    X = rng.binomial(1, 0.2, size=(N, 12)) * rng.rand(N, 12)
    y = (X[:, :6].sum(axis=1) > X[:, 6:].sum(axis=1)).astype(int)
    return X, sparse.csr_matrix(X), y


# -- Pipelines ------------------------------------------------------------------------------
@pytest.mark.parametrize("fitted", [False, True], ids=["unfitted", "fitted"])
def test_pipeline_scores_equal_the_ensemble_on_prescaled_rows(iris, fitted):
    X, y, scaler, Xs = iris
    pipe = make_pipeline(StandardScaler(), _ens())
    if fitted:
        pipe.fit(X, y)
    influence = InfluenceTransformer(pipe, curvature="ggn").fit(X, y)
    truth = InfluenceTransformer(_ens(), curvature="ggn").fit(Xs, y)
    assert influence.n_train_ == N and influence.preprocessor_ is not None
    _close(influence.influence_samples(X[:5], y[:5]),
           truth.influence_samples(scaler.transform(X[:5]), y[:5]))
    _close(influence.transform(X[:5]), truth.transform(scaler.transform(X[:5])))
    _close(influence.measure(X, y), truth.measure(Xs, y))
    _close(influence.predict_removal(X[:5], y[:5], remove=[0, 3]),
           truth.predict_removal(scaler.transform(X[:5]), y[:5], remove=[0, 3]))
    if fitted:  # a fitted Pipeline is adopted, not refitted
        assert influence.estimator_ is pipe[-1]


def test_pipeline_unrolled_equals_the_ensemble_on_prescaled_rows(iris):
    X, y, scaler, Xs = iris
    pipe = make_pipeline(StandardScaler(), _ens(n_seeds=2))
    unrolled = UnrolledInfluence(pipe).fit(X, y)
    truth = UnrolledInfluence(_ens(n_seeds=2)).fit(Xs, y)
    _close(unrolled.influence_samples(X[:4], y[:4]),
           truth.influence_samples(scaler.transform(X[:4]), y[:4]))


def test_pipeline_retraining_fixed_equals_the_ensemble_and_refit_refits_every_step(iris):
    X, y, scaler, Xs = iris
    remove = ev.random_subsets(N, n_sets=3, keep_fraction=0.8, random_state=0)
    pipe = make_pipeline(StandardScaler(), _ens(n_seeds=2))
    Xq, yq = X[:5], y[:5]
    fixed = ev.retrain_distributions(pipe, X, y, Xq, yq, remove=remove, preprocessing="fixed")
    truth = ev.retrain_distributions(_ens(n_seeds=2), Xs, y, scaler.transform(Xq), yq,
                                     remove=remove)
    _close(fixed.before, truth.before)
    _close(fixed.after, truth.after)
    # a fitted Pipeline's steps are kept as they are
    fitted = ev.retrain_distributions(clone(pipe).fit(X, y), X, y, Xq, yq, remove=remove,
                                      preprocessing="fixed")
    _close(fitted.after, truth.after)

    refit = ev.retrain_distributions(pipe, X, y, Xq, yq, remove=remove)  # the default
    _close(refit.before, truth.before)  # on all rows both fit the scaler on all rows
    # each set refits the scaler on its kept rows, then the ensemble on their scaling
    seed = int(check_random_state(0).randint(np.iinfo(np.int32).max))
    for j, mask in enumerate(remove):
        by_hand = clone(pipe).set_params(seedensembleclassifier__random_state=seed)
        by_hand.fit(X[~mask], y[~mask])
        expected = by_hand[-1].measure(by_hand[:-1].transform(Xq), yq)
        _close(refit.after[j], expected)
    assert not np.allclose(refit.after, fixed.after)  # the scaler moved with the rows


def test_pipeline_predictions_scorer_and_pruning(iris):
    X, y, scaler, Xs = iris
    remove = ev.random_subsets(N, n_sets=4, keep_fraction=0.8, random_state=0)
    pipe = make_pipeline(StandardScaler(), _ens())
    influence = InfluenceTransformer(pipe, curvature="ggn").fit(X, y)
    truth = InfluenceTransformer(_ens(), curvature="ggn").fit(Xs, y)
    Xq, yq = X[:5], y[:5]
    for got, expected in zip(ev.predict_distributions(influence, Xq, yq, remove=remove),
                             ev.predict_distributions(truth, scaler.transform(Xq), yq,
                                                      remove=remove)):
        _close(got, expected)
    actual = ev.retrain_distributions(pipe, X, y, Xq, yq, remove=remove, n_seeds=2)
    scorer = ev.make_lds_scorer(actual, remove=remove, X_query=Xq, y_query=yq)
    assert np.isfinite(scorer(influence, Xq, yq))

    pruner = DataPruner(InfluenceTransformer(pipe, curvature="ggn"), objective="self",
                        fraction=0.2)
    X_kept, y_kept = pruner.fit_resample(X, y)
    on_scaled = DataPruner(InfluenceTransformer(_ens(), curvature="ggn"), objective="self",
                           fraction=0.2).fit(Xs, y)
    np.testing.assert_array_equal(pruner.sample_indices_, on_scaled.sample_indices_)
    np.testing.assert_array_equal(X_kept, X[pruner.sample_indices_])  # the user's raw rows
    pruned = PrunedEstimator(pruner, pipe).fit(X, y)
    assert pruned.predict(X[:5]).shape == (5,)
    np.testing.assert_array_equal(pruned.pruner_.sample_indices_, pruner.sample_indices_)


def test_pipeline_with_a_calibrated_damping(iris):
    X, y, scaler, Xs = iris
    pipe = make_pipeline(StandardScaler(), _ens(n_seeds=2))
    influence = InfluenceTransformer(pipe, curvature="ggn", damping="calibrate",
                                     calibration_budget=20).fit(X, y)
    truth = InfluenceTransformer(_ens(n_seeds=2), curvature="ggn", damping="calibrate",
                                 calibration_budget=20).fit(Xs, y)
    # the calibration retrains the ensemble behind the fixed steps, as attribution assumes
    assert influence.damping_ == pytest.approx(truth.damping_, rel=RTOL)
    _close(influence.influence_samples(X[:3], y[:3]),
           truth.influence_samples(scaler.transform(X[:3]), y[:3]))


def test_tfidf_pipeline_on_raw_documents():
    rng = np.random.RandomState(0)
    good, bad, filler = ["great", "fine", "superb"], ["awful", "poor", "dull"], ["the", "a",
                                                                                 "film", "was"]
    docs, y = [], []
    for i in range(N):
        label = i % 2
        words = list(rng.choice(filler, 3)) + list(rng.choice(good if label else bad, 2))
        docs.append(" ".join(rng.permutation(words)))
        y.append(label)
    y = np.array(y)
    pipe = make_pipeline(TfidfVectorizer(), _ens(n_seeds=2))
    influence = InfluenceTransformer(pipe, curvature="ggn").fit(docs, y)
    tfidf = TfidfVectorizer().fit(docs)
    features = tfidf.transform(docs)
    assert sparse.issparse(features)
    truth = InfluenceTransformer(_ens(n_seeds=2), curvature="ggn").fit(features.toarray(), y)
    _close(influence.influence_samples(docs[:4], y[:4]),
           truth.influence_samples(tfidf.transform(docs[:4]).toarray(), y[:4]))
    fixed = ev.retrain_distributions(pipe, docs, y, docs[:4], y[:4], remove=[[0], [1, 2]],
                                     preprocessing="fixed")
    refit = ev.retrain_distributions(pipe, docs, y, docs[:4], y[:4], remove=[[0], [1, 2]])
    assert fixed.after.shape == refit.after.shape == (2, 2, 4)


# -- a DataFrame through a ColumnTransformer ------------------------------------------------
@pytest.fixture(scope="module")
def shop():
    """Categories (strings) and numbers, labelled rows (a string index), and a label
    that needs both."""
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(0)
    colour = rng.choice(["red", "green", "blue"], N)
    X = pd.DataFrame({"colour": colour, "weight": rng.normal(50, 10, N),
                      "size": rng.choice(["S", "M", "L", "XL"], N),
                      "height": rng.normal(3, 2, N)},
                     index=[f"order{i:03d}" for i in range(N)])
    y = pd.Series(((colour == "red") ^ (X["weight"] > 50)).astype(int), index=X.index)
    return X, y


def _columns(sparse_threshold=0.3, **encoder):
    return ColumnTransformer([("cat", OneHotEncoder(**encoder), ["colour", "size"]),
                              ("num", StandardScaler(), ["weight", "height"])],
                             sparse_threshold=sparse_threshold)


# 0.0: dense features; 1.0: the one-hot block keeps the features CSR
@pytest.mark.parametrize("sparse_threshold", [0.0, 1.0], ids=["dense", "csr"])
def test_column_transformer_on_a_dataframe_equals_the_ensemble_on_its_features(
        shop, sparse_threshold):
    X, y = shop
    pipe = make_pipeline(_columns(sparse_threshold), _ens())
    influence = InfluenceTransformer(pipe, curvature="ggn").fit(X, y)
    columns = _columns(sparse_threshold).fit(X, y)
    features = columns.transform(X)
    assert sparse.issparse(features) == (sparse_threshold == 1.0)
    assert sparse.issparse(influence.preprocessor_.transform(X)) == sparse.issparse(features)
    truth = InfluenceTransformer(_ens(), curvature="ggn").fit(features, y.to_numpy())
    Xq, Fq = X.iloc[:5], columns.transform(X.iloc[:5])
    assert influence.n_train_ == N  # one score per original row
    _close(influence.influence_samples(Xq, y.iloc[:5]),
           truth.influence_samples(Fq, y.iloc[:5].to_numpy()))
    _close(influence.transform(Xq), truth.transform(Fq))
    _close(influence.measure(X, y), truth.measure(features, y.to_numpy()))

    influence.set_output(transform="pandas")
    out = influence.transform(Xq)
    # the score columns are the training rows' labels, the query rows keep theirs
    assert list(out.columns) == list(X.index) and list(out.index) == list(Xq.index)
    _close(out.to_numpy(), truth.transform(Fq))
    np.testing.assert_array_equal(influence.get_feature_names_out(), X.index)


def test_column_transformer_with_pandas_output_between_the_steps(shop):
    # set_output on the Pipeline hands the ensemble a DataFrame of encoded columns
    X, y = shop
    pipe = make_pipeline(_columns(sparse_output=False), _ens()).set_output(transform="pandas")
    influence = InfluenceTransformer(pipe, curvature="ggn").fit(X, y)
    features = _columns().fit(X, y).transform(X)
    truth = InfluenceTransformer(_ens(), curvature="ggn").fit(features, y.to_numpy())
    _close(influence.transform(X.iloc[:5]), truth.transform(features[:5]))


def test_column_transformer_pruning_and_retraining(shop):
    X, y = shop
    pipe = make_pipeline(_columns(), _ens(n_seeds=2))
    features = _columns().fit(X, y).transform(X)
    pruner = DataPruner(InfluenceTransformer(pipe, curvature="ggn"), objective="self",
                        fraction=0.2)
    X_kept, y_kept = pruner.fit_resample(X, y)
    on_features = DataPruner(InfluenceTransformer(_ens(n_seeds=2), curvature="ggn"),
                             objective="self", fraction=0.2).fit(features, y.to_numpy())
    np.testing.assert_array_equal(pruner.sample_indices_, on_features.sample_indices_)
    assert pruner.scores_.shape == (N,)
    # the user's own rows come back, labels and all
    assert list(X_kept.index) == list(X.index[pruner.sample_indices_])
    assert list(y_kept.index) == list(X_kept.index)
    assert PrunedEstimator(pruner, pipe).fit(X, y).predict(X.iloc[:4]).shape == (4,)

    remove = ev.random_subsets(N, n_sets=3, keep_fraction=0.8, random_state=0)
    Xq, yq = X.iloc[:5], y.iloc[:5]
    fixed = ev.retrain_distributions(pipe, X, y, Xq, yq, remove=remove, preprocessing="fixed")
    truth = ev.retrain_distributions(_ens(n_seeds=2), features, y.to_numpy(), features[:5],
                                     yq.to_numpy(), remove=remove)
    _close(fixed.after, truth.after)
    refit = ev.retrain_distributions(pipe, X, y, Xq, yq, remove=remove)
    assert refit.after.shape == fixed.after.shape
    assert not np.allclose(refit.after, fixed.after)  # the scaler moved with the rows


def test_refit_that_cannot_encode_a_removed_category_says_why(shop):
    X, y = shop
    X = X.copy()
    X.iloc[0, X.columns.get_loc("colour")] = "purple"  # one row has its own category
    args = (X, y, X.iloc[:3], y.iloc[:3])
    with pytest.raises(ValueError, match=r"refitted on the rows a removal set keeps, cannot "
                                         r"transform X_query \(Found unknown categories"):
        ev.retrain_distributions(make_pipeline(_columns(), _ens(n_seeds=2)), *args,
                                 remove=[[0]])
    # the two ways out the message names
    for pipe, preprocessing in [(make_pipeline(_columns(handle_unknown="ignore"),
                                               _ens(n_seeds=2)), "refit"),
                                (make_pipeline(_columns(), _ens(n_seeds=2)), "fixed")]:
        result = ev.retrain_distributions(pipe, *args, remove=[[0]],
                                          preprocessing=preprocessing)
        assert np.isfinite(result.after).all()


# -- grid search over attribution settings, on the rows a Pipeline takes -------------------
def _documents(n, seed):
    rng = np.random.RandomState(seed)
    good, bad, filler = ["great", "fine", "superb"], ["awful", "poor", "dull"], ["the", "a",
                                                                                 "film"]
    y = np.arange(n) % 2
    docs = [" ".join(rng.permutation(list(rng.choice(filler, 3))
                                     + list(rng.choice(good if label else bad, 2))))
            for label in y]
    return docs, y


@pytest.mark.parametrize("form", ["documents", "dataframe", "csr"])
def test_query_folds_and_scorer_take_a_pipelines_raw_rows(shop, sparse_rows, form):
    if form == "csr":
        _, rows, labels = sparse_rows
        X, y, Xq, yq = rows[:45], labels[:45], rows[45:54], labels[45:54]
        pipe = _ens(n_seeds=2)
    elif form == "documents":
        X, y = _documents(N, 0)
        Xq, yq = _documents(9, 1)
        pipe = make_pipeline(TfidfVectorizer(), _ens(n_seeds=2))
    else:
        frame, labels = shop
        X, y, Xq, yq = frame.iloc[:45], labels.iloc[:45], frame.iloc[45:54], labels.iloc[45:54]
        pipe = make_pipeline(_columns(handle_unknown="ignore"), _ens(n_seeds=2))
    n = len(y)
    remove = ev.random_subsets(n, n_sets=5, keep_fraction=0.8, random_state=0)
    truth = ev.retrain_distributions(pipe, X, y, Xq, yq, remove=remove)
    scorer = ev.make_lds_scorer(truth, remove=remove, X_query=Xq, y_query=yq)
    X_cv, y_cv, cv = ev.query_folds(X, y, Xq, yq, n_splits=3, random_state=0)
    assert type(X_cv) is type(X) and n_rows(X_cv) == n + 9
    search = GridSearchCV(InfluenceTransformer(pipe), {"curvature": ["ggn", "identity"]},
                          scoring=scorer, cv=cv, refit=False, error_score="raise")
    search.fit(X_cv, y_cv)
    # the truth: the fold's LDS of an influence fitted on the training rows alone
    fitted = InfluenceTransformer(pipe, curvature="ggn").fit(X, y)
    fold = cv[1][1] - n
    q = Xq.iloc[fold] if form == "dataframe" else (
        Xq[fold] if form == "csr" else [Xq[i] for i in fold])
    expected = ev.lds(ev.predict_distributions(fitted, q, np.asarray(yq)[fold], remove=remove),
                      truth.subset(queries=fold))
    assert search.cv_results_["split1_test_score"][0] == pytest.approx(expected)
    # the meta-estimator runs that search on these rows, and refits on the training rows
    meta = ev.AttributionSearchCV(InfluenceTransformer(pipe), {"curvature": ["ggn", "identity"]},
                                  actual=truth, remove=remove, X_query=Xq, y_query=yq,
                                  n_splits=3, random_state=0).fit(X, y)
    for key in ["mean_test_score", "split0_test_score", "split1_test_score"]:
        np.testing.assert_array_equal(meta.cv_results_[key], search.cv_results_[key])
    assert meta.best_params_ == search.best_params_
    assert meta.best_estimator_.n_train_ == n
    assert meta.transform(q).shape == (len(fold), n)
    # a row that is no query is refused, in any form
    other = {"documents": lambda: ["superb superb film"],
             "dataframe": lambda: Xq.iloc[:1].assign(weight=Xq["weight"].iloc[:1] + 1),
             "csr": lambda: Xq[:1] * 2}[form]()
    with pytest.raises(ValueError, match="not among the ground truth's query points"):
        scorer(fitted, other, np.asarray(yq)[:1])


def test_query_folds_refuse_rows_of_two_forms(shop):
    X, y = shop
    docs, labels = _documents(5, 0)
    with pytest.raises(ValueError, match="X_query must be rows of the same form as X_train, "
                                         "got list and DataFrame"):
        ev.query_folds(X, y, docs, labels)
    with pytest.raises(ValueError, match=r"X_query's columns \['colour', 'weight'\] differ"):
        ev.query_folds(X, y, X[["colour", "weight"]], y)
    with pytest.raises(ValueError, match="query folds need rows that GridSearchCV can index"):
        ev.query_folds({"a": np.zeros((3, 2))}, np.arange(3), {"a": np.zeros((2, 2))},
                       np.arange(2))


# -- sparse ---------------------------------------------------------------------------------
@pytest.mark.parametrize("curvature", ["ggn", "ekfac"])
def test_sparse_scores_equal_dense(sparse_rows, curvature):
    X, Xs, y = sparse_rows
    dense = InfluenceTransformer(_ens(), curvature=curvature).fit(X, y)
    csr = InfluenceTransformer(_ens(), curvature=curvature).fit(Xs, y)
    np.testing.assert_allclose(csr.estimator_.predict_proba(Xs),
                               dense.estimator_.predict_proba(X), rtol=RTOL, atol=1e-6)
    _close(csr.influence_samples(Xs[:5], y[:5]), dense.influence_samples(X[:5], y[:5]))
    _close(csr.transform(Xs[:5]), dense.transform(X[:5]))


def test_unsorted_csr_is_left_unchanged_and_fits_as_its_dense_copy():
    # TfidfVectorizer returns CSR with unsorted column indices; sorting the float32
    # cast in place once permuted the caller's indices under its data
    X = sparse.csr_matrix((np.array([1.0, 2.0, 3.0, 4.0] * 10),
                           np.array([3, 0, 2, 1] * 10),
                           np.arange(0, 41, 2)), shape=(20, 4))
    assert not X.has_sorted_indices
    before = X.toarray()
    y = np.arange(20) % 2
    fitted = _ens(n_seeds=2).fit(X, y)
    np.testing.assert_array_equal(X.toarray(), before)
    np.testing.assert_array_equal(fitted.predict_proba(X),
                                  _ens(n_seeds=2).fit(before, y).predict_proba(before))


def test_sparse_through_evaluation_pruning_and_calibration(sparse_rows):
    X, Xs, y = sparse_rows
    remove = [[0], [1, 2, 3]]
    _close(ev.retrain_distributions(_ens(n_seeds=2), Xs, y, Xs[:5], y[:5], remove=remove).after,
           ev.retrain_distributions(_ens(n_seeds=2), X, y, X[:5], y[:5], remove=remove).after)
    unrolled = UnrolledInfluence(_ens(n_seeds=2)).fit(Xs, y)
    _close(unrolled.influence_samples(Xs[:3], y[:3]),
           UnrolledInfluence(_ens(n_seeds=2)).fit(X, y).influence_samples(X[:3], y[:3]))
    pruner = DataPruner(InfluenceTransformer(_ens(), curvature="ggn"), objective="self",
                        fraction=0.2)
    X_kept, _ = pruner.fit_resample(Xs, y)
    assert sparse.issparse(X_kept) and X_kept.shape == (48, 12)
    dense = DataPruner(InfluenceTransformer(_ens(), curvature="ggn"), objective="self",
                       fraction=0.2).fit(X, y)
    np.testing.assert_array_equal(pruner.sample_indices_, dense.sample_indices_)
    assert PrunedEstimator(pruner, _ens()).fit(Xs, y).predict(Xs[:4]).shape == (4,)
    calibrated = InfluenceTransformer(_ens(n_seeds=2), curvature="ggn", damping="calibrate",
                                      calibration_budget=20)
    assert calibrated.fit(Xs, y).damping_ == pytest.approx(
        clone(calibrated).fit(X, y).damping_, rel=RTOL)


# -- a dict of arrays -----------------------------------------------------------------------
class _Named(nn.Module):
    """The MLP of one array, with its argument named ``features``."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, features):
        return self.mlp(features)


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.left, self.right, self.head = nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(8, 2)

    def forward(self, left, right):
        return self.head(torch.relu(self.left(left) + self.right(right)))


def test_dict_of_one_array_equals_the_array(sparse_rows):
    X, _, y = sparse_rows
    as_dict = InfluenceTransformer(_ens(_Named), curvature="ggn").fit({"features": X}, y)
    as_array = InfluenceTransformer(_ens(_Named), curvature="ggn").fit(X, y)
    _close(as_dict.influence_samples({"features": X[:5]}, y[:5]),
           as_array.influence_samples(X[:5], y[:5]))
    remove = [[0], [4, 5]]
    _close(ev.retrain_distributions(_ens(_Named), {"features": X}, y, {"features": X[:5]},
                                    y[:5], remove=remove).after,
           ev.retrain_distributions(_ens(_Named), X, y, X[:5], y[:5], remove=remove).after)


def test_dict_of_two_arguments_everywhere(sparse_rows):
    X, _, y = sparse_rows
    X = {"left": X[:, :6], "right": X[:, 6:]}
    query = {name: value[:5] for name, value in X.items()}
    for influence in (InfluenceTransformer(_ens(_TwoInputs), curvature="ekfac"),
                      UnrolledInfluence(_ens(_TwoInputs, n_seeds=2))):
        scores = influence.fit(X, y).influence_samples(query, y[:5])
        assert scores.shape == (len(influence.members_), 5, N) and np.isfinite(scores).all()
    truth = ev.retrain_distributions(_ens(_TwoInputs), X, y, query, y[:5], remove=[[0], [1]])
    assert truth.after.shape == (2, 3, 5)
    X_kept, y_kept = DataPruner(InfluenceTransformer(_ens(_TwoInputs), curvature="ggn"),
                                objective="self", fraction=0.2).fit_resample(X, y)
    assert set(X_kept) == {"left", "right"} and len(X_kept["left"]) == len(y_kept) == 48


def test_calibration_on_query_rows_of_two_arguments(sparse_rows):
    """``fit(X, y, X_query=...)`` with a dict of arrays: the query rows are picked as
    rows of each array, and the calibration measures them."""
    X, _, y = sparse_rows
    X = {"left": X[:, :6], "right": X[:, 6:]}
    query = {name: value[:12] for name, value in X.items()}
    influence = InfluenceTransformer(_ens(_TwoInputs, n_seeds=8), damping="calibrate",
                                     calibration_budget=6).fit(X, y, X_query=query,
                                                               y_query=y[:12])
    assert influence.fidelity_.queries == "given" and influence.calibration_.n_queries == 12
    assert np.isfinite(influence.fidelity_.lds)


# -- a torch Dataset ------------------------------------------------------------------------
def test_dataset_with_y_none_equals_its_arrays(sparse_rows):
    X, _, y = sparse_rows
    data = _Pairs(X, y)
    from_data = InfluenceTransformer(_ens(), curvature="ggn").fit(data, None)
    from_arrays = InfluenceTransformer(_ens(), curvature="ggn").fit(X, y)
    _close(from_data.influence_samples(_Pairs(X[:5], y[:5])),
           from_arrays.influence_samples(X[:5], y[:5]))
    remove = [[0], [1, 2]]
    _close(ev.retrain_distributions(_ens(n_seeds=2), data, None, _Pairs(X[:5], y[:5]),
                                    remove=remove).after,
           ev.retrain_distributions(_ens(n_seeds=2), X, y, X[:5], y[:5], remove=remove).after)
    pruner = DataPruner(InfluenceTransformer(_ens(), curvature="ggn"), objective="self",
                        fraction=0.2)
    pruner.fit(data, None)
    np.testing.assert_array_equal(
        pruner.sample_indices_,
        clone(pruner).fit(X, y).sample_indices_)


# -- integer token ids ----------------------------------------------------------------------
class _Tokens(nn.Module):
    """An embedding of token ids; float ids (as arrays used to arrive) are cast here."""

    def __init__(self, vocab=20, dim=6):
        super().__init__()
        self.embedding, self.head = nn.Embedding(vocab, dim), nn.Linear(dim, 2)

    def forward(self, ids):
        return self.head(self.embedding(ids.long()).mean(dim=1))


@pytest.fixture(scope="module")
def tokens():
    rng = np.random.RandomState(0)
    ids = rng.randint(0, 20, size=(N, 5))
    return ids, (ids.mean(axis=1) > 9.5).astype(int)


def test_integer_token_ids_stay_integer_and_equal_float_ids(tokens):
    ids, y = tokens
    ens = _ens(_Tokens).fit(ids, y)
    assert ens.predict(ids[:3]).shape == (3,)
    as_int = InfluenceTransformer(_ens(_Tokens), curvature="ggn").fit(ids, y)
    as_float = InfluenceTransformer(_ens(_Tokens), curvature="ggn").fit(ids.astype(float), y)
    _close(as_int.influence_samples(ids[:4], y[:4]),
           as_float.influence_samples(ids[:4].astype(float), y[:4]))
    unrolled = UnrolledInfluence(_ens(_Tokens, n_seeds=2)).fit(ids, y)
    assert np.isfinite(unrolled.influence_samples(ids[:3], y[:3])).all()
    truth = ev.retrain_distributions(_ens(_Tokens, n_seeds=2), ids, y, ids[:4], y[:4],
                                     remove=[[0], [1, 2]])
    assert truth.after.shape == (2, 2, 4)
    X_kept, _ = DataPruner(InfluenceTransformer(_ens(_Tokens), curvature="ggn"),
                           objective="self", fraction=0.2).fit_resample(ids, y)
    assert X_kept.dtype.kind == "i"
    calibrated = InfluenceTransformer(_ens(_Tokens, n_seeds=2), curvature="ggn",
                                      damping="calibrate", calibration_budget=20).fit(ids, y)
    assert np.isfinite(calibrated.damping_) and calibrated.calibration_ is not None


# -- refusals that need more than a line (the rest are in test_bad_input.py) ----------------
class _Sampler(BaseEstimator):
    def fit_resample(self, X, y):
        return X[::2], y[::2]


class _Shrink(TransformerMixin, BaseEstimator):
    """A transformer that drops rows (which scikit-learn's API forbids)."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X[::2]


def test_steps_that_change_the_rows_are_refused(iris):
    X, y, _, _ = iris
    with pytest.raises(ValueError, match="step '_sampler' .* is a sampler, which changes the "
                                         "training rows"):
        InfluenceTransformer(make_pipeline(_Sampler(), _ens())).fit(X, y)
    with pytest.raises(ValueError, match="turned 60 rows into 30; every step must keep"):
        InfluenceTransformer(make_pipeline(_Shrink(), _ens())).fit(X, y)
