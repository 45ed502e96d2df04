import torch

class NoneGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        return x * y
    @staticmethod
    def backward(ctx, g):
        return g, None

class Inplace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x.mul_(1.0).add_(0.0)
        x.add_(1.0)
        return y * 2
    @staticmethod
    def backward(ctx, g):
        return 2 * g

class IgnoresGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 2
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x

class Random(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 3
    @staticmethod
    def backward(ctx, g):
        return g * 3 + torch.randn_like(g) * 1e-3

class Float32(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 3
    @staticmethod
    def backward(ctx, g):
        return (g * 3).float()

OPS = {"nonegrad": NoneGrad.apply, "inplace": Inplace.apply, "ignores": IgnoresGrad.apply,
       "rnd": Random.apply, "f32": Float32.apply}
