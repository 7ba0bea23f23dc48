"""
Which training rows drive my MLPClassifier?
===========================================

A plain scikit-learn ``MLPClassifier`` on the breast-cancer data, and the
questions of its user:

1. Is one trained model enough to answer "which rows matter"? No: retrained
   with another ``random_state``, the same network gives a test row another
   loss. :class:`~skdtda.SeedEnsembleClassifier` trains clones of the
   classifier under 16 seeds.
2. Which training rows move that loss? :class:`~skdtda.InfluenceTransformer`
   predicts, seed by seed, the change of a test row's loss when a training row
   is removed. Reduced with ``statistic="mean"`` it answers "does the row
   raise or lower the loss on average over seeds?"; with
   ``statistic="variance"``: "does the row make the outcome depend more or less
   on the seed?". The two rankings are not the same.
3. Are the predictions right? Retraining without a few chosen sets of rows,
   under 32 new seeds (:func:`~skdtda.evaluation.retrain_distributions`),
   checks the predicted changes of the mean and of the variance
   (:func:`~skdtda.evaluation.predict_distributions`).

Every score is the predicted change of the measurement when the row is
removed, already divided by the number of training rows (positive: removing
the row raises it).

Run it with ``OMP_NUM_THREADS=1 python examples/plot_sklearn_mlp.py``.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.discrepancy import discrepancy
from skdtda.evaluation import distribution_change, predict_distributions, retrain_distributions

torch.set_num_threads(1)
# 100 iterations on purpose: the example stays fast, and the members stop short of
# convergence, as networks usually do, so that they differ by seed.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

data = load_breast_cancer()
X, y, names = data.data, data.target, data.target_names  # 0: malignant, 1: benign
X_train, X_test, y_train, y_test = train_test_split(X, y, train_size=400, stratify=y,
                                                    random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
n_train = len(X_train)

# %%
# 1. One classifier, 16 seeds
# ---------------------------
# The user's own classifier, unchanged; the ensemble gives each clone its own
# ``random_state`` (initialisation and minibatch order). The members agree on
# accuracy, but not on the loss of every test row.
mlp = MLPClassifier(hidden_layer_sizes=(16,), alpha=1e-2, learning_rate_init=3e-3,
                    max_iter=100)
ens = SeedEnsembleClassifier(mlp, n_seeds=16, random_state=0).fit(X_train, y_train)
member_accuracy = [m.score(X_test, y_test) for m in ens.estimators_]
print(f"test accuracy: members {min(member_accuracy):.3f} to {max(member_accuracy):.3f}, "
      f"ensemble {ens.score(X_test, y_test):.3f}")

# The loss of every test row under every seed; the five rows whose loss varies
# most over seeds are the queries below.
loss = ens.measure(X_test, y_test)  # (n_seeds, n_test)
queries = np.argsort(-loss.std(axis=0))[:5]
X_q, y_q = X_test[queries], y_test[queries]
for i, row in enumerate(queries):
    print(f"query {i} (test row {row}, label {y_test[row]}): loss over 16 seeds "
          f"{loss[:, row].mean():.2f} +- {loss[:, row].std():.2f} "
          f"(from {loss[:, row].min():.2f} to {loss[:, row].max():.2f})")

fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
for i, row in enumerate(queries):
    ax.scatter(np.full(16, i), loss[:, row], alpha=0.6)
ax.set(xticks=range(5), xticklabels=[f"query {i}" for i in range(5)],
       ylabel="test loss", title="one test row, 16 seeds, 16 losses")

# %%
# 2. Rows that move the mean loss, rows that move its variance
# -------------------------------------------------------------
# ``InfluenceTransformer(ens, statistic=...).transform(X)`` scores the loss at
# the ensemble's predicted labels. The user cares about the true labels, so
# the per-seed predicted changes (``influence_samples``) are paired with each
# seed's loss and reduced with the same statistics: one set of per-seed
# samples, two questions.
influence = InfluenceTransformer(ens).fit(X_train, y_train)
delta = influence.influence_samples(X_q, y_q)  # (n_seeds, n_query, n_train)
before = np.broadcast_to(influence.measure(X_q, y_q)[:, :, None], delta.shape)
scores = {s: discrepancy(before, before + delta, s) for s in ("mean", "variance")}
print(f"curvature: {influence.curvature_!r}")

# These queries are hard rows, which the ensemble may misclassify: there the
# loss at the predicted label would answer another question.
print(f"the ensemble misclassifies {np.sum(ens.predict(X_q) != y_q)} of the 5 queries")

top = {s: np.argsort(-np.abs(v), axis=1)[:, :10] for s, v in scores.items()}
print("\nquery  top-10 overlap (|mean| vs |variance|)  Spearman(mean, variance)")
for i in range(len(queries)):
    overlap = len(set(top["mean"][i]) & set(top["variance"][i]))
    rho = spearmanr(scores["mean"][i], scores["variance"][i]).statistic
    print(f"{i:5d}  {overlap:14d} of 10  {rho:32.2f}")

# %%
# The variance score of a row is ``var(m + delta) - var(m)`` over seeds, with
# ``m`` each seed's loss and ``delta`` its predicted change: about
# ``2 cov(m, delta)``. A row whose removal helps most the seeds that do worst
# narrows the distribution, whatever it does to the mean.
q = 0
fig, ax = plt.subplots(figsize=(6, 4.5), layout="constrained")
for label, color in ((0, "tab:red"), (1, "tab:blue")):
    rows = y_train == label
    ax.scatter(scores["mean"][q, rows], scores["variance"][q, rows], s=10, color=color,
               alpha=0.5, label=f"training rows labelled {label} ({names[label]})")
for s, marker in (("mean", "s"), ("variance", "^")):
    k = top[s][q]
    ax.scatter(scores["mean"][q, k], scores["variance"][q, k], s=60, marker=marker,
               facecolors="none", edgecolors="k", label=f"top 10 by |{s}|")
ax.axhline(0, color="gray", lw=0.5)
ax.axvline(0, color="gray", lw=0.5)
ax.set(xlabel="mean influence (change of the mean loss)",
       ylabel="variance influence (change of its variance)",
       title=f"query 0 (test row {queries[q]}): the {n_train} training rows")
ax.legend(fontsize=8)

# %%
# 3. Check by retraining
# ----------------------
# For query 0, remove the 10 rows predicted to raise its mean loss most
# (removing the rows that help it), the 10 predicted to lower it most, the 10
# predicted to raise and to lower its variance most, and two random sets of 10.
# Then retrain a 32-seed ensemble of the same classifier without each set (the
# same 32 new seeds for every set and for the full data: paired by seed) and
# compare with the first-order predictions of the 16-seed ensemble, on all
# five queries.
rng = np.random.default_rng(0)
sets = {
    "raise mean": np.argsort(-scores["mean"][q])[:10],
    "lower mean": np.argsort(scores["mean"][q])[:10],
    "raise variance": np.argsort(-scores["variance"][q])[:10],
    "lower variance": np.argsort(scores["variance"][q])[:10],
    "random A": rng.choice(n_train, 10, replace=False),
    "random B": rng.choice(n_train, 10, replace=False),
}
remove = list(sets.values())
truth = retrain_distributions(ens, X_train, y_train, X_q, y_q, remove=remove, n_seeds=32,
                              random_state=0)
predicted = predict_distributions(influence, X_q, y_q, remove=remove)
change = {(side, s): distribution_change(d, s)  # (n_sets, n_query)
          for side, d in (("predicted", predicted), ("retrained", truth))
          for s in ("mean", "variance")}
# Standard error of the retrained change of the mean, from the paired seeds.
paired = truth.after - truth.before[None]
stderr = paired.std(axis=1, ddof=1) / np.sqrt(truth.n_seeds)

print(f"\nquery 0, removing 10 of {n_train} rows; its loss over the 32 new seeds: "
      f"mean {truth.before[:, q].mean():.2f}, variance {truth.before[:, q].var():.2f}")
print(f"{'removed':15s} {'mean: predicted':>16s} {'retrained':>15s} "
      f"{'variance: predicted':>20s} {'retrained':>10s}")
for j, name in enumerate(sets):
    print(f"{name:15s} {change['predicted', 'mean'][j, q]:+16.2f} "
          f"{change['retrained', 'mean'][j, q]:+8.2f} +- {stderr[j, q]:.2f} "
          f"{change['predicted', 'variance'][j, q]:+20.2f} "
          f"{change['retrained', 'variance'][j, q]:+10.2f}")

print("\nall 6 sets x 5 queries:")
for s in ("mean", "variance"):
    p, a = change["predicted", s].ravel(), change["retrained", s].ravel()
    print(f"  change of the {s:8s}: Pearson {np.corrcoef(p, a)[0, 1]:.2f}, same sign "
          f"{np.mean(np.sign(p) == np.sign(a)):.0%}, median |predicted| / |retrained| "
          f"{np.median(np.abs(p) / np.abs(a)):.1f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
for ax, s in zip(axes, ("mean", "variance")):
    p, a = change["predicted", s], change["retrained", s]
    for j, name in enumerate(sets):
        ax.scatter(p[j], a[j], label=name, alpha=0.8)
    ax.scatter(p[:, q], a[:, q], s=90, facecolors="none", edgecolors="k", label="query 0")
    lim = np.abs(np.r_[p.ravel(), a.ravel()]).max() * 1.05
    ax.plot([-lim, lim], [-lim, lim], color="gray", lw=0.5)
    ax.set(xlabel=f"predicted change of the {s}", ylabel=f"retrained change of the {s}",
           title=f"{s} of the test loss over seeds")
axes[0].legend(fontsize=8)

# %%
# What the retraining shows
# -------------------------
# The predictions are first order, from members that stopped before
# convergence, and the retrained changes are themselves estimates from 32
# seeds (the ``+-`` of the table: the standard error of the mean change).
#
# * **The mean** is predicted well enough to act on. For query 0 every chosen
#   set moves the mean loss in the predicted direction: the 10 rows predicted
#   to raise it most raise it by 1.65 (predicted 0.81); those predicted to
#   lower it lower it by 0.76 (predicted 1.23). The random sets barely move
#   it, as predicted.
# * **The variance** is predicted in direction too: the rows chosen to raise it
#   raise it (+0.47, predicted +0.82), those chosen to lower it lower it
#   (-0.36, predicted -0.24). The set that lowers the mean also narrows the
#   distribution, more than predicted (-0.38 against -0.09), and removing the
#   rows that help query 0 widens it about as predicted (+0.59, predicted
#   +0.63): without them its loss is higher *and* more dependent on the seed.
# * Over all sets and queries the predictions correlate with the retrained
#   changes (the Pearson correlations printed above) but are smaller (the
#   median ratios); the variance's changes agree in sign less often than the
#   mean's, and most sign errors are changes close to zero. The sets chosen for query 0 move some
#   other queries too (the points far from zero that are not circled), mostly
#   in the predicted direction.
#
# So the mean-influence ranking answers "which rows help or hurt this test
# row"; the variance ranking points at rows that make the answer depend on the
# seed, a lead to check by retraining, as done here.
plt.show()
