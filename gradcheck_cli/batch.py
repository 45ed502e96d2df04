"""Find and load batch cases (TOML and txt), run every case, and collect the results.

A case that is invalid becomes a result with status "error"; a failing one "fail"; nothing stops the
run. Batch files come from strangers: every value is type-checked here before it reaches the core.

The txt format is one case a line, written as the arguments of `gradcheck check`:

    "3*a**3 - b**2" -v a=2,3 -v b=6,4 --grad-output 1,1 --name cubic

(a leading `gradcheck check` is allowed; `#` starts a comment; blank lines are skipped).
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import sys
import time
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .api import DEFAULT_DIRECTIONS, CheckOptions, run_check, split_names
from .compare import CheckResult
from .errors import ExitStatus, InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_TIMEOUT = 60.0
_OPTION_KEYS = ("dtype", "method", "atol", "rtol", "seed", "eps", "plugins", "device", "wrt", "allow_unreliable",
                "fast", "directions", "symbolic")
_KIND_KEYS = ("optim", "steps", "recompute", "accumulate")  # gradcheck step / check --accumulate (see kinds.py)
_CASE_KEYS = frozenset(("name", "expr", "vars", "grad_output", "expect", "xfail", *_OPTION_KEYS, *_KIND_KEYS))
_DEFAULT_KEYS = frozenset(_OPTION_KEYS)


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


@dataclasses.dataclass(frozen=True)
class CaseResult:
    file: str
    line: int
    name: str
    status: str
    message: str
    seconds: float
    result: CheckResult | None = None


@dataclasses.dataclass(frozen=True)
class BatchResult:
    cases: tuple[CaseResult, ...]

    def count(self, *statuses: str) -> int:
        return sum(c.status in statuses for c in self.cases)

    @property
    def ok(self) -> bool:
        return self.count(Status.FAIL, Status.ERROR, Status.XPASS) == 0

    @property
    def exit_status(self) -> ExitStatus:
        if self.count(Status.ERROR):
            return ExitStatus.BAD_INPUT
        return ExitStatus.OK if self.ok else ExitStatus.MISMATCH


# ---- finding files ----

def find_files(paths: Iterable[str]) -> Iterator[tuple[str, str | None]]:
    """(path, problem) for every batch file: folders searched recursively, sorted by path."""
    for path in paths:
        if os.path.isdir(path):
            found = []
            for root, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [os.path.join(root, f) for f in files if f.endswith((".toml", ".txt"))]
            yield from ((f, None) for f in sorted(found))
        elif os.path.isfile(path):
            ok = path.endswith((".toml", ".txt"))
            yield path, None if ok else "not a batch file: expected a .toml or .txt file"
        else:
            yield path, "no such file or folder"


def load_cases(path: str, plugins: tuple[str, ...] = ()) -> list[Case]:
    """Every case of one file; a file that cannot be read is one error case."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        text = raw.decode("utf-8-sig")
    except OSError as err:
        return [Case(path, 0, os.path.basename(path), problem=f"cannot read: {err.strerror or err}")]
    except UnicodeDecodeError as err:
        return [Case(path, 0, os.path.basename(path), problem=f"not UTF-8 text: {err.reason} at byte {err.start}")]
    loader = _load_toml if path.endswith(".toml") else _load_txt
    return loader(path, text, plugins)


# ---- TOML ----

