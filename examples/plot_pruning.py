"""
Pruning harmful training rows: distributional vs fixed-seed influence
=====================================================================

The paper's headline application: remove the training rows whose removal is
predicted to lower the validation loss, and retrain. ``DataPruner`` scores
every row with per-seed influence functions of a seed ensemble; the
*distributional* score averages the seeds' predictions (one common pruned
set), the classical *fixed-seed* score uses one seed's prediction for that
seed alone.

This example flips 10% of the labels of scikit-learn's digits, prunes 10% of
the rows by distributional, fixed-seed and random scores, retrains the same
seeds on each pruned set and compares test accuracy. It then tunes the pruned
fraction of a ``PrunedEstimator`` with ``GridSearchCV``, where ``memory=``
scores each training fold once for the whole grid.

Run it with ``OMP_NUM_THREADS=1 python examples/plot_pruning.py``; the full
experiment (more seeds, three fractions, with and without label noise) is
``benchmarks/bench_pruning.py``, and its figures are in ``docs/pruning.md``.
"""

import tempfile

import numpy as np
import torch
from joblib import Memory
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.preprocessing import StandardScaler

from skdtda import DataPruner, InfluenceTransformer, PrunedEstimator, SeedEnsembleClassifier

torch.set_num_threads(1)

X, y = load_digits(return_X_y=True)
X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=600, stratify=y,
                                                    random_state=0)
X_val, X_test, y_val, y_test = train_test_split(X_rest, y_rest, train_size=300, stratify=y_rest,
                                                random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_val, X_test = (scaler.transform(a) for a in (X_train, X_val, X_test))

rng = np.random.RandomState(0)
flipped = rng.choice(len(y_train), 60, replace=False)
y_train[flipped] = (y_train[flipped] + rng.randint(1, 10, 60)) % 10

# %%
# Score, prune 10%, retrain the same seeds
# ----------------------------------------
# A score is the predicted change of the mean validation loss when the row is
# removed; the most negative ones (harmful rows) go first.
n_seeds = 5
ensemble = SeedEnsembleClassifier(n_seeds=n_seeds, random_state=0)
influence = InfluenceTransformer(ensemble)
cache = tempfile.TemporaryDirectory()
memory = Memory(cache.name, verbose=0)  # the fixed-seed pruners reuse the scoring
common = dict(fraction=0.1, validation_data=(X_val, y_val), memory=memory)


def test_accuracy(mask):
    """Each seed's test accuracy after training on the rows in mask."""
    refit = clone(ensemble).fit(X_train[mask], y_train[mask])
    return (refit.predict_members(X_test) == y_test).mean(axis=1)


distributional = DataPruner(influence, **common).fit(X_train, y_train)
masks = {
    "distributional": [distributional.sample_mask_] * n_seeds,
    "fixed-seed": [DataPruner(influence, mode="fixed_seed", seed_index=s, **common)
                   .fit(X_train, y_train).sample_mask_ for s in range(n_seeds)],
    "random": [DataPruner(fraction=0.1, mode="random", random_state=s)
               .fit(X_train, y_train).sample_mask_ for s in range(n_seeds)],
}
accuracy = {"unpruned": test_accuracy(np.ones(len(y_train), dtype=bool))}
accuracy["distributional"] = test_accuracy(distributional.sample_mask_)
for name in ("fixed-seed", "random"):
    # Seed s is retrained on the set that its own scores (or draw) chose.
    accuracy[name] = np.array([test_accuracy(mask)[s] for s, mask in enumerate(masks[name])])

for name, acc in accuracy.items():
    found = (f", flipped rows removed: "
             f"{np.mean([np.isin(np.flatnonzero(~m), flipped).sum() for m in masks[name]]):.1f}"
             f"/60" if name in masks else "")
    print(f"{name:15s} test accuracy {acc.mean():.3f} +- "
          f"{acc.std(ddof=1) / np.sqrt(n_seeds):.3f}{found}")

# %%
# Tune the pruned fraction inside cross-validation
# ------------------------------------------------
# Pruning only ever touches the training folds; the validation rows for the
# scores are drawn inside each fold by cross-fitting (every row is scored).
# ``memory`` caches the scoring, so the three fractions cost one scoring per
# fold.
model = PrunedEstimator(
    DataPruner(InfluenceTransformer(SeedEnsembleClassifier(n_seeds=3, random_state=0)),
               validation_fraction=0.5, random_state=0),
    LogisticRegression(C=0.1, max_iter=500), memory=memory)
search = GridSearchCV(model, {"pruner__fraction": [0.05, 0.1, 0.2]}, cv=3)
search.fit(X_train, y_train)
for fraction, score in zip(search.cv_results_["param_pruner__fraction"],
                           search.cv_results_["mean_test_score"]):
    print(f"pruning {fraction:.2f}: cross-validated accuracy {score:.3f}")
print(f"best fraction {search.best_params_['pruner__fraction']}, test accuracy "
      f"{search.score(X_test, y_test):.3f}")
cache.cleanup()

# %%
# Plot
# ----
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
if plt is not None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(accuracy)
    means = [accuracy[n].mean() for n in names]
    errors = [accuracy[n].std(ddof=1) / np.sqrt(n_seeds) for n in names]
    ax.bar(names, means, yerr=errors, capsize=4, color=["grey", "C0", "C1", "C2"])
    ax.set_ylim(min(means) - 0.05, 1)
    ax.set_ylabel(f"test accuracy ({n_seeds} seeds, mean +- s.e.)")
    ax.set_title("digits with 10% flipped labels, 10% pruned")
    fig.tight_layout()
    fig.savefig("plot_pruning.png", dpi=100)
