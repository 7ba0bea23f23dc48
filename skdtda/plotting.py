"""Figures for distributional training data attribution (matplotlib, optional).

Every function draws on a given matplotlib ``Axes`` (or a new figure when
``ax=None``) and returns what it drew on, so figures compose and tests can read
the plotted data back. They take plain arrays, not fitted estimators, so they
plot the output of any skdtda method (or of your own retraining).

matplotlib is an optional dependency: ``pip install "skdtda[plot]"``.

Scores follow the convention of every skdtda score: the predicted change of the
measurement when the training row is removed, already divided by the number of
training rows (positive: removing the row raises the measurement).
"""

import numpy as np

__all__ = [
    "plot_distribution_shift",
    "plot_influential_points",
    "plot_lds_vs_seeds",
    "plot_pruning_curve",
    "plot_score_distribution",
    "plot_top_influential",
]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            "skdtda.plotting needs matplotlib; install it with "
            'pip install "skdtda[plot]" (or pip install matplotlib)') from exc
    return plt


def _axes(ax, figsize=None):
    if ax is None:
        _, ax = _pyplot().subplots(figsize=figsize)
    return ax


def _gaussian_kde(samples, grid):
    """Gaussian kernel density with Scott's bandwidth (scipy's default rule)."""
    samples = np.asarray(samples, dtype=float)
    n = len(samples)
    std = samples.std(ddof=1) if n > 1 else 0.0
    # A degenerate sample (all seeds equal) still gets a visible bump.
    bandwidth = std * n ** (-1 / 5) if std > 0 else max(abs(samples[0]), 1.0) * 1e-3
    z = (grid[:, None] - samples[None, :]) / bandwidth
    return np.exp(-0.5 * z ** 2).sum(axis=1) / (n * bandwidth * np.sqrt(2 * np.pi))


def _as_named(values, names, default):
    """A dict of name -> 1-D array from an array, a list of arrays or a dict."""
    if isinstance(values, dict):
        return {str(k): np.asarray(v, dtype=float) for k, v in values.items()}
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"expected a 1-D or 2-D array, got shape {values.shape}")
    if names is None:
        names = ([default] if values.shape[1] == 1
                 else [f"{default} {j}" for j in range(values.shape[1])])
    if len(names) != values.shape[1]:
        raise ValueError(f"got {len(names)} labels for {values.shape[1]} columns")
    return {str(name): values[:, j] for j, name in enumerate(names)}


def plot_distribution_shift(before, after, *, labels=None, kind="hist", bins=15,
                            xlabel="measurement", ax=None):
    """Distribution of a measurement over seeds, before and after removals.

    Parameters
    ----------
    before : array-like of shape (n_seeds,)
        The measurement under each seed of the ensemble trained on all rows
        (e.g. one column of :meth:`~skdtda.InfluenceTransformer.measure`).
    after : array-like of shape (n_seeds,) or (n_seeds, n_removals), or dict
        Samples after each removal (e.g. ``before + delta[:, k]`` or a column
        of :meth:`~skdtda.InfluenceTransformer.predict_removal`), or a dict
        mapping a label to such a sample.
    labels : list of str, default=None
        One label per column of ``after``; ``"after 0"``, ... by default.
    kind : {"hist", "kde"}, default="hist"
        Histograms on shared bins, or Gaussian kernel densities.
    bins : int, default=15
        Number of shared histogram bins (``kind="hist"``).
    xlabel : str, default="measurement"
        Label of the x axis.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None.

    Returns
    -------
    ax : matplotlib Axes
        The axes drawn on. Each sample's mean is marked by a vertical line.

    Examples
    --------
    >>> import numpy as np
    >>> from skdtda.plotting import plot_distribution_shift
    >>> rng = np.random.default_rng(0)
    >>> before = rng.normal(size=32)
    >>> ax = plot_distribution_shift(before, {"without row 3": before + 0.5}, kind="kde")
    >>> [line.get_label() for line in ax.get_lines()[::2]]
    ['all rows', 'without row 3']
    """
    if kind not in ("hist", "kde"):
        raise ValueError(f"kind={kind!r} is not one of 'hist', 'kde'")
    before = np.asarray(before, dtype=float).reshape(-1)
    samples = {"all rows": before}
    named = _as_named(after, labels, "after")
    for name, values in named.items():
        if values.shape != before.shape:
            raise ValueError(f"after sample {name!r} has shape {values.shape}, but before "
                             f"has {before.shape}: they must be paired by seed")
    samples.update(named)
    ax = _axes(ax)
    everything = np.concatenate(list(samples.values()))
    lo, hi = everything.min(), everything.max()
    pad = 0.1 * (hi - lo) if hi > lo else 1.0
    if kind == "hist":
        edges = np.histogram_bin_edges(everything, bins=bins, range=(lo - pad / 2, hi + pad / 2))
        grid = None
    else:
        grid = np.linspace(lo - pad, hi + pad, 200)
    colors = _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, values) in enumerate(samples.items()):
        color = colors[i % len(colors)]
        if kind == "hist":
            ax.hist(values, bins=edges, alpha=0.5, color=color, label=name)
        else:
            ax.plot(grid, _gaussian_kde(values, grid), color=color, label=name)
        ax.axvline(values.mean(), color=color, linestyle="--", linewidth=1,
                   label=f"_{name} mean")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("seeds" if kind == "hist" else "density over seeds")
    ax.legend()
    return ax


