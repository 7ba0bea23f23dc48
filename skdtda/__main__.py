"""Command line: ``python -m skdtda demo`` (or the ``skdtda`` console script).

The demo runs distributional training data attribution end to end on a dataset
that ships with scikit-learn: it trains a seed ensemble (the distribution of
trained nets), measures a few test losses under every member (the distribution
of a measurement), and ranks training examples by their predicted effect on the
mean, on the variance and on the whole (Wasserstein) of that distribution when
removed. With matplotlib installed it writes a PNG figure and says where.

The per-seed influence is :class:`skdtda.InfluenceTransformer` with its
default curvature. Scores follow the convention of every skdtda score:
the predicted change of the measurement when the example is removed, already
divided by the number of training rows.
"""

import argparse
import logging
import sys
import time

import numpy as np

DATASETS = ("digits", "iris", "breast_cancer", "wine")


def _load(name):
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    X, y = loader(return_X_y=True)
    return X, y


def _rank_table(scores, y_train, top):
    """Rows: rank; columns: one per statistic, ``#row (label) score``."""
    cells = {}
    for name, score in scores.items():
        order = np.argsort(-np.abs(score), kind="stable")[:top]
        cells[name] = [f"#{k} ({y_train[k]}) {score[k]:+.2e}" for k in order]
    width = max(len(c) for column in cells.values() for c in column)
    width = max(width, max(len(name) for name in cells))
    lines = ["  rank | " + " | ".join(f"{name:<{width}}" for name in cells)]
    lines.append("  -----+-" + "-+-".join("-" * width for _ in cells))
    for r in range(top):
        lines.append(f"  {r + 1:>4} | " + " | ".join(f"{cells[name][r]:<{width}}"
                                                    for name in cells))
    return "\n".join(lines)


