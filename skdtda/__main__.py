"""Command line: ``python -m skdtda demo`` (or the ``skdtda`` console script).

The demo runs distributional training data attribution end to end on a dataset
that ships with scikit-learn: it trains a seed ensemble (the distribution of
trained nets), measures a few test losses under every member (the distribution
of a measurement), and ranks training examples by their predicted effect on the
mean and on the variance of that distribution when removed.

The per-seed influence is :class:`skdtda.InfluenceTransformer` with its
default EK-FAC curvature. Scores follow the convention of every skdtda score:
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


def demo(dataset="digits", n_seeds=16, n_queries=3, top=5, random_state=0, verbose=1):
    """Fit a seed ensemble, measure test losses over seeds, rank training rows."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from skdtda import InfluenceTransformer, SeedEnsembleClassifier
    from skdtda.discrepancy import discrepancy

    X, y = _load(dataset)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=random_state)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    print(f"dataset {dataset}: {len(X_train)} training rows, {len(X_test)} test rows, "
          f"{X.shape[1]} features, {len(np.unique(y))} classes")

    tic = time.perf_counter()
    ens = SeedEnsembleClassifier(n_seeds=n_seeds, random_state=random_state, verbose=verbose)
    ens.fit(X_train, y_train)
    path = "batched" if ens.vectorized_ else "loop"
    print(f"trained {n_seeds} seeds ({path} path) in {time.perf_counter() - tic:.1f} s; "
          f"ensemble test accuracy {ens.score(X_test, y_test):.3f}, members "
          f"{np.mean(ens.predict_members(X_test) == y_test, axis=1).min():.3f}-"
          f"{np.mean(ens.predict_members(X_test) == y_test, axis=1).max():.3f}")

    # The queries whose loss varies most over seeds: where the distribution matters.
    losses = ens.measure(X_test, y_test, "loss")
    queries = np.argsort(-losses.std(axis=0))[:n_queries]
    tic = time.perf_counter()
    influence = InfluenceTransformer(ens, verbose=verbose).fit(X_train, y_train)
    delta = influence.influence_samples(X_test[queries], y_test[queries])
    print(f"per-seed influence ({influence.curvature}, damping {influence.damping}) of "
          f"{len(X_train)} training rows on {n_queries} test losses in "
          f"{time.perf_counter() - tic:.1f} s")
    for q, query in enumerate(queries):
        m = losses[:, query]
        print(f"\ntest row {query} (label {y_test[query]}): loss over {n_seeds} seeds "
              f"mean {m.mean():.3f}, std {m.std():.3f}, range [{m.min():.3f}, {m.max():.3f}]")
        before = np.repeat(m[:, None], delta.shape[2], axis=1)
        for name in ("mean", "variance", "wasserstein"):
            score = discrepancy(before, before + delta[:, q, :], name)
            order = np.argsort(-np.abs(score))[:top]
            rows = ", ".join(f"#{k} (label {y_train[k]}, {score[k]:+.2e})" for k in order)
            print(f"  most influential on the {name:11s}: {rows}")
    print("\nmean/variance: predicted change of that statistic of the query loss over seeds "
          "when the row is removed\n(positive: removing it raises it); wasserstein: W2 "
          "distance between the loss distributions before and after.")
    return ens, delta


def main(argv=None):
    parser = argparse.ArgumentParser(prog="skdtda", description="skdtda command line")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("demo", help="end-to-end distributional attribution demo")
    run.add_argument("--dataset", choices=DATASETS, default="digits")
    run.add_argument("--n-seeds", type=int, default=16)
    run.add_argument("--queries", type=int, default=3, help="number of test rows to attribute")
    run.add_argument("--top", type=int, default=5, help="training rows listed per statistic")
    run.add_argument("--random-state", type=int, default=0)
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    demo(args.dataset, n_seeds=args.n_seeds, n_queries=args.queries, top=args.top,
         random_state=args.random_state, verbose=0 if args.quiet else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
