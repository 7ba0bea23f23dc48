"""
Unrolled differentiation converges to influence functions as training lengthens
===============================================================================

The paper's Figure 3 at CPU scale, on scikit-learn's diabetes regression data.

``UnrolledInfluence`` differentiates each seed's actual training run (same
initialisation, same minibatches, same optimizer steps) with respect to the
weight of each training row. Its predicted change of a query's loss when a row
is removed is a sample of the post-removal distribution for any training
length. ``InfluenceTransformer`` with the exact Hessian predicts the same
change from the final parameters alone, which is only right once training has
converged (Theorem 2: influence functions are the long-training limit of
unrolled differentiation). This example trains seed ensembles of a small tanh
MLP with plain SGD for a growing number of epochs, at two learning rates, and
prints

* the correlation between the two methods' per-seed predictions: it rises
  towards 1 with the number of steps, faster with the larger learning rate;
* how well each predicts the change of the seed-mean query loss after actually
  retraining the ensemble without random 10% subsets of the rows;
* that forward and reverse mode give the same derivatives, and what each costs.

Set ``SKDTDA_EXAMPLE_SCALE=full`` for the figures of ``docs/unrolled.md``
(more rows, seeds and epochs; a few minutes); the default runs in well under a
minute. Run it with ``OMP_NUM_THREADS=1 python examples/plot_unrolled_convergence.py``.
"""

import os
import time

import numpy as np
import torch
from sklearn.base import clone
from sklearn.datasets import load_diabetes
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetRegressor

from skdtda import InfluenceTransformer, SeedEnsembleRegressor, UnrolledInfluence
from skdtda.nets import MLP

torch.set_num_threads(1)
FULL = os.environ.get("SKDTDA_EXAMPLE_SCALE") == "full"
N_TRAIN, N_QUERY = (200, 40) if FULL else (100, 10)
N_SEEDS = 16 if FULL else 4
EPOCHS = [1, 4, 16, 64, 256] if FULL else [4, 16, 64]
LEARNING_RATES = [0.02, 0.1]
N_SETS = 12 if FULL else 6

