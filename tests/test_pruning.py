"""DataPruner and PrunedEstimator: selection, scoring against truth, sklearn integration."""

import numpy as np
import pytest
import sklearn
import torch
from joblib import Memory
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.datasets import load_diabetes, make_blobs
from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks
from skorch import NeuralNetClassifier, NeuralNetRegressor

from skdtda import (DataPruner, InfluenceTransformer, PrunedEstimator, SeedEnsembleClassifier,
                    SeedEnsembleRegressor)
from skdtda.nets import MLP


def _net(max_epochs=20):
    return NeuralNetClassifier(MLP, module__hidden_layer_sizes=(16,),
                               criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                               optimizer__momentum=0.9, lr=0.05, max_epochs=max_epochs,
                               batch_size=32, train_split=None, verbose=0)


def _influence(n_seeds=4, **kwargs):
    return InfluenceTransformer(SeedEnsembleClassifier(_net(), n_seeds=n_seeds, random_state=0),
                                **kwargs)


def _regression_influence(n_seeds=2):
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(16,), criterion=torch.nn.MSELoss,
                             optimizer=torch.optim.Adam, lr=0.01, max_epochs=20, batch_size=32,
                             train_split=None, verbose=0)
    return InfluenceTransformer(SeedEnsembleRegressor(net, n_seeds=n_seeds, random_state=0),
                                curvature="ggn")


@pytest.fixture(scope="module")
def noisy_blobs():
    """Three overlapping blobs with 10% of the labels flipped; a clean validation set."""
    X, y = make_blobs(400, centers=3, cluster_std=1.5, random_state=0)
    X = (X - X.mean(0)) / X.std(0)
    X_train, y_train, X_val, y_val = X[:300], y[:300].copy(), X[300:], y[300:]
    rng = np.random.RandomState(0)
    flipped = rng.choice(300, 30, replace=False)
    y_train[flipped] = (y_train[flipped] + rng.randint(1, 3, 30)) % 3
    return X_train, y_train, X_val, y_val, flipped


# -- selection -----------------------------------------------------------------------------

def test_fraction_is_share_of_rows_removed(noisy_blobs):
    X, y, X_val, y_val, _ = noisy_blobs
    pruner = DataPruner(_influence(2), fraction=0.2, validation_data=(X_val, y_val)).fit(X, y)
    assert pruner.sample_mask_.sum() == 240 and pruner.n_removed_ == 60
    np.testing.assert_array_equal(pruner.sample_indices_, np.flatnonzero(pruner.sample_mask_))
    # The removed rows are exactly those with the lowest validation scores.
    removed = pruner.scores_[~pruner.sample_mask_]
    assert removed.max() <= pruner.scores_[pruner.sample_mask_].min()
    X_kept, y_kept = pruner.fit_resample(X, y)
    np.testing.assert_array_equal(X_kept, X[pruner.sample_indices_])
    np.testing.assert_array_equal(y_kept, y[pruner.sample_indices_])


