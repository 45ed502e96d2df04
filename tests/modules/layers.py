"""Everyday models built from torch's own layers, written the way tutorials and notebooks write them.

Every gradient here is right (torch's layers are): gradcheck must pass each one, in eval mode and, for
the layers whose train mode differs (BatchNorm1d, Dropout), in train mode.
"""
import torch
from torch import nn
import torch.nn.functional as F


class Model(torch.nn.Module):
    """Seed 004's model, as the notebook writes it."""

    def __init__(self, in_feature=1, out_feature=3):
        super().__init__()
        self.line_layer = nn.Linear(in_features=in_feature, out_features=out_feature)

    def forward(self, x):
        x = self.line_layer(x)
        return x


class ConvNet(nn.Module):
    """A 1-D convolution over a short signal, tanh, then a linear read-out of the pooled channels."""

    def __init__(self, in_channels=1, channels=2, kernel_size=3):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, channels, kernel_size, padding=1)
        self.readout = nn.Linear(channels, 1)

    def forward(self, signal):                       # signal: (batch, in_channels, length)
        h = torch.tanh(self.conv(signal))
        return self.readout(h.mean(dim=-1)).squeeze(-1)


class NormNet(nn.Module):
    """Linear, LayerNorm (with its affine weight and bias), GELU."""

    def __init__(self, features=4):
        super().__init__()
        self.proj = nn.Linear(features, features)
        self.norm = nn.LayerNorm(features)

    def forward(self, x):
        return F.gelu(self.norm(self.proj(x)))


class BatchNet(nn.Module):
    """Linear then BatchNorm1d: in train mode the batch statistics are part of the function."""

    def __init__(self, features=3, hidden=4):
        super().__init__()
        self.fc = nn.Linear(features, hidden)
        self.bn = nn.BatchNorm1d(hidden)

    def forward(self, x):
        return torch.sigmoid(self.bn(self.fc(x)))


class DropoutNet(nn.Module):
    """Linear, ReLU-free tanh and dropout: in train mode each evaluation draws a mask from torch's RNG."""

    def __init__(self, features=3, hidden=5, p=0.5):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.drop = nn.Dropout(p)
        self.fc2 = nn.Linear(hidden, 2)

    def forward(self, x):
        return self.fc2(self.drop(torch.tanh(self.fc1(x))))


class TokenModel(nn.Module):
    """An embedding looked up by integer token ids (a long tensor), averaged, then a linear head."""

    def __init__(self, vocab=6, dim=3, classes=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens):                       # tokens: (batch, length), int64
        return self.head(self.embed(tokens).mean(dim=1))
