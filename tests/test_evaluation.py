"""skdtda.evaluation: retraining ground truth, LDS, leave-one-out, noise ceilings, search."""

import joblib
import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.evaluation import (AttributionSearchCV, Distributions, bootstrap_ci,
                               distribution_change, lds, leave_one_out, loo_correlation,
                               make_lds_scorer, noise_ceiling, predict_distributions,
                               query_folds, random_subsets, removal_masks,
                               retrain_distributions, score_report)
from skdtda._agreement import query_interval
from skdtda.ensemble import _retrain
from skdtda.nets import MLP


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _ensemble(n_seeds=3, epochs=8):
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(8,),
                              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                              optimizer__momentum=0.9, lr=0.05, max_epochs=epochs, batch_size=32,
                              train_split=None, verbose=0)
    return SeedEnsembleClassifier(net, n_seeds=n_seeds, random_state=0)


def _logistic():
    """L2-regularised logistic regression, full batch: strongly convex, first order ~ exact."""
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(),
                              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                              optimizer__weight_decay=0.1, optimizer__momentum=0.9, lr=0.5,
                              batch_size=-1, max_epochs=1500, train_split=None, verbose=0)
    return SeedEnsembleClassifier(net, n_seeds=1, random_state=0)


# -- removal sets -------------------------------------------------------------------------
def test_random_subsets_remove_the_same_number_of_rows():
    remove = random_subsets(50, n_sets=6, keep_fraction=0.7, random_state=0)
    assert remove.shape == (6, 50) and remove.dtype == bool
    assert (remove.sum(axis=1) == 15).all()
    assert len({r.tobytes() for r in remove}) == 6
    np.testing.assert_array_equal(remove, random_subsets(50, 6, 0.7, random_state=0))
    with pytest.raises(ValueError, match="keep_fraction"):
        random_subsets(50, 3, keep_fraction=1.0)
    with pytest.raises(ValueError, match="removes no row"):
        random_subsets(3, 3, keep_fraction=0.9)


def test_removal_masks_accept_index_lists_and_reject_ambiguity():
    np.testing.assert_array_equal(removal_masks([[0], [1, 3]], 4),
                                  [[1, 0, 0, 0], [0, 1, 0, 1]])
    np.testing.assert_array_equal(leave_one_out(3, [2]), [[False, False, True]])
    with pytest.raises(ValueError, match="one index array per removal set"):
        removal_masks([0, 1, 2], 4)
    with pytest.raises(ValueError, match=r"indices in \[0, 4\)"):
        removal_masks([[4]], 4)
    with pytest.raises(ValueError, match="removes every training row"):
        removal_masks(np.ones((1, 4), dtype=bool), 4)
    with pytest.raises(ValueError, match="shape"):
        removal_masks(np.zeros((2, 5), dtype=bool), 4)
    with pytest.raises(ValueError, match="required"):
        removal_masks(None, 4)


# -- retraining ---------------------------------------------------------------------------
def test_retrain_distributions_is_retraining_with_shared_seeds(iris):
    X, y = iris
    ens = _ensemble()
    remove = [[0, 1, 2], [50, 51], [149]]
    truth = retrain_distributions(ens, X, y, X[::30], y[::30], remove=remove, n_seeds=2,
                                  random_state=0)
    assert truth.before.shape == (2, 5) and truth.after.shape == (3, 2, 5)
    # the same seeds for the full data and every set: a clone with one seed, refitted by hand
    full = clone(ens).set_params(n_seeds=2, random_state=truth_seed(0)).fit(X, y)
    np.testing.assert_array_equal(truth.before, full.measure(X[::30], y[::30]))
    keep = np.setdiff1d(np.arange(len(X)), remove[1])
    refit = clone(full).fit(X[keep], y[keep])
    np.testing.assert_array_equal(refit.seeds_, full.seeds_)
    np.testing.assert_array_equal(truth.after[1], refit.measure(X[::30], y[::30]))


def truth_seed(random_state):
    return int(np.random.RandomState(random_state).randint(np.iinfo(np.int32).max))


def test_y_query_none_uses_the_full_ensembles_prediction(iris):
    X, y = iris
    truth = retrain_distributions(_ensemble(n_seeds=2), X, y, X[:4], remove=[[10], [20], [30]])
    full = clone(_ensemble(n_seeds=2)).set_params(random_state=truth_seed(0)).fit(X, y)
    np.testing.assert_array_equal(truth.before, full.measure(X[:4], full.predict(X[:4])))


