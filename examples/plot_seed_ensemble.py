"""
Seed ensembles: the distribution of a measurement over training seeds
=====================================================================

A dataset does not determine one trained net: initialisation and minibatch
order are random, so it determines a *distribution* of nets, and of every
measurement on them. This example trains a :class:`~skdtda.SeedEnsembleClassifier`
on scikit-learn's digits and looks at that distribution:

1. how much a test loss varies from seed to seed, and which test points vary most;
2. which source of randomness (initialisation or batch order) drives the spread;
3. that the batched training path and a loop of skorch fits give the same members.

Run it with ``OMP_NUM_THREADS=1 python examples/plot_seed_ensemble.py``; with
matplotlib installed it also saves ``seed_ensemble.png``.
"""

import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier

from skdtda import SeedEnsembleClassifier
from skdtda.nets import MLP

torch.set_num_threads(1)

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y,
                                                    random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)

net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(64,),
                          criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                          optimizer__momentum=0.9, lr=0.02, max_epochs=15, batch_size=64,
                          train_split=None, verbose=0)

# %%
# 1. The distribution of test losses over seeds
# ---------------------------------------------
ens = SeedEnsembleClassifier(net, n_seeds=32, random_state=0).fit(X_train, y_train)
loss = ens.measure(X_test, y_test, measurement="loss")  # (n_seeds, n_test)
member_acc = (ens.predict_members(X_test) == y_test).mean(axis=1)
print(f"ensemble accuracy {ens.score(X_test, y_test):.3f}; members "
      f"{member_acc.min():.3f} to {member_acc.max():.3f}")
spread = loss.std(axis=0)
print(f"test-loss std over seeds: median {np.median(spread):.4f}, max {spread.max():.3f}")
for i in np.argsort(-spread)[:3]:
    print(f"  test row {i} (label {y_test[i]}): loss from {loss[:, i].min():.3f} to "
          f"{loss[:, i].max():.3f} across seeds")

# %%
# 2. Which randomness drives the spread?
# --------------------------------------
# ``vary`` holds one source fixed: "init" varies only the initialisation,
# "order" only the minibatch order.
margins = {}
for vary in ("both", "init", "order"):
    members = SeedEnsembleClassifier(net, n_seeds=32, vary=vary, random_state=1)
    margins[vary] = members.fit(X_train, y_train).measure(X_test, y_test, "margin")
    print(f"vary={vary:5s}: mean over test rows of the margin's std over seeds "
          f"{margins[vary].std(axis=0).mean():.3f}")

# %%
# 3. Batched path and loop: the same members
# ------------------------------------------
timings = {}
fits = {}
for vectorize in (True, False):
    tic = time.perf_counter()
    fits[vectorize] = SeedEnsembleClassifier(net, n_seeds=8, random_state=2,
                                             vectorize=vectorize).fit(X_train, y_train)
    timings[vectorize] = time.perf_counter() - tic
agree = (fits[True].predict_members(X_test) == fits[False].predict_members(X_test)).mean()
print(f"8 seeds: batched {timings[True]:.1f} s, loop {timings[False]:.1f} s "
      f"({timings[False] / timings[True]:.1f}x); member predictions agree on {agree:.1%}")

# %%
# A picture of the distributions
# ------------------------------
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
if plt is not None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for i in np.argsort(-spread)[:4]:
        axes[0].hist(loss[:, i], bins=12, alpha=0.6, label=f"test row {i}")
    axes[0].set(xlabel="test loss", ylabel="seeds", title="Loss over 32 seeds")
    axes[0].legend()
    axes[1].boxplot([margins[v].std(axis=0) for v in margins], tick_labels=list(margins))
    axes[1].set(ylabel="std of margin over seeds", title="Which randomness matters")
    fig.tight_layout()
    fig.savefig("seed_ensemble.png", dpi=100)
    print("saved seed_ensemble.png")
