"""THE operator table: every function is declared once, with its torch and numpy implementations.

Both evaluators, the parser's "unknown function" check, `gradcheck ops` and the per-op tests read it.

Numpy implementations work on *batched* arrays: axis 0 is a batch of perturbations (size 1 at the
unperturbed point), the rest is the logical tensor. They must also accept complex arrays, because the
complex-step method pushes x + ih through them; ops that are not analytic (abs, relu, max, clamp) are
written as their locally analytic branch, chosen by the real part, which is what complex step needs.
Torch implementations take plain tensors and never import torch at module load (see `_LazyModule`).

Sympy forms (the symbolic engine, `gradcheck_cli.symbolic`) take batched object arrays of sympy
expressions whose free symbols stand for *offsets* from the point, so an element's value at the point
is its value with every symbol at 0 (`_sy_real`); non-analytic ops choose their branch from that value,
as the numpy forms do from the real part. A row without one falls back to its numpy implementation,
which must then work on object arrays (operators, reshape, transpose, indexing). sympy and mpmath
are imported on first use only.
"""
from __future__ import annotations

import dataclasses
import enum
import importlib
import math
import operator
from typing import Any, Callable, Mapping

import numpy as np

from . import ops_complex
from . import ops_nn as nn
from .errors import InputError


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
    ANY = "tensor or literal"  # plugin ops: a literal stays a Python value, anything else is a tensor
    TENSORS = "tensors"  # a tuple or list of tensor expressions (cat, stack)


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
    sympy: Callable[..., Any] | None = None  # on object arrays of sympy expressions (see above)
    mutates: bool = False  # an in-place method (x.mul_(2)): a statement of its own, on a name
    # not differentiable at some points of its domain (abs at 0, ties, bounds, a mask's edge): a check whose
    # program has such an op looks at every element of a small input from both sides (SPEC: kinks are
    # reported); a program of smooth ops only is probed where the numeric estimate alone is unsure
    kinks: bool = False

    @property
    def may_kink(self) -> bool:
        """Whether the op may have a kink: declared so, or a plugin's (whose structure nobody declared)."""
        return self.kinks or self.origin is not None

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


def _np_maximum(a, b, real=np.real):
    # at a tie torch splits the gradient evenly; the midpoint branch does the same
    ra, rb = real(a), real(b)
    return np.where(ra > rb, a, np.where(ra < rb, b, (a + b) / 2))


def _np_minimum(a, b, real=np.real):
    return -_np_maximum(-a, -b, real)


def _np_sum(x, dim, keepdim):
    return np.sum(x, axis=_axes(x, dim), keepdims=keepdim)


def _np_mean(x, dim, keepdim):
    return np.mean(x, axis=_axes(x, dim), keepdims=keepdim) if _axes(x, dim) else x


def _np_prod(x, dim, keepdim):
    return np.prod(x, axis=_axes(x, dim), keepdims=keepdim)


def _np_extreme(x, dim, keepdim, pick, real=np.real):
    """max/min along one dim by the real part: the (possibly complex) value at the chosen index."""
    axes = _axes(x, dim)
    if not axes:
        return x
    idx = pick(real(x), axis=axes[0], keepdims=True)
    out = np.take_along_axis(x, idx, axis=axes[0])
    return out if keepdim else np.squeeze(out, axis=axes[0])


def _np_tied(x, axes, keepdim, best, real=np.real):
    """max/min over axes by the real part, ties sharing evenly: torch's full max() and amax backward."""
    values = real(x)
    tied = values == best(values, axis=axes, keepdims=True)
    count = np.sum(tied, axis=axes, keepdims=keepdim)
    return np.sum(np.where(tied, x, 0), axis=axes, keepdims=keepdim) / count


def _np_max(x, dim, keepdim, real=np.real):
    if dim is None:
        return _np_tied(x, _axes(x, None), keepdim, np.max, real)
    return _np_extreme(x, dim, keepdim, np.argmax, real)


def _np_min(x, dim, keepdim, real=np.real):
    if dim is None:
        return _np_tied(x, _axes(x, None), keepdim, np.min, real)
    return _np_extreme(x, dim, keepdim, np.argmin, real)