def _removal_sets(score, before_std, delta, n_train):
    """The top-``k`` rows by ``score`` (largest first), for the smallest ``k`` of 5, 10,
    20, ... (at most a tenth of the rows) whose predicted change of the mean is at
    least half the spread over seeds: a removal whose effect shows."""
    order = np.argsort(-score, kind="stable")
    k = 5
    while k < n_train // 10:
        shift = delta[:, order[:k]].sum(axis=1).mean()
        if abs(shift) >= 0.5 * before_std:
            break
        k *= 2
    return order[:min(k, max(n_train // 10, 1))]


def _figure(path, dataset, query, y_query, before, removals, images, y_train, scores, top):
    """Each statistic's top-k removal: the loss distribution before, predicted after and
    retrained after; and what the top rows are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skdtda.plotting import plot_distribution_shift, plot_top_influential

    fig = plt.figure(figsize=(13, 7 if images is not None else 4.5), layout="constrained")
    upper, lower = (fig.subfigures(2, 1, height_ratios=[1.3, 1]) if images is not None
                    else (fig, None))
    upper.suptitle(f"{dataset}: loss of test row {query} (label {y_query}) over seeds, before "
                   "and after removing each statistic's top rows: predicted, and retrained")
    for ax, (name, (rows, predicted, retrained)) in zip(
            upper.subplots(1, len(removals)), removals.items()):
        plot_distribution_shift(before, {f"predicted without {len(rows)}": predicted,
                                         f"retrained without {len(rows)}": retrained},
                                xlabel="test loss", ax=ax)
        ax.set_title(f"top {len(rows)} rows by {name} influence")
    if lower is not None:
        for sub, (name, score) in zip(lower.subfigures(1, len(scores)), scores.items()):
            plot_top_influential(images, score, k=min(top, 4), labels=y_train, absolute=True,
                                 ncols=min(top, 4), fig=sub)
            sub.suptitle(f"top {min(top, 4)} by |{name}| (label, score)")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def demo(dataset="digits", n_seeds=16, n_queries=3, top=5, random_state=0, verbose=1,
         output_dir=".", plot=True):
    """Fit a seed ensemble, attribute a few test losses, print rankings, save a figure.

    Parameters
    ----------
    dataset : {"digits", "iris", "breast_cancer", "wine"}, default="digits"
        A classification dataset bundled with scikit-learn.
    n_seeds : int, default=16
        Members of the seed ensemble.
    n_queries : int, default=3
        Test rows attributed: those whose loss varies most over seeds.
    top : int, default=5
        Training rows listed per statistic.
    random_state : int, default=0
        Seed of the split and of the ensemble.
    verbose : int, default=1
        Progress bars for training and curvature.
    output_dir : str or path, default="."
        Folder of the PNG figure (created if missing).
    plot : bool, default=True
        Write the figure (needs matplotlib).

    Returns
    -------
    ens : SeedEnsembleClassifier
        The fitted ensemble.
    delta : ndarray of shape (n_seeds, n_queries, n_train)
        Per-seed predicted change of each query's loss when each training row
        is removed (already divided by N; positive: removing it raises the loss).
    figure : pathlib.Path or None
        Where the figure was written.
    """
    from pathlib import Path

    from sklearn.base import clone
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from skdtda import InfluenceTransformer, SeedEnsembleClassifier
    from skdtda.discrepancy import discrepancy

    X_raw, y = _load(dataset)
    X_train, X_test, y_train, y_test = train_test_split(
        X_raw, y, test_size=0.25, stratify=y, random_state=random_state)
    images = X_train.reshape(-1, 8, 8) if dataset == "digits" else None
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    print(f"dataset {dataset}: {len(X_train)} training rows, {len(X_test)} test rows, "
          f"{X_raw.shape[1]} features, {len(np.unique(y))} classes")

    tic = time.perf_counter()
    ens = SeedEnsembleClassifier(n_seeds=n_seeds, random_state=random_state, verbose=verbose)
    ens.fit(X_train, y_train)
    path = "batched" if ens.vectorized_ else "loop"
    member_acc = np.mean(ens.predict_members(X_test) == y_test, axis=1)
    print(f"trained {n_seeds} seeds ({path} path) in {time.perf_counter() - tic:.1f} s; "
          f"ensemble test accuracy {ens.score(X_test, y_test):.3f}, members "
          f"{member_acc.min():.3f}-{member_acc.max():.3f}")

    # The queries whose loss varies most over seeds: where the distribution matters.
    losses = ens.measure(X_test, y_test, "loss")
    queries = np.argsort(-losses.std(axis=0))[:n_queries]
    tic = time.perf_counter()
    # damping="auto" calibrates its damping on a small retraining where that is cheap; a
    # budget of at least 8 removal sets of 4 seeds, whatever n_seeds, so that it can. It
    # measures test rows (40 at most), the kind of row asked about here.
    influence = InfluenceTransformer(ens, calibration_budget=max(3.0, 36 / n_seeds),
                                     verbose=verbose).fit(X_train, y_train, X_query=X_test,
                                                          y_query=y_test)
    delta = influence.influence_samples(X_test[queries], y_test[queries])
    print(f"per-seed influence ({influence.curvature_} curvature, damping "
          f"{influence.damping_:.3g}) of {len(X_train)} training rows on {n_queries} test "
          f"losses in {time.perf_counter() - tic:.1f} s")
    fidelity = influence.fidelity_
    if fidelity is not None:
        low, high = fidelity.interval
        small_low, small_high = fidelity.small_sets_interval
        print(f"fidelity, against a retraining of {fidelity.n_sets + fidelity.n_small_sets} "
              f"random removal sets with {fidelity.n_seeds} seeds (1 is perfect):\n"
              f"  removals of 30% of the rows: LDS of the mean loss {fidelity.lds:.2f} "
              f"[{low:.2f}, {high:.2f}]\n  removals of 5%: correlation of the change of the "
              f"mean loss {fidelity.small_sets:.2f} [{small_low:.2f}, {small_high:.2f}]\n"
              f"  (measured on {fidelity.n_queries} test rows; 95% intervals over them)")
    else:
        print("fidelity: not measured (the calibration's retraining was not affordable here; "
              "see the log)")
    first = None
    for q, query in enumerate(queries):
        m = losses[:, query]
        print(f"\ntest row {query} (label {y_test[query]}): loss over {n_seeds} seeds "
              f"mean {m.mean():.3f}, std {m.std():.3f}, range [{m.min():.3f}, {m.max():.3f}]")
        before = np.repeat(m[:, None], delta.shape[2], axis=1)
        after = before + delta[:, q, :]
        scores = {name: discrepancy(before, after, name)
                  for name in ("mean", "variance", "wasserstein")}
        print(f"  most influential training rows by |score| under each statistic "
              f"(#row (label) score):\n{_rank_table(scores, y_train, top)}")
        if first is None:
            first = (query, m, delta[:, q, :], scores)
    print("\nscores: mean / variance = predicted change of that statistic of the test loss "
          "over seeds when the row is\nremoved (positive: removing it raises it); "
          "wasserstein = W2 distance between the loss distributions\nbefore and after.")

    # The check the scores are for: remove each statistic's top rows and retrain.
    query, m, query_delta, scores = first
    removals = {}
    print(f"\ntest row {query}: removing each statistic's top rows, predicted against "
          f"retrained ({n_seeds} seeds, the same seeds)")
    for name in ("mean", "variance"):  # a set of top W2 rows moves the loss both ways
        score = scores[name]
        rows = _removal_sets(score, m.std(), query_delta, len(X_train))
        predicted = m + query_delta[:, rows].sum(axis=1)
        keep = np.setdiff1d(np.arange(len(X_train)), rows)
        retrained = clone(ens).set_params(verbose=0).fit(X_train[keep], y_train[keep]).measure(
            X_test[[query]], y_test[[query]], "loss")[:, 0]
        removals[name] = (rows, predicted, retrained)
        print(f"  top {len(rows):>3} by {name:<11s} mean {m.mean():.3f} -> predicted "
              f"{predicted.mean():.3f}, retrained {retrained.mean():.3f};  std {m.std():.3f} "
              f"-> predicted {predicted.std():.3f}, retrained {retrained.std():.3f}")

    figure = None
    if plot and first is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print('\nno figure: matplotlib is not installed (pip install "skdtda[plot]")')
        else:
            folder = Path(output_dir)
            folder.mkdir(parents=True, exist_ok=True)
            figure = (folder / f"skdtda_demo_{dataset}.png").resolve()
            _figure(figure, dataset, query, y_test[query], m, removals, images, y_train,
                    scores, top)
            print(f"\nfigure written to {figure}")
    return ens, delta, figure


def main(argv=None):
    """Entry point of ``python -m skdtda`` and of the ``skdtda`` console script."""
    parser = argparse.ArgumentParser(
        prog="skdtda", description="skdtda: distributional training data attribution")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "demo", help="end-to-end distributional attribution demo",
        description="Train a seed ensemble on a scikit-learn dataset, attribute the test "
                    "losses that vary most over seeds, print the most influential training "
                    "rows under mean, variance and Wasserstein influence, and write a PNG.")
    run.add_argument("--dataset", choices=DATASETS, default="digits",
                     help="a dataset bundled with scikit-learn (digits)")
    run.add_argument("--n-seeds", type=int, default=16, help="seeds in the ensemble (16)")
    run.add_argument("--queries", type=int, default=3, help="test rows to attribute (3)")
    run.add_argument("--top", type=int, default=5, help="training rows listed per statistic (5)")
    run.add_argument("--output-dir", default=".", help="folder of the PNG figure (current)")
    run.add_argument("--no-plot", action="store_true", help="do not write the figure")
    run.add_argument("--random-state", type=int, default=0,
                     help="seed of the split and of the ensemble (0)")
    run.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    args = parser.parse_args(argv)
    if args.n_seeds < 1:
        parser.error(f"--n-seeds={args.n_seeds} must be at least 1")
    if args.queries < 1 or args.top < 1:
        parser.error("--queries and --top must be at least 1")
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    demo(args.dataset, n_seeds=args.n_seeds, n_queries=args.queries, top=args.top,
         random_state=args.random_state, verbose=0 if args.quiet else 1,
         output_dir=args.output_dir, plot=not args.no_plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
