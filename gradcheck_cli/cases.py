"""One batch case: what was read, how it is run (with a timeout that cannot corrupt the process), and
the compact result a batch keeps."""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import signal
import threading
import time
from typing import Any

import numpy as np

from .api import CheckOptions, run_check
from .compare import CheckResult
from .errors import ExitStatus, InputError

DEFAULT_TIMEOUT = 60.0
MIN_TIMEOUT = 1e-3            # setitimer's resolution is far finer, but a smaller limit means nothing
KEEP_ELEMENTS = 100_000       # gradient elements above which a batch keeps a case's summary, not its arrays


class Status:
    PASS, FAIL, ERROR, XFAIL, XPASS = "pass", "fail", "error", "xfail", "xpass"


@dataclasses.dataclass(frozen=True)
class Case:
    """One case as read from a file; `problem` is set when it cannot run."""

    file: str
    line: int
    name: str
    expr: str = ""
    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    options: CheckOptions | None = None
    expect: dict[str, Any] = dataclasses.field(default_factory=dict)
    xfail: str | None = None
    problem: str | None = None
    kind: dict[str, Any] = dataclasses.field(default_factory=dict)  # optim/steps/recompute/accumulate

    @property
    def runs_plugin_code(self) -> bool:
        return self.problem is None and self.options is not None and bool(self.options.plugins)


