"""What holding the preprocessing fixed costs: mean-LDS against two retraining truths.

    OMP_NUM_THREADS=1 python benchmarks/preprocessing_fidelity.py [--n-sets 40] [--n-seeds 8]

Attribution of a ``Pipeline`` holds the steps before the seed ensemble fixed: a
scaler's means, a TF-IDF's vocabulary and document frequencies stay those of
all training rows. Retraining without a set of rows refits them too
(``retrain_distributions(..., preprocessing="refit")``, the default), so the
scores are graded against a truth that moves in a way they do not model.
``preprocessing="fixed"`` retrains the ensemble behind the fixed steps: the
truth attribution assumes. The difference between the two LDS values is the
fidelity cost of the fixed preprocessing.

Two pipelines, each attributed once (``InfluenceTransformer`` with its
defaults, ``statistic="mean"``) and scored against both truths (the same
removal sets, the same seeds):

* ``StandardScaler`` + MLP (30-16-2) on breast cancer, unscaled (areas in the
  hundreds to thousands, so the scaler's statistics move with the rows);
  300 training rows, 40 queries.
* ``TfidfVectorizer(min_df=2)`` + MLP (vocabulary-16-k) on a generated corpus
  (no download: four topics, each with its own words, and words shared by all),
  300 training documents, 40 queries; the TF-IDF features are CSR throughout.

For each, two removal sizes (``keep_fraction`` 0.9 and 0.5). Printed per row:
the ensemble's query accuracy, the number of features, the share of removal
sets whose refitted steps give another number of features (words lost from the
vocabulary), mean-LDS against each truth with its 95% bootstrap interval over
queries, their difference (paired by query, with its interval), each
truth's noise ceiling, and the LDS of the fixed truth's changes as a prediction
of the refit truth's (how far apart the two truths are, at the seeds used).
"""

import argparse
import time
import warnings

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda._inputs import take_rows
from skdtda.evaluation import (distribution_change, lds, predict_distributions,
                               random_subsets, retrain_distributions, score_report)
from skdtda.nets import MLP

N_TRAIN, N_QUERY = 300, 40


def _ensemble(n_seeds, epochs):
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(16,),
                              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                              optimizer__momentum=0.9, lr=0.02, max_epochs=epochs,
                              batch_size=32, train_split=None, verbose=0)
    return SeedEnsembleClassifier(net, n_seeds=n_seeds, random_state=0)


def tabular():
    X, y = load_breast_cancer(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(X))
    train, query = order[:N_TRAIN], order[N_TRAIN:N_TRAIN + N_QUERY]
    return X[train], y[train], X[query], y[query]


def corpus(n_docs, random_state=0):
    """Documents of four topics: 6-12 words from the topic's own 30, 4-8 from 60
    shared ones, and now and then a word of another topic."""
    rng = np.random.RandomState(random_state)
    topics = [[f"{name}{i}" for i in range(30)] for name in ("sport", "space", "food", "code")]
    shared = [f"common{i}" for i in range(60)]
    docs, labels = [], rng.randint(len(topics), size=n_docs)
    for label in labels:
        words = list(rng.choice(topics[label], rng.randint(6, 13)))
        words += list(rng.choice(shared, rng.randint(4, 9)))
        if rng.rand() < 0.3:
            other = rng.choice([t for t in range(len(topics)) if t != label])
            words += list(rng.choice(topics[other], 2))
        docs.append(" ".join(rng.permutation(words)))
    return docs, labels


def text():
    docs, y = corpus(N_TRAIN + N_QUERY)
    return docs[:N_TRAIN], y[:N_TRAIN], docs[N_TRAIN:], y[N_TRAIN:]


