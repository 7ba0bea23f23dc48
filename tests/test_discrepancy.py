"""Discrepancies checked against closed forms, brute force and scipy, not re-derivations."""

import itertools

import numpy as np
import pytest

from skdtda.discrepancy import STATISTICS, check_statistic, discrepancy

BEFORE = np.array([0.3, -1.2, 2.5, 0.7, -0.4, 1.9])


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("c", [0.25, -3.0])
def test_shift_closed_forms(c):
    after = BEFORE + c
    assert discrepancy(BEFORE, after, "mean") == pytest.approx(c)
    assert discrepancy(BEFORE, after, "variance") == pytest.approx(0.0, abs=1e-12)
    assert discrepancy(BEFORE, after, "std") == pytest.approx(0.0, abs=1e-12)
    assert discrepancy(BEFORE, after, "wasserstein") == pytest.approx(abs(c))
    for q in (0.0, 0.3, 0.5, 1.0):
        assert discrepancy(BEFORE, after, "quantile", q=q) == pytest.approx(c)


def test_shift_beyond_range_separates_cdfs():
    # A shift larger than the sample's range puts every after value beyond every
    # before value, so the empirical CDFs differ by 1 somewhere.
    c = (BEFORE.max() - BEFORE.min()) + 0.1
    assert discrepancy(BEFORE, BEFORE + c, "ks") == 1.0
    assert discrepancy(BEFORE, BEFORE - c, "ks") == 1.0


def test_scaling_closed_forms():
    a = 1.5
    after = a * BEFORE
    var = np.mean((BEFORE - BEFORE.mean()) ** 2)
    assert discrepancy(BEFORE, after, "variance") == pytest.approx((a**2 - 1) * var)
    assert discrepancy(BEFORE, after, "std") == pytest.approx((a - 1) * np.sqrt(var))
    # For a > 0 scaling keeps the order, so the optimal pairing is the identity.
    assert discrepancy(BEFORE, after, "wasserstein") == pytest.approx(
        (a - 1) * np.sqrt(np.mean(BEFORE**2)))


def test_hand_made_ks_and_quantile():
    before = np.array([0.0, 1.0, 2.0, 3.0])
    after = np.array([2.0, 3.0, 4.0, 5.0])
    # At x = 1: F_before = 2/4, F_after = 0.
    assert discrepancy(before, after, "ks") == 0.5
    assert discrepancy([1.0, 2.0, 3.0], [1.0, 5.0, 9.0], "quantile") == 3.0
    assert discrepancy([1.0], [2.0], "ks") == 1.0
    assert discrepancy([1.0], [-2.0], "wasserstein") == 3.0


def test_distributional_statistics_ignore_pairing():
    after = np.roll(BEFORE, 1)
    for statistic in ("mean", "variance", "std", "wasserstein", "ks", "quantile"):
        assert discrepancy(BEFORE, after, statistic) == pytest.approx(0.0, abs=1e-12)
    # The pairing is what "flip" measures: seeds 1, 2, 4 and 5 change sign.
    assert discrepancy(BEFORE, after, "flip") == pytest.approx(4 / 6)


