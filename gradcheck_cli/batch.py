"""Find and load batch cases (TOML and txt), run every case, and collect the results.

A case that is invalid becomes a result with status "error"; a failing one "fail"; nothing stops the
run. Batch files come from strangers: they are read only when they are regular files of a sane size,
every value is type-checked here before it reaches the core, and plugin code they name is loaded only
when the user trusts it (`--trust-plugins`, or the same file given with `--plugin`).

The txt format is one case a line, written as the arguments of `gradcheck check`:

    "3*a**3 - b**2" -v a=2,3 -v b=6,4 --grad-output 1,1 --name cubic

(a leading `gradcheck check` is allowed; `#` starts a comment; blank lines are skipped).
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import Any, Callable, Iterable, Iterator

from .cases import (DEFAULT_TIMEOUT, KEEP_ELEMENTS, BatchResult, Case, CaseResult, Status, check_timeout,  # noqa: F401
                    frozen_heap, run_case, warm_up)
from .errors import InputError
from .kinds import MODULE_CASE_KEYS
from .files import DEFAULT_MAX_FILE_BYTES, read_regular
from .options import CHECK_FIELDS, KINDS, LIMITS, check_value, make_options, toml_value, variable_name
from .parse import DEFAULT_LIMITS
from .shellwords import split_line

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# the TOML keys: every check option of the schema (options.py), the case kinds' keys, and the case's own
_OPTION_KEYS = tuple(o.name for o in (*CHECK_FIELDS, *LIMITS) if o.name != "grad_output")
_KIND_KEYS = tuple(o.name for o in KINDS) + MODULE_CASE_KEYS  # step, --accumulate, module (see kinds.py)
_CASE_KEYS = frozenset(("name", "expr", "vars", "grad_output", "expect", "xfail", *_OPTION_KEYS, *_KIND_KEYS))
_DEFAULT_KEYS = frozenset(_OPTION_KEYS)


@dataclasses.dataclass(frozen=True)
class Trust:
    """Whose plugin code may run: the command line's `--plugin` refs, and `--trust-plugins` for the rest."""

    plugins: tuple[str, ...] = ()      # given on the command line, relative to the working directory
    everything: bool = False           # --trust-plugins

    def resolve(self, refs: Iterable[str], folder: str) -> tuple[str, ...]:
        """A batch file's plugin refs, paths made relative to its folder; InputError for untrusted code."""
        chosen = {_plugin_key(p, "") for p in self.plugins}
        out = []
        for ref in refs:
            path = os.path.join(folder, ref) if _is_file_ref(ref) and not os.path.isabs(ref) else ref
            if not self.everything and _plugin_key(path, "") not in chosen:
                raise InputError(f"this batch file asks to run plugin code from {path}; "
                                 "pass --trust-plugins if you trust it")
            out.append(path)
        return tuple(out)

    def limits(self, given: dict[str, Any]) -> None:
        """A batch file may lower a limit; raising one above its default trusts the file (hostile input)."""
        for option in LIMITS:
            value = given.get(option.name)
            default = getattr(DEFAULT_LIMITS, option.name)
            if value is not None and not self.everything and value > default:
                raise InputError(f"this batch file raises {option.flag} to {value} (default {default}); pass "
                                 "--trust-plugins if you trust it")


def _is_file_ref(ref: str) -> bool:
    return ref.endswith(".py") or "/" in ref or os.sep in ref


def _plugin_key(ref: str, folder: str) -> str:
    return os.path.realpath(os.path.join(folder, ref)) if _is_file_ref(ref) else ref


# ---- finding files ----

BATCH_SUFFIXES = (".toml", ".txt")


def find_files(paths: Iterable[str]) -> Iterator[tuple[str, str, str | None]]:
    """(PATH, file, problem) for every batch file: folders searched recursively, sorted by path.

    A symbolic link found inside a folder is followed only to a file inside that same folder: a link
    to /etc/passwd or to a secret elsewhere is reported, never read.
    """
    for path in paths:
        if os.path.isdir(path):
            top = os.path.realpath(path)
            found = []
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [os.path.join(root, f) for f in files if f.endswith(BATCH_SUFFIXES)]
            for file in sorted(found):
                real = os.path.realpath(file)
                outside = os.path.islink(file) and os.path.commonpath([top, real]) != top
                yield path, file, (f"is a symbolic link to {real}, outside {path}; not read" if outside else None)
        elif os.path.lexists(path) and not os.path.isdir(path):
            ok = path.endswith(BATCH_SUFFIXES)
            yield path, path, None if ok else "not a batch file: expected a .toml or .txt file"
        else:
            yield path, path, "no such file or folder"


def batch_files(paths: Iterable[str]) -> list[str]:
    """Every batch file under `paths` (what a report must never be written over)."""
    return [file for _, file, _ in find_files(paths)]