def _np_sin(x, out=None):
    """np.sin; on a complex-step batch with tiny imaginary parts, from real sin and cos (ops_complex.py)."""
    fast = ops_complex.sin(x) if out is None else None
    return fast if fast is not None else np.sin(x, out=out)


def _np_cos(x, out=None):
    """np.cos; on a complex-step batch with tiny imaginary parts, from real cos and sin (ops_complex.py)."""
    fast = ops_complex.cos(x) if out is None else None
    return fast if fast is not None else np.cos(x, out=out)


def _np_exp(x, out=None):
    """np.exp, faster on what complex step evaluates (the same numbers, an ulp apart at most):
    - a batch of rows whose real parts are all the point's and whose imaginary parts are zero but at each
      row's perturbed element: the real exponentials are one row's, exp(a ± 0i) = exp(a) ± 0i (C99 Annex
      G), and numpy's complex exp runs only where the imaginary part is not zero;
    - any batch whose imaginary parts are all tiny: real exponentials (ops_complex.exp)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.complex128 or x.ndim < 2 or x.size < 4096 or out is not None:
        return np.exp(x, out=out)
    real = x.real
    if x.shape[0] > 1 and (real == real[:1]).all():
        moved = np.flatnonzero(x.imag != 0)
        if moved.size * 8 <= x.size:
            perturbed = np.exp(x.reshape(-1)[moved])
            out = np.empty(x.shape, dtype=np.complex128)
            out.imag = x.imag
            out.real = np.exp(real[:1])
            out.reshape(-1)[moved] = perturbed
            return out
    fast = ops_complex.exp(x)
    return fast if fast is not None else np.exp(x)


def _np_shifted(x, dim):
    """x minus its max along dim (by real part), and the axes: the stable base of softmax."""
    axes = _axes(x, dim)
    if not axes:
        return x - x, axes
    top = np.max(np.real(x), axis=axes, keepdims=True)
    return x - top, axes


def _np_softmax(x, dim):
    fast = ops_complex.softmax(x, _axes(x, dim)) if isinstance(x, np.ndarray) and x.ndim > 1 else None
    if fast is not None:  # a complex-step batch: one row's real work (ops_complex.py)
        return fast
    s, axes = _np_shifted(x, dim)
    ex = _np_exp(s, out=s) if isinstance(s, np.ndarray) and s.dtype.kind in "fc" else np.exp(s)  # s is our own
    ex /= np.sum(ex, axis=axes, keepdims=True)
    return ex


def _np_log_softmax(x, dim):
    s, axes = _np_shifted(x, dim)
    return s - np.log(np.sum(_np_exp(s), axis=axes, keepdims=True))


def _np_logsumexp(x, dim, keepdim):
    axes = _axes(x, dim)
    if not axes:
        return x
    top = np.max(np.real(x), axis=axes, keepdims=True)
    out = top + np.log(np.sum(_np_exp(x - top), axis=axes, keepdims=True))
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


def _output(outputs: tuple, index: tuple) -> Any:
    """`f(x)[k]` on an op with several outputs: output k, chosen by one integer."""
    count = len(outputs)
    if len(index) != 1 or not isinstance(index[0], int):
        raise InputError(f"this op returns {count} outputs; choose one with a single integer index, e.g. [0]")
    if not -count <= index[0] < count:
        raise InputError(f"index {index[0]} is out of range: this op returns {count} outputs")
    return outputs[index[0]]


def _getitem(x, index):
    return _output(x, index) if isinstance(x, tuple) else x[index]


def _np_getitem(x, index):
    return _output(x, index) if isinstance(x, tuple) else x[nn.np_index(index)]


# ---- sympy forms: object arrays of sympy expressions, batched as above (see the module docstring) ----

SYMPY_DIGITS = 50  # significant digits of every sympy.Float the symbolic engine computes with


def _sy_value(z: Any) -> float:
    """One element's value at the point (every perturbation symbol at 0), as a float; nan if complex."""
    if isinstance(z, (int, float, np.number)):
        return float(np.real(z))
    if z.free_symbols:
        z = z.xreplace({s: 0 for s in z.free_symbols})
    try:
        return float(z)
    except TypeError:  # complex (a real function outside its domain) or complex infinity
        return math.nan


