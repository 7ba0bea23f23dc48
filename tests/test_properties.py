"""Properties that hold for every input: the discrepancies and the removal sets.

Drawn by hypothesis. Samples on a grid of multiples of 1/8 keep sums, shifts
and power-of-two scalings exact in float64, so order-based statistics (KS,
quantiles, sorting for Wasserstein) can be compared exactly; moments get a
tolerance tied to the samples' scale.
"""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import ks_2samp, wasserstein_distance
from sklearn.datasets import load_iris
from sklearn.preprocessing import scale
from skorch import NeuralNetClassifier

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.discrepancy import STATISTICS, discrepancy
from skdtda.evaluation import (leave_one_out, predict_distributions, random_subsets,
                               removal_masks)
from skdtda.nets import MLP

FAST = settings(max_examples=50, deadline=None)

ORDER_FREE = ("mean", "variance", "std", "wasserstein", "ks", "quantile")  # ignore pairing


@st.composite
def paired(draw, min_seeds=1, max_seeds=12, columns=False):
    """(before, after) of shape (S,) or (S, k): multiples of 1/8 in [-50, 50]."""
    n_seeds = draw(st.integers(min_seeds, max_seeds))
    shape = (n_seeds, draw(st.integers(1, 3))) if columns else (n_seeds,)
    grid = hnp.arrays(np.int64, shape, elements=st.integers(-400, 400))
    return draw(grid) / 8.0, draw(grid) / 8.0


def _scale(*arrays):
    return max(1.0, *(np.abs(a).max() for a in arrays))


quantiles = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
shifts = st.integers(-80, 80).map(lambda i: i / 8.0)
powers_of_two = st.sampled_from([0.25, 0.5, 2.0, 4.0])


# -- the discrepancies --------------------------------------------------------------------

@FAST
@given(paired(), st.sampled_from(STATISTICS), quantiles)
def test_no_change_is_zero(samples, statistic, q):
    before, _ = samples
    assert discrepancy(before, before.copy(), statistic, q=q) == 0.0


@FAST
@given(paired(), shifts, quantiles)
def test_a_shift_moves_location_and_nothing_else(samples, c, q):
    before, _ = samples
    after = before + c  # exact on the grid
    tol = 1e-12 * _scale(before, after) ** 2
    assert discrepancy(before, after, "mean") == pytest.approx(c, abs=tol)
    assert discrepancy(before, after, "quantile", q=q) == pytest.approx(c, abs=tol)
    assert discrepancy(before, after, "wasserstein") == pytest.approx(abs(c), abs=tol)
    assert discrepancy(before, after, "variance") == pytest.approx(0.0, abs=tol)
    assert discrepancy(before, after, "std") == pytest.approx(0.0, abs=1e-6 * _scale(before))


@FAST
@given(paired(), shifts)
def test_a_common_shift_changes_no_discrepancy_but_the_flip(samples, c):
    before, after = samples
    tol = 1e-12 * _scale(before, after, before + c) ** 2
    for statistic in ORDER_FREE:
        assert discrepancy(before + c, after + c, statistic) == pytest.approx(
            discrepancy(before, after, statistic), abs=tol)
    assert discrepancy(before + c, after + c, "ks") == discrepancy(before, after, "ks")


@FAST
@given(paired(), powers_of_two, st.booleans(), quantiles)
def test_scaling(samples, a, negative, q):
    before, after = samples
    a = -a if negative else a
    tol = 1e-10 * (abs(a) + 1) ** 2 * _scale(before, after) ** 2
    scaled = (a * before, a * after)  # exact: a is a power of two
    assert discrepancy(*scaled, "mean") == pytest.approx(a * discrepancy(before, after, "mean"),
                                                         abs=tol)
    assert discrepancy(*scaled, "variance") == pytest.approx(
        a * a * discrepancy(before, after, "variance"), abs=tol)
    assert discrepancy(*scaled, "std") == pytest.approx(
        abs(a) * discrepancy(before, after, "std"), abs=tol)
    assert discrepancy(*scaled, "wasserstein") == pytest.approx(
        abs(a) * discrepancy(before, after, "wasserstein"), abs=tol)
    # KS only sees the order, and a reflection keeps |F_after - F_before| at the jumps
    assert discrepancy(*scaled, "ks") == discrepancy(before, after, "ks")
    # a reflection swaps the quantile levels: quantile(-x, q) = -quantile(x, 1 - q)
    expected = (a * discrepancy(before, after, "quantile", q=q) if a > 0
                else a * discrepancy(before, after, "quantile", q=1 - q))
    assert discrepancy(*scaled, "quantile", q=q) == pytest.approx(expected, abs=tol)


@FAST
@given(paired(), quantiles)
def test_swapping_before_and_after(samples, q):
    before, after = samples
    tol = 1e-12 * _scale(before, after) ** 2
    for statistic in ("wasserstein", "ks", "flip"):  # symmetric
        assert discrepancy(after, before, statistic) == discrepancy(before, after, statistic)
    for statistic in ("mean", "variance", "std"):  # antisymmetric
        assert discrepancy(after, before, statistic) == pytest.approx(
            -discrepancy(before, after, statistic), abs=tol)
    assert discrepancy(after, before, "quantile", q=q) == pytest.approx(
        -discrepancy(before, after, "quantile", q=q), abs=tol)