@dataclasses.dataclass(frozen=True)
class GradientSummary:
    name: str
    shape: tuple[int, ...]
    ok: bool
    failures: int
    max_abs_error: float
    max_rel_error: float


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a batch keeps of a check too large to keep whole: the verdict, the worst errors, the replay."""

    ok: bool
    expression: str
    dtype: str
    method: str
    mode: str
    atol: float
    rtol: float
    elements: int
    gradients: tuple[GradientSummary, ...]
    replay: str

    @property
    def worst_abs_error(self) -> float | None:
        return max((g.max_abs_error for g in self.gradients), default=None)


def summarize(result: CheckResult) -> Summary:
    gradients = tuple(GradientSummary(r.name, tuple(r.shape), r.ok, r.failures, r.max_abs_error, r.max_rel_error)
                      for r in result.results())
    return Summary(result.ok, result.expression, result.dtype, result.method, result.mode, result.atol, result.rtol,
                   sum(int(np.size(r.analytic)) for r in result.results()), gradients, result.replay)


@dataclasses.dataclass(frozen=True)
class CaseResult:
    file: str
    line: int
    name: str
    status: str
    message: str
    seconds: float
    result: CheckResult | None = None   # the whole check, when it holds at most KEEP_ELEMENTS elements
    summary: Summary | None = None      # always, for a case that was checked


@dataclasses.dataclass(frozen=True)
class BatchResult:
    cases: tuple[CaseResult, ...]
    problems: tuple[str, ...] = ()      # PATH-level errors (missing, no case), also shown on stderr

    def count(self, *statuses: str) -> int:
        return sum(c.status in statuses for c in self.cases)

    @property
    def ok(self) -> bool:
        return bool(self.cases) and not self.problems and self.count(Status.FAIL, Status.ERROR, Status.XPASS) == 0

    @property
    def exit_status(self) -> ExitStatus:
        if self.count(Status.ERROR) or self.problems or not self.cases:
            return ExitStatus.BAD_INPUT
        return ExitStatus.OK if self.ok else ExitStatus.MISMATCH


# ---- timeouts ----

class _Timeout(BaseException):
    """A case's time is up. A BaseException, as KeyboardInterrupt is: code that catches Exception to
    recover (the meta-device size walk, a plugin's own try/except) must not swallow it and run on."""


def _importing(frame: Any) -> bool:
    """True while the interrupted code is inside an import: cutting it would leave a half-made module."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _alarm(signum: int, frame: Any) -> None:
    if _importing(frame):
        signal.setitimer(signal.ITIMER_REAL, 0.05)  # let the import finish, then stop the case
        return
    raise _Timeout()


def check_timeout(timeout: float | None) -> float | None:
    """Seconds a case may run, or None for no limit (0 and inf). Raises InputError for nan or < 0."""
    if timeout is None or timeout == 0 or timeout == math.inf:
        return None
    if not isinstance(timeout, (int, float)) or math.isnan(timeout) or timeout < 0:
        raise InputError(f"--timeout must be a number of seconds >= 0 (0 or inf: no limit), not {timeout}")
    return max(float(timeout), MIN_TIMEOUT)


_WARM = False


def warm_up(threads: int | None = None) -> None:
    """Import torch and everything it imports lazily on a first backward (sympy, through
    torch.fx.experimental.symbolic_shapes), once per process, before any alarm is armed: a timeout
    that cut those imports in half would break every later case. Workers run one torch thread each."""
    global _WARM
    import torch
    if threads:
        torch.set_num_threads(threads)
    if _WARM:
        return
    import torch.fx.experimental.symbolic_shapes  # noqa: F401  (what _make_grads imports on first use)
    for expr, values, grad_output in (("sin(x).sum()", {"x": [0.5, 1.0]}, None), ("x * 2", {"x": [1.0, 2.0]}, [1, 1]),
                                      ("x * 2", {"x": [1.0, 2.0]}, None)):
        run_check(expr, values, CheckOptions(grad_output=grad_output, inspect_ops=False))
    _WARM = True


_FROZEN = 0  # frozen_heap()s entered and not yet left


@contextlib.contextmanager
def frozen_heap():
    """While a batch runs, what is in memory already (torch, numpy, sympy: most of the heap) is kept out of
    the garbage collector's full passes, each of which would walk all of it again (0.1-0.3 s a pass, several
    in a batch of small cases, whose cases and results pile up). Entered again after more was imported, it
    freezes that too; forked workers inherit it and leave those pages unwritten. The outermost exit undoes
    it: nothing stays exempt from collection."""
    global _FROZEN
    gc.freeze()
    _FROZEN += 1
    try:
        yield
    finally:
        _FROZEN -= 1
        if not _FROZEN:
            gc.unfreeze()


# ---- running ----

def run_case(case: Case, timeout: float | None = DEFAULT_TIMEOUT, keep: int = KEEP_ELEMENTS) -> CaseResult:
    """Run one case to a result; never raises for anything the case itself did (SystemExit included)."""
    if case.problem is None and timeout is not None and threading.current_thread() is threading.main_thread():
        warm_up()  # before the clock starts and before any alarm: lazy imports are never cut, never charged
    start = time.perf_counter()

    def done(status: str, message: str, result: CheckResult | None = None) -> CaseResult:
        summary = summarize(result) if isinstance(result, CheckResult) else None  # step/accumulate: kept whole
        kept = result if summary is None or summary.elements <= keep else None
        if result is not None and kept is None:
            message = "; ".join(m for m in (message, f"arrays not kept ({summary.elements:,} gradient elements, more "
                                            f"than a batch keeps per case); replay: {summary.replay}") if m)
        return CaseResult(case.file, case.line, case.name, status, message, time.perf_counter() - start, kept, summary)

    if case.problem is not None:
        return done(Status.ERROR, case.problem)
    try:
        timeout = check_timeout(timeout)
    except InputError as err:
        return done(Status.ERROR, err.message)
    use_alarm = timeout is not None and hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
    if use_alarm:
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        from .kinds import run_kind
        result, (status, message) = run_kind(case, _verdict)
    except InputError as err:
        return done(Status.ERROR, err.format())
    except _Timeout:
        return done(Status.ERROR, f"timed out after {timeout:g} s (raise it with --timeout)")
    except SystemExit as err:  # plugin code that calls sys.exit() ends its case, not the batch
        return done(Status.ERROR, f"plugin code called sys.exit({err.code!r})")
    except RecursionError:
        return done(Status.ERROR, "nested too deeply (RecursionError)")
    except Exception as err:  # a plugin's own code, or a bug: report it as this case's error, keep going
        return done(Status.ERROR, f"unexpected {type(err).__name__}: {err}")
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    if case.xfail is not None:
        if status == Status.FAIL:
            return done(Status.XFAIL, f"expected failure: {case.xfail}", result)
        return done(Status.XPASS, f"passed, but marked xfail ({case.xfail}): remove the mark", result)
    return done(status, message, result)


def _verdict(case: Case, result: CheckResult) -> tuple[str, str]:
    problems = []
    for r in result.results():
        if not r.ok:
            worst = int(np.argmax(np.where(r.passed, -np.inf, r.abs_error).reshape(-1)))
            index = [int(i) for i in np.unravel_index(worst, r.analytic.shape)] if r.analytic.shape else []
            count = f"{r.failures} of {r.passed.size} elements"
            detail = r.diagnosis if count in r.diagnosis else "; ".join(
                p for p in (f"{count} disagree", r.diagnosis) if p)  # the count once, not twice
            problems.append(f"{r.name}{index}: analytic {r.analytic.reshape(-1)[worst]:.10g} vs numeric "
                            f"{r.numeric.reshape(-1)[worst]:.10g} ({detail})")
    for name, expected in case.expect.items():
        if name not in result.inputs:
            raise InputError(f"expect names '{name}', which is not a differentiated input")
        got = result.inputs[name].analytic
        try:
            want = np.asarray(expected, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"expect.{name} must be a number or a (nested, rectangular) list of numbers") from None
        if want.shape != got.shape and want.size != got.size:
            raise InputError(f"expect.{name} has shape {list(want.shape)} but the gradient has {list(got.shape)}")
        if not np.allclose(got, want.reshape(got.shape), atol=result.atol, rtol=result.rtol):
            problems.append(f"{name}: analytic gradient {np.round(got, 10).tolist()} != expected {want.tolist()}")
    if problems:
        return Status.FAIL, "; ".join(problems)
    return Status.PASS, ""
