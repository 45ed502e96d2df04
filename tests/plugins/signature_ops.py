"""Custom ops for the signature and per-call-site tests: each shows one way real Functions are called."""
import numpy as np
import torch

F = torch.autograd.Function


class Typed(F):
    """Refuses anything but what a Python caller passes: a float eps, an int power, a bool flag."""

    @staticmethod
    def forward(ctx, x, eps, power, flag):
        if type(eps) is not float or type(power) is not int or type(flag) is not bool:
            raise TypeError(f"got {type(eps).__name__}, {type(power).__name__}, {type(flag).__name__}")
        ctx.save_for_backward(x)
        ctx.eps, ctx.power, ctx.flag = eps, power, flag
        sign = -1.0 if flag else 1.0
        return sign * (x ** power + eps)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        sign = -1.0 if ctx.flag else 1.0
        return sign * ctx.power * x ** (ctx.power - 1) * g, None, None, None


class Affine(F):
    """forward(x, w, b=None) whose backward returns exactly as many gradients as it was given
    arguments: right only if an omitted bias is not passed at all."""

    @staticmethod
    def forward(ctx, x, w, b=None):
        ctx.save_for_backward(x, w)
        ctx.given = 2 if b is None else 3
        return x * w if b is None else x * w + b

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        grads = (g * w, g * x, g)
        return grads[:ctx.given]


class SpMMValuesFloat32(F):
    """Sparse matmul (indices, values, shape, dense) whose values' gradient comes back in float32."""

    @staticmethod
    def forward(ctx, indices, values, shape, dense):
        a = torch.zeros(shape, dtype=values.dtype).index_put(tuple(indices), values, accumulate=True)
        ctx.save_for_backward(indices, dense, a)
        return a @ dense

    @staticmethod
    def backward(ctx, g):
        indices, dense, a = ctx.saved_tensors
        rows, cols = indices
        return None, (g[rows] * dense[cols]).sum(-1).float(), None, a.T @ g


class LogCosh(F):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.log(torch.cosh(x))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.tanh(x)


class RoundedSquare(F):
    """x² computed through float32 inside a float64 op: right backward, a noisy forward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x.float() ** 2).double()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class ReturnsSavedBuffer(F):
    """3x whose backward returns (and keeps changing) a tensor of its own: each call adds to it."""

    @staticmethod
    def forward(ctx, x):
        ctx.buffer = torch.zeros_like(x)
        return 3 * x

    @staticmethod
    def backward(ctx, g):
        ctx.buffer.mul_(0.5).add_(1.5 * g)
        return ctx.buffer


class SumAndSquare(F):
    """Two outputs of different shapes: x.sum() and x * x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sum(), x * x

    @staticmethod
    def backward(ctx, gs, gq):
        (x,) = ctx.saved_tensors
        return gs + 2 * x * gq


OPS = {
    "sum_and_sq": SumAndSquare.apply,
    "typed": Typed.apply,
    "affine": Affine.apply,
    "spmm_f32": lambda indices, values, shape, dense: SpMMValuesFloat32.apply(indices.long(), values, shape, dense),
    "logcosh": LogCosh.apply,
    "logcosh_bad_numpy": LogCosh.apply,
    "rounded_sq": RoundedSquare.apply,
    "returns_buffer": ReturnsSavedBuffer.apply,
}
NUMPY_OPS = {
    "logcosh": lambda x: np.logaddexp(x, -x) - np.log(2.0),
    "logcosh_bad_numpy": lambda x: np.logaddexp(x, -x) - np.log(2.0) + 0.1 * x,  # a stray term
}
ELEMENTWISE = {"logcosh", "logcosh_bad_numpy"}
