"""Parameters that should get a gradient and get None: the real ways it happens. The loss depends on
each of them (change the parameter, the loss changes), but autograd never reaches it, so the optimizer
would never move it. gradcheck must fail each one with "gets no gradient".

Each broken model subclasses a correct one and changes only its forward, so under the same seed both
have the same parameters: the correct one's autograd gradient is the truth.
"""
import torch
from torch import nn
import torch.nn.functional as F


class Affine(nn.Module):
    """The correct model: y = tanh(x @ W.T + b) * gain."""

    def __init__(self, features=3, out=2):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out, features) * 0.5)
        self.bias = nn.Parameter(torch.randn(out) * 0.1)
        self.gain = nn.Parameter(torch.tensor(1.25))

    def forward(self, x):
        return torch.tanh(F.linear(x, self.weight, self.bias)) * self.gain


class DetachedWeight(Affine):
    """`.detach()` on the weight (copied from code that meant to detach an input)."""

    def forward(self, x):
        return torch.tanh(F.linear(x, self.weight.detach(), self.bias)) * self.gain


class NoGradGain(Affine):
    """The gain applied under torch.no_grad() (a block meant only for logging grew an assignment)."""

    def forward(self, x):
        h = torch.tanh(F.linear(x, self.weight, self.bias))
        with torch.no_grad():
            scale = self.gain * 1.0
        return h * scale


class DataBias(Affine):
    """`.data` reads the bias without its history."""

    def forward(self, x):
        return torch.tanh(F.linear(x, self.weight, self.bias.data)) * self.gain


class _LinearNoWeightGrad(torch.autograd.Function):
    """A hand-written linear whose backward returns None for the weight ("I'll fill it in later")."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return x @ weight.T + bias

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        return grad_out @ weight, None, grad_out.sum(0)


class FunctionForgetsWeight(Affine):
    def forward(self, x):
        return torch.tanh(_LinearNoWeightGrad.apply(x, self.weight, self.bias)) * self.gain
