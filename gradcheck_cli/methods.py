"""Difference methods, each declared once: its probes, its step rule and its error model.

A method turns "evaluate f at x + these offsets" into (derivative, error estimate); numeric.py's engine
supplies the probes (column by column, or all at once for elementwise structure). Each is declared once as
a NumericMethod (bottom of this file): its function, its probes per column (the engine sizes batches and
plan.py the cost of a full check by them), whether it honours --eps, whether it evaluates in complex
arithmetic, its error model, what to try where it cannot tell, and its own float64 tolerances if any.

- complex: f'(x) = Im f(x + ih) / h (Squire & Trapp 1998), h = 1e-20·|x|: exact to rounding.
- central: (f(x+h) − f(x−h)) / 2h, h = eps^(1/3)·max(|x|, 1); its error bound holds in the h² regime only.
- richardson: central differences on a ladder of steps h·4^-k, Richardson-extrapolated in runs of three
  (numdifftools; Numerical Recipes §5.7); each element keeps the estimate with the smallest error estimate.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from .ops import OpSpec
from .parse import Program

_EPS = np.finfo(np.float64).eps
_COMPLEX_STEP = 1e-20
_RICHARDSON_LEVELS = 18   # steps h·4^-k: spans 10 decades, from the scale of |x| down
_TINY_EXTRA = 32          # more levels at a tiny |x|, down to 1e-20: steps relative to |x| there
_RATIO = 4.0
_EPS_LEVELS = 4           # with --eps: steps eps·4^-k, k < 4
_TAYLOR_LEVELS = 16       # steps 1e-2·max(|x|, 1)·4^-k for the Taylor remainder test


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
    levels = _EPS_LEVELS if eps else _RICHARDSON_LEVELS + _tiny_levels(x)
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
        value = np.divide(np.imag(out), to_out(h))
        error = np.abs(value)
        error *= 8 * _EPS  # in place: a dense Jacobian's chunk is 8 MiB
        return value, error
    h = np.full(x.shape, float(eps))
    outs = probe([4j * h, 2j * h, 1j * h])
    coarser, coarse, fine = (np.imag(o) / to_out(k * h) for o, k in zip(outs, (4, 2, 1)))
    with np.errstate(all="ignore"):
        d1, d2 = np.abs(fine - coarse), np.abs(coarse - coarser)
        at_noise = d2 <= 64 * _EPS * np.abs(fine)
        asymptotic = _asymptotic(d1, d2, fine)
        error = np.where(at_noise, d1 + d2, np.where(asymptotic, d1 / 3, np.inf)) + 8 * _EPS * np.abs(fine)
    return fine, error


@dataclasses.dataclass(frozen=True)
class NumericMethod:
    """One numeric method, declared once: what it is called, what it evaluates and what it promises.

    Calling it calls its difference function, so METHODS["central"](probe, x, eps, to_out, to_in) works as
    the plain function did. The probe counts are per perturbed column, at an |x| ≥ 1 away from a domain edge
    (a tiny |x| and an edge add ladder levels: see `richardson`); the engine sizes its batches by them.
    """

    name: str
    function: Method | None      # None: not a difference method (taylor tests the analytic gradient itself)
    probes: int                  # evaluations per column without --eps
    probes_with_eps: int         # evaluations per column with --eps
    honours_eps: bool            # --eps is its step; where False, --eps is refused with this method
    complex_arithmetic: bool     # evaluates at complex points: exact only where every op is complex-safe
    error_model: str             # one line: where its error estimate comes from
    unsure_hint: str = ""        # what to try where it cannot tell (without --eps): never itself
    float64_tolerances: tuple[float, float] | None = None  # (atol, rtol) in float64 when not the dtype's own

    def __call__(self, probe: Probe, x: np.ndarray, eps: float | None, to_out: ToOut,
                 to_in: ToIn) -> tuple[np.ndarray, np.ndarray]:
        if self.function is None:
            raise TypeError(f"'{self.name}' is not a difference method")
        return self.function(probe, x, eps, to_out, to_in)

    def probes_per_column(self, eps: float | None) -> int:
        return self.probes_with_eps if eps else self.probes


CENTRAL = NumericMethod(
    "central", central, probes=6, probes_with_eps=6, honours_eps=True, complex_arithmetic=False,
    error_model="|D(h) − D(2h)|/3 where D(4h), D(2h), D(h) shrink as h² (else unknown); edges redone by richardson",
    unsure_hint="try --method richardson or another --eps",
    float64_tolerances=(1e-8, 1e-7))  # its h² truncation reaches ~1e-8 on fast-varying functions
RICHARDSON = NumericMethod(
    "richardson", richardson, probes=2 * _RICHARDSON_LEVELS, probes_with_eps=2 * _EPS_LEVELS,
    honours_eps=True, complex_arithmetic=False,
    error_model="the smallest of last correction + rounding + neighbour gap over a Richardson tableau of steps",
    unsure_hint="try --symbolic (the exact derivative) or another --eps")
COMPLEX = NumericMethod(
    "complex", complex_step, probes=1, probes_with_eps=3, honours_eps=True, complex_arithmetic=True,
    error_model="8 ulp of the value (no subtraction); with --eps, the h² test of central differences at 4h, 2h, h",
    unsure_hint="try --method richardson or --symbolic")
# "taylor" is not a difference method: it tests the analytic gradient directly (NumericEngine.taylor)
TAYLOR_METHOD = NumericMethod(
    "taylor", None, probes=_TAYLOR_LEVELS, probes_with_eps=_TAYLOR_LEVELS, honours_eps=False,
    complex_arithmetic=False,
    error_model="the order of the Taylor remainder |s(x+h) − s(x) − h·g| over a ladder of steps: 2 if g is right",
    unsure_hint="try --method richardson, with --symbolic for the exact derivative")

METHODS: dict[str, NumericMethod] = {m.name: m for m in (CENTRAL, RICHARDSON, COMPLEX)}
TAYLOR = TAYLOR_METHOD.name
ALL_METHODS: dict[str, NumericMethod] = {**METHODS, TAYLOR: TAYLOR_METHOD}


def choose_method(method: str, program: Program, table: Mapping[str, OpSpec]) -> str:
    """'auto' is complex step when every op is analytic in its numpy form (complex-safe), else Richardson."""
    if method != "auto":
        return method
    return COMPLEX.name if all(table[op].complex_ok for op in program.ops) else RICHARDSON.name
