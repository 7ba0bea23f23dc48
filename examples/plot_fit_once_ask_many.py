"""
Fit once, ask many: stored training gradients and rank-R queries
================================================================

A user exploring a model asks one question after another: why this
prediction, and this one? :class:`~skdtda.InfluenceTransformer` answers each
from the same training side. A score is ``(1/N) v_q^T (g_k - c)``, the solved
gradient of the query against training row ``k``'s loss gradient, and the
training side depends neither on the query nor on the damping. So ``fit``
stores it once per seed (``precompute="auto"``, the default, where the store
fits ``precompute_budget``), and every later question costs only its own
gradient, one solve and the products.

For many queries against many rows the products themselves are the cost.
``query_rank=R`` approximates each layer's solved query gradient by its best
rank-``R`` matrix, which a Linear layer's nearly is; its products then cost
``R (in + out)`` instead of ``in x out`` per row.

This example times one question with and without the store, compares rank-R
scores with the exact ones, and uses the two reductions that need no more than
one query's products: the change of a validation set's mean loss, and every
training row's influence on itself.

Every score is the predicted change of a measurement (here a loss) when the
training row is removed, already divided by the number of training rows:
positive means removing the row raises the loss, so the row was helping.

Run it with ``OMP_NUM_THREADS=1 python examples/plot_fit_once_ask_many.py``.
"""

import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from skorch import NeuralNetClassifier

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.nets import MLP

torch.set_num_threads(1)

# %%
# Digits, with some labels wrong
# ------------------------------
# 1,200 training digits, 30 of them given another label; 300 held out, of
# which 200 are a validation set and the rest questions to ask.
X, y = load_digits(return_X_y=True)
X = (X / 16).astype(np.float32)
rng = np.random.default_rng(0)
order = rng.permutation(len(X))
train, val, questions = order[:1200], order[1200:1400], order[1400:1500]
y_train = y[train].copy()
flipped = rng.choice(len(train), 30, replace=False)
y_train[flipped] = (y_train[flipped] + rng.integers(1, 10, 30)) % 10
X_train = X[train]

net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(64, 64),
                          criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam,
                          lr=3e-3, batch_size=64, max_epochs=20, train_split=None, verbose=0)
ensemble = SeedEnsembleClassifier(net, n_seeds=8, random_state=0).fit(X_train, y_train)
print(f"held-out accuracy: {ensemble.score(X[questions], y[questions]):.3f}")

# %%
# One question, with and without the store
# ----------------------------------------
# The damping chosen by the first fit is reused, so that the fits compare only
# what they store.
stored = InfluenceTransformer(ensemble).fit(X_train, y_train)
settings = dict(curvature=stored.curvature_, damping=stored.damping_)
recompute = InfluenceTransformer(ensemble, precompute=False, **settings).fit(X_train, y_train)
print(f"store: {stored.store_nbytes_ / 2**20:.1f} MiB for 8 seeds x 1200 rows")


def best_time(influence, rows, repeats=5):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        influence.transform(X[rows])
        times.append(time.perf_counter() - start)
    return min(times)


one = questions[:1]
times = {"precompute=False": best_time(recompute, one),
         "precompute='auto' (stored)": best_time(stored, one)}
for name, seconds in times.items():
    print(f"one question, {name}: {1000 * seconds:.1f} ms")

# %%
# Rank-R queries against the exact scores
# ---------------------------------------
# Each panel is one question's scores of every training row, exact against
# rank-R; the titles give the median Spearman over the 100 questions. Rank 1
# keeps only the coarse order here (about 0.6), rank 4 most of it (about 0.9)
# and rank 16 nearly all: choose R by this comparison on a few questions of
# your own before trusting it for many.
exact = stored.transform(X[questions])
fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
for ax, rank in zip(axes, (1, 4, 16)):
    approx = InfluenceTransformer(ensemble, query_rank=rank, **settings).fit(
        X_train, y_train).transform(X[questions])
    rho = np.median([spearmanr(a, b)[0] for a, b in zip(approx, exact)])
    ax.scatter(exact[0], approx[0], s=4, alpha=0.5)
    ax.set_title(f"query_rank={rank}: median Spearman {rho:.3f}")
    print(f"query_rank={rank}: median Spearman over the questions {rho:.4f}")
    ax.set_xlabel("exact score (question 0)")
axes[0].set_ylabel("rank-R score")
fig.tight_layout()

# %%
# Reductions that cost one query: a validation set, and each row on itself
# ------------------------------------------------------------------------
# ``mean_influence_samples`` gives the change of the validation set's *mean*
# loss (its solved gradients are summed first); ``self_influence_samples`` the
# change of each training row's own loss when it is removed, which is large
# for rows the nets had to memorise, such as wrong labels.
start = time.perf_counter()
validation = stored.mean_influence_samples(X[val], y[val]).mean(axis=0)
self_scores = stored.self_influence_samples().mean(axis=0)
print(f"validation mean and self-influence of all rows: {time.perf_counter() - start:.2f} s")
top = np.argsort(-self_scores)[:30]
print(f"wrong labels among the 30 largest self-influences: {np.isin(top, flipped).sum()} of 30"
      f" (30 of 1200 rows are wrong)")
print(f"wrong labels among the 30 rows whose removal most lowers the validation loss: "
      f"{np.isin(np.argsort(validation)[:30], flipped).sum()} of 30")

fig, ax = plt.subplots(figsize=(6, 3.4))
wrong = np.isin(np.arange(len(train)), flipped)
ax.scatter(self_scores[~wrong], validation[~wrong], s=5, alpha=0.4, label="correct label")
ax.scatter(self_scores[wrong], validation[wrong], s=14, color="C3", label="wrong label")
ax.set_xscale("symlog", linthresh=1e-5)
ax.set_xlabel("self-influence (change of its own loss)")
ax.set_ylabel("change of the validation loss")
ax.legend()
fig.tight_layout()
plt.show()
