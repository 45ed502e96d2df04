"""Custom Functions for the verdict tests (test_verdicts.py): right ones and wrong ones at hard points."""
import torch


def elementwise(forward, backward):
    """A one-input Function from a forward and a backward(x, g)."""

    class F(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return forward(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return backward(x, g)
    return F.apply


def pair(backward_x):
    """x*x*y with the right backward to y and `backward_x(x, y, g)` to x (first order right either way)."""

    class XXY(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            ctx.save_for_backward(x, y)
            return x * x * y

        @staticmethod
        def backward(ctx, g):
            x, y = ctx.saved_tensors
            return backward_x(x, y, g), g * x * x
    return XXY.apply


OPS = {
    # 1/x², right and with a backward 3x too large (a pole at 0: tiny points are hard)
    "inv_square": elementwise(lambda x: 1 / (x * x), lambda x, g: -2 * g / x**3),
    "inv_square_3x": elementwise(lambda x: 1 / (x * x), lambda x, g: -6 * g / x**3),
    # tanh whose forward rounds through float32 inside a float64 op; backward exact (and 2x wrong)
    "tanh32": elementwise(lambda x: torch.tanh(x.float()).double(), lambda x, g: g * (1 - torch.tanh(x) ** 2)),
    "tanh32_2x": elementwise(lambda x: torch.tanh(x.float()).double(), lambda x, g: 2 * g * (1 - torch.tanh(x) ** 2)),
    # smooth y·sin(y) with a backward off by a relative 2e-6: no kink anywhere
    "ysin_off": elementwise(lambda y: y * torch.sin(y),
                            lambda y, g: g * (torch.sin(y) + y * torch.cos(y)) * (1 + 2e-6)),
    # leaky relu (slope 0.1 left of 0): backward at 0 choosing 0.1 (a one-sided derivative) or 2 (neither)
    "leaky": elementwise(lambda x: torch.where(x > 0, x, 0.1 * x),
                         lambda x, g: g * torch.where(x > 0, 1.0, 0.1).to(x.dtype)),
    "leaky_bad": elementwise(lambda x: torch.where(x > 0, x, 0.1 * x),
                             lambda x, g: g * torch.where(x >= 0, torch.where(x == 0, 2.0, 1.0), 0.1).to(x.dtype)),
    # x³ with backward 3x² plus 0.25 where x == 0 (numeric there is 0: no factor explains it)
    "cube_bump": elementwise(lambda x: x**3, lambda x, g: g * (3 * x**2 + 0.25 * (x == 0).to(x.dtype))),
    # x³ with backward off by different relative amounts per element (+3e-5, -5e-5, 0)
    "cube_jitter": elementwise(lambda x: x**3, lambda x, g: g * 3 * x**2 * (1 + torch.tensor(
        [3e-5, -5e-5, 0.0], dtype=x.dtype))),
    # x³ with backward 2.5x too large, for the Taylor diagnosis
    "cube_wide": elementwise(lambda x: x**3, lambda x, g: g * 7.5 * x**2),
    # x·x·y: right, and with x's backward using y.detach() (its mixed second partial is lost)
    "xxy": pair(lambda x, y, g: 2 * g * x * y),
    "xxy_detached": pair(lambda x, y, g: 2 * g * x * y.detach()),
}
