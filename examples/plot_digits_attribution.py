"""
Reading attribution results on digits: images, score distributions, seeds, pruning
==================================================================================

A tour of :mod:`skdtda.plotting` on scikit-learn's digits:

1. the training images most influential on one test loss, under mean,
   variance and Wasserstein influence (:func:`~skdtda.plotting.plot_top_influential`);
2. how the three scores are distributed over all training rows
   (:func:`~skdtda.plotting.plot_score_distribution`);
3. how many seeds the rankings need: agreement of two independent ensembles
   against their size (:func:`~skdtda.plotting.plot_lds_vs_seeds`);
4. a pruning curve: test accuracy after removing the rows whose removal most
   lowers a validation loss, against random removal
   (:func:`~skdtda.plotting.plot_pruning_curve`).

One training label in ten is deliberately wrong, so that some rows are
worth removing.

Every score is the predicted change of the measurement when the row is
removed, divided by the number of training rows (positive: removing the row
raises it).

Run it with ``OMP_NUM_THREADS=1 python examples/plot_digits_attribution.py``.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.discrepancy import discrepancy
from skdtda.plotting import (plot_lds_vs_seeds, plot_pruning_curve, plot_score_distribution,
                             plot_top_influential)

torch.set_num_threads(1)

X, y = load_digits(return_X_y=True)
X = X / 16
X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=500, stratify=y,
                                                    random_state=0)
X_val, X_test, y_val, y_test = train_test_split(X_rest, y_rest, train_size=300, stratify=y_rest,
                                                random_state=0)
# One training label in ten is wrong (shifted by one), as in scraped data.
flipped = np.random.default_rng(0).choice(len(y_train), size=len(y_train) // 10, replace=False)
y_train = y_train.copy()
y_train[flipped] = (y_train[flipped] + 1) % 10
STATISTICS = ("mean", "variance", "wasserstein")


def scores_on(influence, X_q, y_q):
    """Per statistic, (n_query, n_train) scores from the same paired samples."""
    delta = influence.influence_samples(X_q, y_q)
    before = np.broadcast_to(influence.measure(X_q, y_q)[:, :, None], delta.shape)
    return {s: discrepancy(before, before + delta, s) for s in STATISTICS}


# %%
# 1. The most influential training images for one test loss
# ----------------------------------------------------------
ens = SeedEnsembleClassifier(n_seeds=16, random_state=0).fit(X_train, y_train)
influence = InfluenceTransformer(ens).fit(X_train, y_train)
loss = ens.measure(X_test, y_test)
query = int(np.argmax(loss.std(axis=0)))
scores = {s: v[0] for s, v in scores_on(influence, X_test[[query]], y_test[[query]]).items()}
print(f"test row {query} (label {y_test[query]}): loss over 16 seeds "
      f"{loss[:, query].mean():.2f} +- {loss[:, query].std():.2f}")

# The labels shown are the training labels, wrong ones included: a digit
# whose label disagrees with its picture is often among the top rows.
fig = plt.figure(figsize=(12, 5.5), layout="constrained")
query_fig, grids = fig.subfigures(1, 2, width_ratios=[1, 6])
ax = query_fig.subplots()
ax.imshow(X_test[query].reshape(8, 8), cmap="gray_r")
ax.set(title=f"test row {query}\nlabel {y_test[query]}", xticks=[], yticks=[])
for sub, s in zip(grids.subfigures(3, 1), STATISTICS):
    plot_top_influential(X_train, scores[s], k=6, labels=y_train, absolute=True, fig=sub)
    sub.suptitle(f"top 6 by |{s}| influence (label, score)", fontsize=10)

# %%
# 2. Score distributions
# ----------------------
# Most rows barely matter; a few matter a lot, of either sign for the mean
# and variance, and always positive for the Wasserstein distance.
fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
plot_score_distribution(scores, symlog=True, bins=40, ax=ax)
ax.set_title(f"scores of the {len(X_train)} training rows for test row {query}")

# %%
# 3. How many seeds?
# ------------------
# Two ensembles with different random states, of the same size, attribute 20
# test losses; the Spearman correlation of their scores over training rows,
# averaged over the queries, says how reproducible each ranking is.
sizes = [2, 4, 8, 16]
agreement = {s: [] for s in STATISTICS}
for n_seeds in sizes:
    runs = [scores_on(InfluenceTransformer(SeedEnsembleClassifier(
        n_seeds=n_seeds, random_state=seed)).fit(X_train, y_train), X_test[:20], y_test[:20])
        for seed in (1, 2)]
    for s in STATISTICS:
        agreement[s].append(np.mean([spearmanr(a, b).statistic
                                     for a, b in zip(runs[0][s], runs[1][s])]))
    print(f"{n_seeds:2d} seeds: " + ", ".join(f"{s} {agreement[s][-1]:.2f}" for s in STATISTICS))
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
plot_lds_vs_seeds(sizes, agreement, ylabel="Spearman, two independent ensembles", ax=ax)

# %%
# 4. Pruning by influence on a validation loss
# --------------------------------------------
# The summed mean influence on the validation losses: negative means removing
# the row lowers the validation loss. Remove the most negative rows, retrain
# an 8-seed ensemble, and compare test accuracy with random removal.
val_scores = scores_on(influence, X_val, y_val)["mean"].sum(axis=0)
rng = np.random.default_rng(0)
random_order = rng.permutation(len(X_train))
fractions = [0.0, 0.05, 0.1, 0.15]
accuracy = {"influence": [], "random": []}
for fraction in fractions:
    n_removed = int(round(fraction * len(X_train)))
    for name, order in (("influence", np.argsort(val_scores)), ("random", random_order)):
        keep = np.setdiff1d(np.arange(len(X_train)), order[:n_removed])
        pruned = SeedEnsembleClassifier(n_seeds=8, random_state=3).fit(X_train[keep],
                                                                       y_train[keep])
        accuracy[name].append(pruned.score(X_test, y_test))
    caught = np.isin(np.argsort(val_scores)[:n_removed], flipped).sum()
    print(f"removed {fraction:4.0%}: test accuracy influence {accuracy['influence'][-1]:.3f} "
          f"({caught} of the {n_removed} removed rows were mislabelled), "
          f"random {accuracy['random'][-1]:.3f}")
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
plot_pruning_curve(fractions, accuracy, ylabel="test accuracy (8-seed ensemble)", ax=ax)
plt.show()