def run(label, pipe, data, keep_fraction, n_sets):
    X, y, X_query, y_query = data
    remove = random_subsets(len(y), n_sets, keep_fraction=keep_fraction, random_state=1)
    tic = time.perf_counter()
    influence = InfluenceTransformer(pipe).fit(X, y)
    predicted = predict_distributions(influence, X_query, y_query, remove=remove)
    attribution = time.perf_counter() - tic
    accuracy = influence.estimator_.score(influence.preprocessor_.transform(X_query), y_query)
    # a refitted TF-IDF may lose words that only removed rows had: the nets' inputs change
    widths = [clone(pipe[:-1]).fit(take_rows(X, ~mask), y[~mask]).transform(X_query).shape[1]
              for mask in remove]
    truths, seconds = {}, {}
    for preprocessing in ("refit", "fixed"):
        tic = time.perf_counter()
        truths[preprocessing] = retrain_distributions(pipe, X, y, X_query, y_query,
                                                      remove=remove,
                                                      preprocessing=preprocessing)
        seconds[preprocessing] = time.perf_counter() - tic
    reports = {k: score_report(predicted, truth, "mean", n_resamples=1000, random_state=0)
               for k, truth in truths.items()}
    between = lds(distribution_change(truths["fixed"], "mean"), truths["refit"], "mean")
    # the difference is paired by query: its interval is narrower than either score's
    change = distribution_change(predicted, "mean")
    per_query = {k: np.array([spearmanr(change[:, i], actual[:, i]).statistic
                              for i in range(actual.shape[1])])
                 for k, actual in ((k, distribution_change(t, "mean"))
                                   for k, t in truths.items())}
    gap = per_query["refit"] - per_query["fixed"]
    rng = np.random.RandomState(0)
    boot = [np.nanmean(gap[rng.randint(len(gap), size=len(gap))]) for _ in range(1000)]
    low, high = np.percentile(boot, [2.5, 97.5])
    cells = [f"{r.score:.3f} [{r.ci[0]:.2f}, {r.ci[1]:.2f}]" for r in reports.values()]
    width = influence.preprocessor_.transform(X_query).shape[1]
    print(f"{label:26s} {keep_fraction:4.1f} {accuracy:4.2f} {width:4d} "
          f"{np.mean(np.array(widths) != width):5.2f} {cells[0]:>19s} {cells[1]:>19s} "
          f"{np.nanmean(gap):+7.3f} [{low:+.3f}, {high:+.3f}] "
          f"{reports['refit'].ceiling:6.2f} {reports['fixed'].ceiling:6.2f} {between:8.3f} "
          f"{attribution:6.1f} {seconds['refit']:6.1f} {seconds['fixed']:6.1f}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-sets", type=int, default=40, help="removal sets per truth")
    parser.add_argument("--n-seeds", type=int, default=8, help="seeds attributed and retrained")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    print(f"{N_TRAIN} training rows, {N_QUERY} queries, {args.n_sets} removal sets, "
          f"{args.n_seeds} seeds; mean-LDS [95% interval over queries]; acc: the ensemble's "
          "accuracy on the queries; feat: features after the steps; moved: share of sets "
          "whose refitted steps give another number of features")
    print(f"{'pipeline':26s} {'keep':>4s} {'acc':>4s} {'feat':>4s} {'moved':>5s} "
          f"{'LDS vs refit truth':>19s} {'LDS vs fixed truth':>19s} "
          f"{'refit - fixed [95%]':>24s} {'ceil r':>6s} {'ceil f':>6s} "
          f"{'fixed~refit':>8s} {'attr s':>6s} {'refit s':>6s} {'fixed s':>6s}")
    cases = [("StandardScaler, cancer", tabular(),
              lambda: make_pipeline(StandardScaler(), _ensemble(args.n_seeds, 30))),
             ("TfidfVectorizer, 4 topics", text(),
              lambda: make_pipeline(TfidfVectorizer(min_df=2), _ensemble(args.n_seeds, 30)))]
    for label, data, pipe in cases:
        for keep_fraction in (0.9, 0.5):
            run(label, pipe(), data, keep_fraction, args.n_sets)


if __name__ == "__main__":
    main()
