"""Batch cases that are not a plain check: `optim` (gradcheck step) and `accumulate` (check --accumulate).

TOML keys, in a [[case]]:
    optim = "SGD(lr=0.01, momentum=0.1)"   # gradcheck step EXPR --optim ...
    steps = 2                             # --steps (default 1)
    recompute = false                     # --no-recompute
    accumulate = 3                        # check --accumulate 3
    module = "model.py:Model"             # gradcheck module (the file relative to the batch file's folder;
    init = { in_feature = 1 }             #   it is code: loaded only when trusted, see batch.Trust)
    loss = "(out - label).mean()"         # --loss; params = "line_layer.*" (or a list); train = true;
    wrt_inputs = true                     # --wrt-inputs; `expect` then names dotted parameters
With optim, `expect = { w = [[0.49, 0.48], [0.479, 0.458]] }` gives torch's values after each step,
which must also hold (with the run's atol/rtol).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from .errors import InputError
from .options import MODULE_OPTIONS, toml_value


def case_kind(table: dict[str, Any], expect: dict[str, Any]) -> dict[str, Any]:
    """The kind keys of one [[case]] table, type-checked (batch files come from strangers)."""
    from .options import KINDS, toml_value
    kind: dict[str, Any] = {}
    for option in KINDS:  # type and range, from the schema (options.py)
        if option.name in table:
            kind[option.name] = option.convert(toml_value(option, table[option.name]))
            problem = option.problem(kind[option.name])
            if problem:
                raise InputError(problem)
    if "optim" not in kind and ({"steps", "recompute"} & set(kind)):
        raise InputError("'steps' and 'recompute' belong to an optimizer case; add optim = \"SGD(lr=0.01)\"")
    if "optim" in kind and "accumulate" in kind:
        raise InputError("a case is either an optimizer run (optim) or an accumulation (accumulate), not both")
    return kind


MODULE_CASE_KEYS = ("module", *(o.name for o in MODULE_OPTIONS))  # a [[case]]'s gradcheck module keys


def module_kind(table: dict[str, Any], folder: str, trust: Any) -> dict[str, Any]:
    """The keys of a `module` case, type-checked by their schema rows (options.MODULE_OPTIONS); the module
    file resolved against the batch file's folder and refused unless trusted (`trust.resolve`, as for
    plugins)."""
    from .module_load import parse_init, split_ref
    stray = [k for k in ("optim", "steps", "recompute", "accumulate", "expr") if k in table]
    if stray:
        raise InputError(f"a module case takes loss, not '{stray[0]}'")
    if not isinstance(table["module"], str):
        raise InputError(f"'module' must be str, not {type(table['module']).__name__}")
    kind: dict[str, Any] = {}
    for option in MODULE_OPTIONS:
        if option.name in table:
            kind[option.name] = option.convert(toml_value(option, table[option.name]))
            problem = option.problem(kind[option.name])
            if problem:
                raise InputError(problem)
    path, name = split_ref(table["module"])
    (resolved,) = trust.resolve([path], folder)
    kind["module"] = f"{resolved}:{name}"
    kind["init"] = parse_init(kind.get("init"))
    return kind


def _run_module(case: Any, verdict: Callable[[Any, Any], tuple[str, str]]) -> tuple[Any, tuple[str, str]]:
    """A `module` case: build the module under the case's seed, check it, and judge `expect` by parameter."""
    import dataclasses

    from .batch import Status
    from .module import ModuleRequest, run_module_check
    from .module_load import init_text, load
    kind = case.kind
    built, path = load(kind["module"], kind["init"], case.options.seed)
    # the module file given with --plugin (to trust it) is a module, not a plugin of ops
    plugins = tuple(p for p in case.options.plugins if os.path.realpath(p) != os.path.realpath(path))
    case = dataclasses.replace(case, options=dataclasses.replace(case.options, plugins=plugins))
    request = ModuleRequest(loss=kind.get("loss"), params=kind.get("params"), wrt_inputs=kind.get("wrt_inputs", False),
                            train=kind.get("train", False), label=kind["module"], init=init_text(kind["init"]))
    result = run_module_check(built, case.values, case.options, request)
    status, message = verdict(dataclasses.replace(case, expect={}), result)
    problems = [message] if message else []
    for name, expected in case.expect.items():
        if name not in result.parameters:
            raise InputError(f"expect names '{name}', which is not a checked parameter; they are: "
                             f"{', '.join(result.parameters) or 'none'}")
        got = result.parameters[name].analytic
        want = np.asarray(expected, dtype=np.float64)
        if want.size != got.size:
            raise InputError(f"expect.{name} has {want.size} values but the gradient has shape {list(got.shape)}")
        if not np.allclose(got, want.reshape(got.shape), atol=result.atol, rtol=result.rtol):
            problems.append(f"{name}: analytic gradient {np.round(got, 10).tolist()} != expected {want.tolist()}")
    return result, ((Status.FAIL, "; ".join(problems)) if problems else (Status.PASS, ""))


def run_kind(case: Any, verdict: Callable[[Any, Any], tuple[str, str]]) -> tuple[Any, tuple[str, str]]:
    """Run a case by its kind: (result, (status, message)). `verdict` judges a plain check's result."""
    from .batch import Status
    kind = case.kind
    if "module" in kind:
        return _run_module(case, verdict)
    if "optim" in kind:
        from .stepping import StepOptions, run_step
        result = run_step(case.expr, case.values, StepOptions(kind["optim"], kind.get("steps", 1),
                                                              kind.get("recompute", True), case.options))
        problems = [result.first_failure()] if not result.ok else []
        problems += _expected_trajectory(result, case.expect)
        return result, ((Status.FAIL, "; ".join(problems)) if problems else (Status.PASS, ""))
    if "accumulate" in kind:
        from .accumulate import run_accumulate
        result = run_accumulate(case.expr, case.values, case.options, kind["accumulate"])
        status, message = verdict(case, result.check)
        problems = ([message] if message else []) + result.problems()
        return result, ((Status.FAIL, "; ".join(problems)) if problems else (Status.PASS, ""))
    from .api import run_check
    result = run_check(case.expr, case.values, case.options)
    return result, verdict(case, result)


def _expected_trajectory(result: Any, expect: dict[str, Any]) -> list[str]:
    """`expect` of an optimizer case: torch's value of each parameter after each step."""
    problems = []
    for name, expected in expect.items():
        if name not in result.steps[0].params:
            raise InputError(f"expect names '{name}', which is not a stepped parameter")
        got = np.stack([record.params[name].torch for record in result.steps])
        want = np.asarray(expected, dtype=np.float64)
        if want.size != got.size:
            raise InputError(f"expect.{name} has {want.size} values; {len(result.steps)} steps of shape "
                             f"{list(got.shape[1:])} have {got.size}")
        want = want.reshape(got.shape)
        if not np.allclose(got, want, atol=result.atol, rtol=result.rtol):
            step = int(np.argmax(~np.isclose(got, want, atol=result.atol, rtol=result.rtol).reshape(len(got), -1).all(1)))
            problems.append(f"{name} after step {step + 1}: torch {np.round(got[step], 10).tolist()} != expected "
                            f"{want[step].tolist()}")
    return problems