def _sy_real(x: Any) -> np.ndarray:
    """The values at the point (float64) that choose branches, as np.real does for complex step."""
    return np.vectorize(_sy_value, otypes=[np.float64])(x)


def _sy_const(value: float) -> Any:
    import sympy
    return sympy.Float(value, SYMPY_DIGITS)


def _sy_map(build: Callable[..., Any], fast: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """An elementwise sympy form: build(sympy, z) on each element. `fast(mpmath, v)` evaluates a
    constant element (a Float) directly in mpmath at its precision, some 20x quicker than letting
    sympy evaluate build(sympy, Float); a complex result (outside the real domain) goes to sympy."""
    def run(x):
        import mpmath
        import sympy

        def one(z):
            if fast is not None and isinstance(z, sympy.Float):
                with mpmath.workprec(z._prec):
                    v = fast(mpmath, mpmath.mpf(z))
                if isinstance(v, mpmath.mpf):
                    return sympy.Float(v, precision=z._prec)
            return build(sympy, z)
        return np.frompyfunc(one, 1, 1)(x)
    return run


def _sy_named(name: str) -> Callable[..., Any]:
    """The elementwise form of a function that sympy and mpmath both call `name`."""
    return _sy_map(lambda sp, z: getattr(sp, name)(z), lambda mp, v: getattr(mp, name)(v))


_sy_exp = _sy_named("exp")
_sy_log = _sy_named("log")
_sy_sqrt = _sy_named("sqrt")
_sy_log1p = _sy_map(lambda sp, z: sp.log(1 + z), lambda mp, v: mp.log1p(v))
_sy_expm1 = _sy_map(lambda sp, z: sp.exp(z) - 1, lambda mp, v: mp.expm1(v))
_sy_sigmoid = _sy_map(lambda sp, z: 1 / (1 + sp.exp(-z)), lambda mp, v: 1 / (1 + mp.exp(-v)))
# exact log(1 + e^x): no overflow in mpmath. (torch's softplus is linear above x = 20, where its
# gradient is 1 rather than sigmoid(x); the difference is below 2e-9.)
_sy_softplus = _sy_map(lambda sp, z: sp.log(1 + sp.exp(z)), lambda mp, v: mp.log1p(mp.exp(v)))


def _sy_exponent(y: Any) -> Any:
    """An integral exponent as a sympy Integer, so a negative base stays real (torch's x ** 2)."""
    import sympy
    if isinstance(y, (float, sympy.Float)) and math.isfinite(y) and float(y) == int(y):
        return sympy.Integer(int(y))
    return y


def _sy_pow(a, b):
    return np.frompyfunc(lambda x, y: x ** _sy_exponent(y), 2, 1)(a, b)


def _sy_abs(z):
    import sympy
    v = _sy_real(z)  # gradient 0 at 0, as torch: the branch there is the constant 0
    return np.where(v > 0, z, np.where(v < 0, -z, sympy.S.Zero))


def _sy_relu(z):
    import sympy
    return np.where(_sy_real(z) > 0, z, sympy.S.Zero)


def _sy_clamp(z, lo, hi):
    out, values = z, _sy_real(z)
    if lo is not None:
        low = values < lo
        out, values = np.where(low, _sy_const(lo), out), np.where(low, lo, values)
    if hi is not None:
        out = np.where(values > hi, _sy_const(hi), out)
    return out


def _sy_maximum(a, b):
    return _np_maximum(a, b, _sy_real)


def _sy_minimum(a, b):
    return _np_minimum(a, b, _sy_real)


def _sy_max(x, dim, keepdim):
    return _np_max(x, dim, keepdim, _sy_real)


def _sy_min(x, dim, keepdim):
    return _np_min(x, dim, keepdim, _sy_real)


def _sy_reduce(x, axes: tuple[int, ...], keepdims: bool, combine: str) -> np.ndarray:
    """sympy.Add or sympy.Mul of each group at once over the (batched) axes. numpy's own reduction
    adds one element at a time: n sympy objects per group, each with its assumptions worked out."""
    import sympy
    if not axes:
        return x
    fn = getattr(sympy, combine)
    rest = [a for a in range(x.ndim) if a not in axes]
    groups = np.transpose(x, rest + list(axes)).reshape([x.shape[a] for a in rest] + [-1])
    out = np.empty(groups.shape[:-1], dtype=object)
    for index in np.ndindex(out.shape):
        out[index] = fn(*groups[index])
    return np.expand_dims(out, axes) if keepdims else out


def _sy_sum(x, dim, keepdim):
    return _sy_reduce(x, _axes(x, dim), keepdim, "Add")


def _sy_mean(x, dim, keepdim):
    axes = _axes(x, dim)
    count = math.prod(x.shape[a] for a in axes)
    return _sy_reduce(x, axes, keepdim, "Add") / count if axes else x


def _sy_prod(x, dim, keepdim):
    return _sy_reduce(x, _axes(x, dim), keepdim, "Mul")


def _sy_softmax(x, dim):
    axes = _axes(x, dim)
    ex = _sy_exp(x)  # no shift needed: mpmath's exponent range does not overflow
    if not axes:
        return ex / ex
    # one reciprocal per group, shared by its elements (a sympy Pow whose assumptions are worked out once)
    return ex * np.frompyfunc(lambda total: 1 / total, 1, 1)(_sy_reduce(ex, axes, True, "Add"))


def _sy_log_softmax(x, dim):
    axes = _axes(x, dim)
    if not axes:
        return x - x
    return x - _sy_log(_sy_reduce(_sy_exp(x), axes, True, "Add"))


def _sy_logsumexp(x, dim, keepdim):
    axes = _axes(x, dim)
    if not axes:
        return x
    return _sy_log(_sy_reduce(_sy_exp(x), axes, keepdim, "Add"))


def _sy_matmul(a, b):
    """As _np_matmul, the contraction summed with sympy.Add at once."""
    la, lb = a.ndim - 1, b.ndim - 1
    if la == 0 or lb == 0 or (la == 1 and lb == 1):
        return _np_matmul(a, b)  # an error, or a dot product through np.sum (which is fine)
    a2 = a[:, None, :] if la == 1 else a
    b2 = b[:, :, None] if lb == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"inconsistent sizes for matmul: {a.shape[1:]} and {b.shape[1:]}")
    a2, b2 = _align(a2, b2)
    out = _sy_reduce(a2[..., :, :, None] * b2[..., None, :, :], (a2.ndim - 1,), False, "Add")
    return np.squeeze(out, axis=-2) if la == 1 else np.squeeze(out, axis=-1) if lb == 1 else out