def _load_toml(path: str, text: str, plugins: tuple[str, ...]) -> list[Case]:
    name = os.path.basename(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        return [Case(path, getattr(err, "lineno", 0) or 0, name, problem=f"invalid TOML: {err}")]
    unknown = sorted(set(doc) - {"defaults", "case"})
    if unknown:
        return [Case(path, 0, name, problem=f"unknown top-level key '{unknown[0]}'; expected [defaults] and [[case]]")]
    defaults = doc.get("defaults", {})
    cases = doc.get("case", [])
    if not isinstance(defaults, dict):
        return [Case(path, 0, name, problem="[defaults] must be a table")]
    if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
        return [Case(path, 0, name, problem="cases must be [[case]] tables")]
    bad = sorted(set(defaults) - _DEFAULT_KEYS)
    if bad:
        return [Case(path, 0, name, problem=f"unknown key '{bad[0]}' in [defaults]; allowed: {', '.join(sorted(_DEFAULT_KEYS))}")]
    lines = _case_lines(text)
    folder = os.path.dirname(path)
    out = []
    for i, table in enumerate(cases):
        line = lines[i] if i < len(lines) else 0
        out.append(_toml_case(path, folder, line, i, {**defaults, **table}, table, plugins))
    return out


def _case_lines(text: str) -> list[int]:
    """1-based line of each [[case]] header (tomllib keeps no positions)."""
    return [n for n, row in enumerate(text.splitlines(), 1) if row.strip().replace(" ", "").startswith("[[case]]")]


def _toml_case(path: str, folder: str, line: int, index: int, merged: dict, own: dict,
               plugins: tuple[str, ...]) -> Case:
    name = own.get("name", f"case {index + 1}")
    name = name if isinstance(name, str) and name else f"case {index + 1}"
    try:
        unknown = sorted(set(own) - _CASE_KEYS)
        if unknown:
            raise InputError(f"unknown key '{unknown[0]}'; allowed: {', '.join(sorted(_CASE_KEYS))}")
        expr = merged.get("expr")
        if not isinstance(expr, str) or not expr.strip():
            raise InputError("the case has no expr (a string such as expr = \"sin(x).sum()\")")
        values = _table(merged.get("vars", {}), "vars")
        expect = _table(merged.get("expect", {}), "expect")
        for key, value in (*values.items(), *expect.items()):
            _check_value(key, value)
        if "grad_output" in merged:
            _check_value("grad_output", merged["grad_output"])
        xfail = merged.get("xfail")
        if xfail is not None and not isinstance(xfail, str):
            raise InputError("xfail must be a string saying why the case is expected to fail")
        refs = _typed(merged, "plugins", list, [])
        if not all(isinstance(r, str) for r in refs):
            raise InputError("plugins must be a list of file paths or module names")
        refs = [os.path.join(folder, r) if r.endswith(".py") and not os.path.isabs(r) else r for r in refs]
        options = CheckOptions(
            grad_output=merged.get("grad_output"), wrt=split_names(_typed(merged, "wrt", (str, list), None)),
            seed=_typed(merged, "seed", int, 0), dtype=_typed(merged, "dtype", str, "float64"),
            method=_typed(merged, "method", str, "auto"), eps=_number(merged, "eps"),
            atol=_number(merged, "atol"), rtol=_number(merged, "rtol"),
            plugins=tuple(plugins) + tuple(refs), device=_typed(merged, "device", str, "cpu"),
            allow_unreliable=_typed(merged, "allow_unreliable", bool, False),
            fast=_typed(merged, "fast", bool, None), directions=_typed(merged, "directions", int, DEFAULT_DIRECTIONS),
            symbolic=_typed(merged, "symbolic", bool, False))
        from .kinds import case_kind
        return Case(path, line, name, expr, values, options, expect, xfail, kind=case_kind(own, expect))
    except InputError as err:
        return Case(path, line, name, problem=err.message)


def _table(value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{key} must be a table, e.g. {key} = {{ a = [2.0, 3.0] }}")
    return value


def _check_value(key: str, value: Any) -> None:
    """A value is a number, a (nested) list of numbers, or a SPEC string."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or not isinstance(item, (int, float, str)):
            raise InputError(f"'{key}' must be a number, a list of numbers or a SPEC string, not {type(item).__name__}")


def _typed(table: dict, key: str, kind: Any, default: Any) -> Any:
    value = table.get(key, default)
    if value is not default and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InputError(f"'{key}' must be {names}, not {type(value).__name__}")
    return value


def _number(table: dict, key: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"'{key}' must be a number, not {type(value).__name__}")
    return float(value)


# ---- txt ----

_TXT_OPTIONS = {"-v": "var", "--var": "var", "--grad-output": "grad_output", "--wrt": "wrt", "--seed": "seed",
                "--dtype": "dtype", "--method": "method", "--eps": "eps", "--atol": "atol", "--rtol": "rtol",
                "--plugin": "plugin", "--device": "device", "--name": "name", "--xfail": "xfail",
                "--directions": "directions", "--accumulate": "accumulate"}
_TXT_FLAGS = {"--fast": ("fast", True), "--full": ("fast", False), "--allow-unreliable": ("allow_unreliable", True),
              "--symbolic": ("symbolic", True)}


def _load_txt(path: str, text: str, plugins: tuple[str, ...]) -> list[Case]:
    out = []
    for number, row in enumerate(text.splitlines(), 1):
        if not row.strip() or row.lstrip().startswith("#"):
            continue
        out.append(_txt_case(path, number, row, plugins))
    return out


def _txt_case(path: str, line: int, row: str, plugins: tuple[str, ...]) -> Case:
    name = f"line {line}"
    try:
        try:
            tokens = shlex.split(row, comments=True)
        except ValueError as err:
            raise InputError(f"cannot split the line into arguments: {err}") from None
        if tokens[:2] == ["gradcheck", "check"]:
            tokens = tokens[2:]
        fields: dict[str, Any] = {"var": [], "plugin": []}
        expr = None
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token in _TXT_FLAGS:
                flag, setting = _TXT_FLAGS[token]
                fields[flag] = setting
                position += 1
                continue
            key = _TXT_OPTIONS.get(token.split("=", 1)[0] if token.startswith("--") else token)
            if key is None:
                if expr is not None:
                    raise InputError(f"unexpected argument {token!r}; quote the expression if it has spaces")
                expr = token
                position += 1
                continue
            if "=" in token and token.startswith("--"):
                value = token.split("=", 1)[1]
                position += 1
            elif position + 1 < len(tokens):
                value = tokens[position + 1]
                position += 2
            else:
                raise InputError(f"{token} needs a value")
            if key in ("var", "plugin"):
                fields[key].append(value)
            else:
                fields[key] = value
        if not expr:
            raise InputError("the line has no expression")
        name = fields.get("name", name)
        values = {}
        for item in fields["var"]:
            var, sep, spec = item.partition("=")
            if not sep or not var.strip().isidentifier():
                raise InputError(f"expected -v NAME=SPEC, got {item!r}")
            values[var.strip()] = spec
        options = CheckOptions(
            grad_output=fields.get("grad_output"), wrt=split_names(fields.get("wrt")),
            seed=_parse(int, fields, "seed", 0), dtype=fields.get("dtype", "float64"),
            method=fields.get("method", "auto"), eps=_parse(float, fields, "eps", None),
            atol=_parse(float, fields, "atol", None), rtol=_parse(float, fields, "rtol", None),
            plugins=tuple(plugins) + tuple(fields["plugin"]), device=fields.get("device", "cpu"),
            allow_unreliable=fields.get("allow_unreliable", False), fast=fields.get("fast"),
            symbolic=fields.get("symbolic", False),
            directions=_parse(int, fields, "directions", DEFAULT_DIRECTIONS))
        kind = {"accumulate": _parse(int, fields, "accumulate", None)} if "accumulate" in fields else {}
        return Case(path, line, name, expr, values, options, {}, fields.get("xfail"), kind=kind)
    except InputError as err:
        return Case(path, line, name, problem=err.message)


def _parse(kind: type, fields: dict, key: str, default: Any) -> Any:
    if key not in fields:
        return default
    try:
        return kind(fields[key])
    except ValueError:
        raise InputError(f"--{key.replace('_', '-')} must be {kind.__name__}, not {fields[key]!r}") from None


# ---- running ----

class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def run_case(case: Case, timeout: float | None = DEFAULT_TIMEOUT) -> CaseResult:
    """Run one case to a result; never raises for anything the case itself did."""
    start = time.perf_counter()

    def done(status: str, message: str, result: CheckResult | None = None) -> CaseResult:
        return CaseResult(case.file, case.line, case.name, status, message, time.perf_counter() - start, result)

    if case.problem is not None:
        return done(Status.ERROR, case.problem)
    use_alarm = bool(timeout) and hasattr(signal, "SIGALRM") and _main_thread()
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


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _verdict(case: Case, result: CheckResult) -> tuple[str, str]:
    problems = []
    for r in result.results():
        if not r.ok:
            worst = int(np.argmax(np.where(r.passed, -np.inf, r.abs_error).reshape(-1)))
            index = list(np.unravel_index(worst, r.analytic.shape)) if r.analytic.shape else []
            problems.append(f"{r.name}{index}: analytic {r.analytic.reshape(-1)[worst]:.10g} vs numeric "
                            f"{r.numeric.reshape(-1)[worst]:.10g} ({r.failures} of {r.passed.size} elements disagree"
                            f"{'; ' + r.diagnosis if r.diagnosis else ''})")
    for name, expected in case.expect.items():
        if name not in result.inputs:
            raise InputError(f"expect names '{name}', which is not a differentiated input")
        got = result.inputs[name].analytic
        want = np.asarray(expected, dtype=np.float64)
        if want.shape != got.shape and want.size != got.size:
            raise InputError(f"expect.{name} has shape {list(want.shape)} but the gradient has {list(got.shape)}")
        if not np.allclose(got, want.reshape(got.shape), atol=result.atol, rtol=result.rtol):
            problems.append(f"{name}: analytic gradient {np.round(got, 10).tolist()} != expected {want.tolist()}")
    if problems:
        return Status.FAIL, "; ".join(problems)
    return Status.PASS, ""


def _warm_up(threads: int | None = None) -> None:
    """Import torch once per process, so no case's time (or timeout) pays for it.

    Workers run one torch thread each: N workers × all cores' threads would oversubscribe the CPU.
    """
    import torch
    if threads:
        torch.set_num_threads(threads)


def _run_indexed(item: tuple[int, Case, float | None]) -> tuple[int, CaseResult]:
    index, case, timeout = item
    return index, run_case(case, timeout)


def collect(paths: Iterable[str], plugins: tuple[str, ...] = ()) -> list[Case]:
    """Every case of every file, in sorted path order, cases in file order."""
    cases = []
    for path, problem in find_files(paths):
        cases += [Case(path, 0, os.path.basename(path), problem=problem)] if problem else load_cases(path, plugins)
    return cases


def run_batch(paths: Iterable[str], plugins: Iterable[str] = (), jobs: int = 1,
              timeout: float | None = DEFAULT_TIMEOUT,
              progress: Callable[[CaseResult], None] | None = None) -> BatchResult:
    """Run every case found under `paths`.

    Args:
        paths: files and folders (folders are searched for *.toml and *.txt).
        plugins: plugin refs added to every case.
        jobs: worker processes; the result (and its order) is the same for any value.
        timeout: seconds per case, or None for no limit.
        progress: called with each finished case, in completion order.

    Returns:
        BatchResult; cases in file order.
    """
    cases = collect(paths, tuple(plugins))
    _warm_up()
    results: list[CaseResult | None] = [None] * len(cases)
    work = [(i, case, timeout) for i, case in enumerate(cases)]
    if jobs > 1 and len(cases) > 1:
        import multiprocessing
        context = multiprocessing.get_context("spawn")  # torch and fork do not mix
        workers = min(jobs, len(cases))
        # small cases cost less than a round trip to a worker: send them in chunks
        chunk = max(1, min(64, len(cases) // (workers * 8)))
        with context.Pool(workers, initializer=_warm_up, initargs=(1,)) as pool:
            for index, result in pool.imap_unordered(_run_indexed, work, chunksize=chunk):
                results[index] = result
                if progress:
                    progress(result)
    else:
        for item in work:
            index, result = _run_indexed(item)
            results[index] = result
            if progress:
                progress(result)
    return BatchResult(tuple(r for r in results if r is not None))
