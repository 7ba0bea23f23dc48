"""
Mean and Wasserstein influence pick different training points (the paper's Figure 5)
====================================================================================

A 1-D regression where two training points matter for a prediction in an
extrapolation region, in different ways:

* ``x_30`` sits at the edge of the data with a label 0.2 too high. Every seed
  fits it, so removing it moves every seed's prediction down: it shifts the
  **mean** of the prediction's distribution over seeds.
* ``x_31`` is the only point out in the gap, with a label equal to what the
  ensemble would predict there on average without it. Removing it barely moves
  the mean, but each seed then extrapolates its own way: it widens the
  **spread** of the predictions.

Mean influence ranks ``x_30`` first and spread (std) influence ``x_31``;
Wasserstein influence, which sees any change of the distribution, puts the two
at the top (Mlodozeniec et al., 2025, Fig. 5). The rankings come from per-seed
influence functions (:class:`~skdtda.InfluenceTransformer`, exact Gauss-Newton
curvature), and the example checks them by retraining the whole ensemble
without each candidate. Retraining's Wasserstein-2 ranks ``x_31`` first (0.054
against 0.023). The prediction gets about half of ``x_31``'s spread change
(0.025), so at the default damping (here kronfluence's floor, 0.017) its
Wasserstein ranking puts ``x_30`` narrowly ahead (0.031 against 0.026); at
``1 / tau`` alone (0.004) ``x_31`` is ahead by as little (0.028 against 0.025).

Run it with ``OMP_NUM_THREADS=1 python examples/plot_mean_vs_wasserstein.py``.
"""

import numpy as np
import torch
from skorch import NeuralNetRegressor

from skdtda import InfluenceTransformer, SeedEnsembleRegressor
from skdtda.discrepancy import discrepancy
from skdtda.nets import MLP

torch.set_num_threads(1)

# %%
# Data: 30 noisy points of a sine on [-3, 0], then x_30 and x_31
# ----------------------------------------------------------------
rng = np.random.default_rng(0)
x = np.sort(rng.uniform(-3, 0, 30))
y = np.sin(x) + 0.1 * rng.normal(size=30)
x = np.r_[x, 0.3, 2.0]
y = np.r_[y, np.sin(0.3) + 0.2, 0.62]
X = x[:, None]
x_query = np.array([[2.3]])

# Weight decay keeps each seed from interpolating x_31 exactly, so its
# residual still tells which way that seed would extrapolate without it.
net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(32,), module__activation="tanh",
                         criterion=torch.nn.MSELoss, optimizer=torch.optim.Adam, lr=0.01,
                         optimizer__weight_decay=1e-2, max_epochs=150, batch_size=8,
                         train_split=None, verbose=0)
n_seeds = 32
ens = SeedEnsembleRegressor(net, n_seeds=n_seeds, random_state=0).fit(X, y)

# %%
# Per-seed influence on the prediction at x = 2.3
# -----------------------------------------------
influence = InfluenceTransformer(ens, curvature="ggn", measurement="prediction").fit(X, y)
before = influence.measure(x_query)[:, 0]                  # (n_seeds,)
delta = influence.influence_samples(x_query)[:, 0, :]      # (n_seeds, n_train)
after = before[:, None] + delta
pairs = np.broadcast_to(before[:, None], after.shape)
scores = {name: discrepancy(pairs, after, name) for name in ("mean", "std", "wasserstein")}
print(f"prediction at x=2.3 over {n_seeds} seeds: mean {before.mean():.3f}, "
      f"std {before.std():.3f}")
for name, score in scores.items():
    order = np.argsort(-np.abs(score))[:3]
    print(f"top 3 by {name:11s} influence: " + ", ".join(
        f"x_{k} ({score[k]:+.4f})" for k in order))
top_mean = int(np.argmax(np.abs(scores["mean"])))
top_w2 = int(np.argmax(scores["wasserstein"]))

# %%
# Check against retraining
# ------------------------
# Retrain the ensemble (same seeds) without each candidate and compare the
# actual change in mean, spread and Wasserstein-2 with the predicted one.
candidates = sorted({int(k) for s in scores.values() for k in np.argsort(-np.abs(s))[:2]})
retrained = {}
print("row   predicted: d mean   d std     W2  | retrained: d mean   d std     W2")
for k in candidates:
    keep = np.arange(len(x)) != k
    retrained[k] = SeedEnsembleRegressor(net, n_seeds=n_seeds, random_state=0).fit(
        X[keep], y[keep])
    actual = retrained[k].predict_members(x_query)[:, 0]
    predicted = after[:, k]
    w2 = np.sqrt(np.mean((np.sort(actual) - np.sort(before)) ** 2))
    print(f"x_{k:<3d} {predicted.mean() - before.mean():+17.4f} "
          f"{predicted.std() - before.std():+7.4f} {scores['wasserstein'][k]:6.4f}  | "
          f"{actual.mean() - before.mean():+17.4f} {actual.std() - before.std():+7.4f} "
          f"{w2:6.4f}")
truth_w2 = {k: np.sqrt(np.mean((np.sort(r.predict_members(x_query)[:, 0])
                                - np.sort(before)) ** 2)) for k, r in retrained.items()}
truth_mean = {k: r.predict_members(x_query)[:, 0].mean() - before.mean()
              for k, r in retrained.items()}
print(f"retraining: largest |mean shift| x_{max(truth_mean, key=lambda k: abs(truth_mean[k]))}"
      f", largest W2 x_{max(truth_w2, key=truth_w2.get)} (among {len(candidates)} candidates)")

# %%
# The picture
# -----------
# Left: the data, each seed's fitted curve, and the top point under each
# statistic. Middle and right: the prediction at x = 2.3 over seeds, before
# and after removing each of the two points, as influence functions predict
# it and as retraining gives it.
import matplotlib.pyplot as plt  # noqa: E402

from skdtda.plotting import plot_distribution_shift, plot_influential_points  # noqa: E402

grid = np.linspace(-3.2, 2.8, 200)[:, None]
fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
ax = axes[0]
for curve in ens.predict_members(grid):
    ax.plot(grid[:, 0], curve, color="C0", alpha=0.15, linewidth=0.8)
if top_w2 in retrained:
    for curve in retrained[top_w2].predict_members(grid):
        ax.plot(grid[:, 0], curve, color="C1", alpha=0.15, linewidth=0.8)
    ax.plot([], [], color="C1", label=f"seeds retrained without x_{top_w2}")
ax.plot([], [], color="C0", label="seeds, all rows")
ax.axvline(x_query[0, 0], color="0.4", linestyle=":")
plot_influential_points(X, scores["mean"], y=y, k=1, absolute=True, label="top by mean",
                        color="C3", ax=ax)
plot_influential_points(X, scores["wasserstein"], y=y, k=1, label="top by Wasserstein",
                        color="C2", marker="s", ax=ax)
ax.set(xlabel="x", ylabel="y", title="data and fitted seeds", ylim=(-1.4, 1.4))
ax.legend(fontsize=7, loc="lower right")
for ax, k, name in ((axes[1], top_mean, "mean"), (axes[2], top_w2, "Wasserstein")):
    samples = {f"without x_{k} (influence)": after[:, k]}
    if k in retrained:
        samples[f"without x_{k} (retrained)"] = retrained[k].predict_members(x_query)[:, 0]
    plot_distribution_shift(before, samples, kind="kde", xlabel="prediction at x = 2.3",
                            ax=ax)
    ax.set_title(f"top by {name} influence: x_{k}")
    ax.legend(fontsize=7)
plt.show()