def _sy_norm(x, p, dim, keepdim):
    axes = _axes(x, dim)
    if p == 2:
        return _sy_sqrt(_sy_reduce(x * x, axes, keepdim, "Add"))
    mag = _sy_abs(x)
    if p == math.inf:
        return _np_tied(mag, axes, keepdim, np.max, _sy_real)
    if p == -math.inf:
        return _np_tied(mag, axes, keepdim, np.min, _sy_real)
    if p == 0:  # piecewise constant: the count, as exact constants
        count = np.sum(_sy_real(mag) != 0, axis=axes, keepdims=keepdim)
        return np.frompyfunc(lambda c: _sy_const(float(c)), 1, 1)(count)
    if p == 1:
        return _sy_reduce(mag, axes, keepdim, "Add")
    return _sy_pow(_sy_reduce(_sy_pow(mag, p), axes, keepdim, "Add"), 1.0 / p)


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
    return x  # the walker holds the value at the unperturbed point (a stop-gradient)


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
            domain=POSITIVE, sympy=_sy_pow),  # a real power of a negative base is nan
    OpSpec("maximum", (Param("a"), Param("b")), lambda a, b: torch.maximum(a, b), _np_maximum,
           Group.ELEMENTWISE, "elementwise max; a tie splits the gradient evenly",
           sympy=_sy_maximum, kinks=True),
    OpSpec("minimum", (Param("a"), Param("b")), lambda a, b: torch.minimum(a, b), _np_minimum,
           Group.ELEMENTWISE, "elementwise min; a tie splits the gradient evenly",
           sympy=_sy_minimum, kinks=True),
    _unary("neg", operator.neg, operator.neg, "-x", syntax="-x", scalars=True),
    _unary("sin", lambda x: torch.sin(x), _np_sin, "sine", sympy=_sy_named("sin")),
    _unary("cos", lambda x: torch.cos(x), _np_cos, "cosine", sympy=_sy_named("cos")),
    _unary("tan", lambda x: torch.tan(x), np.tan, "tangent", domain=(-math.pi / 2, math.pi / 2),
           sympy=_sy_named("tan")),
    _unary("asin", lambda x: torch.asin(x), np.arcsin, "inverse sine", domain=(-1.0, 1.0),
           sympy=_sy_named("asin")),
    _unary("acos", lambda x: torch.acos(x), np.arccos, "inverse cosine", domain=(-1.0, 1.0),
           sympy=_sy_named("acos")),
    _unary("atan", lambda x: torch.atan(x), np.arctan, "inverse tangent", sympy=_sy_named("atan")),
    _unary("sinh", lambda x: torch.sinh(x), np.sinh, "hyperbolic sine", sympy=_sy_named("sinh")),
    _unary("cosh", lambda x: torch.cosh(x), np.cosh, "hyperbolic cosine", sympy=_sy_named("cosh")),
    _unary("tanh", lambda x: torch.tanh(x), np.tanh, "hyperbolic tangent", sympy=_sy_named("tanh")),
    _unary("exp", lambda x: torch.exp(x), _np_exp, "e ** x", sympy=_sy_exp),
    _unary("log", lambda x: torch.log(x), np.log, "natural logarithm", domain=POSITIVE, sympy=_sy_log),
    _unary("log1p", lambda x: torch.log1p(x), np.log1p, "log(1 + x), accurate near 0",
           domain=(-1.0, math.inf), sympy=_sy_log1p),
    _unary("expm1", lambda x: torch.expm1(x), np.expm1, "exp(x) - 1, accurate near 0", sympy=_sy_expm1),
    _unary("sqrt", lambda x: torch.sqrt(x), np.sqrt, "square root", domain=POSITIVE, sympy=_sy_sqrt),
    _unary("abs", lambda x: torch.abs(x), _np_abs, "absolute value (gradient 0 at 0, as torch)",
           sympy=_sy_abs, kinks=True),
    _unary("sigmoid", lambda x: torch.sigmoid(x), _np_sigmoid, "1 / (1 + exp(-x))", sympy=_sy_sigmoid),
    _unary("relu", lambda x: torch.relu(x), _np_relu, "max(x, 0) (gradient 0 at 0, as torch)",
           sympy=_sy_relu, kinks=True),
    _unary("softplus", lambda x: torch.nn.functional.softplus(x), _np_softplus, "log(1 + exp(x))",
           sympy=_sy_softplus),
    OpSpec("clamp", (X, Param("min", Kind.NUMBER, None), Param("max", Kind.NUMBER, None)),
           _t_clamp, _np_clamp, Group.ELEMENTWISE, "x limited to [min, max]", sympy=_sy_clamp,
           kinks=True),
    _reduction("sum", _t_reduce("sum"), _np_sum, "sum over dim (all by default)", sympy=_sy_sum),
    _reduction("mean", _t_reduce("mean"), _np_mean, "mean over dim (all by default)", sympy=_sy_mean),
    _reduction("prod", _t_prod, _np_prod, "product over dim (all by default)", sympy=_sy_prod),
    OpSpec("max", (X, Param("dim", Kind.DIM, None), KEEPDIM), _t_extreme("max"), _np_max,
           Group.REDUCTION, "largest element, or the values of x.max(dim) (torch's .values)",
           sympy=_sy_max, kinks=True),
    OpSpec("min", (X, Param("dim", Kind.DIM, None), KEEPDIM), _t_extreme("min"), _np_min,
           Group.REDUCTION, "smallest element, or the values of x.min(dim) (torch's .values)",
           sympy=_sy_min, kinks=True),
    _reduction("logsumexp", _t_logsumexp, _np_logsumexp, "log(sum(exp(x))) over dim, stably",
               sympy=_sy_logsumexp),
    OpSpec("norm", (X, Param("p", Kind.NUMBER, 2.0), DIM_ALL, KEEPDIM), _t_norm, _np_norm,
           Group.REDUCTION, "vector p-norm over dim (all by default)", sympy=_sy_norm,
           kinks=True),
    OpSpec("softmax", (X, Param("dim", Kind.DIM, -1)),
           lambda x, dim: torch.softmax(x, dim=dim), _np_softmax, Group.ALONG_DIM,
           "exp(x) / sum(exp(x)) along dim (default -1)", sympy=_sy_softmax),
    OpSpec("log_softmax", (X, Param("dim", Kind.DIM, -1)),
           lambda x, dim: torch.log_softmax(x, dim=dim), _np_log_softmax, Group.ALONG_DIM,
           "log(softmax(x)) along dim (default -1), stably", sympy=_sy_log_softmax),
    OpSpec("matmul", (Param("a"), Param("b")), operator.matmul, _np_matmul, Group.LINALG,
           "matrix product, as torch.matmul (1-D and batched too)", syntax="a @ b", sympy=_sy_matmul),
    OpSpec("reshape", (X, Param("shape", Kind.SHAPE)), lambda x, shape: x.reshape(shape),
           _np_reshape, Group.SHAPE, "same elements, new shape (one -1 allowed)"),
    OpSpec("view", (X, Param("shape", Kind.SHAPE)), lambda x, shape: x.view(shape),
           _np_reshape, Group.SHAPE, "as reshape, on a contiguous tensor"),
    OpSpec("flatten", (X, Param("start_dim", Kind.INT, 0), Param("end_dim", Kind.INT, -1)),
           nn.t_flatten, nn.np_flatten, Group.SHAPE, "dims start_dim..end_dim merged into one (all by default)"),
    OpSpec("unsqueeze", (X, Param("dim", Kind.INT)), lambda x, dim: torch.unsqueeze(x, dim),
           nn.np_unsqueeze, Group.SHAPE, "a new dim of size 1 at dim"),
    OpSpec("squeeze", (X, DIM_ALL), nn.t_squeeze, nn.np_squeeze, Group.SHAPE,
           "dims of size 1 removed (all of them, or those named by dim)"),
    OpSpec("cat", (Param("tensors", Kind.TENSORS), Param("dim", Kind.INT, 0)), nn.t_cat, nn.np_cat,
           Group.SHAPE, "a tuple or list of tensors joined along an existing dim"),
    OpSpec("stack", (Param("tensors", Kind.TENSORS), Param("dim", Kind.INT, 0)), nn.t_stack, nn.np_stack,
           Group.SHAPE, "a tuple or list of tensors joined along a new dim"),
    OpSpec("transpose", (X, Param("dim0", Kind.INT, 0), Param("dim1", Kind.INT, 1)),
           lambda x, d0, d1: torch.transpose(x, d0, d1), _np_transpose, Group.SHAPE,
           "swap two dims (0 and 1 by default)"),
    OpSpec("T", (X,), _t_T, _np_T, Group.SHAPE, "dims reversed", named=False, syntax="x.T"),
    OpSpec("getitem", (X, Param("index", Kind.SHAPE)), _getitem, _np_getitem,
           Group.SHAPE, "indexing with ints and slices", named=False, syntax="x[i, a:b]"),
    OpSpec("clone", (X,), lambda x: x.clone(), nn.np_clone, Group.ELEMENTWISE,
           "a copy with its own memory (what in-place statements write to safely)"),
    OpSpec("where", (Param("condition"), Param("input"), Param("other")), nn.t_where, nn.np_where,
           Group.ELEMENTWISE, "input where condition is true, else other (condition: a mask)", kinks=True),
    OpSpec("linear", (X, Param("weight"), Param("bias", Kind.TENSOR, None)), nn.t_linear,
           nn.linear(_np_matmul, _np_T, _align), Group.LINALG,
           "x @ weight.T + bias, as torch.nn.functional.linear and nn.Linear",
           sympy=nn.linear(_sy_matmul, _np_T, _align)),
    OpSpec("mse_loss", (Param("input"), Param("target")), nn.t_mse_loss, nn.mse_loss(_np_mean, _align),
           Group.REDUCTION, "mean((input - target) ** 2), as torch.nn.functional.mse_loss",
           sympy=nn.mse_loss(_sy_mean, _align)),
    OpSpec("cross_entropy", (Param("input"), Param("target")), nn.t_cross_entropy,
           nn.cross_entropy(_np_log_softmax, _np_mean, _np_sum), Group.REDUCTION,
           "torch.nn.functional.cross_entropy: logits against class indices (long) or probabilities",
           sympy=nn.cross_entropy(_sy_log_softmax, _sy_mean, _sy_sum)),
    OpSpec("detach", (X,), lambda x: x.detach(), _np_detach, Group.STOP_GRADIENT,
           "stop-gradient: the value of x, held constant"),
)


