"""The numeric side: finite-difference derivatives over the numpy walk, with an error estimate.

Every method perturbs a chunk of input elements at once along a leading batch axis, so a check of
N elements costs a few numpy calls per chunk rather than 2N Python-level evaluations. Chunks are
sized so that one batched evaluation stays under a memory budget.

Methods (chosen once, at the top, from `METHODS`):
- complex: f'(x) ≈ Im f(x + ih) / h (Squire & Trapp 1998). No subtraction, so no cancellation: exact
  to rounding with h = 1e-20. Needs every op on the path to be analytic in its numpy form.
- central: (f(x+h) − f(x−h)) / 2h, h ≈ eps^(1/3)·max(|x|, 1); the error estimate compares step 2h.
- richardson: central differences on a ladder of 18 steps h·4^-k, Richardson-extrapolated in runs
  of three (the tableau of numdifftools / Numerical Recipes §5.7); each element keeps the estimate
  whose error estimate (last correction + rounding + disagreement with its neighbour) is smallest.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from .evaluate import NumpyBackend, Walker
from .ops import OpSpec
from .parse import Call, Program
from .structure import plan, reduction_weights, unbroadcast

MEMORY_BUDGET = 256 * 2**20      # bytes one batched evaluation may use
_TAYLOR_LEVELS = 16              # steps 1e-2·max(|x|, 1)·4^-k for the Taylor remainder test
_TAYLOR_FIT = 4                  # the order is fitted over the smallest steps still above rounding
_TAYLOR_CHUNK = 4096             # columns per batched evaluation in the Taylor test
_EPS = np.finfo(np.float64).eps
_COMPLEX_STEP = 1e-20
_RICHARDSON_LEVELS = 18   # steps h·4^-k: spans 10 decades, from the scale of |x| down
_TINY_EXTRA = 32          # more levels at a tiny |x|, down to 1e-20: steps relative to |x| there
_RATIO = 4.0


@dataclasses.dataclass(frozen=True)
class Derivative:
    """Numeric derivatives and an estimate of their absolute error, of the same shape."""

    value: np.ndarray
    error: np.ndarray


# A method turns "evaluate f at x + these offsets" into (derivative, error). `to_out` maps steps
# (one per perturbed element) onto the probe's outputs, so the same method serves column-by-column
# probing and all-at-once probing of elementwise structure; `to_in` maps back, each element taking the
# smallest over the outputs it reaches (so a step found safe for every one of them).
Probe = Callable[[list[np.ndarray]], list[np.ndarray]]
ToOut = Callable[[np.ndarray], np.ndarray]
ToIn = Callable[[np.ndarray], np.ndarray]
Method = Callable[[Probe, np.ndarray, "float | None", ToOut, ToIn], tuple[np.ndarray, np.ndarray]]
_EDGE_PASSES = 3  # ladders tried, each starting below the last step that left the domain


def _exact_steps(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The step actually taken: (x + h) − x is exactly representable, h may not be."""
    return (x + h) - x


