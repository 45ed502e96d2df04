"""Names in a model file that are not modules, for the error paths of `gradcheck module`."""
import torch

HIDDEN = 3


class Config:
    """A plain class, not an nn.Module."""

    def __init__(self, width=3):
        self.width = width


def make_tensor():
    """A factory that returns a tensor, not a module."""
    return torch.ones(2)


def make_with_args(width):
    """A function that needs an argument: not a factory gradcheck can call."""
    return torch.nn.Linear(width, 1)


class Strict(torch.nn.Module):
    """A module whose constructor refuses what it does not understand."""

    def __init__(self, width=2):
        super().__init__()
        if width < 1:
            raise ValueError("width must be at least 1")
        self.fc = torch.nn.Linear(width, 1)

    def forward(self, x):
        return self.fc(x)