def _comparison(name: str, fn: Callable, symbol: str) -> OpSpec:
    return OpSpec(name, (Param("a"), Param("b")), fn, nn.comparison(fn), Group.STOP_GRADIENT,
                  f"a {symbol} b: a constant boolean mask (no gradient)", named=False, syntax=f"a {symbol} b",
                  scalars=True, kinks=True)  # (x > 0) * x is relu


_COMPARISONS = (
    _comparison("lt", operator.lt, "<"), _comparison("le", operator.le, "<="),
    _comparison("gt", operator.gt, ">"), _comparison("ge", operator.ge, ">="),
    _comparison("eq", operator.eq, "=="), _comparison("ne", operator.ne, "!="),
)

# Rows whose torch in-place method (name + "_") exists: x.mul_(2), and x *= 2 for the operators.
_HAS_INPLACE = ("add", "sub", "mul", "div", "pow", "neg", "sin", "cos", "tan", "asin", "acos", "atan",
                "sinh", "cosh", "tanh", "exp", "log", "log1p", "expm1", "sqrt", "abs", "sigmoid", "relu",
                "clamp")


def _inplace(row: OpSpec) -> OpSpec:
    """The in-place method of a row: torch's own (so autograd records what torch records), and the
    row's numpy/sympy form as a new value for the name (the walker rebinds it)."""
    return OpSpec(f"{row.name}_", row.params, nn.t_inplace(f"{row.name}_"), nn.inplace(row.numpy), row.group,
                  f"in place: x = {row.name}(x, ...)", complex_ok=row.complex_ok, domain=row.domain,
                  sympy=None if row.sympy is None else nn.inplace(row.sympy), mutates=True, kinks=row.kinks)


