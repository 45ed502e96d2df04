"""The numeric side: finite-difference derivatives over the numpy walk, with an error estimate.

Every method perturbs a chunk of input elements at once along a leading batch axis, so a check of
N elements costs a few numpy calls per chunk rather than 2N Python-level evaluations. Chunks are
sized so that one batched evaluation stays under a memory budget.

The difference methods themselves (complex step, central, Richardson) are in methods.py.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from .evaluate import NumpyBackend, Walker
from .methods import (_EPS, _RATIO, _RICHARDSON_LEVELS, _TAYLOR_LEVELS, METHODS, RICHARDSON,  # noqa: F401
                      TAYLOR, Method, NumericMethod, Probe, _exact_steps, _extrapolate, _resolution, _tiny_levels,
                      central, choose_method, complex_step, richardson)
from .ops import OpSpec
from .parse import Call, Program
from .structure import plan, reduction_weights, unbroadcast

MEMORY_BUDGET = 256 * 2**20      # bytes one batched evaluation may use
_TAYLOR_FIT = 4                  # the order is fitted over the smallest steps still above rounding
_TAYLOR_CHUNK = 4096             # columns per batched evaluation in the Taylor test
_REUSED_BYTES = 16 * 2**20       # a batch of columns at most this large (complex): see column_derivative


@dataclasses.dataclass(frozen=True)
class Derivative:
    """Numeric derivatives and an estimate of their absolute error, of the same shape."""

    value: np.ndarray
    error: np.ndarray


class NumericEngine:
    """Derivatives of a program's output with respect to an input or an intermediate, numerically.

    Args:
        program: the parsed expression.
        table: the op table it was parsed with.
        inputs: unperturbed input values (float64, unbatched), constants included.
        method: a key of METHODS (or "taylor", whose other checks use Richardson).
        eps: absolute step, or None to choose one per element.
    """

    def __init__(self, program: Program, table: Mapping[str, OpSpec], inputs: Mapping[str, np.ndarray],
                 method: str, eps: float | None = None, memory_budget: int = MEMORY_BUDGET):
        self.program = program
        self.table = table
        self.method: NumericMethod = METHODS.get(method, RICHARDSON)  # taylor's other checks: richardson
        self.is_complex = self.method.complex_arithmetic
        self.eps = eps
        self.memory_budget = memory_budget
        self.values: dict[int, np.ndarray] = {}
        recorder = NumpyBackend()
        self.envs: list[dict[str, np.ndarray]] = []  # envs[k]: bindings after statement k-1
        env = {name: (np.asarray(v) if np.issubdtype(np.asarray(v).dtype, np.integer)
                      else np.asarray(v, dtype=np.float64))[None] for name, v in inputs.items()}
        self.envs.append(dict(env))
        sizes = [sum(v.size for v in env.values())]

        def record(index: int, value: Any) -> None:
            self.values[index] = _unbatch(value)
            self.envs.append(dict(env))
            sizes.append(self.values[index].size)  # the batch holds one row here

        self.shapes: dict[int, tuple[int, ...]] = {}  # id of an op call's argument node → its value's shape

        def observe(node: Call, args: list[Any]) -> None:
            for arg, value in zip(node.args, args):
                if isinstance(arg, Call) and isinstance(value, (np.ndarray, float)):  # not a tuple of outputs
                    self.shapes[id(arg)] = np.shape(value)[1:]

        with np.errstate(all="ignore"):
            self.output = _unbatch(Walker(program, table, recorder, observe).run(env, on_statement=record))
        self.held = recorder.held
        # what one batch row costs: every statement value, several times over for temporaries
        self.row_bytes = 8 * (2 if self.is_complex else 1) * 4 * max(sum(sizes), 1)

    @property
    def can_kink(self) -> bool:
        """Whether any op of the program may be not differentiable somewhere (ops.OpSpec.kinks)."""
        return any(self.table[op].may_kink for op in self.program.ops)

    def _contracted(self, name: str, start: int, weights: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """batch of values of `name` → batch of scalars Σ weights·output."""
        f = self._function(name, start)
        out_shape = self.output.shape
        w = np.broadcast_to(weights, out_shape)
        axes = tuple(range(1, 1 + len(out_shape)))

        def s(batch: np.ndarray) -> np.ndarray:
            return np.sum(np.broadcast_to(f(batch), (batch.shape[0],) + out_shape) * w, axis=axes)
        return s

    def derivative(self, name: str, start: int, weights: np.ndarray | None) -> Derivative:
        """d output / d name, numerically.

        Args:
            name: an input, or an intermediate assigned by statement `start - 1`.
            start: the first statement to re-run after perturbing `name`.
            weights: the upstream gradient to contract the output with (a VJP), or None for the
                full Jacobian (shape output.shape + name.shape). A scalar output uses weights 1.
        """
        how = plan(self.program, self.table, name, start)
        if how.kind == "zero":
            shape = self.envs[start][name][0].shape
            shape = shape if weights is not None else self.output.shape + shape
            return Derivative(np.zeros(shape), np.zeros(shape))
        if how.kind == "aligned":
            return self._aligned(name, start, weights, self._function(name, start), self.output.shape)
        if how.kind == "reduced" and weights is not None:
            inner_shape = self.node_shape(how.inner)
            inner_weights = reduction_weights(weights, inner_shape, how.reduce_op, how.dim, how.keepdim)
            f = self._function(name, start, how.inner)
            return self._aligned(name, start, inner_weights, f, inner_shape)
        return self._columns(name, start, weights)

    def _function(self, name: str, start: int, node: Call | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """batch of values of `name` → batch of outputs (or of `node` within the last statement)."""
        env = self.envs[start]
        walker = Walker(self.program, self.table, NumpyBackend(self.held))

        def f(batch: np.ndarray) -> np.ndarray:
            local = dict(env)
            local[name] = batch
            return np.asarray(walker.rerun(local, start, node, fallback=batch))
        return f

    def node_shape(self, node: Call) -> tuple[int, ...]:
        """The shape of a node of the last statement, as the unperturbed walk saw it (no walk of its own)."""
        shape = self.shapes.get(id(node))
        return shape if shape is not None else self.node_value(node).shape

    def node_value(self, node: Call) -> np.ndarray:
        """A node of the last statement, at the unperturbed point (unbatched)."""
        walker = Walker(self.program, self.table, NumpyBackend(self.held))
        env = dict(self.envs[len(self.program.statements) - 1])
        with np.errstate(all="ignore"):
            return _unbatch(walker.node(node, env))

    def aligned_entries(self, name: str, start: int, node: Call | None = None) -> Derivative:
        """d out[o] / d name[bcast(o)] for each element o of an output that is ALIGNED with `name` (or of
        `node` in the last statement): the only nonzero of each Jacobian row, in the output's shape."""
        f = self._function(name, start, node)
        out_shape = self.output.shape if node is None else self.node_shape(node)
        return Derivative(*self._aligned_steps(name, start, f, out_shape))

    def _aligned(self, name: str, start: int, weights: np.ndarray | None, f: Callable,
                 out_shape: tuple[int, ...]) -> Derivative:
        """Every element of `name` perturbed at once: valid when out[o] depends only on name[bcast(o)]."""
        base = self.envs[start][name][0]
        flat = base.reshape(-1)
        d, err = self._aligned_steps(name, start, f, out_shape)
        if weights is not None:
            w = np.broadcast_to(weights, out_shape)
            return Derivative(unbroadcast(d * w, base.shape), unbroadcast(err * np.abs(w), base.shape))
        # one nonzero per Jacobian row: out[o] against name[bcast(o)]
        owner = np.broadcast_to(np.arange(flat.size).reshape(base.shape), out_shape).reshape(-1)
        value = np.zeros((int(np.prod(out_shape)), flat.size))
        error = np.zeros_like(value)
        rows = np.arange(owner.size)
        value[rows, owner] = d.reshape(-1)
        error[rows, owner] = err.reshape(-1)
        return Derivative(value.reshape(out_shape + base.shape), error.reshape(out_shape + base.shape))

    def _aligned_steps(self, name: str, start: int, f: Callable,
                       out_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(derivative, error) of each element of f's output against its own element of `name`."""
        base = self.envs[start][name][0]
        flat = base.reshape(-1)

        def probe(offsets: list[np.ndarray]) -> list[np.ndarray]:
            dtype = np.complex128 if any(np.iscomplexobj(o) for o in offsets) else np.float64
            batch = np.stack([base + o.reshape(base.shape) for o in offsets]).astype(dtype)
            out = np.broadcast_to(f(batch), (len(offsets),) + out_shape)
            return [out[r:r + 1] for r in range(len(offsets))]

        def to_out(steps: np.ndarray) -> np.ndarray:
            return np.broadcast_to(steps.reshape(base.shape), out_shape)[None]

        def to_in(values: np.ndarray) -> np.ndarray:
            return unbroadcast(values[0], base.shape, np.minimum).reshape(-1)

        with np.errstate(all="ignore"):
            d, err = self.method(probe, flat, self.eps, to_out, to_in)
        return np.broadcast_to(d[0], out_shape), np.broadcast_to(err[0], out_shape)

    def full_cost(self, name: str, start: int) -> float:
        """Roughly the bytes a full per-element check of `name` pushes through numpy (all probes)."""
        how = plan(self.program, self.table, name, start)
        if how.kind == "zero":
            return 0.0
        columns = 1 if how.kind in ("aligned", "reduced") else self.envs[start][name][0].size
        return float(columns) * self.row_bytes * self.method.probes_per_column(self.eps)

    def directional(self, name: str, start: int, weights: np.ndarray, directions: np.ndarray) -> Derivative:
        """d/dt Σ weights_i·output(name + t·directions_i) at t = 0, one per direction: shape (k,).

        Args:
            weights: the output weights, shape (k, *output.shape) or one set for every direction.
            directions: shape (k, *name.shape).
        """
        return directional_derivative(self._function(name, start), self.envs[start][name][0], self.output.shape,
                                      weights, directions, self.method, self.eps,
                                      max(1, self.memory_budget // self.row_bytes))

    def taylor(self, name: str, start: int, weights: np.ndarray,
               analytic: np.ndarray) -> tuple[Derivative, np.ndarray]:
        """The Taylor remainder test along each coordinate: (extrapolated forward differences with their
        error estimate, fitted orders).

        r(h) = |s(x + h·e_j) − s(x) − h·a_j| shrinks as h² when a_j is the derivative and as h when it
        is not; the order is the least-squares slope of log r against log h over the steps where r
        stands above rounding noise, the smallest four (nan when too few do: s is linear there).
        """
        base = self.envs[start][name][0]
        w = np.broadcast_to(weights, self.output.shape)
        s = self._contracted(name, start, weights)
        s0 = float(np.sum(self.output * w))
        flat, grad = base.reshape(-1), analytic.reshape(-1)
        scale = np.maximum(np.abs(flat), 1.0)
        steps = [_exact_steps(flat, 1e-2 * scale / 4**k) for k in range(_TAYLOR_LEVELS)]
        orders = np.full(flat.size, np.nan)
        forward = np.zeros(flat.size)
        forward_error = np.zeros(flat.size)
        noise = 1e3 * _EPS * max(abs(s0), np.max(np.abs(w), initial=0.0))
        for lo in range(0, flat.size, _TAYLOR_CHUNK):
            cols = np.arange(lo, min(flat.size, lo + _TAYLOR_CHUNK))
            probe = _make_probe(lambda b: s(b)[:, None], base, cols)
            with np.errstate(all="ignore"):
                outs = [o[:, 0] for o in probe([h[cols] for h in steps])]
            logs_h = np.log([h[cols] for h in steps])
            remainders = np.abs(np.stack(outs) - s0 - np.stack([h[cols] for h in steps]) * grad[cols])
            widths = [h[cols] for h in steps]
            diffs = [(o - s0) / w for o, w in zip(outs, widths)]
            rounding = [_EPS * np.maximum(np.abs(o), abs(s0)) / w for o, w in zip(outs, widths)]
            with np.errstate(all="ignore"):
                forward[cols], forward_error[cols] = _extrapolate(diffs, rounding, (1, 2, 3))
            for i, col in enumerate(cols):
                # the asymptotic regime is at small steps; rounding takes over below the noise floor
                above = np.flatnonzero(remainders[:, i] > noise)[-_TAYLOR_FIT:]
                if above.size >= 3:
                    orders[col] = np.polyfit(logs_h[above, i], np.log(remainders[above, i]), 1)[0]
        return Derivative(forward.reshape(base.shape), forward_error.reshape(base.shape)), orders.reshape(base.shape)

    def one_sided(self, name: str, start: int, weights: np.ndarray | None,
                  cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Left and right derivatives with their error estimates, for the given flat elements of `name`:
        (left, left_error, right, right_error).

        Each side is a ladder of one-sided differences, (f(x+h) - f(x))/h and (f(x) - f(x-h))/h for
        h = 0.1*max(|x|, 1)*4^-k, Richardson-extrapolated (powers 1, 2, 3) with the same error estimate as
        `richardson`; the ladder reaches steps far below |x| (1/x at 1e-9 needs h << 1e-9), so a smooth
        function's two sides converge to one value and a kink's stay apart. Arrays of shape (len(cols),)
        when contracted with weights, else (len(cols), *out).
        """
        levels = _RICHARDSON_LEVELS + _tiny_levels(self.envs[start][name][0].reshape(-1)[cols])
        chunk = max(1, self.memory_budget // (self.row_bytes * 2 * levels))
        parts = [self._one_sided(name, start, weights, cols[lo:lo + chunk], levels)
                 for lo in range(0, cols.size, chunk)]
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))  # type: ignore[return-value]

    def _one_sided(self, name: str, start: int, weights: np.ndarray | None, cols: np.ndarray,
                   levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One chunk of `one_sided`'s columns, under the memory budget."""
        base = self.envs[start][name][0]
        out_shape = self.output.shape
        g = self._function(name, start)
        x = base.reshape(-1)[cols]
        h0 = 0.1 * np.maximum(np.abs(x), 1.0)
        steps = [_exact_steps(x, h0 / _RATIO**k) for k in range(levels)]
        probe = _make_probe(lambda b: np.broadcast_to(g(b), (b.shape[0],) + out_shape), base, cols)
        with np.errstate(all="ignore"):
            outs = probe(steps + [-s for s in steps])
            res = _resolution(outs)
            f0 = self.output
            w = None if weights is None else np.broadcast_to(weights, out_shape)
            axes = tuple(range(1, 1 + len(out_shape)))
            found = []
            for sign, side in ((-1, outs[levels:]), (1, outs[:levels])):
                diffs, noise = [], []
                for step, o in zip(steps, side):
                    width = step.reshape(step.shape + (1,) * len(out_shape))
                    d = sign * (o - f0) / width
                    n = res * np.maximum(np.abs(o), np.abs(f0)) / width
                    if w is not None:
                        d, n = np.sum(d * w, axis=axes), np.sum(n * np.abs(w), axis=axes)
                    diffs.append(d)
                    noise.append(n)
                found += list(_extrapolate(diffs, noise, (1, 2, 3)))
        return found[0], found[1], found[2], found[3]

    def _columns(self, name: str, start: int, weights: np.ndarray | None) -> Derivative:
        """Column by column, a chunk of columns per batched evaluation."""
        return column_derivative(self._function(name, start), self.envs[start][name][0], self.output.shape,
                                 weights, self.method, self.eps,
                                 max(1, self.memory_budget // (self.row_bytes * self.method.probes_per_column(self.eps))))


# ---- any function of one array: what every target (an expression, a module) is differentiated by ----

def column_derivative(g: Callable[[np.ndarray], np.ndarray], base: np.ndarray, out_shape: tuple[int, ...],
                      weights: np.ndarray | None, method: Method, eps: float | None, chunk: int) -> Derivative:
    """d g / d base, column by column, `chunk` columns per batched evaluation.

    Args:
        g: a batch of values of shape (B, *base.shape) → a batch of outputs (B, *out_shape) (or one
            that broadcasts to it).
        weights: the upstream gradient to contract the output with (a VJP: shape of base), or None for
            the full Jacobian (shape out_shape + base.shape).
        chunk: columns perturbed per batched evaluation (each costs the method's probes).
    """
    def f(batch: np.ndarray) -> np.ndarray:
        return np.broadcast_to(g(batch), (batch.shape[0],) + out_shape)

    def per_row(steps: np.ndarray) -> np.ndarray:  # one step per batch row, over that row's outputs
        return steps.reshape(steps.shape + (1,) * len(out_shape))

    def from_rows(values: np.ndarray) -> np.ndarray:
        return np.min(values.reshape(values.shape[0], -1), axis=1, initial=np.inf)

    flat = base.reshape(-1)
    n = flat.size
    # batches of columns well under glibc's largest mmap threshold (32 MiB) are reused from the heap, chunk
    # after chunk: larger ones are fresh pages every time, which costs as much as the evaluation (twice
    # as much in a fresh process), and an 8 MiB float row block stays near the cache
    chunk = max(1, min(chunk, _REUSED_BYTES // (16 * max(n, int(np.prod(out_shape)), 1))))
    if n == 0:  # an empty tensor: nothing to perturb, an empty derivative
        shape = base.shape if weights is not None else out_shape + base.shape
        return Derivative(np.zeros(shape), np.zeros(shape))
    # results are written chunk by chunk into their final layout: a Jacobian may be 9M entries,
    # and every fresh array of that size costs as much to touch as the evaluations themselves
    shape = base.shape if weights is not None else out_shape + (n,)
    value, error = np.empty(shape), np.empty(shape)
    for lo in range(0, n, chunk):
        cols = np.arange(lo, min(n, lo + chunk))
        probe = _make_probe(f, base, cols)
        with np.errstate(all="ignore"):
            d, err = method(probe, flat[cols], eps, per_row, from_rows)
        if weights is not None:  # contract over the output: a vector-Jacobian product
            w = np.broadcast_to(weights, out_shape)
            axes = tuple(range(1, d.ndim))
            value.reshape(-1)[cols] = np.sum(d * w, axis=axes)
            error.reshape(-1)[cols] = np.sum(err * np.abs(w), axis=axes)
        else:  # columns → Jacobian of shape out_shape + in_shape
            value[..., lo:lo + cols.size] = np.moveaxis(d, 0, -1)
            error[..., lo:lo + cols.size] = np.moveaxis(err, 0, -1)
    if weights is None:
        value, error = value.reshape(out_shape + base.shape), error.reshape(out_shape + base.shape)
    return Derivative(value, error)


def directional_derivative(f: Callable[[np.ndarray], np.ndarray], base: np.ndarray, out_shape: tuple[int, ...],
                           weights: np.ndarray, directions: np.ndarray, method: Method, eps: float | None,
                           per_call: int) -> Derivative:
    """d/dt Σ weights_i·f(base + t·directions_i) at t = 0, one per direction: shape (k,).

    Args:
        f: a batch of values (B, *base.shape) → a batch of outputs (B, *out_shape).
        weights: the output weights, shape (k, *out_shape) or one set for every direction.
        directions: shape (k, *base.shape).
        per_call: rows per batched evaluation, so any size fits the memory budget.
    """
    k = directions.shape[0]
    w = np.broadcast_to(weights, (k,) + out_shape).reshape(k, -1)
    v = directions.reshape(k, -1)

    def probe(offsets: list[np.ndarray]) -> list[np.ndarray]:
        dtype = np.complex128 if any(np.iscomplexobj(o) for o in offsets) else np.float64
        jobs = np.array([(r, i) for r in range(len(offsets)) for i in range(k)])
        sums = np.zeros((len(offsets), k), dtype=dtype)
        for lo in range(0, len(jobs), per_call):
            r, i = jobs[lo:lo + per_call].T
            steps = np.array([offsets[a][b] for a, b in zip(r, i)], dtype=dtype)
            batch = v[i].astype(dtype, copy=False)  # rows of base + step·direction, built in place:
            batch *= steps[:, None]                  # one batch-sized array, not three
            batch += base.reshape(1, -1)
            batch = batch.reshape((len(r),) + base.shape)
            out = np.broadcast_to(f(batch), (len(r),) + out_shape).reshape(len(r), -1)
            sums[r, i] = np.sum(out * w[i], axis=1)
        return list(sums)

    scale = np.full(k, max(float(np.max(np.abs(base), initial=0.0)), 1.0))
    with np.errstate(all="ignore"):
        value, error = method(probe, scale, eps, lambda s: s, lambda s: s)
    return Derivative(np.real(value), error)


def _make_probe(f: Callable[[np.ndarray], np.ndarray], base: np.ndarray, cols: np.ndarray) -> Probe:
    """Evaluate f with column cols[i] of base moved by offsets[r][i], for every offset set r at once."""
    m = cols.size

    def probe(offsets: list[np.ndarray]) -> list[np.ndarray]:
        dtype = np.complex128 if any(np.iscomplexobj(o) for o in offsets) else np.float64
        batch = np.repeat(base[None].astype(dtype), m * len(offsets), axis=0)
        rows = batch.reshape(batch.shape[0], -1)
        for r, off in enumerate(offsets):
            rows[r * m + np.arange(m), cols] += off
        out = f(batch)
        return [out[r * m:(r + 1) * m] for r in range(len(offsets))]

    return probe


def _unbatch(value: Any) -> np.ndarray:
    if isinstance(value, tuple):  # an op with several outputs, assigned to a name (`y = f(x)`): only its
        # finiteness is asked of it (it is no intermediate of its own), so every output, flattened
        return np.concatenate([np.ravel(_unbatch(v)) for v in value]) if value else np.zeros(0)
    arr = np.asarray(value, dtype=np.float64)
    return arr if arr.ndim == 0 and not isinstance(value, np.ndarray) else arr[0]

