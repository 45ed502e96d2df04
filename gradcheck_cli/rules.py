"""The local derivative rule each autograd node applies, by its class name, for `--explain`.

A node receives the gradient of the output with respect to what it produced (g) and passes on g
times its local derivative with respect to each input: the chain rule, one link at a time.
Every class the op table can produce has its rule here (tests/test_graph.py builds each op and
checks); any other class (a plugin's Function, an op torch adds later) gets the generic line.
"""
from __future__ import annotations

GENERIC = "passes on g · d(output)/d(input) for each input (its own backward)"

RULES: dict[str, str] = {
    "AccumulateGrad": "leaf: adds g into .grad (accumulates until zeroed)",
    # arithmetic; ...Backward1 is the variant with a Python number as one operand
    "AddBackward0": "d/da (a + b) = 1, d/db = 1 (summed over broadcast dims)",
    "AddBackward1": "d/da (a + c) = 1",
    "SubBackward0": "d/da (a - b) = 1, d/db = -1",
    "SubBackward1": "d/da (a - c) = 1",
    "RsubBackward0": "d/db (a - b) = -1",
    "RsubBackward1": "d/dx (c - x) = -1",
    "MulBackward0": "d/da (a*b) = b, d/db = a",
    "MulBackward1": "d/dx (c*x) = c",
    "DivBackward0": "d/da (a/b) = 1/b, d/db = -a/b**2",
    "DivBackward1": "d/dx (x/c) = 1/c",
    "NegBackward0": "d/dx (-x) = -1",
    "ReciprocalBackward0": "d/dx (c/x) = -c/x**2 (torch: c * reciprocal(x))",
    "PowBackward0": "d/dx x**n = n*x**(n-1)",
    "PowBackward1": "d/da a**b = b*a**(b-1), d/db = a**b * log(a)",
    "PowBackward2": "d/dx c**x = c**x * log(c)",
    "MaximumBackward0": "d/da maximum(a, b) = 1 where a > b, 1/2 at a tie (b likewise)",
    "MinimumBackward0": "d/da minimum(a, b) = 1 where a < b, 1/2 at a tie (b likewise)",
    # elementwise functions
    "SinBackward0": "d/dx sin(x) = cos(x)",
    "CosBackward0": "d/dx cos(x) = -sin(x)",
    "TanBackward0": "d/dx tan(x) = 1 + tan(x)**2",
    "AsinBackward0": "d/dx asin(x) = 1/sqrt(1 - x**2)",
    "AcosBackward0": "d/dx acos(x) = -1/sqrt(1 - x**2)",
    "AtanBackward0": "d/dx atan(x) = 1/(1 + x**2)",
    "SinhBackward0": "d/dx sinh(x) = cosh(x)",
    "CoshBackward0": "d/dx cosh(x) = sinh(x)",
    "TanhBackward0": "d/dx tanh(x) = 1 - tanh(x)**2",
    "ExpBackward0": "d/dx exp(x) = exp(x)",
    "Expm1Backward0": "d/dx expm1(x) = exp(x)",
    "LogBackward0": "d/dx log(x) = 1/x",
    "Log1PBackward0": "d/dx log1p(x) = 1/(1 + x)",
    "SqrtBackward0": "d/dx sqrt(x) = 1/(2*sqrt(x))",
    "AbsBackward0": "d/dx |x| = sign(x) (0 at 0)",
    "SigmoidBackward0": "d/dx sigmoid(x) = sigmoid(x)*(1 - sigmoid(x))",
    "ReluBackward0": "d/dx relu(x) = 1 where x > 0, else 0",
    "SoftplusBackward0": "d/dx softplus(x) = sigmoid(x)",
    "ClampBackward1": "d/dx clamp(x, lo, hi) = 1 inside [lo, hi], else 0",
    "ClampMinBackward0": "d/dx clamp(x, min=lo) = 1 where x >= lo, else 0",
    "ClampMaxBackward0": "d/dx clamp(x, max=hi) = 1 where x <= hi, else 0",
    "WhereBackward0": "d/da where(c, a, b) = 1 where c, d/db = 1 elsewhere",
    # reductions
    "SumBackward0": "d/dx_i sum(x) = 1 (g copied to every element)",
    "SumBackward1": "d/dx_i sum(x, dim) = 1 along dim",
    "MeanBackward0": "d/dx_i mean(x) = 1/N",
    "MeanBackward1": "d/dx_i mean(x, dim) = 1/N along dim",
    "ProdBackward0": "d/dx_i prod(x) = prod(x)/x_i (the product of the others)",
    "ProdBackward1": "d/dx_i prod(x, dim) = the product of the others along dim",
    "MaxBackward0": "d/dx_i max(x) = 1 at the maximum (split evenly at a tie), else 0",
    "MaxBackward1": "d/dx_i max(x, dim) = 1 at each maximum along dim, else 0",
    "MinBackward0": "d/dx_i min(x) = 1 at the minimum (split evenly at a tie), else 0",
    "MinBackward1": "d/dx_i min(x, dim) = 1 at each minimum along dim, else 0",
    "LogsumexpBackward0": "d/dx_i logsumexp(x) = softmax(x)_i",
    "LinalgVectorNormBackward0": "d/dx ||x||_2 = x/||x|| (p-norm: sign(x)*|x|**(p-1)/||x||**(p-1))",
    "NormBackward1": "d/dx ||x||_2 = x/||x||",
    "SoftmaxBackward0": "d/dx_j softmax(x)_i = s_i*(δij - s_j): passes on s*(g - sum(g*s))",
    "LogSoftmaxBackward0": "d/dx_j log_softmax(x)_i = δij - s_j: passes on g - s*sum(g)",
    # linear algebra
    "MmBackward0": "d/dA (A@B) = g@B.T, d/dB = A.T@g",
    "MvBackward0": "d/dA (A@v) = outer(g, v), d/dv = A.T@g",
    "DotBackward0": "d/da (a·b) = b, d/db = a",
    "BmmBackward0": "d/dA (A@B) = g@B^T, d/dB = A^T@g per batch",
    "AddmmBackward0": "d/dA (b + A@B) = g@B.T, d/dB = A.T@g, d/db = g summed over rows",
    "UnsafeViewBackward0": "reshape: g reshaped back",
    # shape: gradients are moved, never scaled
    "ViewBackward0": "view/reshape: g reshaped back to x's shape",
    "ReshapeAliasBackward0": "reshape: g reshaped back to x's shape",
    "PermuteBackward0": "dims permuted: g permuted back",
    "TransposeBackward0": "transpose: g transposed back",
    "TBackward0": ".T: g transposed back",
    "SelectBackward0": "x[i]: g placed at i, zeros elsewhere",
    "SliceBackward0": "x[a:b]: g placed in the slice, zeros elsewhere",
    "IndexBackward0": "x[index]: g added at the indexed places, zeros elsewhere",
    "SqueezeBackward0": "squeeze: g with the unit dims put back",
    "SqueezeBackward1": "squeeze(dim): g with the unit dim put back",
    "SqueezeBackward2": "squeeze(dims): g with the unit dims put back",
    "SqueezeBackward4": "squeeze_(dim) in place (linear on a vector): g with the unit dim put back",
    "UnsqueezeBackward0": "unsqueeze: the unit dim taken out of g",
    "ExpandBackward0": "broadcast: g summed over the broadcast dims",
    "CloneBackward0": "clone: g passed on unchanged",
    "CatBackward0": "cat: g split back into the pieces",
    "StackBackward0": "stack: g split back along the new dim",
    "UnbindBackward0": "unbind: the pieces' gradients stacked",
    "AsStridedBackward0": "a strided view: g scattered back to the base",
    "ZeroBackward0": "zero_(): the value no longer depends on x: passes on 0",
    "FillBackward0": "fill_(c): passes on 0",
    "FillBackward2": "fill_(c): passes on 0",
    "MaskedFillBackward0": "masked_fill: g where the mask is off, 0 where it is filled",
    "IndexPutBackward0": "y[i] = v: g at i goes to v, the rest to the old y",
    "SplitBackward0": "split: the pieces' gradients joined back",
    "CopySlices": "in-place write into a slice: g of the written part goes to the new value, the rest to the old",
    # losses
    "MseLossBackward0": "d/dx mean((x - y)**2) = 2*(x - y)/N, d/dy = -2*(x - y)/N",
    "NllLossBackward0": "d/dx_i mean over rows of -x[target] = -1/N at each row's target, else 0",
}


def rule(name: str) -> str:
    """The rule a node of class `name` applies, or the generic line."""
    return RULES.get(name, GENERIC)