def test_flip_hand_made_margins():
    before = np.array([1.0, 2.0, -1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    after = np.array([-1.0, 0.5, 1.0, -3.0, 0.0, 0.1, -0.1, 3.0])
    # Flips: 1 -> -1, -1 -> 1, 0.5 -> 0 (zero is non-positive), 0 -> 0.1.
    assert discrepancy(before, after, "flip") == 4 / 8
    assert discrepancy(before, before, "flip") == 0.0
    assert discrepancy(before, -before - 1e-3, "flip") == pytest.approx(6 / 8)


# ------------------------------------------------------- brute force and scipy


@pytest.mark.parametrize("n_seeds", [1, 2, 3, 5, 6])
def test_wasserstein_matches_brute_force_over_pairings(n_seeds):
    rng = np.random.default_rng(n_seeds)
    before = rng.normal(size=n_seeds)
    after = rng.standard_exponential(size=n_seeds) - 0.5
    best = min(np.mean((after[list(perm)] - before) ** 2)
               for perm in itertools.permutations(range(n_seeds)))
    assert discrepancy(before, after, "wasserstein") == pytest.approx(np.sqrt(best))


@pytest.mark.parametrize("seed", range(6))
def test_ks_matches_scipy(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    n_seeds = int(rng.integers(1, 30))
    if seed % 2:
        # Integer values give ties within and across the samples.
        before = rng.integers(0, 4, size=n_seeds).astype(float)
        after = rng.integers(0, 5, size=n_seeds).astype(float)
    else:
        before = rng.normal(size=n_seeds)
        after = rng.normal(0.5, 2.0, size=n_seeds)
    expected = stats.ks_2samp(after, before).statistic
    assert discrepancy(before, after, "ks") == pytest.approx(expected, abs=1e-12)


def test_ks_matches_scipy_vectorised_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    before = rng.integers(-2, 3, size=(9, 5, 7)).astype(float)
    after = rng.integers(-3, 3, size=(9, 5, 7)).astype(float)
    result = discrepancy(before, after, "ks")
    for i, j in np.ndindex(5, 7):
        expected = stats.ks_2samp(after[:, i, j], before[:, i, j]).statistic
        assert result[i, j] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.73, 1.0])
def test_quantile_matches_numpy(q):
    rng = np.random.default_rng(3)
    before = rng.normal(size=11)
    after = rng.gamma(2.0, size=11)
    expected = np.quantile(after, q) - np.quantile(before, q)
    assert discrepancy(before, after, "quantile", q=q) == pytest.approx(expected)


# ------------------------------------------------------------ vectorisation


@pytest.mark.parametrize("statistic", STATISTICS)
def test_vectorised_equals_per_column_loop(statistic):
    rng = np.random.default_rng(0)
    before = rng.normal(size=(7, 3, 4))
    after = before + rng.normal(0.2, 0.8, size=(7, 3, 4))
    result = discrepancy(before, after, statistic, q=0.3)
    assert isinstance(result, np.ndarray)
    assert result.shape == (3, 4) and result.dtype == np.float64
    for i, j in np.ndindex(3, 4):
        column = discrepancy(before[:, i, j], after[:, i, j], statistic, q=0.3)
        assert column.shape == ()
        assert result[i, j] == pytest.approx(float(column), abs=1e-12)


def test_wasserstein_nonnegative_and_array_like_inputs():
    rng = np.random.default_rng(1)
    before = rng.normal(size=(5, 20))
    after = rng.normal(size=(5, 20))
    assert np.all(discrepancy(before, after, "wasserstein") >= 0)
    result = discrepancy([[1, 2], [3, 4]], [[2, 2], [5, 4]], "mean")
    np.testing.assert_array_equal(result, [1.5, 0.0])


def test_callable_statistic():
    def median_shift(before, after):
        return np.median(after, axis=0) - np.median(before, axis=0)

    before = np.arange(12.0).reshape(3, 4)
    result = discrepancy(before, before + 2.0, median_shift)
    np.testing.assert_array_equal(result, np.full(4, 2.0))
    assert check_statistic(median_shift) is median_shift
    for name in STATISTICS:
        assert check_statistic(name) == name


# ------------------------------------------------------------------- errors


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"same shape.*\(3, 2\).*\(3, 3\)"):
        discrepancy(np.zeros((3, 2)), np.zeros((3, 3)))


@pytest.mark.parametrize("shape", [(0,), (0, 4), ()])
def test_no_seed_raises(shape):
    with pytest.raises(ValueError, match="at least 1 seed"):
        discrepancy(np.zeros(shape), np.zeros(shape))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", ["before", "after"])
def test_non_finite_raises(bad, which):
    values = {"before": np.zeros((3, 2)), "after": np.ones((3, 2))}
    values[which][1, 1] = bad
    with pytest.raises(ValueError, match=rf"{which} contains 1 non-finite"):
        discrepancy(values["before"], values["after"], "ks")


@pytest.mark.parametrize("statistic", ["median", "Mean", "", None, 3])
def test_unknown_statistic_raises(statistic):
    match = rf"Unknown statistic {repr(statistic)!s}.*'wasserstein'.*'flip'"
    with pytest.raises(ValueError, match=match):
        check_statistic(statistic)
    with pytest.raises(ValueError, match=match):
        discrepancy(np.zeros(3), np.zeros(3), statistic)


@pytest.mark.parametrize("q", [-0.1, 1.5, np.nan, "half", [0.5]])
def test_bad_q_raises(q):
    with pytest.raises(ValueError, match=r"q must be a number in \[0, 1\]; got q="):
        discrepancy(np.zeros(3), np.ones(3), "quantile", q=q)


def test_callable_wrong_shape_raises():
    with pytest.raises(ValueError, match=r"returned shape \(\).*expected.*\(4,\)"):
        discrepancy(np.zeros((3, 4)), np.ones((3, 4)), lambda b, a: 0.0)


# ------------------------------------------------------------- wasserstein_smooth


