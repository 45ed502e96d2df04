"""THE operator table: every function is declared once, with its torch and numpy implementations.

Both evaluators, the parser's "unknown function" check, `gradcheck ops` and the per-op tests read it.

Numpy implementations work on *batched* arrays: axis 0 is a batch of perturbations (size 1 at the
unperturbed point), the rest is the logical tensor. They must also accept complex arrays, because the
complex-step method pushes x + ih through them; ops that are not analytic (abs, relu, max, clamp) are
written as their locally analytic branch, chosen by the real part, which is what complex step needs.
Torch implementations take plain tensors and never import torch at module load (see `_LazyModule`).
"""
from __future__ import annotations

import dataclasses
import enum
import importlib
import math
import operator
from typing import Any, Callable

import numpy as np


class _LazyModule:
    """Import a module on first attribute access, so `gradcheck --help` never pays for torch."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


torch = _LazyModule("torch")


class Group(enum.Enum):
    """Structural property of an op; Jacobian-shape and broadcasting code asks this, not names."""

    ELEMENTWISE = "elementwise"    # output element i depends on input element i (after broadcasting)
    REDUCTION = "reduction"        # collapses one or more dims
    ALONG_DIM = "along dim"        # shape-preserving, dense along one dim (softmax)
    SHAPE = "shape"                # moves elements without arithmetic
    LINALG = "linear algebra"
    STOP_GRADIENT = "stop-gradient"
    CUSTOM = "custom"              # plugin ops: structure unknown, treated as dense


class Kind(enum.Enum):
    """What an argument may be: a tensor expression, or a literal fixed at parse time."""

    TENSOR = "tensor"
    INT = "int"
    DIM = "dim"          # int or None
    DIMS = "dims"        # int, tuple of ints, or None
    BOOL = "bool"
    NUMBER = "number"    # float or None
    SHAPE = "shape"      # varargs ints, or one tuple of ints


_REQUIRED = object()


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    kind: Kind = Kind.TENSOR
    default: Any = _REQUIRED

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One row of the table.

    `complex_ok` says the numpy implementation is exact under complex step; `domain` is the open
    interval of real inputs where the op is defined and smooth (used to pick test points).
    `named` is False for ops reachable only through syntax (indexing, `.T`).
    """

    name: str
    params: tuple[Param, ...]
    torch: Callable[..., Any]
    numpy: Callable[..., Any]
    group: Group
    doc: str
    complex_ok: bool = True
    domain: tuple[float, float] = (-math.inf, math.inf)
    named: bool = True
    syntax: str | None = None
    scalars: bool = False  # implementations take Python numbers for tensor params as they are
    origin: str | None = None  # the plugin that defined the op; None for built-ins

    @property
    def tensor_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.kind is Kind.TENSOR)

    def signature(self) -> str:
        parts = []
        for p in self.params:
            text = f"*{p.name}" if p.kind is Kind.SHAPE else p.name
            parts.append(text if p.required else f"{text}={p.default!r}")
        return f"{self.name}({', '.join(parts)})"


# ---- numpy helpers: axis 0 is the batch of perturbations ----