def test_validation_scores_equal_mean_of_influence_samples(noisy_blobs, float64):
    """The chunked mean over validation rows equals the full (S, n_val, n) array's mean."""
    X, y, X_val, y_val, _ = noisy_blobs
    pruner = DataPruner(_influence(3, batch_size=32), validation_data=(X_val, y_val)).fit(X, y)
    full = clone(_influence(3, batch_size=1000)).fit(X, y)
    expected = full.influence_samples(X_val, y_val).mean(axis=1)
    np.testing.assert_allclose(pruner.seed_scores_, expected, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(pruner.scores_, expected.mean(axis=0), rtol=1e-9, atol=1e-15)


def test_self_scores_equal_diagonal_of_influence_samples(noisy_blobs, float64):
    X, y, *_ = noisy_blobs
    X, y = X[:120], y[:120]
    pruner = DataPruner(_influence(2, batch_size=32), objective="self").fit(X, y)
    full = clone(_influence(2, batch_size=1000)).fit(X, y).influence_samples(X, y)
    diagonal = np.stack([np.diag(seed) for seed in full])
    np.testing.assert_allclose(pruner.seed_scores_, diagonal, rtol=1e-9, atol=1e-15)
    # Leaving a row out raises its own loss: self-influence is mostly positive.
    assert np.mean(pruner.scores_ > 0) > 0.9
    # Self-influence prunes the highest scores.
    assert pruner.scores_[~pruner.sample_mask_].min() >= pruner.scores_[pruner.sample_mask_].max()


def test_pruning_finds_flipped_labels(noisy_blobs):
    """Ground truth: the corrupted rows; random pruning finds about 10% of its picks there."""
    X, y, X_val, y_val, flipped = noisy_blobs
    found = {}
    for objective in ("validation", "self"):
        for mode in ("distributional", "random"):
            pruner = DataPruner(_influence(), fraction=0.1, objective=objective, mode=mode,
                                validation_data=(X_val, y_val), random_state=0).fit(X, y)
            found[objective, mode] = np.isin(np.flatnonzero(~pruner.sample_mask_), flipped).sum()
    assert found["validation", "random"] <= 8
    assert found["validation", "distributional"] >= 10
    assert found["self", "distributional"] >= 14


def test_pruned_set_lowers_retrained_validation_loss(noisy_blobs):
    """Retraining truth: the predicted sign of the group removal holds, and beats random."""
    X, y, X_val, y_val, _ = noisy_blobs
    ensemble = SeedEnsembleClassifier(_net(), n_seeds=4, random_state=0)

    def val_loss(mask):
        return clone(ensemble).fit(X[mask], y[mask]).measure(X_val, y_val).mean()

    full = val_loss(np.ones(len(X), dtype=bool))
    pruned = DataPruner(InfluenceTransformer(ensemble), fraction=0.1,
                        validation_data=(X_val, y_val)).fit(X, y)
    random = DataPruner(fraction=0.1, mode="random", random_state=0).fit(X, y)
    predicted = pruned.scores_[~pruned.sample_mask_].sum()
    actual = val_loss(pruned.sample_mask_) - full
    assert predicted < 0 and actual < 0
    assert actual < val_loss(random.sample_mask_) - full


def test_modes_share_the_same_seed_scores(noisy_blobs, tmp_path):
    X, y, X_val, y_val, _ = noisy_blobs
    memory = Memory(tmp_path, verbose=0)
    common = dict(validation_data=(X_val, y_val), memory=memory)
    dist = DataPruner(_influence(3), **common).fit(X, y)
    np.testing.assert_allclose(dist.scores_, dist.seed_scores_.mean(axis=0))
    for seed in range(3):
        fixed = DataPruner(_influence(3), mode="fixed_seed", seed_index=seed, **common).fit(X, y)
        np.testing.assert_array_equal(fixed.scores_, dist.seed_scores_[seed])
    variance = DataPruner(_influence(3), statistic="variance", **common).fit(X, y)
    assert not np.allclose(variance.scores_, dist.scores_)
    with pytest.raises(ValueError, match="seed_index=3 but the ensemble has only 3"):
        DataPruner(_influence(3), mode="fixed_seed", seed_index=3, **common).fit(X, y)


def test_random_mode_is_reproducible_and_fits_nothing(noisy_blobs):
    X, y, *_ = noisy_blobs
    a = DataPruner(fraction=0.3, mode="random", random_state=1).fit(X, y)
    b = DataPruner(fraction=0.3, mode="random", random_state=1).fit(X, y)
    np.testing.assert_array_equal(a.sample_mask_, b.sample_mask_)
    assert a.influence_ is None and a.influences_ == [] and a.seed_scores_ is None


def test_memory_scores_once_per_training_set(noisy_blobs, tmp_path, monkeypatch):
    X, y, X_val, y_val, _ = noisy_blobs
    calls = []
    fit = InfluenceTransformer.fit
    monkeypatch.setattr(InfluenceTransformer, "fit",
                        lambda self, X, y: calls.append(len(X)) or fit(self, X, y))
    memory = Memory(tmp_path, verbose=0)
    masks = [DataPruner(_influence(2), fraction=f, validation_data=(X_val, y_val),
                        memory=memory).fit(X, y).sample_mask_ for f in (0.05, 0.1, 0.2)]
    assert calls == [300]
    assert masks[0].sum() == 285 and masks[2].sum() == 240
    # The cached scores are the uncached ones.
    plain = DataPruner(_influence(2), fraction=0.2, validation_data=(X_val, y_val)).fit(X, y)
    np.testing.assert_array_equal(plain.sample_mask_, masks[2])


def test_cross_fitting_scores_every_row(noisy_blobs):
    X, y, *_ = noisy_blobs
    pruner = DataPruner(_influence(2), validation_fraction=0.25, random_state=0).fit(X, y)
    assert len(pruner.folds_) == 4 and len(pruner.influences_) == 4
    assert pruner.influence_ is None
    validation = np.concatenate([val for _, val in pruner.folds_])
    np.testing.assert_array_equal(np.sort(validation), np.arange(len(X)))
    for train, val in pruner.folds_:
        assert np.intersect1d(train, val).size == 0
    assert np.all(np.isfinite(pruner.scores_)) and np.all(pruner.scores_ != 0)
    # Each row's score averages the three fits in which it was a training row.
    per_fold = []
    for (train, val), influence in zip(pruner.folds_, pruner.influences_):
        row = np.full(len(X), np.nan)
        row[train] = influence.influence_samples(X[val], y[val]).mean(axis=(0, 1))
        per_fold.append(row)
    # the pruner sums the float32 solved validation gradients before their product
    # (mean_influence_samples), so rows agree to float32 rounding of the largest score
    expected = np.nanmean(per_fold, axis=0)
    np.testing.assert_allclose(pruner.scores_, expected, rtol=1e-6,
                               atol=1e-5 * np.abs(expected).max())


def test_regression():
    X, y = load_diabetes(return_X_y=True)
    X, y = StandardScaler().fit_transform(X)[:200], (y[:200] - y.mean()) / y.std()
    pruner = DataPruner(_regression_influence(), fraction=0.1, validation_fraction=0.5,
                        random_state=0).fit(X, y)
    assert pruner.sample_mask_.sum() == 180 and pruner.seed_scores_.shape == (2, 200)
    model = PrunedEstimator(DataPruner(_regression_influence(), objective="self"), Ridge())
    assert is_regressor(model)
    assert model.fit(X, y).score(X, y) > 0.3


# -- bad input -----------------------------------------------------------------------------

def test_bad_input_errors(noisy_blobs):
    X, y, X_val, y_val, _ = noisy_blobs
    with pytest.raises(ValueError, match=r"fraction=0.001 removes no rows of the 300"):
        DataPruner(fraction=0.001, mode="random").fit(X, y)
    with pytest.raises(ValueError, match=r"fraction=0.999 removes every one of the 300"):
        DataPruner(fraction=0.999, mode="random").fit(X, y)
    with pytest.raises(ValueError, match="fraction"):
        DataPruner(fraction=1.5).fit(X, y)
    X_nan = X.copy()
    X_nan[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        DataPruner(mode="random").fit(X_nan, y)
    # A class too rare for the validation folds.
    y_rare = y.copy()
    y_rare[:3] = 7
    with pytest.raises(ValueError, match=r"class 7 has 3 rows, fewer than the 5 validation"):
        DataPruner(_influence(2)).fit(X, y_rare)
    with pytest.raises(ValueError, match=r"validation_data has labels not in the training y"):
        DataPruner(_influence(2), validation_data=(X_val, y_val + 5)).fit(X, y)
    with pytest.warns(UserWarning, match=r"validation_data has no rows of the classes \[2\]"):
        keep = y_val != 2
        DataPruner(_influence(2), validation_data=(X_val[keep], y_val[keep])).fit(X, y)


# -- PrunedEstimator -----------------------------------------------------------------------

def test_pruned_estimator_fits_on_kept_rows_with_subset_weights(noisy_blobs):
    X, y, X_val, y_val, _ = noisy_blobs
    weights = np.random.RandomState(0).uniform(0.5, 2, len(X))
    pruner = DataPruner(_influence(2), validation_data=(X_val, y_val))
    model = PrunedEstimator(pruner, LogisticRegression()).fit(X, y, sample_weight=weights)
    kept = model.pruner_.sample_indices_
    reference = LogisticRegression().fit(X[kept], y[kept], sample_weight=weights[kept])
    np.testing.assert_allclose(model.estimator_.coef_, reference.coef_)
    np.testing.assert_allclose(model.predict_proba(X_val), reference.predict_proba(X_val))
    np.testing.assert_array_equal(model.classes_, [0, 1, 2])
    assert is_classifier(model) and model.decision_function(X_val).shape == (100, 3)
    assert model.score(X_val, y_val) == reference.score(X_val, y_val)


def test_metadata_routing_subsets_requested_weights():
    X, y = make_blobs(150, centers=3, random_state=0)
    weights = np.random.RandomState(0).uniform(0.5, 2, 150)
    with sklearn.config_context(enable_metadata_routing=True):
        requested = LogisticRegression().set_fit_request(sample_weight=True)
        model = PrunedEstimator(DataPruner(mode="random", random_state=0), requested)
        model.fit(X, y, sample_weight=weights)
        kept = model.pruner_.sample_indices_
        reference = LogisticRegression().fit(X[kept], y[kept], sample_weight=weights[kept])
        np.testing.assert_allclose(model.estimator_.coef_, reference.coef_)
        cross_validate(model, X, y, params={"sample_weight": weights}, cv=3)
        unrequested = PrunedEstimator(DataPruner(mode="random"), LogisticRegression())
        with pytest.raises(UnsetMetadataPassedError):
            unrequested.fit(X, y, sample_weight=weights)


def test_pruned_estimator_default_retrains_the_pruners_ensemble(noisy_blobs):
    X, y, X_val, y_val, _ = noisy_blobs
    pruner = DataPruner(_influence(2), validation_data=(X_val, y_val))
    model = PrunedEstimator(pruner).fit(X, y)
    assert is_classifier(model)
    assert isinstance(model.estimator_, SeedEnsembleClassifier)
    kept = model.pruner_.sample_indices_
    scoring_ensemble = model.pruner_.influence_.estimator_
    np.testing.assert_array_equal(model.estimator_.seeds_, scoring_ensemble.seeds_)
    reference = clone(pruner.influence.estimator).fit(X[kept], y[kept])
    np.testing.assert_allclose(model.predict_proba(X_val), reference.predict_proba(X_val))


def test_pipeline_and_grid_search_prune_only_training_folds(noisy_blobs, tmp_path):
    X, y, *_ = noisy_blobs
    pipe = make_pipeline(StandardScaler(), PrunedEstimator(
        DataPruner(_influence(2), validation_fraction=0.5, random_state=0),
        LogisticRegression(), memory=Memory(tmp_path, verbose=0)))
    results = cross_validate(pipe, X, y, cv=3, return_estimator=True)
    for model in results["estimator"]:
        pruned = model[-1]
        assert pruned.pruner_.scores_.shape == (200,)  # the training fold only
        assert pruned.estimator_.coef_.shape == (3, 2)
    search = GridSearchCV(
        PrunedEstimator(DataPruner(_influence(2), validation_fraction=0.5, random_state=0),
                        LogisticRegression(), memory=Memory(tmp_path, verbose=0)),
        {"pruner__fraction": [0.05, 0.2], "pruner__influence__damping": [1e-3, 1e-1],
         "pruner__influence__estimator__n_seeds": [2]}, cv=2).fit(X, y)
    assert set(search.cv_results_["param_pruner__fraction"]) == {0.05, 0.2}
    assert search.best_estimator_.pruner_.sample_mask_.sum() in (285, 240)


def test_imblearn_pipeline(noisy_blobs):
    imblearn_pipeline = pytest.importorskip("imblearn.pipeline")
    X, y, X_val, y_val, _ = noisy_blobs
    pipe = imblearn_pipeline.make_pipeline(
        StandardScaler(), DataPruner(_influence(2), validation_fraction=0.5, random_state=0),
        LogisticRegression())
    pipe.fit(X, y)
    assert pipe[-1].coef_.shape == (3, 2) and pipe.predict(X_val).shape == (100,)
    assert pipe[1].sample_mask_.sum() == 270


# -- scikit-learn checks -------------------------------------------------------------------

def _check_instances():
    tiny = _influence(2)
    return [
        DataPruner(tiny, validation_fraction=0.5, random_state=0),
        DataPruner(tiny, objective="self"),
        PrunedEstimator(DataPruner(tiny, objective="self"), LogisticRegression()),
        PrunedEstimator(DataPruner(_regression_influence(), objective="self"), Ridge()),
    ]


# None needed: the pruner has no predict or transform for the checks to probe,
# and the meta-estimator delegates everything to a well-behaved estimator.
EXPECTED_FAILURES = {}


def _expected_failures(estimator):
    return EXPECTED_FAILURES.get(type(estimator).__name__, {})


@parametrize_with_checks(_check_instances(), expected_failed_checks=_expected_failures)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_param_validation():
    for estimator in _check_instances()[:3]:
        check_param_validation(type(estimator).__name__, estimator)