@pytest.mark.parametrize("shift, noise", [(0.05, 0.3), (0.0, 0.3), (0.1, 0.3)])
def test_wasserstein_smooth_recovers_a_known_shift_better_than_the_paired_estimator(shift, noise):
    """before ~ N(0, 1), after = before + shift + N(0, noise^2): after ~ N(shift, 1 + noise^2),
    W2 = sqrt(shift^2 + (sqrt(1 + noise^2) - 1)^2). With 32 seeds the sorted (paired)
    estimator reads about sqrt(shift^2 + noise^2), the scatter of the per-seed shifts."""
    rng = np.random.default_rng(0)
    true = np.sqrt(shift**2 + (np.sqrt(1 + noise**2) - 1) ** 2)
    before = rng.normal(size=(32, 2000))
    after = before + shift + noise * rng.normal(size=before.shape)
    paired = discrepancy(before, after, "wasserstein")
    smooth = discrepancy(before, after, "wasserstein_smooth")
    rmse_paired = np.sqrt(np.mean((paired - true) ** 2))
    rmse_smooth = np.sqrt(np.mean((smooth - true) ** 2))
    assert rmse_smooth < 0.75 * rmse_paired, (rmse_smooth, rmse_paired)
    assert abs(np.mean(smooth) - true) < 0.5 * abs(np.mean(paired) - true)


def test_wasserstein_smooth_is_exact_for_shifts_and_location_scale_maps():
    rng = np.random.default_rng(2)
    before = rng.normal(size=(16, 5))
    assert_allclose = np.testing.assert_allclose
    assert_allclose(discrepancy(before, before + 0.7, "wasserstein_smooth"), 0.7, rtol=1e-12)
    assert_allclose(discrepancy(before, before - 0.7, "wasserstein_smooth"), 0.7, rtol=1e-12)
    assert_allclose(discrepancy(before, before, "wasserstein_smooth"), 0.0, atol=1e-15)
    # after = before + a + b * z with z the normal scores of the ranks: the fit is exact
    from scipy.special import ndtri

    z = ndtri((np.arange(16) + 0.5) / 16)
    ranks = np.argsort(np.argsort(before, axis=0), axis=0)
    after = before + 0.3 + 0.2 * z[ranks]
    expected = np.sqrt(0.3**2 + 0.2**2 * np.mean(z**2))
    assert_allclose(discrepancy(before, after, "wasserstein_smooth"), expected, rtol=1e-12)
    assert_allclose(discrepancy(before, after, "wasserstein"), expected, rtol=1e-12)


def test_wasserstein_smooth_properties():
    """Nonnegative, symmetric, invariant to a common shift and to the seed order,
    scales with the data, never above the paired estimator."""
    rng = np.random.default_rng(3)
    before = rng.normal(size=(12, 50))
    after = before + rng.normal(0.1, 0.4, size=before.shape)
    w = discrepancy(before, after, "wasserstein_smooth")
    assert np.all(w >= 0)
    np.testing.assert_allclose(discrepancy(after, before, "wasserstein_smooth"), w, rtol=1e-12)
    np.testing.assert_allclose(discrepancy(before + 5, after + 5, "wasserstein_smooth"), w,
                               rtol=1e-9)
    np.testing.assert_allclose(discrepancy(3 * before, 3 * after, "wasserstein_smooth"), 3 * w,
                               rtol=1e-12)
    np.testing.assert_allclose(discrepancy(before[::-1], after[rng.permutation(12)],
                                           "wasserstein_smooth"), w, rtol=1e-12)
    # a projection of the sorted difference: its mean square is at most the whole one's
    assert np.all(w <= discrepancy(before, after, "wasserstein") + 1e-12)
    assert discrepancy([1.0], [-2.0], "wasserstein_smooth") == 3.0


def test_wasserstein_smooth_through_the_transformer():
    """transform() with the new statistic reduces the paired per-seed samples."""
    from sklearn.datasets import load_iris

    from skdtda import InfluenceTransformer, SeedEnsembleClassifier

    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    ens = SeedEnsembleClassifier(n_seeds=4, random_state=0).fit(X, y)
    influence = InfluenceTransformer(ens, curvature="identity",
                                     statistic="wasserstein_smooth").fit(X, y)
    scores = influence.transform(X[:5])
    y_pred = ens.predict(X[:5])
    delta = influence.influence_samples(X[:5], y_pred)
    before = ens.measure(X[:5], y_pred)[:, :, None]
    expected = discrepancy(np.broadcast_to(before, delta.shape), before + delta,
                           "wasserstein_smooth")
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-12)
