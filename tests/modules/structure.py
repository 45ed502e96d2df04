"""Models whose shape is the point: buffers, frozen and unused parameters, nested submodules, a
factory, constructor keywords, several forward arguments and a tuple output.
"""
import torch
from torch import nn


class Standardize(nn.Module):
    """Registered buffers: a fixed mean/scale and a call counter the forward bumps (state that must
    come back unchanged after a check, as BatchNorm's num_batches_tracked does)."""

    def __init__(self, features=3):
        super().__init__()
        self.register_buffer("mean", torch.linspace(-0.5, 0.5, features))
        self.register_buffer("scale", torch.linspace(1.0, 2.0, features))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.fc = nn.Linear(features, 2)

    def forward(self, x):
        self.calls += 1
        return self.fc((x - self.mean) / self.scale)


class FineTune(nn.Module):
    """A pretrained backbone kept frozen (requires_grad False) under a trainable head."""

    def __init__(self, features=3, hidden=4):
        super().__init__()
        self.backbone = nn.Linear(features, hidden)
        self.backbone.requires_grad_(False)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(torch.relu(self.backbone(x)) + 0.1)


class AuxHead(nn.Module):
    """An auxiliary head that is built but not used by forward (left over from another experiment)."""

    def __init__(self, features=3):
        super().__init__()
        self.main = nn.Linear(features, 2)
        self.aux = nn.Linear(features, 2)
        self.temperature = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return self.main(x) / self.temperature


class Encoder(nn.Module):
    """Nested submodules: parameters are named block.0.weight, block.2.bias, heads.score.weight."""

    def __init__(self, features=3, hidden=4):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, hidden))
        self.heads = nn.ModuleDict({"score": nn.Linear(hidden, 1)})

    def forward(self, x):
        return self.heads["score"](torch.sin(self.block(x))).squeeze(-1)


def make_mlp():
    """A factory with no arguments that returns a module."""
    return nn.Sequential(nn.Linear(2, 3), nn.Softplus(), nn.Linear(3, 1))


class MLP(nn.Module):
    """Built from keyword arguments: gradcheck module structure.py:MLP --init "in_features=2, hidden=[4, 3],
    activation='tanh', bias=False"."""

    ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus}

    def __init__(self, in_features=2, hidden=(3,), activation="tanh", bias=True, out_features=1):
        super().__init__()
        sizes = [in_features, *hidden]
        layers = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b, bias=bias), self.ACTIVATIONS[activation]()]
        layers.append(nn.Linear(sizes[-1], out_features, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class TwoTower(nn.Module):
    """Two inputs, an optional keyword, and a tuple output (query and key embeddings)."""

    def __init__(self, q_features=3, k_features=2, dim=2):
        super().__init__()
        self.query = nn.Linear(q_features, dim)
        self.key = nn.Linear(k_features, dim, bias=False)

    def forward(self, q, k, scale=1.0):
        return torch.tanh(self.query(q)) * scale, self.key(k) ** 2
