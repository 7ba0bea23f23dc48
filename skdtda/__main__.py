"""Command line: ``python -m skdtda demo`` (or the ``skdtda`` console script).

The demo runs distributional training data attribution end to end on a dataset
that ships with scikit-learn: it trains a seed ensemble (the distribution of
trained nets), measures a few test losses under every member (the distribution
of a measurement), and ranks training examples by their predicted effect on the
mean and on the variance of that distribution when removed.

Until the full ``InfluenceTransformer`` lands, the per-seed influence here is
the influence function restricted to the output layer, with that layer's exact
Hessian: for a softmax output layer on fixed features it is exact to first
order for that layer's response. Scores follow the convention of every
skdtda score: the predicted change of the measurement when the example is
removed, already divided by the number of training rows.
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


def output_layer_influence(ensemble, X_train, y_train, X_query, y_query, damping=1e-3):
    """Per-seed influence of each training row on each query loss, output layer only.

    Parameters
    ----------
    ensemble : SeedEnsembleClassifier
        Fitted on ``(X_train, y_train)``, with :class:`skdtda.nets.MLP` members
        trained with cross-entropy.
    X_train, y_train : ndarray
        The training data the ensemble was fitted on.
    X_query, y_query : ndarray
        Query points and their labels.
    damping : float, default=1e-3
        Added to the Hessian's diagonal.

    Returns
    -------
    delta : ndarray of shape (n_seeds, n_query, n_train)
        Predicted change of each query's loss when each training row is
        removed (positive: removal raises the loss, so the row was helping).
    """
    import torch

    deltas = []
    X_train = ensemble._validate_X(X_train)
    X_query = ensemble._validate_X(X_query)
    y_train = ensemble._net_targets(y_train)
    y_query = ensemble._net_targets(y_query)
    for member in ensemble.estimators_:
        module = member.module_
        body, head = torch.nn.Sequential(*list(module)[:-1]), module[-1]
        weight_decay = member.get_params_for("optimizer").get("weight_decay", 0.0)
        with torch.no_grad():
            grads = []
            for X, y in ((X_train, y_train), (X_query, y_query)):
                features = body(torch.as_tensor(X))
                features = torch.cat([features, torch.ones(len(X), 1)], dim=1)
                proba = torch.softmax(head(features[:, :-1]), dim=1)
                residual = proba - torch.nn.functional.one_hot(torch.as_tensor(y),
                                                               proba.shape[1])
                # d loss / d (W, b) per sample, flattened as (class, feature)
                grads.append((residual[:, :, None] * features[:, None, :]).flatten(1))
                if len(grads) == 1:
                    cov = torch.diag_embed(proba) - proba[:, :, None] * proba[:, None, :]
                    hessian = torch.einsum("nab,ni,nj->aibj", cov, features, features)
                    size = hessian.shape[0] * hessian.shape[1]
                    hessian = hessian.reshape(size, size) / len(X)
            g_train, g_query = grads
            hessian += (damping + weight_decay) * torch.eye(len(hessian), dtype=hessian.dtype)
            solved = torch.linalg.solve(hessian, g_train.T)
            deltas.append((g_query @ solved / len(X_train)).numpy())
    return np.stack(deltas).astype(np.float64)


def demo(dataset="digits", n_seeds=16, n_queries=3, top=5, random_state=0, verbose=1):
    """Fit a seed ensemble, measure test losses over seeds, rank training rows."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from skdtda import SeedEnsembleClassifier

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
    delta = output_layer_influence(ens, X_train, y_train, X_test[queries], y_test[queries])
    for q, query in enumerate(queries):
        m = losses[:, query]
        print(f"\ntest row {query} (label {y_test[query]}): loss over {n_seeds} seeds "
              f"mean {m.mean():.3f}, std {m.std():.3f}, range [{m.min():.3f}, {m.max():.3f}]")
        after = m[:, None] + delta[:, q, :]
        scores = {
            "mean": after.mean(axis=0) - m.mean(),
            "variance": after.var(axis=0) - m.var(),
        }
        for name, score in scores.items():
            order = np.argsort(-np.abs(score))[:top]
            rows = ", ".join(f"#{k} (label {y_train[k]}, {score[k]:+.2e})" for k in order)
            print(f"  most influential on the {name:8s}: {rows}")
    print("\nScores: predicted change of the statistic of the query loss when the training "
          "row is removed\n(positive: removing it raises the loss statistic). Influence "
          "here is per seed, output layer, exact Hessian.")
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
