"""A corpus of custom autograd Functions for the tests: right ones, and wrong ones of known shapes."""
import numpy as np
import torch


def softplus_with(backward):
    class F(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.nn.functional.softplus(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return backward(x, g)
    return F.apply


class MatTimes(torch.autograd.Function):
    """A @ M for a fixed non-symmetric M; the wrong version returns the gradient transposed."""

    M = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)

    @staticmethod
    def forward(ctx, a):
        return a @ MatTimes.M.to(a.dtype)

    @staticmethod
    def backward(ctx, g):
        return g @ MatTimes.M.to(g.dtype).T


class MatTimesTransposed(MatTimes):
    @staticmethod
    def backward(ctx, g):
        return (g @ MatTimes.M.to(g.dtype).T).T


class Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * g


sig = torch.sigmoid
OPS = {
    "good_softplus": softplus_with(lambda x, g: g * sig(x)),
    "double_softplus": softplus_with(lambda x, g: 2 * g * sig(x)),
    "flipped_softplus": softplus_with(lambda x, g: -g * sig(x)),
    "negbranch_softplus": softplus_with(lambda x, g: torch.where(x < 0, 3 * g * sig(x), g * sig(x))),
    "tiny_softplus": softplus_with(lambda x, g: g * sig(x) * (1 + 1e-6)),
    "good_mat": MatTimes.apply,
    "transposed_mat": MatTimesTransposed.apply,
    "good_cube": Cube.apply,
}
NUMPY_OPS = {"good_softplus": lambda x: np.logaddexp(0.0, x)}
ELEMENTWISE = {"good_softplus", "double_softplus", "flipped_softplus", "negbranch_softplus", "tiny_softplus",
               "good_cube"}


class SquareWithJvp(torch.autograd.Function):
    """x² with backward and forward mode; `wrong_jvp` forgets the factor 2 in jvp only."""

    factor = 2.0

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.x = x
        return x ** 2

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g

    @staticmethod
    def jvp(ctx, v):
        return SquareWithJvp.factor * ctx.x * v


class SquareWrongJvp(SquareWithJvp):
    @staticmethod
    def jvp(ctx, v):
        return ctx.x * v


class CubeNoDoubleBackward(torch.autograd.Function):
    """x³ whose backward is right but computed under no_grad: second derivatives come out wrong."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x.detach() ** 2 * g


OPS.update({"square_jvp": SquareWithJvp.apply, "square_wrong_jvp": SquareWrongJvp.apply,
            "cube_flat": CubeNoDoubleBackward.apply})