_BY_NAME = {row.name: row for row in _ROWS}
_MUTATING = (
    *(_inplace(_BY_NAME[name]) for name in _HAS_INPLACE),
    OpSpec("zero_", (X,), nn.t_inplace("zero_"), nn.np_zero_, Group.ELEMENTWISE, "in place: every element 0",
           mutates=True),
    OpSpec("fill_", (X, Param("value", Kind.NUMBER)), nn.t_inplace("fill_"), nn.np_fill_, Group.ELEMENTWISE,
           "in place: every element set to value", mutates=True),
    OpSpec("setitem", (X, Param("index", Kind.SHAPE), Param("value")), nn.t_setitem, nn.np_setitem,
           Group.SHAPE, "x[index] = value, in place", named=False, syntax="x[i] = v", mutates=True),
)

OPS: dict[str, OpSpec] = {row.name: row for row in (*_ROWS, *_COMPARISONS, *_MUTATING)}

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def functions(table: dict[str, OpSpec]) -> dict[str, OpSpec]:
    """The ops an expression may call by name (or as a method)."""
    return {name: row for name, row in table.items() if row.named}


@dataclasses.dataclass(frozen=True)
class Listing:
    """What `gradcheck ops` shows: the functions by name, and the syntax-only rows (x[i], x.T, a < b, ...)."""

    functions: tuple[OpSpec, ...]
    syntax: tuple[OpSpec, ...]


def listing(table: Mapping[str, OpSpec]) -> Listing:
    return Listing(tuple(functions(dict(table)).values()), tuple(row for row in table.values() if not row.named))
