"""The benchmark architectures, importable with torch alone (the kronfluence venv
loads the same classes from this file to rebuild each seed's module).

- ``DigitsCNN``: Conv2d-ReLU-MaxPool x2, Linear x2 on 8x8 digits (6,058 parameters);
- ``ResNetCNN``: a ResNet-style CNN (basic residual blocks with BatchNorm2d) on
  3x32x32 images, ~0.6M parameters;
- ``DigitsTransformer``: patch embedding, multi-head self-attention written with
  ``nn.Linear`` projections, LayerNorm, an MLP block, on digits as 16 patches of 2x2.
"""

import torch
from torch import nn
from torch.nn import functional as F


class DigitsCNN(nn.Module):
    def __init__(self, width=8, hidden=64, n_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 4, hidden), nn.ReLU(),
                                  nn.Linear(hidden, n_classes))

    def forward(self, x):
        return self.head(self.features(x.reshape(-1, 1, 8, 8)))


class _Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNetCNN(nn.Module):
    def __init__(self, widths=(32, 64, 128), blocks=(1, 1, 3), n_classes=10, side=32):
        super().__init__()
        self.side = side
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, c_in = [], widths[0]
        for i, (c, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(_Block(c_in, c, stride=2 if (i and not j) else 1))
                c_in = c
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x):
        h = self.layers(self.stem(x.reshape(-1, 3, self.side, self.side)))
        return self.fc(h.mean(dim=(2, 3)))


class _Attention(nn.Module):
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


class DigitsTransformer(nn.Module):
    def __init__(self, dim=32, heads=4, hidden=64, n_classes=10, patch=2):
        super().__init__()
        self.patch = patch
        n_patches = (8 // patch) ** 2
        self.embed = nn.Linear(patch * patch, dim)
        self.pos = nn.Parameter(torch.zeros(1, n_patches, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x):
        p = self.patch
        img = x.reshape(-1, 8 // p, p, 8 // p, p).permute(0, 1, 3, 2, 4)
        h = self.embed(img.reshape(len(x), -1, p * p)) + self.pos
        h = h + self.attn(self.norm1(h))
        h = h + self.mlp(self.norm2(h))
        return self.head(self.norm(h).mean(dim=1))


MODELS = {"DigitsCNN": DigitsCNN, "ResNetCNN": ResNetCNN, "DigitsTransformer": DigitsTransformer}
