"""skdtda.plotting draws the data it is given: checked on the artists, not on pixels."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from skdtda.plotting import (  # noqa: E402
    _gaussian_kde,
    plot_distribution_shift,
    plot_influential_points,
    plot_lds_vs_seeds,
    plot_pruning_curve,
    plot_score_distribution,
    plot_top_influential,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_distribution_shift_hist_counts_every_seed_once():
    rng = np.random.default_rng(0)
    before = rng.normal(size=40)
    after = np.c_[before + 1.0, 2.0 * before]
    ax = plot_distribution_shift(before, after, labels=["shifted", "wider"], bins=10)
    # One histogram (10 bars) per sample, each holding all 40 seeds.
    heights = np.array([p.get_height() for p in ax.patches]).reshape(3, 10)
    np.testing.assert_array_equal(heights.sum(axis=1), [40, 40, 40])
    # The dashed lines sit at the sample means.
    means = [line.get_xdata()[0] for line in ax.get_lines()]
    np.testing.assert_allclose(means, [before.mean(), before.mean() + 1, 2 * before.mean()])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["all rows", "shifted",
                                                                     "wider"]


def test_distribution_shift_kde_is_a_density():
    rng = np.random.default_rng(1)
    before = rng.normal(size=64)
    ax = plot_distribution_shift(before, {"after": before + 3.0}, kind="kde")
    curve = ax.get_lines()[0]
    x, density = curve.get_xdata(), curve.get_ydata()
    # Integrates to ~1 on its own plotting range (which pads the data by 10%).
    assert abs(np.trapezoid(density, x) - 1.0) < 0.05
    # The KDE of the shifted sample is the same curve moved by 3.
    grid = np.linspace(-2, 2, 50)
    np.testing.assert_allclose(_gaussian_kde(before + 3.0, grid + 3.0),
                               _gaussian_kde(before, grid), rtol=1e-12)


def test_kde_bandwidth_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    samples = np.random.default_rng(2).gamma(2.0, size=30)
    grid = np.linspace(0, 8, 40)
    np.testing.assert_allclose(_gaussian_kde(samples, grid),
                               stats.gaussian_kde(samples)(grid), rtol=1e-10)


def test_distribution_shift_rejects_unpaired_samples():
    with pytest.raises(ValueError, match="paired by seed"):
        plot_distribution_shift(np.zeros(8), np.zeros(7))
    with pytest.raises(ValueError, match="kind='violin'"):
        plot_distribution_shift(np.zeros(8), np.zeros(8), kind="violin")


def test_top_influential_shows_the_top_k_images_in_order():
    rng = np.random.default_rng(3)
    images = rng.random((20, 4, 6))
    scores = rng.normal(size=20)
    fig, axes = plot_top_influential(images.reshape(20, -1), scores, k=5, image_shape=(4, 6),
                                     absolute=True, ncols=3)
    expected = np.argsort(-np.abs(scores))[:5]
    assert len(axes) == 5
    for ax, idx in zip(axes, expected):
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), images[idx])
        assert ax.get_title().startswith(f"#{idx}")
    # 2 rows x 3 columns, the sixth cell hidden.
    assert len(fig.axes) == 6 and not fig.axes[5].axison
    fig, axes = plot_top_influential(images, scores, k=2, largest=False)
    assert [int(ax.get_title().split()[0][1:]) for ax in axes] == list(np.argsort(scores)[:2])


def test_top_influential_needs_a_shape_for_non_square_images():
    with pytest.raises(ValueError, match="image_shape"):
        plot_top_influential(np.zeros((3, 10)), np.zeros(3))
    with pytest.raises(ValueError, match="scores has 2 entries"):
        plot_top_influential(np.zeros((3, 4)), np.zeros(2))


def test_influential_points_circles_the_top_rows_once_per_call():
    X = np.c_[np.arange(6.0), np.arange(6.0) ** 2]
    ax = plot_influential_points(X, [0, 5, 1, 4, 2, 3], k=2, label="mean")
    ax = plot_influential_points(X, [9, 0, 0, 0, 0, -10], k=1, absolute=True,
                                 label="wasserstein", ax=ax)
    data, mean, wasserstein = ax.collections
    np.testing.assert_array_equal(np.asarray(data.get_offsets()), X)  # drawn once
    np.testing.assert_array_equal(np.asarray(mean.get_offsets()), X[[1, 3]])
    np.testing.assert_array_equal(np.asarray(wasserstein.get_offsets()), X[[5]])


def test_influential_points_1d_regression_plots_against_y():
    x, y = np.linspace(0, 1, 5), np.array([3.0, 1, 4, 1, 5])
    ax = plot_influential_points(x, np.arange(5.0), y=y, k=1)
    np.testing.assert_array_equal(np.asarray(ax.collections[1].get_offsets()), [[1.0, 5.0]])
    with pytest.raises(ValueError, match="pass y"):
        plot_influential_points(x, np.arange(5.0))


def test_score_distribution_one_histogram_per_statistic():
    scores = np.random.default_rng(4).normal(size=(100, 3))
    ax = plot_score_distribution(scores, labels=["mean", "variance", "wasserstein"],
                                 symlog=True)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mean", "variance",
                                                                     "wasserstein"]
    assert ax.get_xscale() == "symlog"
    with pytest.raises(ValueError, match="2 labels for 3 columns"):
        plot_score_distribution(scores, labels=["a", "b"])


def test_pruning_curve_lines_and_error_bands():
    fractions = [0.0, 0.1, 0.3]
    ax = plot_pruning_curve(fractions, {"mean": [1.0, 0.9, 0.8], "random": [1.0, 1.0, 0.95]},
                            errors={"mean": [0.1, 0.1, 0.1]})
    lines = ax.get_lines()
    np.testing.assert_array_equal(lines[0].get_xdata(), fractions)
    np.testing.assert_array_equal(lines[1].get_ydata(), [1.0, 1.0, 0.95])
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(0.7) and band[:, 1].max() == pytest.approx(1.1)
    with pytest.raises(ValueError, match="'random'"):
        plot_pruning_curve(fractions, {"random": [1.0]})


def test_lds_vs_seeds_with_ceiling_and_bands():
    ax = plot_lds_vs_seeds([1, 2, 8], {"mean": [0.1, 0.2, 0.3], "wasserstein": [0.0, 0.1, 0.4]},
                           ceiling=0.6, ci={"mean": ([0.0, 0.1, 0.2], [0.2, 0.3, 0.4])})
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["mean", "wasserstein", "noise ceiling"]
    np.testing.assert_array_equal(ax.get_lines()[2].get_ydata(), [0.6, 0.6, 0.6])
    assert len(ax.collections) == 1  # a band only for the curve that has one
    with pytest.raises(ValueError, match="ensemble sizes"):
        plot_lds_vs_seeds([1, 2], [0.1])


def test_score_distribution_symlog_bins_cover_every_score_once():
    scores = np.random.default_rng(5).standard_t(1, size=300) * 1e-3
    ax = plot_score_distribution(scores, bins=30, symlog=True)
    counts, edges = np.histogram(scores, bins=30)  # any binning: totals must agree
    heights = ax.patches[0].get_path().vertices[:, 1]
    assert ax.patches[0].get_path().vertices[:, 0].min() == pytest.approx(scores.min())
    assert ax.patches[0].get_path().vertices[:, 0].max() == pytest.approx(scores.max())
    assert heights.max() < counts.max()  # log-spaced bins split the central spike