def test_bad_input_gets_clear_errors(iris):
    X, y = iris
    with pytest.raises(ValueError, match="every row of class 0"):
        retrain_distributions(_ensemble(), X, y, X[:2], y[:2], remove=[np.arange(50)])
    with pytest.raises(ValueError, match="a SeedEnsembleRegressor or a Pipeline ending in one"):
        retrain_distributions("net", X, y, X[:2], y[:2], remove=[[0]])
    with pytest.raises(ValueError, match="memory needs an integer random_state"):
        retrain_distributions(_ensemble(), X, y, X[:2], y[:2], remove=[[0]], random_state=None,
                              memory="somewhere")
    with pytest.raises(ValueError, match="features"):
        retrain_distributions(_ensemble(), X, y, X[:2, :3], y[:2], remove=[[0]])
    with pytest.raises(ValueError, match="NaN"):
        retrain_distributions(_ensemble(), np.where(X == X[0, 0], np.nan, X), y, X[:2], y[:2],
                              remove=[[0]])


def test_an_interrupted_run_resumes_without_redoing_finished_sets(iris, tmp_path, monkeypatch):
    X, y = iris
    remove = random_subsets(len(X), n_sets=5, keep_fraction=0.9, random_state=0)
    args = (_ensemble(n_seeds=2), X, y, X[:6], y[:6])
    # every retrained set is measured (and stored) by _measured, whichever path trained it
    original = _retrain._measured
    calls = []

    def interrupted(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*a, **k)

    monkeypatch.setattr(_retrain, "_measured", interrupted)
    with pytest.raises(KeyboardInterrupt):
        retrain_distributions(*args, remove=remove, memory=tmp_path)
    monkeypatch.setattr(_retrain, "_measured", lambda *a, **k: calls.append(1)
                        or original(*a, **k))
    calls.clear()
    resumed = retrain_distributions(*args, remove=remove, memory=tmp_path)
    assert len(calls) == 3  # the two finished sets were loaded, not retrained
    fresh = retrain_distributions(*args, remove=remove)
    np.testing.assert_array_equal(resumed.after, fresh.after)
    np.testing.assert_array_equal(resumed.before, fresh.before)
    # new sets reuse the old ones; other settings do not
    calls.clear()
    retrain_distributions(*args, remove=np.vstack([remove, remove[:1] ^ True]),
                          memory=tmp_path)
    assert len(calls) == 1
    calls.clear()
    retrain_distributions(*args, remove=remove, memory=tmp_path, n_seeds=3)
    assert len(calls) == 5


def test_cache_dir_is_a_deprecated_alias_of_memory(iris, tmp_path, monkeypatch):
    X, y = iris
    args = (_ensemble(n_seeds=2, epochs=2), X, y, X[:3], y[:3])
    remove = [[0], [1]]
    with pytest.warns(FutureWarning, match="cache_dir= is deprecated.*memory="):
        old = retrain_distributions(*args, remove=remove, cache_dir=tmp_path)
    calls = []
    original = _retrain._measured
    monkeypatch.setattr(_retrain, "_measured", lambda *a, **k: calls.append(1)
                        or original(*a, **k))
    # a folder written under the old name serves memory= (a path, a str or a joblib.Memory)
    for memory in (tmp_path, str(tmp_path), joblib.Memory(tmp_path, verbose=0)):
        new = retrain_distributions(*args, remove=remove, memory=memory)
        np.testing.assert_array_equal(new.after, old.after)
    assert not calls
    with pytest.raises(ValueError, match="memory= only"):
        retrain_distributions(*args, remove=remove, memory=tmp_path, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="joblib.Memory"):
        retrain_distributions(*args, remove=remove, memory=3)
    # a joblib.Memory without a location keeps nothing
    retrain_distributions(*args, remove=remove, memory=joblib.Memory(None))
    assert len(calls) == 2


