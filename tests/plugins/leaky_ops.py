"""Custom ops for the structured-Jacobian tests: declared ELEMENTWISE, with backwards that break the claim.

- leaky(x): x², whose backward also leaks LEAK × the upstream gradient of the next element into each
  element: an entry off the elementwise structure (J[k+1, k] = LEAK), and every column sum off by LEAK.
- leaky_balanced(x): the same leak, taken back from the element's own entry, so every column sums to the
  right value (a VJP with all-ones weights cannot see it; only random-sign VJPs can).
- wrong_square(x): x² with the backward 2.001·x: elementwise, but wrong on every element.
"""
import torch

LEAK = 1e-6


def _shifted(g):
    flat = g.reshape(-1)
    nxt = torch.zeros_like(flat)
    nxt[:-1] = flat[1:]
    return nxt.reshape(g.shape)


class Leaky(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g + LEAK * _shifted(g)


class LeakyBalanced(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        has_next = _shifted(torch.ones_like(g))
        return 2 * x * g + LEAK * (_shifted(g) - has_next * g)


class WrongSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2.001 * x * g


OPS = {"leaky": Leaky.apply, "leaky_balanced": LeakyBalanced.apply, "wrong_square": WrongSquare.apply}
NUMPY_OPS = {name: (lambda x: x * x) for name in OPS}
ELEMENTWISE = set(OPS)