@FAST
@given(paired(), quantiles)
def test_raising_every_seed_raises_mean_and_quantiles(samples, q):
    before, increase = samples
    after = before + np.abs(increase)
    lower = before - np.abs(increase)
    # sums of grid values are exact; interpolated quantiles may round by an ulp
    tol = 1e-12 * _scale(before, after, lower)
    assert discrepancy(before, after, "mean") >= 0
    assert discrepancy(before, after, "quantile", q=q) >= -tol
    assert discrepancy(before, lower, "mean") <= 0
    assert discrepancy(before, lower, "quantile", q=q) <= tol
    if np.any(increase != 0):
        assert discrepancy(before, after, "mean") > 0


@FAST
@given(paired(), st.randoms(use_true_random=False))
def test_the_order_free_statistics_ignore_the_pairing(samples, random):
    before, after = samples
    shuffled = after[np.asarray(random.sample(range(len(after)), len(after)))]
    tol = 1e-12 * _scale(before, after) ** 2
    for statistic in ORDER_FREE:
        assert discrepancy(before, shuffled, statistic) == pytest.approx(
            discrepancy(before, after, statistic), abs=tol)


@FAST
@given(paired())
def test_ks_is_scipys_two_sample_statistic(samples):
    before, after = samples
    with warnings.catch_warnings():
        # only the statistic is compared; scipy's p-value of one or two seeds warns
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = ks_2samp(after, before).statistic
    assert discrepancy(before, after, "ks") == pytest.approx(expected, abs=1e-15)


@FAST
@given(paired())
def test_ks_and_flip_are_fractions_of_seeds(samples):
    before, after = samples
    n_seeds = len(before)
    for statistic in ("ks", "flip"):
        value = discrepancy(before, after, statistic)
        assert 0 <= value <= 1
        assert value * n_seeds == pytest.approx(round(value * n_seeds), abs=1e-9)


@FAST
@given(paired())
def test_wasserstein_2_against_scipys_wasserstein_1(samples):
    """scipy's wasserstein_distance is W1: with equal weights the same sorted pairing
    gives W1 = mean |d| <= W2 = sqrt(mean d^2) <= max |d|."""
    before, after = samples
    w2 = discrepancy(before, after, "wasserstein")
    w1 = wasserstein_distance(after, before)
    d = np.sort(after) - np.sort(before)
    assert w1 == pytest.approx(np.mean(np.abs(d)), abs=1e-9 * _scale(d))
    assert w1 <= w2 * (1 + 1e-12) + 1e-12
    assert w2 <= np.abs(d).max() * (1 + 1e-12) + 1e-12
    assert w2 == pytest.approx(np.sqrt(np.mean(d * d)), abs=1e-12 * _scale(d))
    if np.all(d == d[0]):  # a pure shift: every Wasserstein distance is the shift
        assert w2 == pytest.approx(w1, abs=1e-12 * _scale(d))


@FAST
@given(paired(), quantiles)
def test_moments_and_quantiles_agree_with_numpy(samples, q):
    before, after = samples
    assert discrepancy(before, after, "mean") == pytest.approx(after.mean() - before.mean(),
                                                               abs=1e-12 * _scale(before, after))
    assert discrepancy(before, after, "variance") == pytest.approx(
        np.var(after) - np.var(before), abs=1e-10 * _scale(before, after) ** 2)
    assert discrepancy(before, after, "quantile", q=q) == pytest.approx(
        np.quantile(after, q) - np.quantile(before, q), abs=1e-12 * _scale(before, after))
    assert discrepancy(before, after, "flip") == np.mean((before > 0) != (after > 0))


@FAST
@given(paired(columns=True), st.sampled_from(STATISTICS), quantiles)
def test_columns_are_independent(samples, statistic, q):
    before, after = samples
    together = discrepancy(before, after, statistic, q=q)
    assert together.shape == before.shape[1:]
    tol = 1e-12 * _scale(before, after) ** 2
    for k in range(before.shape[1]):
        assert together[k] == pytest.approx(discrepancy(before[:, k], after[:, k], statistic,
                                                        q=q), abs=tol)


# -- removal sets ------------------------------------------------------------------------

@st.composite
def index_sets(draw, max_train=30, max_sets=6):
    """(n_train, list of index arrays), no set removing every row."""
    n_train = draw(st.integers(2, max_train))
    sets = draw(st.lists(st.lists(st.integers(0, n_train - 1), max_size=n_train),
                         min_size=1, max_size=max_sets))
    assume(all(len(set(s)) < n_train for s in sets))
    return n_train, [np.asarray(s, dtype=int) for s in sets]