def test_memory_is_not_used_by_other_data_or_settings(iris, tmp_path, monkeypatch):
    X, y = iris
    remove = [[0], [1]]
    retrain_distributions(_ensemble(n_seeds=2, epochs=2), X, y, X[:3], y[:3], remove=remove,
                          memory=tmp_path)
    calls = []
    original = _retrain._measured
    monkeypatch.setattr(_retrain, "_measured", lambda *a, **k: calls.append(1)
                        or original(*a, **k))
    changed = X.copy()
    changed[5, 1] += 1e-6
    for ensemble, X_train, y_train, measurement in [
            (_ensemble(n_seeds=2, epochs=2), changed, y, "loss"),
            (_ensemble(n_seeds=2, epochs=2), X[::-1].copy(), y[::-1].copy(), "loss"),
            (_ensemble(n_seeds=2, epochs=3), X, y, "loss"),
            (_ensemble(n_seeds=2, epochs=2), X, y, "margin")]:
        calls.clear()
        retrain_distributions(ensemble, X_train, y_train, X[:3], y[:3], remove=remove,
                              memory=tmp_path, measurement=measurement)
        assert len(calls) == 2
    # where the ensemble keeps its own members does not change the measurements, and the
    # retrained ensembles do not store their members there
    calls.clear()
    retrain_distributions(_ensemble(n_seeds=2, epochs=2).set_params(memory=str(tmp_path / "m")),
                          X, y, X[:3], y[:3], remove=[[0], [1], [2]], memory=tmp_path)
    assert len(calls) == 1 and not (tmp_path / "m").exists()


def test_retraining_spreads_over_a_dask_cluster(iris):
    distributed = pytest.importorskip("dask.distributed")
    X, y = iris
    remove = [[0], [60], [120]]
    local = retrain_distributions(_ensemble(n_seeds=2), X, y, X[:4], y[:4], remove=remove)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        with joblib.parallel_config(backend="dask"):
            remote = retrain_distributions(_ensemble(n_seeds=2), X, y, X[:4], y[:4],
                                           remove=remove, n_jobs=-1)
    # one job trains the three sets' members in one shared pass, the cluster each set
    # alone: the same members, up to how a batch of 6 and one of 2 round
    np.testing.assert_allclose(local.after, remote.after, rtol=1e-5, atol=1e-6)


# -- predicted distributions and scores ---------------------------------------------------
def test_predict_distributions_sums_the_per_seed_changes(iris):
    X, y = iris
    influence = InfluenceTransformer(_ensemble(), curvature="ggn", batch_size=40).fit(X, y)
    remove = random_subsets(len(X), 4, 0.8, random_state=1)
    pred = predict_distributions(influence, X[:7], y[:7], remove=remove)
    delta = influence.influence_samples(X[:7], y[:7])
    before = influence.measure(X[:7], y[:7])
    np.testing.assert_allclose(pred.before, before)
    np.testing.assert_allclose(pred.after, before + np.einsum("sqn,mn->msq", delta, remove))
    np.testing.assert_allclose(pred.after[2], influence.predict_removal(X[:7], y[:7],
                                                                        remove=remove[2]))


def test_distribution_change_applies_the_discrepancy_per_set():
    before = np.array([[0.0, 1.0], [2.0, 3.0]])
    after = np.stack([before + 1, before * 2])
    change = distribution_change(Distributions(before, after), "variance")
    np.testing.assert_allclose(change, [[0, 0], [3, 3]])  # var([0, 2]) = 1 -> var([0, 4]) = 4
    np.testing.assert_allclose(distribution_change((before, after), "mean"), [[1, 1], [1, 2]])
    with pytest.raises(ValueError, match="before of shape"):
        distribution_change((before, after[0]))


def test_lds_and_loo_correlation_match_scipy_per_query_means():
    rng = np.random.RandomState(0)
    actual = rng.normal(size=(12, 5))
    predicted = actual + rng.normal(scale=0.7, size=actual.shape)
    expected_s = np.mean([spearmanr(predicted[:, q], actual[:, q])[0] for q in range(5)])
    expected_p = np.mean([pearsonr(predicted[:, q], actual[:, q])[0] for q in range(5)])
    assert lds(predicted, actual) == pytest.approx(expected_s)
    assert loo_correlation(predicted, actual) == pytest.approx(expected_p)
    assert lds(np.exp(actual), actual) == pytest.approx(1.0)
    assert lds(-actual, actual) == pytest.approx(-1.0)
    # Distributions: the discrepancy is applied first
    before = rng.normal(size=(6, 5))
    after = before[None] + actual[:, None, :] + 0 * rng.normal(size=(12, 6, 5))
    assert lds(Distributions(before, after), actual, "mean") == pytest.approx(1.0)


