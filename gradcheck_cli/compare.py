"""Result types, one per kind of check (element-wise, projected, Taylor, second order), over the
shared verdict core (verdict.py); tolerances; JSON-safe numbers."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import numpy as np

from .diagnose import diagnose
from .graph import GraphNode
from .verdict import SAFETY, Decision, Evidence, OneSided, Policy, Verdict, decide, decide_taylor

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


def default_tolerances(dtype: str, method: str) -> tuple[float, float]:
    """(atol, rtol) when none are given: by the dtype, and for float64 by how exact the method is (a method
    declares its own float64 tolerances where it needs them: methods.py)."""
    from .methods import ALL_METHODS
    described = ALL_METHODS.get(method)
    if dtype == "float64" and described is not None and described.float64_tolerances is not None:
        return described.float64_tolerances
    return DEFAULT_TOLERANCES[dtype]


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
    """The element-wise check of one input's (or intermediate's) gradient, over the shared verdict core.

    Arrays have the input's shape (or output.shape + input.shape in Jacobian mode). `decision` holds
    each element's verdict (verdict.Verdict) and the numbers it was read from; `policy` is how it is
    read (`ok`). `numeric_error` is the numeric side's error estimate (the bound is SAFETY times it).
    """

    name: str
    shape: tuple[int, ...]
    value: np.ndarray
    analytic: np.ndarray
    numeric: np.ndarray
    numeric_error: np.ndarray
    decision: Decision
    diagnosis: str = ""
    policy: Policy = Policy()
    symbolic: np.ndarray | None = None    # --symbolic: the exact derivative, same shape as analytic
    kind: ClassVar[str] = "elements"

    @property
    def projection(self) -> "Projection | None":
        return None

    @property
    def structure(self) -> Any:
        """A structured Jacobian's coverage (structured.Structure), or None."""
        return None

    @property
    def verdict(self) -> np.ndarray:
        return self.decision.verdict

    @property
    def passed(self) -> np.ndarray:
        return self.decision.verdict == Verdict.PASS

    @property
    def unreliable(self) -> np.ndarray:
        return self.decision.verdict == Verdict.UNRELIABLE

    @property
    def wrong(self) -> np.ndarray:
        """Elements that disagree with a numeric estimate sure enough to blame the analytic side."""
        return self.decision.verdict == Verdict.FAIL

    @property
    def abs_error(self) -> np.ndarray:
        return self.decision.abs_error

    @property
    def rel_error(self) -> np.ndarray:
        return self.decision.rel_error

    @property
    def tolerance(self) -> np.ndarray:
        return self.decision.tolerance

    @property
    def reasons(self) -> np.ndarray:
        return self.decision.reasons

    @property
    def atol_decides(self) -> np.ndarray:
        return self.decision.atol_decides

    @property
    def allow_unreliable(self) -> bool:
        return self.policy.allow_unreliable

    @property
    def decided_by(self) -> np.ndarray:
        """Which rule decided each element: "atol", "rtol", or "order" (the Taylor method)."""
        rule = np.where(self.atol_decides, "atol", "rtol")
        return np.where(np.isnan(self.tolerance), "order", rule)

    @property
    def ok(self) -> bool:
        return self.policy.ok(self.decision.verdict)

    @property
    def max_abs_error(self) -> float:
        return float(self.abs_error.max()) if self.abs_error.size else 0.0

    @property
    def max_rel_error(self) -> float:
        return float(self.rel_error.max()) if self.rel_error.size else 0.0

    @property
    def failures(self) -> int:
        return int((self.decision.verdict != Verdict.PASS).sum())


@dataclasses.dataclass(frozen=True)
class ProjectedResult(GradientResult):
    """A projected check (`--fast`): the arrays hold one projection a direction."""

    coverage: Projection | None = None
    kind: ClassVar[str] = "projections"

    @property
    def projection(self) -> Projection | None:
        return self.coverage


@dataclasses.dataclass(frozen=True)
class TaylorResult(GradientResult):
    """`--method taylor`: numeric holds extrapolated forward differences; the verdict is the remainder order."""

    orders: np.ndarray | None = None
    kind: ClassVar[str] = "taylor"


