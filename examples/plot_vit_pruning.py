"""
Pruning a vision transformer's training data (the paper's Figure 6 at CPU scale)
================================================================================

The paper prunes the training set of a vision transformer by distributional
influence and retrains. This is the same experiment on scikit-learn's digits,
small enough for a laptop CPU: a transformer over 16 patches of 2x2 pixels
(patch embedding, multi-head self-attention with ``nn.Linear`` projections,
LayerNorm, an MLP block), 10% of the training labels flipped, 10% of the
rows pruned by

* **distributional** influence: each row's predicted change of the mean
  validation loss, averaged over the seeds' per-seed predictions (one pruned
  set for every seed);
* **fixed-seed** influence: seed ``s`` is retrained on the set its own
  influence function chose;
* **random** removal,

then the same seeds are retrained on each pruned set. EK-FAC is taken over
the transformer's Linear layers; its LayerNorm parameters and positional
embedding are held fixed (``fixed_parameters_``).

Run it with ``OMP_NUM_THREADS=1 python examples/plot_vit_pruning.py``.
"""

import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch
from joblib import Memory
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from skorch import NeuralNetClassifier
from torch import nn

from skdtda import DataPruner, InfluenceTransformer, SeedEnsembleClassifier

torch.set_num_threads(1)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(n, t, d))


class TinyViT(nn.Module):
    def __init__(self, dim=24, heads=3, hidden=48):
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.pos = nn.Parameter(torch.zeros(1, 16, dim))
        self.norm1, self.norm2, self.norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        patches = x.reshape(-1, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(len(x), 16, 4)
        h = self.embed(patches) + self.pos
        h = h + self.attn(self.norm1(h))
        h = h + self.mlp(self.norm2(h))
        return self.head(self.norm(h).mean(dim=1))


X, y = load_digits(return_X_y=True)
X = (X / 16).astype(np.float32)
X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=600, stratify=y,
                                                    random_state=0)
X_val, X_test, y_val, y_test = train_test_split(X_rest, y_rest, train_size=300, stratify=y_rest,
                                                random_state=0)
rng = np.random.RandomState(0)
flipped = rng.choice(len(y_train), 60, replace=False)
y_train = y_train.copy()
y_train[flipped] = (y_train[flipped] + rng.randint(1, 10, 60)) % 10

n_seeds = 4
net = NeuralNetClassifier(TinyViT, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam,
                          lr=0.003, max_epochs=25, batch_size=64, train_split=None, verbose=0)
ensemble = SeedEnsembleClassifier(net, n_seeds=n_seeds, random_state=0)
influence = InfluenceTransformer(ensemble)
cache = tempfile.TemporaryDirectory()
common = dict(fraction=0.1, validation_data=(X_val, y_val),
              memory=Memory(cache.name, verbose=0))  # the fixed-seed pruners reuse the scoring


def test_accuracy(mask):
    """Each seed's test accuracy after training on the rows in mask."""
    refit = clone(ensemble).fit(X_train[mask], y_train[mask])
    return (refit.predict_members(X_test) == y_test).mean(axis=1)


distributional = DataPruner(influence, **common).fit(X_train, y_train)
fitted = distributional.influence_
print(f"curvature_={fitted.curvature_!r} over {fitted.attributed_layers_}; held fixed: "
      f"{sorted(fitted.fixed_parameters_)}")
masks = {
    "distributional": [distributional.sample_mask_] * n_seeds,
    "fixed-seed": [DataPruner(influence, mode="fixed_seed", seed_index=s, **common)
                   .fit(X_train, y_train).sample_mask_ for s in range(n_seeds)],
    "random": [DataPruner(fraction=0.1, mode="random", random_state=s)
               .fit(X_train, y_train).sample_mask_ for s in range(n_seeds)],
}
accuracy = {"unpruned": test_accuracy(np.ones(len(y_train), dtype=bool)),
            "distributional": test_accuracy(distributional.sample_mask_)}
for name in ("fixed-seed", "random"):
    accuracy[name] = np.array([test_accuracy(mask)[s] for s, mask in enumerate(masks[name])])
cache.cleanup()

for name, acc in accuracy.items():
    found = (f", flipped rows removed: "
             f"{np.mean([np.isin(np.flatnonzero(~m), flipped).sum() for m in masks[name]]):.1f}"
             f"/60" if name in masks else "")
    print(f"{name:15s} test accuracy {acc.mean():.3f} +- "
          f"{acc.std(ddof=1) / np.sqrt(n_seeds):.3f}{found}")

# %%
# Test accuracy after retraining on each pruned set
# -------------------------------------------------
fig, ax = plt.subplots(figsize=(6, 3.5))
names = list(accuracy)
means = [accuracy[n].mean() for n in names]
errors = [accuracy[n].std(ddof=1) / np.sqrt(n_seeds) for n in names]
ax.bar(names, means, yerr=errors, capsize=4, color=["grey", "C0", "C1", "C2"])
ax.set_ylim(min(means) - 0.05, 1)
ax.set_ylabel(f"test accuracy ({n_seeds} seeds, mean +- s.e.)")
ax.set_title("tiny ViT on digits, 10% flipped labels, 10% pruned")
fig.tight_layout()
plt.show()