X, y = load_diabetes(return_X_y=True)
rng = np.random.default_rng(0)
rows = rng.permutation(len(X))
X = StandardScaler().fit_transform(X)
y = (y - y.mean()) / y.std()
X_train, y_train = X[rows[:N_TRAIN]], y[rows[:N_TRAIN]]
X_query, y_query = X[rows[N_TRAIN:N_TRAIN + N_QUERY]], y[rows[N_TRAIN:N_TRAIN + N_QUERY]]
subsets = [rng.choice(N_TRAIN, size=N_TRAIN // 10, replace=False) for _ in range(N_SETS)]


def ensemble(lr, epochs):
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(16,), module__activation="tanh",
                             criterion=torch.nn.MSELoss, optimizer=torch.optim.SGD,
                             optimizer__weight_decay=0.1, lr=lr, max_epochs=epochs,
                             batch_size=20, train_split=None, verbose=0)
    return SeedEnsembleRegressor(net, n_seeds=N_SEEDS, random_state=0)


def retrained_mean_change(ens, before):
    """Change of the seed-mean query loss after retraining without each subset."""
    changes = []
    for subset in subsets:
        keep = np.setdiff1d(np.arange(N_TRAIN), subset)
        after = clone(ens).fit(X_train[keep], y_train[keep]).measure(X_query, y_query)
        changes.append(after.mean(axis=0) - before.mean(axis=0))
    return np.array(changes)  # (n_sets, n_query)


def predicted_mean_change(delta):
    return np.array([delta[:, :, subset].sum(axis=2).mean(axis=0) for subset in subsets])


results = {}
print(f"{N_TRAIN} training rows, {N_QUERY} queries, {N_SEEDS} seeds, batch 20, SGD")
print("corr(UD, IF): median over seeds of the correlation of the per-seed predictions "
      "(pooled over seeds in brackets);\ncorr(., retrain): correlation of the predicted and "
      "retrained change of the seed-mean query loss over removal subsets and queries")
print(f"{'lr':>6} {'epochs':>6} {'steps':>6} {'corr(UD, IF)':>21} "
      f"{'corr(UD, retrain)':>18} {'corr(IF, retrain)':>18}")
for lr in LEARNING_RATES:
    for epochs in EPOCHS:
        ens = ensemble(lr, epochs).fit(X_train, y_train)
        # mode="auto": forward mode at the default scale (N_TRAIN + 1 = 101 removal
        # tangents, two replays per seed), reverse mode at full scale (one backward
        # sweep per seed carries the 40 query gradients instead of 201 tangents);
        # the numbers are the same (see the end)
        unrolled = UnrolledInfluence(ens).fit(X_train, y_train)
        influence = InfluenceTransformer(ens, curvature="exact", damping=0).fit(X_train, y_train)
        ud = unrolled.influence_samples(X_query, y_query)  # (seeds, queries, rows)
        inf = influence.influence_samples(X_query, y_query)
        truth = retrained_mean_change(ens, unrolled.measure(X_query, y_query))
        row = {
            "steps": epochs * -(-N_TRAIN // 20),
            # per seed, then the median: one seed with a nearly singular Hessian
            # gives huge influence-function values that would dominate a pooled
            # correlation
            "ud_if": np.median([np.corrcoef(u.ravel(), i.ravel())[0, 1]
                                for u, i in zip(ud, inf)]),
            "ud_if_pooled": np.corrcoef(ud.ravel(), inf.ravel())[0, 1],
            "ud_retrain": np.corrcoef(predicted_mean_change(ud).ravel(), truth.ravel())[0, 1],
            "if_retrain": np.corrcoef(predicted_mean_change(inf).ravel(), truth.ravel())[0, 1],
        }
        results[lr, epochs] = row
        print(f"{lr:>6} {epochs:>6} {row['steps']:>6} {row['ud_if']:>13.3f} "
              f"({row['ud_if_pooled']:>5.2f}) {row['ud_retrain']:>18.3f} "
              f"{row['if_retrain']:>18.3f}", flush=True)

# %%
# Forward and reverse mode: two ways to the same derivatives
# ----------------------------------------------------------
# Forward mode carries one tangent per training row through each replay and keeps
# the parameter responses; reverse mode sweeps back once per batch of queries.
# On the last ensemble above, both give the same per-seed predictions.
timings, samples = {}, {}
for mode in ("forward", "reverse"):
    tic = time.perf_counter()
    model = UnrolledInfluence(ens, mode=mode).fit(X_train, y_train)
    samples[mode] = model.influence_samples(X_query, y_query)
    timings[mode] = time.perf_counter() - tic
gap = np.abs(samples["forward"] - samples["reverse"]).max() / np.abs(samples["forward"]).max()
print(f"forward {timings['forward']:.1f} s, reverse {timings['reverse']:.1f} s for "
      f"{N_QUERY} queries x {N_TRAIN} rows; largest difference {gap:.1e} (relative, float32)")

# %%
# Plot (needs matplotlib)
# -----------------------
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
if plt is not None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for lr, color in zip(LEARNING_RATES, ("C0", "C1")):
        steps = [results[lr, e]["steps"] for e in EPOCHS]
        axes[0].plot(steps, [results[lr, e]["ud_if"] for e in EPOCHS], "o-", color=color,
                     label=f"lr={lr}")
        axes[1].plot(steps, [results[lr, e]["ud_retrain"] for e in EPOCHS], "o-", color=color,
                     label=f"unrolled, lr={lr}")
        axes[1].plot(steps, [results[lr, e]["if_retrain"] for e in EPOCHS], "s--", color=color,
                     label=f"influence fn, lr={lr}")
    axes[0].set(xscale="log", xlabel="training steps", ylabel="correlation",
                title="unrolled vs influence function\n(median per-seed correlation)")
    axes[1].set(xscale="log", xlabel="training steps", ylabel="correlation",
                title="prediction vs retraining (mean)")
    axes[0].legend()
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig("unrolled_convergence.png", dpi=120)
    print("saved unrolled_convergence.png")
