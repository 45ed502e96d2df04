"""Custom Functions whose backward (or forward) is broken in ways autograd itself refuses."""
import torch


class Raises(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        raise ValueError("backward exploded")


class WrongShape(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return torch.cat([g, g]) * 2  # twice as many elements as x


class DoubleBackwardRaises(torch.autograd.Function):
    """Right first derivative (3x²), but its backward is not differentiable again."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return DoubleRaises.apply(x) * g


class DoubleRaises(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 3 * x ** 2

    @staticmethod
    def backward(ctx, g):
        raise ZeroDivisionError("no second derivative here")


class ForwardRaises(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        raise KeyError("forward exploded")

    @staticmethod
    def backward(ctx, g):
        return g


OPS = {"raises": Raises.apply, "wrongshape": WrongShape.apply, "cube2": DoubleBackwardRaises.apply,
       "fwdraises": ForwardRaises.apply}
