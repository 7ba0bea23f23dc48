"""Exact influence on scikit-learn's linear models against leave-one-out retraining.

    OMP_NUM_THREADS=1 python benchmarks/fidelity_sklearn_linear.py [--correction newton]

* ``LogisticRegression(C=0.3)`` on the first 300 rows of breast cancer (scaled),
  every row left out once and retrained by scikit-learn (lbfgs, tol 1e-10),
  20 queries (the last 20 of the 300 rows), measurement = query loss.
* ``Ridge(alpha=2)`` on the first 200 rows of diabetes (scaled), every row
  left out, 15 queries, measurement = query loss, and the prediction (linear
  in the weights, so that one Newton step predicts it exactly).

Both are deterministic, so the ensembles have one member and the "truth" is
exact up to the solver's tolerance. Printed: the Pearson correlation over all
(row, query) pairs between predicted and retrained changes, and the size
ratio ``sum(actual * predicted) / sum(predicted^2)`` (1 = right size; above 1:
the prediction is too small).
"""

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import scale

from skdtda import InfluenceTransformer, SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.evaluation import leave_one_out, retrain_distributions


def loo(estimator, ensemble_class, X, y, X_query, y_query, correction, measurement):
    ens = ensemble_class(estimator, random_state=0).fit(X, y)
    options = {} if correction is None else {"correction": correction}
    tic = time.perf_counter()
    influence = InfluenceTransformer(ens, curvature="exact", damping=0.0, measurement=measurement,
                                     **options).fit(X, y)
    predicted = influence.influence_samples(X_query, y_query)[0].T  # (n_train, n_query)
    seconds = time.perf_counter() - tic
    truth = retrain_distributions(ens, X, y, X_query, y_query, measurement=measurement,
                                  remove=leave_one_out(len(X), np.arange(len(X))))
    actual = truth.after[:, 0, :] - truth.before[0][None, :]
    corr = np.corrcoef(predicted.ravel(), actual.ravel())[0, 1]
    ratio = np.sum(actual * predicted) / np.sum(predicted ** 2)
    worst = np.abs(predicted - actual).max() / np.abs(actual).max()
    return corr, ratio, worst, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--correction", action="append", default=[None],
                        help="also score this correction (repeatable), e.g. newton")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    X, y = load_breast_cancer(return_X_y=True)
    X, y = scale(X[:300]), y[:300]
    Xd, yd = load_diabetes(return_X_y=True)
    Xd, yd = scale(Xd)[:200], scale(yd)[:200]
    cases = [("LogisticRegression(C=0.3), 300 x 20, loss",
              LogisticRegression(C=0.3, tol=1e-10, max_iter=2000), SeedEnsembleClassifier,
              X, y, X[280:], y[280:], "loss"),
             ("Ridge(alpha=2), 200 x 15, loss", Ridge(alpha=2.0), SeedEnsembleRegressor,
              Xd, yd, Xd[:15], yd[:15], "loss"),
             # the prediction is linear in the weights: one Newton step is exact for it
             ("Ridge(alpha=2), 200 x 15, prediction", Ridge(alpha=2.0), SeedEnsembleRegressor,
              Xd, yd, Xd[:15], yd[:15], "prediction")]
    print(f"{'model, measurement':44s} {'correction':>10s} {'corr':>8s} {'size':>7s} "
          f"{'max err':>8s} {'seconds':>8s}")
    for label, estimator, ens_class, Xt, yt, Xq, yq, measurement in cases:
        for correction in args.correction:
            corr, ratio, worst, seconds = loo(estimator, ens_class, Xt, yt, Xq, yq,
                                              correction, measurement)
            print(f"{label:44s} {str(correction):>10s} {corr:8.4f} {ratio:7.3f} "
                  f"{worst:8.1e} {seconds:8.2f}", flush=True)


if __name__ == "__main__":
    main()