def central(probe: Probe, x: np.ndarray, eps: float | None, to_out: ToOut,
            to_in: ToIn) -> tuple[np.ndarray, np.ndarray]:
    """(f(x+h) - f(x-h)) / 2h, h = eps^(1/3)*max(|x|, 1), or the user's --eps. The error estimate is honest
    only in the h^2 regime: the differences at 4h, 2h and h must shrink by about 4 each (Numerical Recipes
    5.7); then the error of D(h) is |D(h) - D(2h)|/3. Where they do not (a step far larger than the
    function's own scale: sin at 1e8 aliases), the estimate has not converged and its error is unknown
    (inf: such an element cannot fail, only be unreliable). Where a step leaves the domain (nan: log,
    sqrt near 0), the edge is nearer than h: those elements are redone by `richardson`, which steps below it."""
    h = np.full_like(x, eps) if eps else np.cbrt(_EPS) * np.maximum(np.abs(x), 1.0)
    steps = [_exact_steps(x, h * 4), _exact_steps(x, h * 2), _exact_steps(x, h)]
    outs = probe(steps + [-s for s in steps])
    res = _resolution(outs)
    diffs, noise = [], []
    for step, plus, minus in zip(steps, outs[:3], outs[3:]):
        width = to_out(step)
        diffs.append((plus - minus) / (2 * width))
        noise.append(res * np.maximum(np.abs(plus), np.abs(minus)) / width)
    coarser, coarse, fine = diffs
    with np.errstate(all="ignore"):
        d1, d2 = np.abs(fine - coarse), np.abs(coarse - coarser)
        at_noise = d2 <= 10 * (noise[0] + noise[1])  # differences at rounding level: truncation is below it
        asymptotic = _asymptotic(d1, d2, fine)
        error = np.where(at_noise, d1 + d2, np.where(asymptotic, d1 / 3, np.inf)) + 10 * noise[2]
    crossed = ~(np.isfinite(coarser) & np.isfinite(coarse) & np.isfinite(fine))
    if crossed.any():
        value, estimate = richardson(probe, x, eps, to_out, to_in)
        fine, error = np.where(crossed, value, fine), np.where(crossed, estimate, error)
    return fine, error


