"""Example plugin: two hand-written softplus ops, one right and one with a subtly wrong backward.

    gradcheck check "my_softplus(x).sum()" --plugin expressions/plugins/softplus_ops.py -v x="randn(5)"
    gradcheck check "bad_softplus(x).sum()" --plugin expressions/plugins/softplus_ops.py -v x="randn(5)"
"""
import numpy as np
import torch


class MySoftplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


class BadSoftplus(torch.autograd.Function):
    """Backward uses sigmoid(x) * (1 + 1e-4): a relative error torch's default rtol 1e-3 misses."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x) * (1 + 1e-4)


OPS = {"my_softplus": MySoftplus.apply, "bad_softplus": BadSoftplus.apply}
NUMPY_OPS = {"my_softplus": lambda x: np.logaddexp(0.0, x), "bad_softplus": lambda x: np.logaddexp(0.0, x)}
ELEMENTWISE = {"my_softplus", "bad_softplus"}