@FAST
@given(index_sets())
def test_removal_masks_index_lists_and_boolean_matrices_agree(drawn):
    n_train, sets = drawn
    masks = removal_masks(sets, n_train)
    assert masks.dtype == bool and masks.shape == (len(sets), n_train)
    for mask, rows in zip(masks, sets):
        np.testing.assert_array_equal(np.flatnonzero(mask), np.unique(rows))
    np.testing.assert_array_equal(removal_masks(masks, n_train), masks)  # a fixed point
    np.testing.assert_array_equal(removal_masks([np.flatnonzero(m) for m in masks], n_train),
                                  masks)
    # the order of a set's rows and repeats do not matter
    np.testing.assert_array_equal(removal_masks([s[::-1] for s in sets] + [np.tile(sets[0], 2)],
                                                n_train), np.vstack([masks, masks[:1]]))


@FAST
@given(st.integers(2, 60), st.integers(1, 8), st.floats(0.05, 0.95), st.integers(0, 2**31 - 1))
def test_random_subsets_remove_the_same_number_of_distinct_rows(n_train, n_sets, keep, seed):
    n_remove = n_train - int(round(keep * n_train))
    assume(0 < n_remove < n_train)
    remove = random_subsets(n_train, n_sets, keep_fraction=keep, random_state=seed)
    assert remove.shape == (n_sets, n_train) and remove.dtype == bool
    assert (remove.sum(axis=1) == n_remove).all()
    np.testing.assert_array_equal(remove, random_subsets(n_train, n_sets, keep_fraction=keep,
                                                         random_state=seed))
    np.testing.assert_array_equal(removal_masks(remove, n_train), remove)


@FAST
@given(st.integers(2, 40).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.integers(0, n - 1), min_size=1, max_size=10))))
def test_leave_one_out_removes_exactly_each_row(drawn):
    n_train, rows = drawn
    remove = leave_one_out(n_train, rows)
    assert remove.shape == (len(rows), n_train)
    assert (remove.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(remove.argmax(axis=1), rows)
    np.testing.assert_array_equal(remove, removal_masks([[r] for r in rows], n_train))


# -- predict_removal on a tiny fitted model -----------------------------------------------

N_TRAIN = 30


@pytest.fixture(scope="module")
def fitted():
    X, y = load_iris(return_X_y=True)
    rows = np.random.RandomState(1).permutation(len(X))[:N_TRAIN]
    X, y = scale(X[rows]), y[rows]
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(4,),
                              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                              lr=0.1, max_epochs=3, batch_size=10, train_split=None, verbose=0)
    ens = SeedEnsembleClassifier(net, n_seeds=3, random_state=0).fit(X, y)
    influence = InfluenceTransformer(ens, curvature="ggn").fit(X, y)
    queries = X[:4], y[:4]
    return (influence, queries, influence.measure(*queries),
            influence.influence_samples(*queries))


subsets = st.lists(st.integers(0, N_TRAIN - 1), max_size=N_TRAIN - 1, unique=True)


@FAST
@given(subsets)
def test_predict_removal_of_indices_equals_that_of_the_mask(fitted, rows):
    influence, queries, before, delta = fitted
    mask = np.zeros(N_TRAIN, dtype=bool)
    mask[rows] = True
    by_index = influence.predict_removal(*queries, remove=rows)
    np.testing.assert_allclose(influence.predict_removal(*queries, remove=mask), by_index,
                               rtol=0, atol=1e-12)
    # repeats and order within the set do not count twice
    np.testing.assert_allclose(influence.predict_removal(*queries, remove=rows[::-1] + rows),
                               by_index, rtol=0, atol=1e-12)
    # first order: the measurement plus the per-row changes of the removed rows
    np.testing.assert_allclose(by_index, before + delta[:, :, rows].sum(axis=2), rtol=1e-10,
                               atol=1e-12)


@FAST
@given(st.lists(st.integers(0, 2), min_size=N_TRAIN, max_size=N_TRAIN))
def test_removals_of_disjoint_sets_add_up(fitted, labels):
    """Removing A and B together shifts the samples by the sum of their shifts."""
    influence, queries, before, _ = fitted
    labels = np.asarray(labels)
    a, b = np.flatnonzero(labels == 1), np.flatnonzero(labels == 2)
    assume(len(a) + len(b) < N_TRAIN)
    shift_a = influence.predict_removal(*queries, remove=a) - before
    shift_b = influence.predict_removal(*queries, remove=b) - before
    both = influence.predict_removal(*queries, remove=np.concatenate([a, b])) - before
    np.testing.assert_allclose(both, shift_a + shift_b, rtol=1e-9, atol=1e-12)


@FAST
@given(st.lists(subsets, min_size=1, max_size=4))
def test_predict_distributions_is_predict_removal_per_set(fitted, sets):
    influence, queries, before, _ = fitted
    remove = removal_masks(sets, N_TRAIN)
    predicted = predict_distributions(influence, *queries, remove=remove)
    np.testing.assert_allclose(predicted.before, before, rtol=0, atol=1e-12)
    for after, mask in zip(predicted.after, remove):
        np.testing.assert_allclose(after, influence.predict_removal(*queries, remove=mask),
                                   rtol=1e-10, atol=1e-12)