def _asymptotic(d1: np.ndarray, d2: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Differences at h, 2h, 4h in the regime their error model assumes: successive gaps shrinking by 4
    (the h^2 term) or 16 (h^4, where the third derivative vanishes), and a correction small beside the
    estimate. A ratio near 4 by chance with a 10% correction is a step too large for the function."""
    ratio = d2 / d1
    return (((ratio >= 2.5) & (ratio <= 6)) | ((ratio >= 12) & (ratio <= 20))) & (d1 <= 1e-2 * np.abs(fine))


def _resolution(outs: list[np.ndarray]) -> np.ndarray:
    """The relative rounding of the function's values, per output element: float64's, unless every finite
    value probed (at least 4 distinct ones) is a float32 (float16, bfloat16) number. Then the forward
    rounds through that type (a `.float()` inside a float64 op), and its differences carry that noise."""
    stack = np.real(np.stack(outs)).astype(np.float64)
    clean = np.where(np.isfinite(stack), stack, 0.0)
    res = np.full(stack.shape[1:], _EPS)
    distinct = 1 + np.sum(np.diff(np.sort(clean, axis=0), axis=0) != 0, axis=0)
    several = distinct >= 4
    if not several.any():
        return res
    with np.errstate(all="ignore"):
        single = clean.astype(np.float32)
        fits32 = single.astype(np.float64) == clean
        fits16 = clean.astype(np.float16).astype(np.float64) == clean
        fits_bf16 = fits32 & ((single.view(np.uint32) & 0xFFFF) == 0)
    for fits, eps in ((fits32, np.finfo(np.float32).eps), (fits16, np.finfo(np.float16).eps),
                      (fits_bf16, 2.0**-7)):
        res = np.where(fits.all(axis=0) & several, eps, res)
    return res


def _extrapolate(diffs: list[np.ndarray], rounding: list[np.ndarray],
                 powers: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A Richardson tableau over a ladder of steps h·r^-k, eliminating the error terms h^p, p in powers
    (2, 4 for central differences; 1, 2, 3 for one-sided ones). Every element keeps the extrapolation
    whose error estimate (last correction + rounding + disagreement with its neighbour) is smallest;
    a non-finite one (a step that left the domain) never wins."""
    table = [diffs]
    for p in powers:  # R[j][k] = (r^p R[j-1][k+1] − R[j-1][k]) / (r^p − 1)
        c = _RATIO ** p
        prev = table[-1]
        table.append([(c * prev[k + 1] - prev[k]) / (c - 1) for k in range(len(prev) - 1)])
    last, before = table[-1], table[-2]
    best = err = None
    for k in range(1, len(last)):
        estimate = (np.abs(last[k] - before[k + 1]) + 10 * rounding[k + len(powers)]
                    + np.abs(last[k] - last[k - 1]))
        best, err = (last[k], estimate) if best is None else _better(best, err, last[k], estimate)
    return best, np.where(np.isfinite(err), err, np.inf)


def _better(value: np.ndarray, error: np.ndarray, candidate: np.ndarray,
            estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element by element, whichever of two estimates has the smaller (finite) error estimate, except that
    one whose error is below half its own size beats one whose error is not: near a pole the large steps
    give small garbage with a small absolute error (1/x at 1e-9: 4e5 ± 4e5 against −1e18 ± 1e7)."""
    rank = np.where(np.isfinite(error), error, np.inf)
    other = np.where(np.isfinite(estimate), estimate, np.inf)
    with np.errstate(invalid="ignore"):
        settled, candidate_settled = rank <= 0.5 * np.abs(value), other <= 0.5 * np.abs(candidate)
    wins = np.where(settled == candidate_settled, other < rank, candidate_settled)
    return np.where(wins, candidate, value), np.where(wins, estimate, error)


def _tiny_levels(x: np.ndarray) -> int:
    """Levels a ladder from 0.1·max(|x|, 1) needs beyond the usual to reach as far below a tiny |x| (1/x at
    1e-9 varies on the scale of 1e-9: steps of 1e-11 are not small there); 0 when no |x| is below 1."""
    tiny = np.abs(x[(x != 0) & (np.abs(x) < 1)])
    if tiny.size == 0:
        return 0
    return int(min(np.ceil(np.log(1 / tiny.min()) / np.log(_RATIO)), _TINY_EXTRA))


def richardson(probe: Probe, x: np.ndarray, eps: float | None, to_out: ToOut,
               to_in: ToIn) -> tuple[np.ndarray, np.ndarray]:
    """See `_richardson`; steps below a large |x|'s resolution (0 wide) and edges give nan, never a winner."""
    with np.errstate(all="ignore"):
        return _richardson(probe, x, eps, to_out, to_in)


def _richardson(probe: Probe, x: np.ndarray, eps: float | None, to_out: ToOut,
                to_in: ToIn) -> tuple[np.ndarray, np.ndarray]:
    """Central differences on a ladder of steps h·4^-k, each run of 3 extrapolated (Richardson);
    every element takes the extrapolation with the smallest error estimate, so the step adapts to the
    function's own scale (sin at 1e8 needs h near 1, x³ at 1e5 needs h near 1e2).

    Near a domain edge (log, sqrt, log1p near theirs) the larger steps leave the domain on one side. Those
    elements also get one-sided differences from the side that stayed inside, extrapolated the same way,
    and a new ladder that starts at the largest step that stayed inside on both sides, so no value used
    ever comes from across the edge."""
    levels = 4 if eps else _RICHARDSON_LEVELS + _tiny_levels(x)
    h = np.full_like(x, eps) if eps else 1e-1 * np.maximum(np.abs(x), 1.0)
    best = err = f0 = res = None
    for _ in range(1 if eps else _EDGE_PASSES):
        steps = [_exact_steps(x, h / _RATIO**k) for k in range(levels)]
        outs = probe(steps + [-s for s in steps])
        plus, minus = outs[:levels], outs[levels:]
        widths = [np.broadcast_to(to_out(s), plus[0].shape) for s in steps]
        diffs = [(p - m) / (2 * w) for p, m, w in zip(plus, minus, widths)]
        res = _resolution(plus + minus) if res is None else res
        rounding = [res * np.maximum(np.abs(p), np.abs(m)) / w for p, m, w in zip(plus, minus, widths)]
        value, error = _extrapolate(diffs, rounding, (2, 4))
        best, err = (value, error) if best is None else _better(best, err, value, error)
        inside_plus = np.stack([np.isfinite(p) for p in plus])
        inside_minus = np.stack([np.isfinite(m) for m in minus])
        inside = inside_plus & inside_minus
        crossed = ~inside.all(axis=0)
        if eps or not crossed.any():
            break
        if f0 is None:
            (f0,) = probe([np.zeros_like(x)])
        # steps beyond the edge's distance see the edge even from the safe side: only smaller ones count
        first = np.where(inside.any(axis=0), np.argmax(inside, axis=0), levels)
        for sign, side, ok in ((1, plus, inside_plus), (-1, minus, inside_minus)):
            safe = crossed & ok.all(axis=0)
            if safe.any():
                one = [np.where(k >= first, sign * (o - f0) / w, np.nan)
                       for k, (o, w) in enumerate(zip(side, widths))]
                noise = [res * np.maximum(np.abs(o), np.abs(f0)) / w for o, w in zip(side, widths)]
                value, error = _extrapolate(one, noise, (1, 2, 3))
                best, err = _better(best, err, value, np.where(safe, error, np.inf))
        # the next ladder starts at the largest step inside on both sides (below the smallest, if none)
        start = np.take_along_axis(np.stack(widths), np.minimum(first, levels - 1)[None], axis=0)[0]
        start = np.where(first < levels, start, widths[-1] / _RATIO)
        restart = to_in(np.where(crossed, start, np.inf))  # inf where no output of the element crossed
        h = np.where(np.isfinite(restart), restart, h)
    return best, err


def complex_step(probe: Probe, x: np.ndarray, eps: float | None, to_out: ToOut,
                 to_in: ToIn) -> tuple[np.ndarray, np.ndarray]:
    """Im f(x + ih) / h (Squire & Trapp 1998) with h relative to |x| (1e-20*|x|): a fixed 1e-20 is no small
    step at x = 1e-18, where 1/x, log and sqrt vary on the scale of x itself; relative to |x|, the
    truncation error h^2 f'''/6 stays far below rounding. With the user's --eps it need not: the
    estimates at 2h and 4h bound it, as for central differences."""
    if eps is None:
        h = np.where(x != 0, np.maximum(_COMPLEX_STEP * np.abs(x), 1e-300), _COMPLEX_STEP)
        (out,) = probe([1j * h])
        value = np.imag(out) / to_out(h)
        return value, 8 * _EPS * np.abs(value)
    h = np.full(x.shape, float(eps))
    outs = probe([4j * h, 2j * h, 1j * h])
    coarser, coarse, fine = (np.imag(o) / to_out(k * h) for o, k in zip(outs, (4, 2, 1)))
    with np.errstate(all="ignore"):
        d1, d2 = np.abs(fine - coarse), np.abs(coarse - coarser)
        at_noise = d2 <= 64 * _EPS * np.abs(fine)
        asymptotic = _asymptotic(d1, d2, fine)
        error = np.where(at_noise, d1 + d2, np.where(asymptotic, d1 / 3, np.inf)) + 8 * _EPS * np.abs(fine)
    return fine, error


METHODS: dict[str, Method] = {"central": central, "richardson": richardson, "complex": complex_step}
# "taylor" is not a difference method: it tests the analytic gradient directly (NumericEngine.taylor)
TAYLOR = "taylor"


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
        self.method = METHODS.get(method, richardson)  # taylor still needs a method for --order 2
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
            inner_shape = self.node_value(how.inner).shape
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

    def node_value(self, node: Call) -> np.ndarray:
        """A node of the last statement, at the unperturbed point (unbatched)."""
        walker = Walker(self.program, self.table, NumpyBackend(self.held))
        env = dict(self.envs[len(self.program.statements) - 1])
        with np.errstate(all="ignore"):
            return _unbatch(walker.node(node, env))

    def _aligned(self, name: str, start: int, weights: np.ndarray | None, f: Callable,
                 out_shape: tuple[int, ...]) -> Derivative:
        """Every element of `name` perturbed at once: valid when out[o] depends only on name[bcast(o)]."""
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
        d, err = d[0], err[0]
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

    def full_cost(self, name: str, start: int) -> float:
        """Roughly the bytes a full per-element check of `name` pushes through numpy (all probes)."""
        how = plan(self.program, self.table, name, start)
        if how.kind == "zero":
            return 0.0
        columns = 1 if how.kind in ("aligned", "reduced") else self.envs[start][name][0].size
        return float(columns) * self.row_bytes * _probe_count(self.method)

    def directional(self, name: str, start: int, weights: np.ndarray, directions: np.ndarray) -> Derivative:
        """d/dt Σ weights_i·output(name + t·directions_i) at t = 0, one per direction: shape (k,).

        Args:
            weights: the output weights, shape (k, *output.shape) or one set for every direction.
            directions: shape (k, *name.shape).
        Evaluations are batched in chunks under the memory budget, so any size fits.
        """
        base = self.envs[start][name][0]
        f = self._function(name, start)
        k, out_shape = directions.shape[0], self.output.shape
        w = np.broadcast_to(weights, (k,) + out_shape).reshape(k, -1)
        v = directions.reshape(k, -1)
        per_call = max(1, self.memory_budget // self.row_bytes)

        def probe(offsets: list[np.ndarray]) -> list[np.ndarray]:
            dtype = np.complex128 if any(np.iscomplexobj(o) for o in offsets) else np.float64
            jobs = np.array([(r, i) for r in range(len(offsets)) for i in range(k)])
            sums = np.zeros((len(offsets), k), dtype=dtype)
            for lo in range(0, len(jobs), per_call):
                r, i = jobs[lo:lo + per_call].T
                steps = np.array([offsets[a][b] for a, b in zip(r, i)], dtype=dtype)
                batch = (base.reshape(1, -1) + steps[:, None] * v[i]).reshape((-1,) + base.shape)
                out = np.broadcast_to(f(batch), (len(r),) + out_shape).reshape(len(r), -1)
                sums[r, i] = np.sum(out * w[i], axis=1)
            return list(sums)

        scale = np.full(k, max(float(np.max(np.abs(base), initial=0.0)), 1.0))
        with np.errstate(all="ignore"):
            value, error = self.method(probe, scale, self.eps, lambda s: s, lambda s: s)
        return Derivative(np.real(value), error)

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
        base = self.envs[start][name][0]
        out_shape = self.output.shape
        g = self._function(name, start)
        flat = base.reshape(-1)
        x = flat[cols]
        levels = _RICHARDSON_LEVELS + _tiny_levels(x)
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
        base = self.envs[start][name][0]
        out_shape = self.output.shape
        g = self._function(name, start)

        def f(batch: np.ndarray) -> np.ndarray:
            return np.broadcast_to(g(batch), (batch.shape[0],) + out_shape)

        def per_row(steps: np.ndarray) -> np.ndarray:  # one step per batch row, over that row's outputs
            return steps.reshape(steps.shape + (1,) * len(out_shape))

        def from_rows(values: np.ndarray) -> np.ndarray:
            return np.min(values.reshape(values.shape[0], -1), axis=1, initial=np.inf)

        flat = base.reshape(-1)
        n = flat.size
        if n == 0:  # an empty tensor: nothing to perturb, an empty derivative
            shape = base.shape if weights is not None else out_shape + base.shape
            return Derivative(np.zeros(shape), np.zeros(shape))
        # results are written chunk by chunk into their final layout: a Jacobian may be 9M entries,
        # and every fresh array of that size costs as much to touch as the evaluations themselves
        shape = base.shape if weights is not None else out_shape + (n,)
        value, error = np.empty(shape), np.empty(shape)
        chunk = max(1, self.memory_budget // (self.row_bytes * _probe_count(self.method)))
        for lo in range(0, n, chunk):
            cols = np.arange(lo, min(n, lo + chunk))
            probe = _make_probe(f, base, cols)
            with np.errstate(all="ignore"):
                d, err = self.method(probe, flat[cols], self.eps, per_row, from_rows)
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


def _probe_count(method: Method) -> int:
    return {central: 6, richardson: 2 * _RICHARDSON_LEVELS, complex_step: 3}[method]


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
