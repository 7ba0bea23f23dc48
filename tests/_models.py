"""Modules of the kinds users bring, for the architecture tests.

None of them is a plain Linear stack: layers sit in nested containers,
residual blocks, attention blocks and custom ``forward`` methods, and some
carry parameters no supported layer owns (LayerNorm, BatchNorm, positional
embeddings, ``nn.MultiheadAttention``).
"""

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Conv2d-ReLU-MaxPool x2, Linear x2 on 8x8 digits given as 64 flat features."""

    def __init__(self, width=8, hidden=32, n_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 4, hidden), nn.ReLU(),
                                  nn.Linear(hidden, n_classes))

    def forward(self, x):
        return self.head(self.features(x.reshape(-1, 1, 8, 8)))


class NestedMLP(nn.Module):
    """The user's own MLP whose layers sit in an ``nn.Sequential`` attribute."""

    def __init__(self, n_features=4, n_classes=3, width=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, width), nn.Tanh(),
                                 nn.Sequential(nn.Linear(width, width), nn.ReLU()),
                                 nn.Linear(width, n_classes))

    def forward(self, x):
        return self.net(x)


class ResidualLN(nn.Module):
    """A residual block with LayerNorm (its affine parameters are held fixed)."""

    def __init__(self, n_features=4, n_classes=3, width=16):
        super().__init__()
        self.inp = nn.Linear(n_features, width)
        self.norm = nn.LayerNorm(width)
        self.block = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.out = nn.Linear(width, n_classes)

    def forward(self, x):
        h = self.inp(x)
        return self.out(h + self.block(self.norm(h)))


class TorchTransformer(nn.Module):
    """Patch embedding + torch's own ``nn.TransformerEncoderLayer`` (sequence-first,
    ``nn.MultiheadAttention`` inside) + a free positional embedding."""

    def __init__(self, n_features=8, patch=2, dim=8, n_classes=3):
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(patch, dim)
        self.pos = nn.Parameter(torch.zeros(n_features // patch, 1, dim))
        self.encoder = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=16,
                                                  dropout=0.1)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x):
        tokens = self.embed(x.reshape(len(x), -1, self.patch).transpose(0, 1)) + self.pos
        return self.head(self.encoder(tokens).mean(dim=0))


class LinearAttention(nn.Module):
    """Self-attention written with ``nn.Linear`` projections (batch first)."""

    def __init__(self, n_features=8, patch=2, dim=8, n_classes=3):
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(patch, dim)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x):
        h = self.embed(x.reshape(len(x), -1, self.patch))
        att = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / h.shape[-1] ** 0.5, -1)
        h = self.norm(h + self.proj(att @ self.v(h)))
        return self.head(h.mean(dim=1))


class BagOfTokens(nn.Module):
    """Token ids given as float features; an EmbeddingBag (mean) and an Embedding."""

    def __init__(self, vocab=12, dim=6, n_classes=3):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab, dim, mode="mean")
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.head = nn.Linear(2 * dim, n_classes)

    def forward(self, x):
        ids = x.long()
        return self.head(torch.cat([self.bag(ids), self.emb(ids).sum(dim=1)], dim=1))


class NormDropout(nn.Module):
    """BatchNorm1d and Dropout: training mode mixes rows and is random."""

    def __init__(self, n_features=4, n_classes=3, width=16):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, width), nn.BatchNorm1d(width),
                                  nn.ReLU(), nn.Dropout(0.3), nn.Linear(width, n_classes))

    def forward(self, x):
        return self.body(x)


class Conv1dNet(nn.Module):
    """Conv1d with stride and dilation over a 1-channel signal."""

    def __init__(self, n_features=8, n_classes=3):
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3, stride=2, dilation=1, padding=1)
        self.conv2 = nn.Conv1d(4, 4, 2, dilation=2, bias=False)
        self.head = nn.Linear(4 * 2, n_classes)

    def forward(self, x):
        h = torch.relu(self.conv(x[:, None, :]))
        return self.head(torch.relu(self.conv2(h)).flatten(1))


class SharedHead(nn.Module):
    """One Linear module registered under two names and called twice."""

    def __init__(self, n_features=4, n_classes=3, width=16):
        super().__init__()
        self.inp = nn.Linear(n_features, width)
        self.head = nn.Linear(width, n_classes)
        self.head_again = self.head

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.head(h) + 0.5 * self.head_again(torch.relu(h))


class TiedTokens(nn.Module):
    """Tokens embedded, mixed by two Linear layers sharing one weight, and read out
    through the embedding's own weight (``h @ W^T``, weight tying as in language
    models): neither the embedding nor the tied Linears get their whole gradient
    from their own calls."""

    def __init__(self, n_features=5, n_classes=3, vocabulary=12, dim=6):
        super().__init__()
        self.emb = nn.Embedding(vocabulary, dim)
        self.a = nn.Linear(dim, dim)
        self.b = nn.Linear(dim, dim)
        self.b.weight = self.a.weight
        self.head = nn.Linear(vocabulary, n_classes)

    def forward(self, x):
        h = self.emb(x.long()).mean(dim=1)
        h = torch.tanh(self.b(torch.tanh(self.a(h))))
        return self.head(h @ self.emb.weight.T)


class GRUNet(nn.Module):
    """torch's GRU over 4 steps of 2 features: its op writes in place into an
    unbatched hidden state, which vmap cannot run."""

    def __init__(self, n_features=8, n_classes=3, width=6):
        super().__init__()
        self.rnn = nn.GRU(2, width, batch_first=True)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        out, _ = self.rnn(x.reshape(len(x), -1, 2))
        return self.head(out.mean(dim=1))
