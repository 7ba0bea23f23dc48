"""
Mean, variance and Wasserstein influence pick different training rows
=====================================================================

Per-seed influence functions give, for every member of a seed ensemble, the
predicted change of a query's loss when a training row is removed. Paired with
each member's own loss, they are samples of the loss's distribution after the
removal. Reducing the pairs with different statistics asks different
questions:

* ``"mean"``: does removing the row raise or lower the loss on average?
* ``"variance"``: does it make the outcome more or less dependent on the seed?
* ``"wasserstein"``: how far does the whole distribution move?

This example ranks the training rows of scikit-learn's digits under the three
statistics for the test row whose loss varies most over seeds, prints how
much the top rows overlap, and (with matplotlib) plots the before/after
distributions of the loss for each statistic's top row.

Run it with ``OMP_NUM_THREADS=1 python examples/plot_influence_statistics.py``.
"""

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.discrepancy import discrepancy

torch.set_num_threads(1)

X, y = load_digits(return_X_y=True)
X = X / 16
X_train, X_test, y_train, y_test = train_test_split(X, y, train_size=600, stratify=y,
                                                    random_state=0)

ens = SeedEnsembleClassifier(n_seeds=32, random_state=0).fit(X_train, y_train)
loss = ens.measure(X_test, y_test)
query = int(np.argmax(loss.std(axis=0)))
print(f"test row {query} (label {y_test[query]}): loss over 32 seeds from "
      f"{loss[:, query].min():.3f} to {loss[:, query].max():.3f}")

# %%
# Per-seed responses, then three statistics of the same pairs
# -----------------------------------------------------------
influence = InfluenceTransformer(ens).fit(X_train, y_train)
delta = influence.influence_samples(X_test[[query]], y_test[[query]])[:, 0, :]  # (32, n_train)
before = np.repeat(loss[:, [query]], delta.shape[1], axis=1)
after = before + delta
scores = {name: discrepancy(before, after, name) for name in ("mean", "variance",
                                                               "wasserstein")}
top = {name: np.argsort(-np.abs(score))[:10] for name, score in scores.items()}
for name, rows in top.items():
    print(f"top 5 by {name:11s}: " + ", ".join(
        f"#{k} (label {y_train[k]}, {scores[name][k]:+.2e})" for k in rows[:5]))
print(f"overlap of the top 10, mean vs variance: {len(set(top['mean']) & set(top['variance']))}"
      f"; mean vs wasserstein: {len(set(top['mean']) & set(top['wasserstein']))}")

# %%
# The distributions behind the top rows
# -------------------------------------
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
if plt is not None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=True)
    for ax, (name, rows) in zip(axes, top.items()):
        k = rows[0]
        bins = np.histogram_bin_edges(np.r_[before[:, k], after[:, k]], bins=12)
        ax.hist(before[:, k], bins=bins, alpha=0.6, label="all rows")
        ax.hist(after[:, k], bins=bins, alpha=0.6, label=f"without #{k}")
        ax.set(title=f"top row by {name}", xlabel="test loss")
        ax.legend()
    axes[0].set_ylabel("seeds")
    fig.tight_layout()
    fig.savefig("influence_statistics.png", dpi=100)
    print("saved influence_statistics.png")