def _axes(x: np.ndarray, dim: Any) -> tuple[int, ...]:
    """Logical dim(s) → numpy axes of a batched array (None means every logical dim)."""
    nd = x.ndim - 1
    if dim is None:
        return tuple(range(1, x.ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if nd == 0:  # torch lets a 0-d tensor reduce over dim 0 / -1: a no-op
        return ()
    return tuple((d % nd) + 1 for d in dims)


def _re_sign(z: np.ndarray) -> np.ndarray:
    """sign of the real part: the analytic branch of |z| is sign(re z)·z."""
    return np.sign(np.real(z))


def _np_abs(z):
    return _re_sign(z) * z


def _np_relu(z):
    return z * (np.real(z) > 0)


def _np_sigmoid(z):
    # exp(-z) may overflow to inf for very negative z; 1/(1+inf) is the right limit 0
    return 1.0 / (1.0 + np.exp(-z))


def _np_softplus(z):
    # z + log1p(exp(-z)) for re z > 0, log1p(exp(z)) otherwise: no overflow at large |z|, and each
    # branch is analytic, so complex step is exact even at re z = 0 (relu + log1p(exp(-|z|)) is not)
    positive = np.real(z) > 0
    return np.where(positive, z + np.log1p(np.exp(-np.where(positive, z, 0))),
                    np.log1p(np.exp(np.where(positive, 0, z))))


def _np_clamp(z, lo, hi):
    # torch passes the gradient when lo <= x <= hi, so the bound wins only strictly outside
    out = z
    if lo is not None:
        out = np.where(np.real(out) < lo, lo, out)
    if hi is not None:
        out = np.where(np.real(out) > hi, hi, out)
    return out


def _np_maximum(a, b):
    # at a tie torch splits the gradient evenly; the midpoint branch does the same
    ra, rb = np.real(a), np.real(b)
    return np.where(ra > rb, a, np.where(ra < rb, b, (a + b) / 2))


def _np_minimum(a, b):
    return -_np_maximum(-a, -b)


def _np_sum(x, dim, keepdim):
    return np.sum(x, axis=_axes(x, dim), keepdims=keepdim)


def _np_mean(x, dim, keepdim):
    return np.mean(x, axis=_axes(x, dim), keepdims=keepdim) if _axes(x, dim) else x


def _np_prod(x, dim, keepdim):
    return np.prod(x, axis=_axes(x, dim), keepdims=keepdim)


def _np_extreme(x, dim, keepdim, pick):
    """max/min along one dim by the real part: the (possibly complex) value at the chosen index."""
    axes = _axes(x, dim)
    if not axes:
        return x
    idx = pick(np.real(x), axis=axes[0], keepdims=True)
    out = np.take_along_axis(x, idx, axis=axes[0])
    return out if keepdim else np.squeeze(out, axis=axes[0])


def _np_tied(x, axes, keepdim, best):
    """max/min over axes by the real part, ties sharing evenly: torch's full max() and amax backward."""
    real = np.real(x)
    tied = real == best(real, axis=axes, keepdims=True)
    count = np.sum(tied, axis=axes, keepdims=keepdim)
    return np.sum(np.where(tied, x, 0), axis=axes, keepdims=keepdim) / count


def _np_max(x, dim, keepdim):
    if dim is None:
        return _np_tied(x, _axes(x, None), keepdim, np.max)
    return _np_extreme(x, dim, keepdim, np.argmax)


def _np_min(x, dim, keepdim):
    if dim is None:
        return _np_tied(x, _axes(x, None), keepdim, np.min)
    return _np_extreme(x, dim, keepdim, np.argmin)


def _np_shifted(x, dim):
    """x minus its max along dim (by real part), and the axes: the stable base of softmax."""
    axes = _axes(x, dim)
    if not axes:
        return x - x, axes
    top = np.max(np.real(x), axis=axes, keepdims=True)
    return x - top, axes


def _np_softmax(x, dim):
    s, axes = _np_shifted(x, dim)
    ex = np.exp(s)
    return ex / np.sum(ex, axis=axes, keepdims=True)


def _np_log_softmax(x, dim):
    s, axes = _np_shifted(x, dim)
    return s - np.log(np.sum(np.exp(s), axis=axes, keepdims=True))


def _np_logsumexp(x, dim, keepdim):
    axes = _axes(x, dim)
    if not axes:
        return x
    top = np.max(np.real(x), axis=axes, keepdims=True)
    out = top + np.log(np.sum(np.exp(x - top), axis=axes, keepdims=True))
    return out if keepdim else np.squeeze(out, axis=axes)


def _np_norm(x, p, dim, keepdim):
    axes = _axes(x, dim)
    if p == 2:
        return np.sqrt(np.sum(x * x, axis=axes, keepdims=keepdim))
    mag = _np_abs(x)
    if p == math.inf:  # torch's inf-norm, like amax, splits the gradient among ties
        return _np_tied(mag, axes, keepdim, np.max)
    if p == -math.inf:
        return _np_tied(mag, axes, keepdim, np.min)
    if p == 0:  # the count of non-zero elements: piecewise constant, gradient 0
        return np.sum(np.real(mag) != 0, axis=axes, keepdims=keepdim).astype(np.float64)
    if p == 1:
        return np.sum(mag, axis=axes, keepdims=keepdim)
    return np.sum(mag ** p, axis=axes, keepdims=keepdim) ** (1.0 / p)


def _align(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert unit axes after the batch axis so both arrays have the same rank."""
    def grow(x, nd):
        return x.reshape(x.shape[:1] + (1,) * (nd - x.ndim) + x.shape[1:])
    nd = max(a.ndim, b.ndim)
    return grow(a, nd), grow(b, nd)


def _np_matmul(a, b):
    la, lb = a.ndim - 1, b.ndim - 1
    if la == 0 or lb == 0:
        raise ValueError("both arguments to matmul need to be at least 1D")
    if la == 1 and lb == 1:
        if a.shape[-1] != b.shape[-1]:
            raise ValueError(f"inconsistent sizes for matmul: {a.shape[1:]} and {b.shape[1:]}")
        return np.sum(a * b, axis=-1)
    if la == 1:
        a2, b2 = _align(a[:, None, :], b)
        return np.squeeze(np.matmul(a2, b2), axis=-2)
    if lb == 1:
        a2, b2 = _align(a, b[:, :, None])
        return np.squeeze(np.matmul(a2, b2), axis=-1)
    a2, b2 = _align(a, b)
    return np.matmul(a2, b2)


def _np_reshape(x, shape):
    return x.reshape(x.shape[:1] + tuple(shape))


def _np_transpose(x, dim0, dim1):
    nd = x.ndim - 1
    if nd == 0:
        return x
    return np.swapaxes(x, dim0 % nd + 1, dim1 % nd + 1)


def _np_T(x):
    return np.transpose(x, (0, *range(x.ndim - 1, 0, -1)))


def _np_getitem(x, index):
    return x[(slice(None), *index)]


# ---- torch helpers ----

def _t_dim(dim: Any) -> Any:
    """torch spells "every dim" as omitting dim; () would mean "none" for some ops."""
    return tuple(dim) if isinstance(dim, (list, tuple)) else dim


def _t_reduce(fn_name: str):
    def run(x, dim, keepdim):
        fn = getattr(torch, fn_name)
        if dim is None:
            out = fn(x)
            return out.reshape((1,) * x.ndim) if keepdim else out
        return fn(x, dim=_t_dim(dim), keepdim=keepdim)
    return run


def _t_prod(x, dim, keepdim):
    if dim is None:
        out = torch.prod(x)
        return out.reshape((1,) * x.ndim) if keepdim else out
    if isinstance(dim, (list, tuple)):  # torch.prod takes one dim at a time
        for d in sorted((d % max(x.ndim, 1) for d in dim), reverse=True):
            x = torch.prod(x, dim=d, keepdim=keepdim)
        return x
    return torch.prod(x, dim=dim, keepdim=keepdim)


def _t_extreme(fn_name: str):
    def run(x, dim, keepdim):
        fn = getattr(torch, fn_name)
        if dim is None:
            out = fn(x)
            return out.reshape((1,) * x.ndim) if keepdim else out
        return fn(x, dim=dim, keepdim=keepdim).values  # SPEC: values alone
    return run


def _t_logsumexp(x, dim, keepdim):
    dims = tuple(range(x.ndim)) if dim is None else _t_dim(dim)
    if x.ndim == 0:
        return x + 0
    return torch.logsumexp(x, dim=dims, keepdim=keepdim)


def _t_norm(x, p, dim, keepdim):
    return torch.linalg.vector_norm(x, ord=p, dim=_t_dim(dim), keepdim=keepdim)


def _t_T(x):
    return x.permute(*range(x.ndim - 1, -1, -1)) if x.ndim > 1 else x


def _t_clamp(x, lo, hi):
    if lo is None and hi is None:
        raise ValueError("clamp needs min=, max= or both")
    return torch.clamp(x, min=lo, max=hi)


def _np_detach(x):
    raise AssertionError("detach is evaluated by the walker, which holds the unperturbed value")


X = Param("x")
DIM_ALL = Param("dim", Kind.DIMS, None)
KEEPDIM = Param("keepdim", Kind.BOOL, False)
POSITIVE = (0.0, math.inf)


def _unary(name: str, t: Callable, n: Callable, doc: str, **kw: Any) -> OpSpec:
    return OpSpec(name, (X,), t, n, Group.ELEMENTWISE, doc, **kw)


def _binary(name: str, fn: Callable, doc: str, syntax: str | None = None, **kw: Any) -> OpSpec:
    return OpSpec(name, (Param("a"), Param("b")), fn, fn, Group.ELEMENTWISE, doc, syntax=syntax,
                  scalars=True, **kw)


def _reduction(name: str, t: Callable, n: Callable, doc: str, **kw: Any) -> OpSpec:
    return OpSpec(name, (X, DIM_ALL, KEEPDIM), t, n, Group.REDUCTION, doc, **kw)


_ROWS: tuple[OpSpec, ...] = (
    _binary("add", operator.add, "a + b", syntax="a + b"),
    _binary("sub", operator.sub, "a - b", syntax="a - b"),
    _binary("mul", operator.mul, "a * b", syntax="a * b"),
    _binary("div", operator.truediv, "a / b", syntax="a / b"),
    _binary("pow", operator.pow, "a ** b (a > 0 unless b is an integer)", syntax="a ** b",
            domain=POSITIVE),  # a real power of a negative base is nan
    OpSpec("maximum", (Param("a"), Param("b")), lambda a, b: torch.maximum(a, b), _np_maximum,
           Group.ELEMENTWISE, "elementwise max; a tie splits the gradient evenly"),
    OpSpec("minimum", (Param("a"), Param("b")), lambda a, b: torch.minimum(a, b), _np_minimum,
           Group.ELEMENTWISE, "elementwise min; a tie splits the gradient evenly"),
    _unary("neg", operator.neg, operator.neg, "-x", syntax="-x", scalars=True),
    _unary("sin", lambda x: torch.sin(x), np.sin, "sine"),
    _unary("cos", lambda x: torch.cos(x), np.cos, "cosine"),
    _unary("tan", lambda x: torch.tan(x), np.tan, "tangent", domain=(-math.pi / 2, math.pi / 2)),
    _unary("asin", lambda x: torch.asin(x), np.arcsin, "inverse sine", domain=(-1.0, 1.0)),
    _unary("acos", lambda x: torch.acos(x), np.arccos, "inverse cosine", domain=(-1.0, 1.0)),
    _unary("atan", lambda x: torch.atan(x), np.arctan, "inverse tangent"),
    _unary("sinh", lambda x: torch.sinh(x), np.sinh, "hyperbolic sine"),
    _unary("cosh", lambda x: torch.cosh(x), np.cosh, "hyperbolic cosine"),
    _unary("tanh", lambda x: torch.tanh(x), np.tanh, "hyperbolic tangent"),
    _unary("exp", lambda x: torch.exp(x), np.exp, "e ** x"),
    _unary("log", lambda x: torch.log(x), np.log, "natural logarithm", domain=POSITIVE),
    _unary("log1p", lambda x: torch.log1p(x), np.log1p, "log(1 + x), accurate near 0",
           domain=(-1.0, math.inf)),
    _unary("expm1", lambda x: torch.expm1(x), np.expm1, "exp(x) - 1, accurate near 0"),
    _unary("sqrt", lambda x: torch.sqrt(x), np.sqrt, "square root", domain=POSITIVE),
    _unary("abs", lambda x: torch.abs(x), _np_abs, "absolute value (gradient 0 at 0, as torch)"),
    _unary("sigmoid", lambda x: torch.sigmoid(x), _np_sigmoid, "1 / (1 + exp(-x))"),
    _unary("relu", lambda x: torch.relu(x), _np_relu, "max(x, 0) (gradient 0 at 0, as torch)"),
    _unary("softplus", lambda x: torch.nn.functional.softplus(x), _np_softplus, "log(1 + exp(x))"),
    OpSpec("clamp", (X, Param("min", Kind.NUMBER, None), Param("max", Kind.NUMBER, None)),
           _t_clamp, _np_clamp, Group.ELEMENTWISE, "x limited to [min, max]"),
    _reduction("sum", _t_reduce("sum"), _np_sum, "sum over dim (all by default)"),
    _reduction("mean", _t_reduce("mean"), _np_mean, "mean over dim (all by default)"),
    _reduction("prod", _t_prod, _np_prod, "product over dim (all by default)"),
    OpSpec("max", (X, Param("dim", Kind.DIM, None), KEEPDIM), _t_extreme("max"), _np_max,
           Group.REDUCTION, "largest element, or the values of x.max(dim) (torch's .values)"),
    OpSpec("min", (X, Param("dim", Kind.DIM, None), KEEPDIM), _t_extreme("min"), _np_min,
           Group.REDUCTION, "smallest element, or the values of x.min(dim) (torch's .values)"),
    _reduction("logsumexp", _t_logsumexp, _np_logsumexp, "log(sum(exp(x))) over dim, stably"),
    OpSpec("norm", (X, Param("p", Kind.NUMBER, 2.0), DIM_ALL, KEEPDIM), _t_norm, _np_norm,
           Group.REDUCTION, "vector p-norm over dim (all by default)"),
    OpSpec("softmax", (X, Param("dim", Kind.DIM, -1)),
           lambda x, dim: torch.softmax(x, dim=dim), _np_softmax, Group.ALONG_DIM,
           "exp(x) / sum(exp(x)) along dim (default -1)"),
    OpSpec("log_softmax", (X, Param("dim", Kind.DIM, -1)),
           lambda x, dim: torch.log_softmax(x, dim=dim), _np_log_softmax, Group.ALONG_DIM,
           "log(softmax(x)) along dim (default -1), stably"),
    OpSpec("matmul", (Param("a"), Param("b")), operator.matmul, _np_matmul, Group.LINALG,
           "matrix product, as torch.matmul (1-D and batched too)", syntax="a @ b"),
    OpSpec("reshape", (X, Param("shape", Kind.SHAPE)), lambda x, shape: x.reshape(shape),
           _np_reshape, Group.SHAPE, "same elements, new shape (one -1 allowed)"),
    OpSpec("view", (X, Param("shape", Kind.SHAPE)), lambda x, shape: x.view(shape),
           _np_reshape, Group.SHAPE, "as reshape, on a contiguous tensor"),
    OpSpec("flatten", (X,), lambda x: x.reshape(-1), lambda x: x.reshape(x.shape[0], -1),
           Group.SHAPE, "all elements as a 1-D tensor"),
    OpSpec("transpose", (X, Param("dim0", Kind.INT, 0), Param("dim1", Kind.INT, 1)),
           lambda x, d0, d1: torch.transpose(x, d0, d1), _np_transpose, Group.SHAPE,
           "swap two dims (0 and 1 by default)"),
    OpSpec("T", (X,), _t_T, _np_T, Group.SHAPE, "dims reversed", named=False, syntax="x.T"),
    OpSpec("getitem", (X, Param("index", Kind.SHAPE)), lambda x, index: x[index], _np_getitem,
           Group.SHAPE, "indexing with ints and slices", named=False, syntax="x[i, a:b]"),
    OpSpec("detach", (X,), lambda x: x.detach(), _np_detach, Group.STOP_GRADIENT,
           "stop-gradient: the value of x, held constant"),
)

OPS: dict[str, OpSpec] = {row.name: row for row in _ROWS}

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def functions(table: dict[str, OpSpec]) -> dict[str, OpSpec]:
    """The ops an expression may call by name (or as a method)."""
    return {name: row for name, row in table.items() if row.named}