def test_constant_queries_are_left_out_with_a_warning():
    actual = np.array([[1.0, 0.5], [2.0, 0.5], [3.0, 0.5]])
    with pytest.warns(RuntimeWarning, match="1 of 2 queries"):
        assert lds(actual, actual) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no correlation"):
        lds(np.ones((3, 2)), actual)
    with pytest.raises(ValueError, match="at least 3 sets"):
        lds(actual[:2], actual[:2])
    with pytest.raises(ValueError, match="same removal sets"):
        lds(actual, actual[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        lds(actual * np.nan, actual)


def _noisy_truth(n_seeds, noise, rng, n_sets=30, n_query=40):
    """Retrained-like samples: after = before + true change + per-seed noise."""
    true = rng.normal(size=(n_sets, n_query))
    before = rng.normal(size=(n_seeds, n_query))
    after = before[None] + true[:, None, :] + noise * rng.normal(size=(n_sets, n_seeds, n_query))
    return true, Distributions(before, after)


def test_noise_ceiling_is_the_correlation_a_perfect_method_reaches():
    rng = np.random.RandomState(0)
    for n_seeds, noise in ((8, 3.0), (32, 3.0), (32, 1.0)):
        true, truth = _noisy_truth(n_seeds, noise, rng)
        perfect = lds(true, truth, method="pearson")  # the truth scored against its estimate
        ceiling = noise_ceiling(truth, method="pearson", random_state=0)
        assert ceiling.ceiling == pytest.approx(perfect, abs=0.05)
        assert ceiling.n_seeds == n_seeds
    # more seeds, higher ceiling; a subset of seeds gives the lower one
    _, truth = _noisy_truth(64, 3.0, rng)
    small = noise_ceiling(truth, n_seeds=8, random_state=0).ceiling
    assert small < noise_ceiling(truth, random_state=0).ceiling - 0.1
    with pytest.raises(ValueError, match="at least 4 seeds"):
        noise_ceiling(Distributions(truth.before[:3], truth.after[:, :3]))


def test_noise_ceiling_of_predictions_says_how_another_draw_of_seeds_agrees():
    """On *predicted* distributions (docs/architectures.md, "How many seeds"): the
    squared ceiling of 16 seeds' prediction is how well it agrees with the prediction
    of 16 other seeds, on a net whose seeds disagree (noisy labels, long training)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(150, 6, n_informative=4, n_classes=3, flip_y=0.2,
                               random_state=0)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(16,),
                              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                              lr=0.5, max_epochs=100, batch_size=16, train_split=None,
                              verbose=0)
    ens = SeedEnsembleClassifier(net, n_seeds=32, random_state=0).fit(X, y)
    queries = np.arange(0, 150, 5)
    before, after = predict_distributions(InfluenceTransformer(ens).fit(X, y), X[queries],
                                          y[queries],
                                          remove=leave_one_out(150, np.arange(1, 150, 6)))
    first, other = (Distributions(before[seeds], after[:, seeds])
                    for seeds in (slice(0, 16), slice(16, 32)))
    report = noise_ceiling(first, "mean", method="pearson", random_state=0)
    agreement = loo_correlation(first, other)
    assert agreement < 0.85  # the seeds disagree enough for the check to mean something
    assert report.ceiling ** 2 == pytest.approx(agreement, abs=0.07)
    assert report.split_half < agreement - 0.1  # 8 against 8 seeds agree less


def test_bootstrap_intervals_cover_the_score_and_shrink_with_queries():
    rng = np.random.RandomState(1)
    true, truth = _noisy_truth(16, 1.0, rng, n_query=200)
    predicted = true + rng.normal(size=true.shape)
    score = lds(predicted, truth)
    low, high = bootstrap_ci(predicted, truth, random_state=0)
    assert low < score < high
    low_few, high_few = bootstrap_ci(predicted[:, :20], truth.subset(queries=np.arange(20)),
                                     random_state=0)
    assert high_few - low_few > 1.5 * (high - low)
    low_s, high_s = bootstrap_ci(predicted, truth, over="seeds", n_resamples=100,
                                 random_state=0)
    assert low_s < high_s
    report = score_report(predicted, truth, "mean", n_resamples=200, random_state=0)
    assert report.score == pytest.approx(score)
    assert report.ci[0] < report.score < report.ci[1] and 0 < report.ceiling <= 1
    assert (report.n_sets, report.n_query, report.n_seeds) == (30, 200, 16)


def test_predictive_query_interval_covers_the_mean_over_another_draw_of_queries():
    """Against a simulated population of per-query scores: the confidence interval covers
    the population's mean, the predictive one the mean over another draw of as many
    queries, each about 95% of the time; the confidence interval covers the other draw
    far less often (about 83%: it ignores that draw's own noise)."""
    rng = np.random.RandomState(0)
    population = np.clip(rng.normal(0.5, 0.3, size=100_000), -1, 1)
    n, trials = 40, 400
    covered = {"ci": 0, "ci other": 0, "predictive other": 0}
    for _ in range(trials):
        ours, other = (population[rng.randint(len(population), size=n)] for _ in range(2))
        low, high = query_interval(ours, 400, 0.95, rng)
        covered["ci"] += low <= population.mean() <= high
        covered["ci other"] += low <= other.mean() <= high
        low, high = query_interval(ours, 400, 0.95, rng, predictive=True)
        covered["predictive other"] += low <= other.mean() <= high
    share = {key: value / trials for key, value in covered.items()}
    assert 0.90 <= share["ci"] <= 0.98
    assert 0.90 <= share["predictive other"] <= 0.98
    assert share["ci other"] < 0.88
    # NaN queries are left out, as for the confidence interval
    r = np.array([0.1, np.nan, 0.4, 0.9, 0.3])
    low, high = query_interval(r, 200, 0.95, rng, predictive=True)
    assert low < np.nanmean(r) < high


# -- against retraining, end to end ---------------------------------------------------------
def test_exact_influence_scores_near_one_on_logistic_regression(iris, float64):
    X, y = iris
    ens = _logistic()
    rows = [3, 50, 70, 77, 106, 133, 20, 90]
    queries = np.array([0, 60, 120, 75, 30])
    truth = retrain_distributions(ens, X, y, X[queries], y[queries],
                                  remove=leave_one_out(len(X), rows))
    influence = InfluenceTransformer(ens, curvature="exact", damping=0)
    influence.fit(X, y)
    pred = predict_distributions(influence, X[queries], y[queries],
                                 remove=leave_one_out(len(X), rows))
    assert loo_correlation(pred, truth) > 0.99
    assert lds(pred, truth) > 0.95
    sets = random_subsets(len(X), 8, keep_fraction=0.95, random_state=0)
    truth = retrain_distributions(ens, X, y, X[queries], y[queries], remove=sets)
    pred = predict_distributions(influence, X[queries], y[queries], remove=sets)
    assert lds(pred, truth) > 0.9


@pytest.fixture(scope="module")
def searched(iris):
    """A fitted ensemble and its retrained truth on 10 sets and 25 queries, for the searches."""
    X, y = iris
    ens = _ensemble(n_seeds=4, epochs=15).fit(X, y)
    queries = np.arange(0, 150, 6)
    remove = random_subsets(len(X), 10, keep_fraction=0.8, random_state=0)
    truth = retrain_distributions(ens, X, y, X[queries], y[queries], remove=remove, n_seeds=8)
    return X, y, ens, queries, remove, truth


def test_grid_search_selects_settings_on_query_folds(searched):
    X, y, ens, queries, remove, truth = searched
    scorer = make_lds_scorer(truth, remove=remove, X_query=X[queries], y_query=y[queries])
    X_cv, y_cv, cv = query_folds(X, y, X[queries], y[queries], n_splits=3, random_state=0)
    search = GridSearchCV(InfluenceTransformer(ens), {"curvature": ["ggn", "identity"]},
                          scoring=scorer, cv=cv, refit=False, error_score="raise")
    search.fit(X_cv, y_cv)
    # each fold's score is the LDS on that fold's queries, with the influence fitted on X
    fitted = InfluenceTransformer(ens, curvature="ggn").fit(X, y)
    fold_queries = cv[1][1] - len(X)
    expected = lds(predict_distributions(fitted, X[queries][fold_queries],
                                         y[queries][fold_queries], remove=remove),
                   truth.subset(queries=fold_queries))
    assert search.cv_results_["split1_test_score"][0] == pytest.approx(expected)
    assert len(set(search.cv_results_["mean_test_score"])) == 2
    # an influence fitted on the queries too (refit=True's mistake) is refused: at fit by
    # the fitted ensemble's fingerprint, or by the scorer when the ensemble fits there too
    with pytest.raises(ValueError, match="fitted on 150 rows, X has 175"):
        InfluenceTransformer(ens, curvature="ggn").fit(X_cv, y_cv)
    wrong = InfluenceTransformer(clone(ens), curvature="ggn").fit(X_cv, y_cv)
    with pytest.raises(ValueError, match="exactly the retrained training rows"):
        scorer(wrong, X[queries], y[queries])
    with pytest.raises(ValueError, match="not among the ground truth's query points"):
        scorer(fitted, X[:3] + 1, y[:3])


def test_attribution_search_is_the_grid_search_on_query_folds_refitted_on_the_training_rows(
        searched):
    X, y, ens, queries, remove, truth = searched
    grid = {"curvature": ["ggn", "identity"]}
    search = AttributionSearchCV(InfluenceTransformer(ens), grid, actual=truth, remove=remove,
                                 X_query=X[queries], y_query=y[queries], n_splits=3,
                                 random_state=0).fit(X, y)
    # the truth: the search by hand, as docs/evaluation.md writes it
    scorer = make_lds_scorer(truth, remove=remove, X_query=X[queries], y_query=y[queries])
    X_cv, y_cv, cv = query_folds(X, y, X[queries], y[queries], n_splits=3, random_state=0)
    by_hand = GridSearchCV(InfluenceTransformer(ens), grid, scoring=scorer, cv=cv,
                           refit=False).fit(X_cv, y_cv)
    for key in ["params", "rank_test_score", "mean_test_score", "std_test_score",
                *(f"split{k}_test_score" for k in range(3))]:
        np.testing.assert_array_equal(search.cv_results_[key], by_hand.cv_results_[key])
    assert search.best_params_ == by_hand.best_params_
    assert search.best_score_ == by_hand.best_score_
    assert search.best_index_ == by_hand.best_index_ and search.n_splits_ == 3
    # refitted on the 150 training rows alone, as fitting the best settings by hand
    best = clone(by_hand.estimator).set_params(**by_hand.best_params_).fit(X, y)
    assert search.best_estimator_.n_train_ == best.n_train_ == len(X)
    np.testing.assert_allclose(search.transform(X[:4]), best.transform(X[:4]), rtol=1e-6)
    np.testing.assert_allclose(search.influence_samples(X[:4], y[:4]),
                               best.influence_samples(X[:4], y[:4]), rtol=1e-6)
    assert search.score(X[queries], y[queries]) == pytest.approx(scorer(best, X[queries],
                                                                        y[queries]))
    assert search.get_feature_names_out()[0] == "train0"
    # sklearn's conventions for a meta-estimator
    params = search.get_params()
    assert params["remove"] is remove and params["actual"] is truth
    assert not hasattr(clone(search), "best_estimator_")


def test_a_failing_candidate_raises_its_error_instead_of_scoring_nan(searched):
    X, y, ens, queries, remove, truth = searched
    grid = {"curvature": ["identity", "nope"]}
    settings = dict(actual=truth, remove=remove, X_query=X[queries], y_query=y[queries],
                    n_splits=3, random_state=0)
    with pytest.raises(ValueError, match="The 'curvature' parameter of InfluenceTransformer"):
        AttributionSearchCV(InfluenceTransformer(ens), grid, **settings).fit(X, y)


@pytest.mark.filterwarnings("ignore:One or more of the test scores are non-finite")
def test_a_plain_grid_search_says_how_to_search_in_its_warning(searched):
    """What GridSearchCV does with the scorer and cv=3 (error_score=nan, its default): each
    fold's influence attributes 100 of the 150 retrained rows, the scorer refuses it, and
    scikit-learn turns the error into a NaN score; its warning carries the way out. (A
    fitted ensemble would not make the fits fail: GridSearchCV clones it unfitted.)"""
    X, y, ens, queries, remove, truth = searched
    scorer = make_lds_scorer(truth, remove=remove, X_query=X[queries], y_query=y[queries])
    plain = GridSearchCV(InfluenceTransformer(_ensemble(n_seeds=2, epochs=2),
                                              curvature="identity"),
                         {"statistic": ["mean"]}, scoring=scorer, cv=3)
    with pytest.warns(UserWarning, match="Search with skdtda.evaluation.AttributionSearchCV"):
        plain.fit(X, y)
    assert np.isnan(plain.cv_results_["mean_test_score"]).all()
