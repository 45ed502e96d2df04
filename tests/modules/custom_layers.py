"""Layers whose gradient is hand-written in a torch.autograd.Function: one right, and wrong twins of the
kinds that slip through (a weight gradient off by a relative 1e-4, which torch.autograd.gradcheck's rtol
1e-3 lets pass; a bias gradient averaged instead of summed over the batch), also buried inside a model.

Each wrong layer subclasses the right one and changes only the Function, so under the same seed both
have the same parameters: the right twin's autograd gradient is the truth the tests compare against.
"""
import torch
from torch import nn


class ScaledSoftplusFn(torch.autograd.Function):
    """y = softplus(x * w + b), w and b per feature; x (batch, features)."""

    @staticmethod
    def forward(ctx, x, weight, bias, beta=1.0):
        z = x * weight + bias
        ctx.save_for_backward(x, weight, z)
        ctx.beta = beta
        return torch.nn.functional.softplus(z, beta=beta)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, z = ctx.saved_tensors
        gz = grad_out * torch.sigmoid(ctx.beta * z)
        return gz * weight, (gz * x).sum(0), gz.sum(0), None


class SlightlyOffFn(ScaledSoftplusFn):
    """Wrong: the weight gradient is scaled by (1 + 1e-4), as a mistyped constant would."""

    @staticmethod
    def backward(ctx, grad_out):
        gx, gw, gb, none = ScaledSoftplusFn.backward(ctx, grad_out)
        return gx, gw * (1 + 1e-4), gb, none


class MeanBiasFn(ScaledSoftplusFn):
    """Wrong: the bias gradient is averaged over the batch instead of summed."""

    @staticmethod
    def backward(ctx, grad_out):
        gx, gw, gb, none = ScaledSoftplusFn.backward(ctx, grad_out)
        return gx, gw, gb / grad_out.shape[0], none


class ScaledSoftplus(nn.Module):
    FN = ScaledSoftplusFn

    def __init__(self, features=3, beta=1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, features))
        self.bias = nn.Parameter(torch.linspace(-0.2, 0.3, features))
        self.beta = beta

    def forward(self, x):
        return self.FN.apply(x, self.weight, self.bias, self.beta)


class SlightlyOff(ScaledSoftplus):
    FN = SlightlyOffFn


class MeanBias(ScaledSoftplus):
    FN = MeanBiasFn


class Classifier(nn.Module):
    """A model with the custom layer inside: parameters layers.0.*, layers.1.weight/bias, layers.2.*."""

    ACTIVATION = ScaledSoftplus

    def __init__(self, features=3, hidden=3):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(features, hidden), self.ACTIVATION(hidden), nn.Linear(hidden, 2))

    def forward(self, x):
        return self.layers(x)


class ClassifierWithMeanBias(Classifier):
    """The wrong bias gradient inside the model: gradcheck must blame layers.1.bias and only it."""

    ACTIVATION = MeanBias


class ClassifierSlightlyOff(Classifier):
    """The 1e-4 weight error inside the model: gradcheck must blame layers.1.weight."""

    ACTIVATION = SlightlyOff
