"""Custom ops for the projected-check tests: x² whose backward is wrong at one element only."""
import os

import torch

WRONG_AT = 7  # flat index of the wrong element; how far off it is: $ONE_WRONG_DELTA (default 1e-3)


class OneWrong(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        grad = 2 * x * g
        bump = torch.zeros_like(grad).reshape(-1)
        bump[WRONG_AT] = float(os.environ.get("ONE_WRONG_DELTA", "1e-3"))
        return grad + bump.reshape(grad.shape) * g


OPS = {"onewrong": OneWrong.apply}