def _top_indices(scores, k, largest, absolute):
    scores = np.asarray(scores, dtype=float).reshape(-1)
    key = np.abs(scores) if absolute else scores
    order = np.argsort(-key if largest else key, kind="stable")
    return order[:k], scores


def plot_top_influential(images, scores, k=8, *, image_shape=None, labels=None, largest=True,
                         absolute=False, ncols=None, cmap="gray_r", fig=None):
    """Image grid of the k training examples with the largest (or smallest) scores.

    Parameters
    ----------
    images : array-like of shape (n_train, n_pixels) or (n_train, height, width[, 3])
        The training inputs, as images or flattened images.
    scores : array-like of shape (n_train,)
        One score per training row, e.g. a row of
        :meth:`~skdtda.InfluenceTransformer.transform`.
    k : int, default=8
        Number of examples shown.
    image_shape : tuple of int, default=None
        Shape of one image, needed when ``images`` is flattened and not square.
    labels : array-like of shape (n_train,), default=None
        Class labels, shown in each title.
    largest : bool, default=True
        Show the largest scores (False: the smallest).
    absolute : bool, default=False
        Rank by absolute value.
    ncols : int, default=None
        Columns of the grid; at most 8 by default.
    cmap : str, default="gray_r"
        Colormap for grayscale images.
    fig : matplotlib Figure, default=None
        Where to draw; a new figure when None.

    Returns
    -------
    fig : matplotlib Figure
    axes : ndarray of matplotlib Axes
        One per example shown, in rank order; each carries the training index,
        the label and the score in its title.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from skdtda.plotting import plot_top_influential
    >>> X, y = load_digits(return_X_y=True)
    >>> fig, axes = plot_top_influential(X[:50], np.arange(50.0), k=3, labels=y[:50])
    >>> [ax.get_title().split()[0] for ax in axes]
    ['#49', '#48', '#47']
    """
    images = np.asarray(images)
    n = len(images)
    scores = np.asarray(scores, dtype=float).reshape(-1)
    if len(scores) != n:
        raise ValueError(f"scores has {len(scores)} entries but images has {n} rows")
    if image_shape is None:
        if images.ndim == 2:
            side = int(round(np.sqrt(images.shape[1])))
            if side * side != images.shape[1]:
                raise ValueError(f"images have {images.shape[1]} pixels, not a square; "
                                 "pass image_shape=(height, width)")
            image_shape = (side, side)
        else:
            image_shape = images.shape[1:]
    images = images.reshape((n, *image_shape))
    k = min(int(k), n)
    top, scores = _top_indices(scores, k, largest, absolute)
    ncols = min(k, 8) if ncols is None else int(ncols)
    nrows = -(-k // ncols)
    plt = _pyplot()
    if fig is None:
        fig = plt.figure(figsize=(1.6 * ncols, 1.9 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[k:]:
        ax.set_axis_off()
    for ax, idx in zip(axes, top):
        ax.imshow(images[idx], cmap=cmap if images.ndim == 3 else None)
        label = "" if labels is None else f" ({labels[idx]})"
        ax.set_title(f"#{idx}{label}\n{scores[idx]:+.2e}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes[:k]


def plot_influential_points(X, scores, *, y=None, k=5, largest=True, absolute=False,
                            label="top rows", color="C3", marker="o", ax=None):
    """Training data as a scatter plot, with the k top-scored rows circled and ranked.

    For 2-D inputs the scatter is ``X[:, 0]`` against ``X[:, 1]``; for 1-D
    inputs (regression) it is ``X[:, 0]`` against ``y``.

    Parameters
    ----------
    X : array-like of shape (n_train, 1) or (n_train, 2)
        Training inputs.
    scores : array-like of shape (n_train,)
        One score per training row.
    y : array-like of shape (n_train,), default=None
        Targets, required when ``X`` has one column.
    k : int, default=5
        Number of rows highlighted.
    largest : bool, default=True
        Highlight the largest scores (False: the smallest).
    absolute : bool, default=False
        Rank by absolute value.
    label : str, default="top rows"
        Legend label of the highlighted rows.
    color : str, default="C3"
        Colour of the highlight.
    marker : str, default="o"
        Marker of the highlight (unfilled).
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None. Call again on the same axes to
        compare two statistics (the data are drawn only once per axes).

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from skdtda.plotting import plot_influential_points
    >>> X = np.c_[np.arange(10.0), np.zeros(10)]
    >>> ax = plot_influential_points(X, -np.arange(10.0), k=2, largest=False)
    >>> np.asarray(ax.collections[1].get_offsets())[:, 0].tolist()
    [9.0, 8.0]
    """
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if X.shape[1] == 1:
        if y is None:
            raise ValueError("X has one column: pass y to plot it against")
        points = np.c_[X[:, 0], np.asarray(y, dtype=float).reshape(-1)]
    elif X.shape[1] == 2:
        points = X
    else:
        raise ValueError(f"X must have 1 or 2 columns, got {X.shape[1]}")
    top, _ = _top_indices(scores, min(int(k), len(X)), largest, absolute)
    ax = _axes(ax)
    if not any(c.get_label() == "training rows" for c in ax.collections):
        ax.scatter(points[:, 0], points[:, 1], s=12, color="0.6", label="training rows")
    ax.scatter(points[top, 0], points[top, 1], s=120, facecolors="none", edgecolors=color,
               linewidths=1.8, marker=marker, label=label)
    for rank, idx in enumerate(top, start=1):
        ax.annotate(str(rank), points[idx], xytext=(5, 5), textcoords="offset points",
                    color=color, fontsize=9)
    ax.legend()
    return ax


def _symlog(x, linthresh):
    return np.sign(x) * np.log1p(np.abs(x) / linthresh)


def _symlog_inverse(t, linthresh):
    return np.sign(t) * np.expm1(np.abs(t)) * linthresh


def plot_score_distribution(scores, *, labels=None, bins=50, symlog=False, ax=None):
    """Histogram of influence scores over training rows, one per statistic.

    Parameters
    ----------
    scores : array-like of shape (n_train,) or (n_train, n_statistics), or dict
        Scores, or a dict mapping a statistic's name to its scores.
    labels : list of str, default=None
        One label per column of ``scores``.
    bins : int, default=50
        Histogram bins.
    symlog : bool, default=False
        Symmetric-log x axis, for heavy-tailed scores of either sign.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from skdtda.plotting import plot_score_distribution
    >>> rng = np.random.default_rng(0)
    >>> ax = plot_score_distribution({"mean": rng.normal(size=100),
    ...                               "wasserstein": rng.gamma(1.0, size=100)})
    >>> [text.get_text() for text in ax.get_legend().get_texts()]
    ['mean', 'wasserstein']
    """
    named = _as_named(scores, labels, "scores")
    ax = _axes(ax)
    everything = np.concatenate(list(named.values()))
    if symlog:
        nonzero = np.abs(everything[everything != 0])
        linthresh = float(np.quantile(nonzero, 0.1)) if len(nonzero) else 1.0
        # Bins even in the symlog coordinate, so each looks equally wide on the axis.
        edges = _symlog_inverse(np.linspace(*_symlog(np.array([everything.min(),
                                                                everything.max()]),
                                                     linthresh), bins + 1), linthresh)
    else:
        edges = np.histogram_bin_edges(everything, bins=bins)
    for name, values in named.items():
        ax.hist(values, bins=edges, histtype="step", linewidth=1.5, label=name)
    ax.axvline(0.0, color="0.5", linewidth=0.8)
    if symlog:
        ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_xlabel("score (change of the measurement when the row is removed)")
    ax.set_ylabel("training rows")
    ax.legend()
    return ax


def plot_pruning_curve(fractions, scores_by_method, errors=None, *, xlabel="fraction removed",
                       ylabel="test score", ax=None):
    """Test performance after pruning, against the fraction of training rows removed.

    Parameters
    ----------
    fractions : array-like of shape (n_points,)
        Fractions of the training set removed.
    scores_by_method : dict of str to array-like of shape (n_points,)
        For each selection method (e.g. ``"mean influence"``, ``"random"``),
        the score after retraining at each fraction.
    errors : dict of str to array-like of shape (n_points,), default=None
        Error bar half-widths per method (e.g. the standard error over seeds).
    xlabel, ylabel : str
        Axis labels.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> from skdtda.plotting import plot_pruning_curve
    >>> ax = plot_pruning_curve([0, 0.1, 0.2], {"influence": [0.9, 0.92, 0.91],
    ...                                         "random": [0.9, 0.89, 0.87]})
    >>> ax.get_lines()[1].get_ydata().tolist()
    [0.9, 0.89, 0.87]
    """
    fractions = np.asarray(fractions, dtype=float)
    ax = _axes(ax)
    for name, values in scores_by_method.items():
        values = np.asarray(values, dtype=float)
        if values.shape != fractions.shape:
            raise ValueError(f"method {name!r} has {values.shape} scores for "
                             f"{fractions.shape} fractions")
        err = None if errors is None or name not in errors else np.asarray(errors[name])
        line, = ax.plot(fractions, values, marker="o", label=name)
        if err is not None:
            ax.fill_between(fractions, values - err, values + err, alpha=0.2,
                            color=line.get_color())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    return ax


def plot_lds_vs_seeds(n_seeds, scores, ceiling=None, ci=None, *,
                      ylabel="linear datamodeling score", ax=None):
    """Linear datamodeling score (or any attribution quality) against ensemble size.

    Parameters
    ----------
    n_seeds : array-like of int of shape (n_points,)
        Numbers of seeds in the attributed ensemble.
    scores : array-like of shape (n_points,) or dict of str to such arrays
        The score at each ensemble size, or one curve per method/statistic.
    ceiling : float or array-like of shape (n_points,), default=None
        Noise ceiling (the best score attainable given retraining noise),
        drawn as a dashed line.
    ci : tuple of two array-likes, or dict of str to such tuples, default=None
        Lower and upper confidence bounds per curve, drawn as a band.
    ylabel : str
        Label of the y axis.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> from skdtda.plotting import plot_lds_vs_seeds
    >>> ax = plot_lds_vs_seeds([1, 4, 16], [0.2, 0.35, 0.4], ceiling=0.5,
    ...                        ci=([0.1, 0.3, 0.37], [0.3, 0.4, 0.43]))
    >>> ax.get_xscale(), len(ax.get_lines())
    ('log', 2)
    """
    n_seeds = np.asarray(n_seeds, dtype=float)
    curves = scores if isinstance(scores, dict) else {"score": scores}
    if ci is not None and not isinstance(ci, dict):
        ci = {name: ci for name in curves}
    ax = _axes(ax)
    for name, values in curves.items():
        values = np.asarray(values, dtype=float)
        if values.shape != n_seeds.shape:
            raise ValueError(f"curve {name!r} has {values.shape} scores for "
                             f"{n_seeds.shape} ensemble sizes")
        line, = ax.plot(n_seeds, values, marker="o", label=name)
        if ci is not None and name in ci:
            lower, upper = (np.asarray(b, dtype=float) for b in ci[name])
            ax.fill_between(n_seeds, lower, upper, alpha=0.2, color=line.get_color())
    if ceiling is not None:
        ceiling = np.broadcast_to(np.asarray(ceiling, dtype=float), n_seeds.shape)
        ax.plot(n_seeds, ceiling, color="0.3", linestyle="--", label="noise ceiling")
    ax.set_xscale("log")
    ax.set_xticks(n_seeds, [f"{int(s)}" for s in n_seeds])
    ax.minorticks_off()
    ax.set_xlabel("seeds in the ensemble")
    ax.set_ylabel(ylabel)
    ax.legend()
    return ax
