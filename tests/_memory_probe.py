"""Peak memory of scoring a ~1M-parameter CNN with 16 seeds (run as a script).

Prints one JSON line: parameters, the process's resident high-water mark after
training (the baseline) and after EK-FAC fit + transform, in MiB.
"""

import json
import sys

import numpy as np
import torch
from skorch import NeuralNetClassifier
from torch import nn

from skdtda import InfluenceTransformer, SeedEnsembleClassifier


def _vm_hwm_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("no VmHWM")


class WideCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 128, 3, padding=1, stride=2), nn.ReLU(),
            nn.Conv2d(128, 256, 3, padding=1, stride=2), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.body(x.reshape(-1, 3, 16, 16))


def main():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(96, 3 * 16 * 16)).astype(np.float32)
    y = rng.integers(0, 10, 96)
    net = NeuralNetClassifier(WideCNN, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                              lr=0.01, max_epochs=1, batch_size=32, train_split=None, verbose=0)
    ens = SeedEnsembleClassifier(net, n_seeds=16, random_state=0).fit(X, y)
    n_params = sum(p.numel() for p in ens.estimators_[0].module_.parameters())
    base = _vm_hwm_mib()
    influence = InfluenceTransformer(ens, curvature="ekfac").fit(X, y)
    scores = influence.transform(X[:40])
    json.dump(dict(n_params=n_params, base_mib=base, peak_mib=_vm_hwm_mib(),
                   finite=bool(np.isfinite(scores).all()), shape=list(scores.shape)),
              sys.stdout)


if __name__ == "__main__":
    main()
