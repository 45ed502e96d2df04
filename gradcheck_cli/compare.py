"""Analytic vs numeric → result dataclasses: per-element errors, the rule that decided, the verdict."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .diagnose import diagnose
from .graph import GraphNode

# Default (atol, rtol) per dtype. float64 is judged far tighter than torch.autograd.gradcheck's
# (1e-5, 1e-3): the numeric side is exact to rounding (complex step) or nearly so (Richardson, error
# ~1e-12), so rtol 1e-8 catches a backward wrong by a relative 1e-7 with room to spare. Plain central
# differences carry an h² truncation error up to ~1e-8 for fast-varying functions: rtol 1e-7 there.
# Lower precisions are judged against the float64 reference with room for their own rounding.
# Second derivatives are judged against a numeric estimate one difference deeper: looser by 1e2.
ORDER2_FACTOR = 100.0

DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-8, 1e-8),
    "float32": (1e-5, 1e-4),
    "float16": (1e-3, 1e-2),
    "bfloat16": (1e-2, 5e-2),
}
CENTRAL_FLOAT64 = (1e-8, 1e-7)


def default_tolerances(dtype: str, method: str) -> tuple[float, float]:
    """(atol, rtol) when none are given: by the dtype, and for float64 by how exact the method is."""
    return CENTRAL_FLOAT64 if dtype == "float64" and method == "central" else DEFAULT_TOLERANCES[dtype]


@dataclasses.dataclass(frozen=True)
class Projection:
    """What a projected check (`--fast`) covers: k random ±1 directions instead of every element.

    A single wrong element shifts every projection by exactly its error, so one off by more than
    `caught_above` (the largest tolerance among the directions) is caught for certain. Errors that
    include one that large slip through only if they cancel in every direction: at most 1/2 a
    direction for a gradient or VJP, 3/4 for a Jacobian (output weights random too), so `slip_chance`
    is (1/2)^k or (3/4)^k.
    """

    directions: int
    elements: int          # what a full check would have compared
    caught_above: float
    slip_chance: float

    def statement(self) -> str:
        return (f"projected check: {self.directions} random ±1 directions instead of {self.elements:,} elements; "
                f"a single wrong element off by more than {self.caught_above:.1e} is caught for certain; errors "
                f"that include one that large slip through only by cancelling in every direction "
                f"(chance ≤ {self.slip_chance:.1e})")


@dataclasses.dataclass(frozen=True)
class GradientResult:
    """The check of one input's (or intermediate's) gradient, element by element.

    Arrays have the input's shape (or output.shape + input.shape in Jacobian mode).
    `decided_by` says which part of the tolerance atol + rtol·|numeric| was larger.
    """

    name: str
    shape: tuple[int, ...]
    value: np.ndarray
    analytic: np.ndarray
    numeric: np.ndarray
    numeric_error: np.ndarray
    abs_error: np.ndarray
    rel_error: np.ndarray
    tolerance: np.ndarray
    passed: np.ndarray
    atol_decides: np.ndarray   # True where atol > rtol·|numeric| (the atol part of the rule decided)
    reasons: np.ndarray
    diagnosis: str = ""
    unreliable: np.ndarray | None = None  # outside tolerance, but the numeric estimate is as uncertain
    allow_unreliable: bool = False
    projection: Projection | None = None  # --fast: the arrays hold one projection a direction
    symbolic: np.ndarray | None = None    # --symbolic: the exact derivative, same shape as analytic

    @property
    def decided_by(self) -> np.ndarray:
        """Which rule decided each element: "atol", "rtol", or "order" (the Taylor method)."""
        rule = np.where(self.atol_decides, "atol", "rtol")
        return np.where(np.isnan(self.tolerance), "order", rule)

    @property
    def wrong(self) -> np.ndarray:
        """Elements that disagree with a numeric estimate sure enough to blame the analytic side."""
        return ~self.passed & ~self.unreliable if self.unreliable is not None else ~self.passed

    @property
    def ok(self) -> bool:
        return bool(self.passed.all()) or (self.allow_unreliable and not self.wrong.any())

    @property
    def max_abs_error(self) -> float:
        return float(self.abs_error.max()) if self.abs_error.size else 0.0

    @property
    def max_rel_error(self) -> float:
        return float(self.rel_error.max()) if self.rel_error.size else 0.0

    @property
    def failures(self) -> int:
        return int((~self.passed).sum())


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """Everything one check found; rendered as a table, JSON or JUnit by `render`."""

    expression: str
    dtype: str
    method: str
    atol: float
    rtol: float
    eps: float | None
    seed: int
    mode: str
    output_shape: tuple[int, ...]
    output_value: np.ndarray
    grad_output: np.ndarray | None
    inputs: dict[str, GradientResult]
    intermediates: dict[str, GradientResult]
    constants: dict[str, np.ndarray]
    graph: GraphNode | None
    replay: str
    versions: dict[str, str]
    custom_ops: tuple[Any, ...] = ()   # custom.OpReport per plugin call site
    blame: str = ""
    hessians: dict[str, GradientResult] = dataclasses.field(default_factory=dict)  # --order 2

    @property
    def ok(self) -> bool:
        return (all(r.ok for r in self.results()) and all(r.ok for r in self.custom_ops)
                and all(r.ok for r in self.hessians.values()))

    def results(self) -> list[GradientResult]:
        return [*self.inputs.values(), *self.intermediates.values()]

    @property
    def projected(self) -> bool:
        return any(r.projection is not None for r in self.results())


def compare(name: str, value: np.ndarray, analytic: np.ndarray, numeric: np.ndarray,
            numeric_error: np.ndarray, atol: float, rtol: float, allow_unreliable: bool = False) -> GradientResult:
    """Judge each element by torch.allclose's rule: |analytic − numeric| ≤ atol + rtol·|numeric|.

    An element outside the tolerance whose numeric error estimate is at least half the discrepancy is
    "unreliable" rather than wrong: the judge itself is unsure there.
    """
    with np.errstate(all="ignore"):  # in place, three float arrays in all: a Jacobian may be 9M entries
        shape = np.shape(analytic)
        abs_error = np.subtract(analytic, numeric, out=np.empty(shape))
        np.abs(abs_error, out=abs_error)
        rel_error = np.abs(numeric, out=np.empty(shape))  # |numeric| until divided below
        tolerance = np.multiply(rel_error, rtol, out=np.empty(shape))
        tolerance += atol
        atol_decides = tolerance <= 2 * atol if rtol > 0 else np.ones(rel_error.shape, dtype=bool)
        np.divide(abs_error, rel_error, out=rel_error)
        rel_error[abs_error == 0] = 0.0
        finite = np.isfinite(abs_error)  # nan or inf on either side makes the difference so
        passed = np.less_equal(abs_error, tolerance, out=np.empty(shape, dtype=bool))
        passed &= finite
        unreliable = np.asarray(finite & ~passed)
        if unreliable.any():  # outside tolerance: is the numeric estimate itself as unsure?
            unreliable[unreliable] = np.broadcast_to(numeric_error, abs_error.shape)[unreliable] * 2 \
                >= abs_error[unreliable]
    if finite.all() and not unreliable.any():  # the common case: no reasons, and no 9M-object array
        reasons = np.broadcast_to(np.array("", dtype=object), analytic.shape)
    else:
        reasons = np.full(analytic.shape, "", dtype=object)  # filled by mask: cheap when few need one
        reasons[unreliable] = (f"numeric estimate unreliable here (±{np.max(numeric_error, initial=0):.1e}); "
                               "try --method richardson or another --eps")
        for side, arr in (("analytic", analytic), ("numeric", numeric)):
            reasons[np.isinf(arr)] = f"{side} gradient is inf"
            reasons[np.isnan(arr)] = f"{side} gradient is nan"
    return GradientResult(name, tuple(np.shape(value)), value, analytic, numeric, numeric_error,
                          abs_error, rel_error, tolerance, passed, atol_decides, reasons,
                          diagnose(analytic, numeric, value, passed | unreliable, atol), unreliable,
                          allow_unreliable)


def compare_projected(name: str, value: np.ndarray, analytic: np.ndarray, numeric: np.ndarray,
                      numeric_error: np.ndarray, atol: float, rtol: float, elements: int, jacobian: bool,
                      allow_unreliable: bool = False) -> GradientResult:
    """Judge projections (one a direction) by the same rule as elements; say what that covers."""
    per_direction = compare(name, np.arange(analytic.size, dtype=np.float64), analytic, numeric, numeric_error,
                            atol, rtol, allow_unreliable)
    k = int(analytic.size)
    projection = Projection(k, elements, float(np.max(per_direction.tolerance, initial=0.0)),
                            (0.75 if jacobian else 0.5) ** k)
    return dataclasses.replace(per_direction, shape=tuple(np.shape(value)), value=value, diagnosis="",
                               projection=projection)


def with_symbolic(result: GradientResult, exact: np.ndarray, atol: float, rtol: float) -> GradientResult:
    """Add the exact derivative as a third opinion: where analytic and numeric disagree, say which one
    the exact value sides with. An element where only the numeric estimate is off is not a wrong
    gradient: it becomes unreliable (the judge was wrong), with the reason."""
    exact = np.asarray(exact, dtype=np.float64)
    with np.errstate(all="ignore"):
        tol = atol + rtol * np.abs(exact)
        analytic_right = np.abs(result.analytic - exact) <= tol
        numeric_right = np.abs(result.numeric - exact) <= tol
    failing = ~result.passed
    if not failing.any():
        return dataclasses.replace(result, symbolic=exact)
    reasons = np.array(result.reasons, dtype=object, copy=True)
    unreliable = result.unreliable.copy()
    numeric_off = failing & analytic_right & ~numeric_right
    analytic_off = failing & numeric_right & ~analytic_right
    both_off = failing & ~numeric_right & ~analytic_right
    reasons[numeric_off] = "symbolic agrees with analytic: the numeric estimate is off here"
    unreliable[numeric_off] = True
    reasons[analytic_off] = "symbolic agrees with numeric: the analytic gradient is off"
    unreliable[analytic_off] = False
    reasons[both_off] = "symbolic disagrees with both"
    # a diagnosis describes a wrong backward: none when the exact value clears the analytic side
    diagnosis = result.diagnosis if (analytic_off | both_off).any() else ""
    return dataclasses.replace(result, symbolic=exact, reasons=reasons, unreliable=unreliable, diagnosis=diagnosis)


TAYLOR_RIGHT, TAYLOR_WRONG = 1.7, 1.3  # fitted remainder orders: ≈2 when right, ≈1 when wrong


def compare_taylor(name: str, value: np.ndarray, analytic: np.ndarray, forward: np.ndarray,
                   orders: np.ndarray, allow_unreliable: bool = False) -> GradientResult:
    """Judge each element by its Taylor remainder order: 2 passes, 1 fails, in between is unreliable.

    An element whose remainder never rises above rounding (nan order) is linear there: it passes.
    """
    with np.errstate(all="ignore"):
        abs_error = np.abs(analytic - forward)
        rel_error = np.where(abs_error == 0, 0.0, abs_error / np.abs(forward))
    flat_ok = np.isnan(orders)
    passed = np.isfinite(analytic) & (flat_ok | (orders >= TAYLOR_RIGHT))
    unreliable = ~passed & np.isfinite(analytic) & (orders > TAYLOR_WRONG)
    reasons = np.where(flat_ok, "remainder at rounding level (linear here)",
                       np.char.add("Taylor remainder order ", np.char.mod("%.2f", np.nan_to_num(orders))))
    reasons = np.asarray(reasons, dtype=object)
    tolerance = np.full(analytic.shape, np.nan)
    return GradientResult(name, tuple(np.shape(value)), value, analytic, forward, abs_error, abs_error,
                          rel_error, tolerance, passed, np.zeros(analytic.shape, dtype=bool), reasons,
                          diagnose(analytic, forward, value, passed | unreliable, 0.0), unreliable,
                          allow_unreliable)


def with_kinks(result: GradientResult, flat: np.ndarray, left: np.ndarray, right: np.ndarray) -> GradientResult:
    """Re-judge elements where left and right derivatives differ: a kink, not a wrong gradient.

    Autograd's value there passes when it lies between the one-sided derivatives (a one-sided
    derivative or a subgradient, as torch picks for relu, abs, clamp and max); the reason says so.
    """
    passed = result.passed.copy().reshape(-1)
    unreliable = result.unreliable.copy().reshape(-1)
    reasons = result.reasons.copy().reshape(-1)
    analytic = result.analytic.reshape(-1)
    tol = result.tolerance.reshape(-1)
    for k, lo, hi in zip(flat, left, right):
        # one-sided differences carry O(h) error: only a clear jump counts as a kink
        if not (np.isfinite(lo) and np.isfinite(hi)) or abs(hi - lo) <= 1e-4 * max(abs(hi), abs(lo), 1.0):
            continue
        a = analytic[k]
        inside = min(lo, hi) - 1e-6 * max(abs(lo), abs(hi), 1.0) - tol[k] <= a <= \
            max(lo, hi) + 1e-6 * max(abs(lo), abs(hi), 1.0) + tol[k]
        passed[k] = passed[k] or inside
        unreliable[k] = False
        reasons[k] = f"not differentiable here: left {lo:.6g}, right {hi:.6g}, autograd chose {a:.6g}"
    shape = result.passed.shape
    passed, unreliable = passed.reshape(shape), unreliable.reshape(shape)
    return dataclasses.replace(result, passed=passed, unreliable=unreliable, reasons=reasons.reshape(shape),
                               diagnosis=diagnose(result.analytic, result.numeric, result.value,
                                                  passed | unreliable, float(result.tolerance.min(initial=0))))


def worst_order(result: GradientResult) -> np.ndarray:
    """Flat indices, failing first, then by how close each came to its tolerance."""
    with np.errstate(all="ignore"):
        ratio = np.where(np.isfinite(result.abs_error), result.abs_error / result.tolerance, np.inf)
    ratio = np.where(result.passed, ratio, np.inf).reshape(-1)
    failing = (~result.passed).reshape(-1)
    return np.lexsort((-ratio, ~failing))


def versions() -> dict[str, str]:
    import torch
    return {"torch": torch.__version__, "numpy": np.__version__}


def plain(value: Any) -> Any:
    """numpy → JSON-safe Python: floats stay floats, non-finite become "nan", "inf", "-inf"."""
    arr = np.asarray(value)
    if arr.dtype == object:
        return arr.tolist()
    if arr.dtype == bool:
        return arr.tolist()
    listed = arr.astype(np.float64).tolist()
    return _finite_or_text(listed)


def _finite_or_text(x: Any) -> Any:
    if isinstance(x, list):
        return [_finite_or_text(v) for v in x]
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return x
