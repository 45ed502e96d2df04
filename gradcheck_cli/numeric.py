"""The numeric side: finite-difference derivatives over the numpy walk, with an error estimate.

Every method perturbs a chunk of input elements at once along a leading batch axis, so a check of
N elements costs a few numpy calls per chunk rather than 2N Python-level evaluations. Chunks are
sized so that one batched evaluation stays under a memory budget.

Methods (chosen once, at the top, from `METHODS`):
- complex: f'(x) ≈ Im f(x + ih) / h (Squire & Trapp 1998). No subtraction, so no cancellation: exact
  to rounding with h = 1e-20. Needs every op on the path to be analytic in its numpy form.
- central: (f(x+h) − f(x−h)) / 2h, h ≈ eps^(1/3)·max(|x|, 1); the error estimate compares step 2h.
- richardson: central differences at h, h/2, h/4, h/8 combined by Richardson extrapolation
  (the tableau of numdifftools / Numerical Recipes §5.7); the error estimate is the last correction.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from .evaluate import NumpyBackend, Walker
from .ops import OpSpec
from .parse import Program

MEMORY_BUDGET = 256 * 2**20      # bytes one batched evaluation may use
_EPS = np.finfo(np.float64).eps
_COMPLEX_STEP = 1e-20
_RICHARDSON_LEVELS = 4


@dataclasses.dataclass(frozen=True)
class Derivative:
    """Numeric derivatives and an estimate of their absolute error, of the same shape."""

    value: np.ndarray
    error: np.ndarray


# A method turns "evaluate f at x + these offsets" into (derivative, error) for one chunk of columns.
Probe = Callable[[list[np.ndarray]], list[np.ndarray]]
Method = Callable[[Probe, np.ndarray, float | None], tuple[np.ndarray, np.ndarray]]


def _exact_steps(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The step actually taken: (x + h) − x is exactly representable, h may not be."""
    return (x + h) - x


