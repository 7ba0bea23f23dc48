"""Datasets shared by the tests."""

import torch


class Pairs(torch.utils.data.Dataset):
    """skorch's other input type: (x, y) items."""

    def __init__(self, X, y):
        self.X, self.y = X, y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return torch.as_tensor(self.X[i]), int(self.y[i])
