"""--dtype float64,float32,bfloat16: one check per dtype, and per dtype whether a gap is rounding or a bug.

float64 is the reference. A lower precision that passes at its own (looser) defaults differs from
float64 by rounding only. One that fails while float64 passes has a precision problem of its own (an
op that loses more than that dtype's rounding explains). When float64 fails too, the gradient is wrong.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .api import CheckOptions, run_check
from .compare import CheckResult
from .errors import ExitStatus, InputError


@dataclasses.dataclass(frozen=True)
class LadderResult:
    results: tuple[CheckResult, ...]
    verdicts: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus.OK if self.ok else ExitStatus.MISMATCH


def _worst_rel(result: CheckResult) -> float:
    return max((r.max_rel_error for r in result.results()), default=0.0)


def verdict(result: CheckResult, reference: CheckResult | None) -> str:
    """One line: is this dtype's gap rounding, a precision problem, or a wrong gradient?"""
    worst = _worst_rel(result)
    if result.dtype == "float64" or reference is None:
        return "right" if result.ok else "wrong gradient: float64 disagrees with the numeric reference"
    if not reference.ok:
        hidden = f"; {result.dtype}'s looser tolerance hides it" if result.ok else ""
        return f"wrong gradient: float64 fails too, so this is not rounding{hidden}"
    if result.ok:
        return f"rounding only: worst relative error {worst:.1e}, within {result.dtype}'s tolerance"
    return (f"more than {result.dtype} rounding explains (worst relative error {worst:.1e}) while float64 is "
            "right: a precision problem in this dtype")


def run_ladder(expression: str, values: Mapping[str, Any], options: CheckOptions,
               dtypes: tuple[str, ...]) -> LadderResult:
    """Check `expression` once per dtype; float64 (added if absent) is the reference."""
    if not dtypes:
        raise InputError("--dtype is empty; name at least one dtype")
    order = ("float64",) + tuple(d for d in dtypes if d != "float64")
    results = tuple(run_check(expression, values, dataclasses.replace(options, dtype=d)) for d in order)
    reference = results[0]
    shown = [r for r in results if r.dtype in dtypes]
    return LadderResult(tuple(shown), tuple(verdict(r, reference) for r in shown))