def _bcast(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Shape per-column numbers (m,) to broadcast against outputs (m, *out)."""
    return a.reshape(a.shape + (1,) * (like.ndim - 1))


def _central_at(probe: Probe, x: np.ndarray, h: np.ndarray, levels: int) -> tuple[list, list]:
    """Central differences at steps h, h/2, ...; also the largest |f| seen, for rounding error."""
    steps = [_exact_steps(x, h / 2**k) for k in range(levels)]
    outs = probe([s for s in steps] + [-s for s in steps])
    diffs, scale = [], 0.0
    for k, s in enumerate(steps):
        plus, minus = outs[k], outs[levels + k]
        diffs.append((plus - minus) / (2 * _bcast(s, plus)))
        scale = np.maximum(scale, np.maximum(np.abs(plus), np.abs(minus)))
    return diffs, [scale / _bcast(s, scale) for s in steps]


def central(probe: Probe, x: np.ndarray, eps: float | None) -> tuple[np.ndarray, np.ndarray]:
    h = np.full_like(x, eps) if eps else np.cbrt(_EPS) * np.maximum(np.abs(x), 1.0)
    # levels h and h/2: the difference of the two estimates bounds the truncation error
    (coarse, fine), (_, rounding) = _central_at(probe, x, h * 2, 2)
    return fine, np.abs(fine - coarse) / 3 + _EPS * rounding


def richardson(probe: Probe, x: np.ndarray, eps: float | None) -> tuple[np.ndarray, np.ndarray]:
    h = np.full_like(x, eps) if eps else 1e-2 * np.maximum(np.abs(x), 1.0)
    diffs, rounding = _central_at(probe, x, h, _RICHARDSON_LEVELS)
    table = [diffs]
    for j in range(1, _RICHARDSON_LEVELS):  # R[k][j] = (4^j R[k][j-1] − R[k-1][j-1]) / (4^j − 1)
        prev = table[-1]
        table.append([(4**j * prev[k] - prev[k - 1]) / (4**j - 1) for k in range(1, len(prev))])
    best, runner_up = table[-1][-1], table[-2][-1]
    return best, np.abs(best - runner_up) + 4 * _EPS * rounding[-1]


def complex_step(probe: Probe, x: np.ndarray, eps: float | None) -> tuple[np.ndarray, np.ndarray]:
    h = eps if eps else _COMPLEX_STEP
    (out,) = probe([np.full(x.shape, 1j * h)])
    value = np.imag(out) / h
    return value, 8 * _EPS * np.abs(value)


METHODS: dict[str, Method] = {"central": central, "richardson": richardson, "complex": complex_step}


def choose_method(method: str, program: Program, table: Mapping[str, OpSpec]) -> str:
    """'auto' is complex step when every op is analytic in its numpy form, else Richardson."""
    if method != "auto":
        return method
    return "complex" if all(table[op].complex_ok for op in program.ops) else "richardson"


class NumericEngine:
    """Derivatives of a program's output with respect to an input or an intermediate, numerically.

    Args:
        program: the parsed expression.
        table: the op table it was parsed with.
        inputs: unperturbed input values (float64, unbatched), constants included.
        method: a key of METHODS.
        eps: absolute step, or None to choose one per element.
    """

    def __init__(self, program: Program, table: Mapping[str, OpSpec], inputs: Mapping[str, np.ndarray],
                 method: str, eps: float | None = None, memory_budget: int = MEMORY_BUDGET):
        self.program = program
        self.table = table
        self.method = METHODS[method]
        self.is_complex = method == "complex"
        self.eps = eps
        self.memory_budget = memory_budget
        self.values: dict[int, np.ndarray] = {}
        recorder = NumpyBackend()
        self.envs: list[dict[str, np.ndarray]] = []  # envs[k]: bindings after statement k-1
        env = {name: np.asarray(v, dtype=np.float64)[None] for name, v in inputs.items()}
        self.envs.append(dict(env))
        sizes = [sum(v.size for v in env.values())]

        def record(index: int, value: Any) -> None:
            self.values[index] = _unbatch(value)
            self.envs.append(dict(env))
            sizes.append(np.size(value))

        with np.errstate(all="ignore"):
            self.output = _unbatch(Walker(program, table, recorder).run(env, on_statement=record))
        self.held = recorder.held
        # what one batch row costs: every statement value, several times over for temporaries
        self.row_bytes = 8 * (2 if self.is_complex else 1) * 4 * max(sum(sizes), 1)

    def statement_values(self) -> dict[int, np.ndarray]:
        """The value of every statement at the unperturbed point (float64)."""
        return self.values

    def derivative(self, name: str, start: int, weights: np.ndarray | None) -> Derivative:
        """d output / d name, numerically.

        Args:
            name: an input, or an intermediate assigned by statement `start - 1`.
            start: the first statement to re-run after perturbing `name`.
            weights: the upstream gradient to contract the output with (a VJP), or None for the
                full Jacobian (shape output.shape + name.shape). A scalar output uses weights 1.
        """
        env = self.envs[start]
        base = env[name][0]
        out_shape = self.output.shape
        walker = Walker(self.program, self.table, NumpyBackend(self.held))

        def f(batch: np.ndarray) -> np.ndarray:
            local = dict(env)
            local[name] = batch
            out = walker.run(local, start) if start < len(self.program.statements) else batch
            return np.broadcast_to(np.asarray(out), (batch.shape[0],) + out_shape)

        flat = base.reshape(-1)
        n = flat.size
        values, errors = [], []
        per_eval = _probe_count(self.method)
        chunk = max(1, self.memory_budget // (self.row_bytes * per_eval))
        for lo in range(0, n, chunk):
            cols = np.arange(lo, min(n, lo + chunk))
            probe = _make_probe(f, base, cols)
            with np.errstate(all="ignore"):
                d, err = self.method(probe, flat[cols], self.eps)
            if weights is not None:  # contract over the output: a vector-Jacobian product
                w = np.broadcast_to(weights, out_shape)
                axes = tuple(range(1, d.ndim))
                d, err = np.sum(d * w, axis=axes), np.sum(err * np.abs(w), axis=axes)
            values.append(d)
            errors.append(err)
        value, error = np.concatenate(values), np.concatenate(errors)
        if weights is None:  # columns → Jacobian of shape out_shape + in_shape
            value = np.moveaxis(value, 0, -1).reshape(out_shape + base.shape)
            error = np.moveaxis(error, 0, -1).reshape(out_shape + base.shape)
        else:
            value, error = value.reshape(base.shape), error.reshape(base.shape)
        return Derivative(value, error)


def _probe_count(method: Method) -> int:
    return {central: 4, richardson: 2 * _RICHARDSON_LEVELS, complex_step: 1}[method]


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
    arr = np.asarray(value, dtype=np.float64)
    return arr if arr.ndim == 0 and not isinstance(value, np.ndarray) else arr[0]