def load_cases(path: str, plugins: Iterable[str] = (), trust_plugins: bool = False,
               max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> list[Case]:
    """Every case of one file; a file that cannot be read is one error case.

    Args:
        path: a .toml or .txt batch file.
        plugins: plugin refs given on the command line: added to every case, and trusted.
        trust_plugins: also load plugin code the file itself names (`--trust-plugins`).
        max_bytes: larger files are refused unread.
    """
    trust = Trust(tuple(plugins), trust_plugins)
    try:
        text = read_regular(path, max_bytes).decode("utf-8-sig")
    except InputError as err:
        return [Case(path, 0, os.path.basename(path), problem=err.message)]
    except UnicodeDecodeError as err:
        return [Case(path, 0, os.path.basename(path), problem=f"not UTF-8 text: {err.reason} at byte {err.start}")]
    loader = _load_toml if path.endswith(".toml") else _load_txt
    return loader(path, text, trust)


# ---- TOML ----

def _load_toml(path: str, text: str, trust: Trust) -> list[Case]:
    name = os.path.basename(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        return [Case(path, getattr(err, "lineno", 0) or 0, name, problem=f"invalid TOML: {err}")]
    except RecursionError:
        return [Case(path, 0, name, problem="invalid TOML: nested too deeply for a batch file")]
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
        out.append(_toml_case(path, folder, line, i, {**defaults, **table}, table, trust))
    return out


def _case_lines(text: str) -> list[int]:
    """1-based line of each [[case]] header (tomllib keeps no positions)."""
    return [n for n, row in enumerate(text.splitlines(), 1) if row.strip().replace(" ", "").startswith("[[case]]")]


def _toml_case(path: str, folder: str, line: int, index: int, merged: dict, own: dict, trust: Trust) -> Case:
    name = own.get("name", f"case {index + 1}")
    name = name if isinstance(name, str) and name else f"case {index + 1}"
    try:
        unknown = sorted(set(own) - _CASE_KEYS)
        if unknown:
            raise InputError(f"unknown key '{unknown[0]}'; allowed: {', '.join(sorted(_CASE_KEYS))}")
        expr = merged.get("expr")
        if "module" in own:  # gradcheck module: no expr (its loss is `loss`)
            expr = "out"
        if not isinstance(expr, str) or not expr.strip():
            raise InputError("the case has no expr (a string such as expr = \"sin(x).sum()\")")
        values = _table(merged.get("vars", {}), "vars")
        expect = _table(merged.get("expect", {}), "expect")
        for key, value in (*values.items(), *expect.items()):
            _check_value(key, value)
        values = {variable_name(key): value for key, value in values.items()}
        xfail = merged.get("xfail")
        if xfail is not None and not isinstance(xfail, str):
            raise InputError("xfail must be a string saying why the case is expected to fail")
        given = {o.name: toml_value(o, merged[o.name]) for o in (*CHECK_FIELDS, *LIMITS) if o.name in merged}
        trust.limits(given)
        refs = trust.resolve(given.pop("plugins", []), folder)
        options = make_options(given, plugins=trust.plugins + refs)
        from .kinds import case_kind
        kind = case_kind(own, expect)
        if "module" in own:
            from .kinds import module_kind
            kind = module_kind(own, folder, trust)
        return Case(path, line, name, expr, values, options, expect, xfail, kind=kind)
    except InputError as err:
        return Case(path, line, name, problem=err.message)


def _table(value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{key} must be a table, e.g. {key} = {{ a = [2.0, 3.0] }}")
    return value


_check_value = check_value


# ---- txt ----

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _load_txt(path: str, text: str, trust: Trust) -> list[Case]:
    out = []
    folder = os.path.dirname(path)
    for number, row in enumerate(_LINE_BREAK.split(text), 1):  # not splitlines: a form feed is no line break
        if not row.strip() or row.lstrip().startswith("#"):
            continue
        out.append(_txt_case(path, folder, number, row, trust))
    if out and not any(_looks_like_a_case(case) for case in out):
        # not a gradcheck file at all (a symlink to /etc/passwd, a secrets file): one error, its lines unshown
        return [Case(path, 0, os.path.basename(path), problem=(
            f"not a gradcheck batch file: none of its {len(out):,} lines is a `gradcheck check` argument list "
            "with a valid expression (its lines are not shown)"))]
    return out


def _looks_like_a_case(case: Case) -> bool:
    """A line that read as a case whose expression parses (an unknown function may be a plugin's)."""
    if case.problem is not None:
        return case.problem.startswith("this batch file asks to run plugin code")
    from .ops import OPS
    from .parse import parse
    try:
        parse(case.expr, OPS)
    except InputError as err:
        return err.message.startswith(("unknown function", "unknown method"))
    return True


def _txt_case(path: str, folder: str, line: int, row: str, trust: Trust) -> Case:
    name = f"line {line}"
    try:
        tokens = split_line(row)
        if tokens[:2] == ["gradcheck", "check"]:
            tokens = tokens[2:]
        from .txtline import parse_line
        params = parse_line(tokens)
        name = params["name"] or name
        if len(params["dtype"]) > 1:
            raise InputError("a batch case runs one dtype; give --dtype a single value")
        given = {o.name: params[o.name] for o in (*CHECK_FIELDS, *LIMITS)}
        trust.limits(given)
        refs = trust.resolve(given.pop("plugins"), folder)
        options = make_options(given, plugins=trust.plugins + refs)
        kind = {o.name: params[o.name] for o in KINDS if params.get(o.name) is not None}
        return Case(path, line, name, params["expr"], _variables(params["variables"]), options, {}, params["xfail"],
                    kind=kind)
    except InputError as err:
        return Case(path, line, name, problem=err.message)


def _variables(pairs: Any) -> dict[str, Any]:
    from .options import variable_values
    return variable_values(pairs)


# ---- running ----

def collect(paths: Iterable[str], plugins: Iterable[str] = (), trust_plugins: bool = False,
            max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> tuple[list[Case], list[str]]:
    """Every case of every file, in sorted path order, cases in file order; and the PATH-level problems
    (a PATH that does not exist or holds no case), each also an error case."""
    cases: list[Case] = []
    problems: list[str] = []
    counts: dict[str, int] = {}
    for top, path, problem in find_files(paths):
        found = [Case(path, 0, os.path.basename(path), problem=problem)] if problem else \
            load_cases(path, plugins, trust_plugins, max_bytes)
        if problem == "no such file or folder":
            problems.append(f"{path}: no such file or folder")
        counts[top] = counts.get(top, 0) + len(found)
        cases += found
    for top in dict.fromkeys(paths):
        if top not in counts:
            message = f"holds no gradcheck case (no {' or '.join('*' + s for s in BATCH_SUFFIXES)} file with a [[case]] or a line)"
            problems.append(f"{top}: {message}")
            cases.append(Case(top, 0, os.path.basename(os.path.normpath(top)) or top, problem=message))
        elif counts[top] == 0:
            message = "holds no gradcheck case (its batch files are empty)"
            problems.append(f"{top}: {message}")
            cases.append(Case(top, 0, os.path.basename(os.path.normpath(top)) or top, problem=message))
    return cases, problems


def run_batch(paths: Iterable[str], plugins: Iterable[str] = (), jobs: int = 1,
              timeout: float | None = DEFAULT_TIMEOUT,
              progress: Callable[[CaseResult], None] | None = None, trust_plugins: bool = False,
              max_bytes: int = DEFAULT_MAX_FILE_BYTES, keep: int = KEEP_ELEMENTS) -> BatchResult:
    """Run every case found under `paths`.

    Args:
        paths: files and folders (folders are searched for *.toml and *.txt).
        plugins: plugin refs added to every case (trusted: the caller chose them).
        jobs: worker processes; the result (and its order) is the same for any value. Cases that run
            plugin code always run in a worker, so code that exits or crashes costs only its case.
        timeout: seconds per case, or None (or 0, or inf) for no limit.
        progress: called with each finished case, in completion order.
        trust_plugins: load plugin code that the batch files name (otherwise such a case is an error).
        max_bytes: batch files larger than this are refused unread.
        keep: gradient elements above which a case keeps its summary, not its arrays.

    Returns:
        BatchResult; cases in file order; PATH-level problems in `problems`.

    Raises:
        InputError: a timeout that is not a number of seconds.
    """
    paths = list(paths)
    timeout = check_timeout(timeout)
    with frozen_heap():  # entered again once torch is warm
        cases, problems = collect(paths, plugins, trust_plugins, max_bytes)
        results = _run(cases, jobs, timeout, progress, keep)
    return BatchResult(tuple(r for r in results if r is not None), tuple(problems))


def _run(cases: list[Case], jobs: int, timeout: float | None, progress: Callable[[CaseResult], None] | None,
         keep: int) -> list[CaseResult | None]:
    """Every case's result, in file order."""
    results: list[CaseResult | None] = [None] * len(cases)

    def record(index: int, result: CaseResult) -> None:
        results[index] = result
        if progress:
            progress(result)

    if jobs > 1:  # this process runs cases beside jobs - 1 warm workers (plugin code only in those)
        from .pool import run_pool
        run_pool(list(enumerate(cases)), jobs, timeout, record, keep, local=True)
        return results
    isolated = [(i, c) for i, c in enumerate(cases) if c.runs_plugin_code]
    if isolated:
        from .pool import run_pool
        run_pool(isolated, 1, timeout, record, keep)
    chosen = {i for i, _ in isolated}
    if len(chosen) < len(cases):
        warm_up()  # torch's first-use imports, charged to no case's time
    with frozen_heap():
        for index, case in enumerate(cases):
            if index not in chosen:
                record(index, run_case(case, timeout, keep))
    return results