@dataclasses.dataclass(frozen=True)
class SecondOrderResult(GradientResult):
    """`--order 2`, one block: d/d`wrt` of the gradient of `of` (autograd's double backward against
    finite differences of autograd's own gradient function, as torch.autograd.gradgradcheck does)."""

    of: str = ""
    wrt: str = ""
    kind: ClassVar[str] = "second order"


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


def element_result(name: str, value: np.ndarray, evidence: Evidence, atol: float, rtol: float,
                   policy: Policy = Policy(), error: np.ndarray | None = None,
                   probe: Callable[[np.ndarray], OneSided | None] | None = None) -> GradientResult:
    """Decide every element of an element-wise check and describe the disagreement's shape; `probe`:
    verdict.decide's one-sided evidence, gathered where the numeric estimate alone does not settle."""
    decision = decide(evidence, atol, rtol, probe)
    numeric_error = evidence.bound / SAFETY if error is None else error
    return GradientResult(name, tuple(np.shape(value)), value, evidence.analytic, evidence.numeric, numeric_error,
                          decision, _diagnosis(evidence, value, decision, atol), policy, evidence.exact)


def _diagnosis(evidence: Evidence, value: np.ndarray, decision: Decision, atol: float) -> str:
    """The shape of the proven disagreements (FAIL elements only: an unreliable one proves nothing)."""
    failing = decision.verdict == Verdict.FAIL
    if not failing.any():
        return ""
    return diagnose(evidence.analytic, evidence.numeric, value, ~failing, atol, evidence.bound)


def projected_result(name: str, value: np.ndarray, evidence: Evidence, atol: float, rtol: float,
                     elements: int, jacobian: bool, policy: Policy = Policy()) -> ProjectedResult:
    """Judge projections (one a direction) by the same rule as elements; say what that covers."""
    decision = decide(evidence, atol, rtol)
    k = int(np.size(evidence.analytic))
    coverage = Projection(k, elements, float(np.max(decision.tolerance, initial=0.0)),
                          (0.75 if jacobian else 0.5) ** k)
    return ProjectedResult(name, tuple(np.shape(value)), value, evidence.analytic, evidence.numeric,
                           evidence.bound / SAFETY, decision, "", policy, None, coverage)


def taylor_result(name: str, value: np.ndarray, evidence: Evidence, orders: np.ndarray,
                  policy: Policy = Policy()) -> TaylorResult:
    """Judge each element by its Taylor remainder order (verdict.decide_taylor)."""
    decision = decide_taylor(evidence, orders)
    failing = decision.verdict == Verdict.FAIL
    diagnosis = diagnose(evidence.analytic, evidence.numeric, value, ~failing, 0.0, evidence.bound) \
        if failing.any() else ""
    return TaylorResult(name, tuple(np.shape(value)), value, evidence.analytic, evidence.numeric,
                        evidence.bound / SAFETY, decision, diagnosis, policy, None, orders)


def second_order_result(of: str, wrt: str, value: np.ndarray, evidence: Evidence, atol: float, rtol: float,
                        policy: Policy = Policy()) -> SecondOrderResult:
    """One block of a second-order check, decided by the element rule at the second-order tolerances."""
    decision = decide(evidence, atol, rtol)
    failing = decision.verdict == Verdict.FAIL
    diagnosis = diagnose(evidence.analytic, evidence.numeric, np.zeros(()), ~failing, atol, evidence.bound) \
        if failing.any() else ""
    name = of if of == wrt else f"{of},{wrt}"
    return SecondOrderResult(name, tuple(np.shape(value)), value, evidence.analytic, evidence.numeric,
                             evidence.bound / SAFETY, decision, diagnosis, policy, None, of, wrt)


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


def failed_with(result: GradientResult, message: str) -> GradientResult:
    """A result whose analytic side never came (a plugin's backward raised): every element fails, saying why."""
    shape = np.shape(result.decision.verdict)
    decision = dataclasses.replace(result.decision, verdict=np.full(shape, Verdict.FAIL, dtype=np.int8),
                                   reasons=np.full(shape, message, dtype=object))
    return dataclasses.replace(result, decision=decision, diagnosis=message)
