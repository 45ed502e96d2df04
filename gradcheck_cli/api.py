"""The library's front door: options in, CheckResult out. Never prints, never exits."""
from __future__ import annotations

import dataclasses
import inspect
import shlex
from typing import Any, Iterable, Mapping

import numpy as np

from .analytic import check_device
from .compare import CheckResult
from .errors import InputError
from .evidence import refuse_complex
from .memory import check_case, check_inputs
from .ops import CONSTANTS, OPS, OpSpec
from .options import (DEFAULT_DIRECTIONS, DTYPES, MAX_DIRECTIONS, MAX_REPLAY_ELEMENTS, METHOD_CHOICES,  # noqa: F401
                      SEED_RANGE, CheckOptions, api_options, replay_args, spec_text, split_names, split_options,
                      variable_name)
from .parse import DEFAULT_LIMITS, Program, parse
from .plan import plan_check
from .strategies import carry_out, random_directions  # noqa: F401 - random_directions: part of this module's API
from .values import default_value, is_integer, resolve, spec_elements

FULL_CHECK_BUDGET = 2e11     # bytes through numpy (numeric.full_cost) above which auto goes projected, ~20 s
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}  # bytes of one torch-side element


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A parsed expression with its values resolved: what both `check` and `graph` start from."""

    program: Program
    table: Mapping[str, OpSpec]
    inputs: dict[str, np.ndarray]       # every free variable, rounded to the dtype, as float64
    wrt: tuple[str, ...]
    specs: dict[str, Any]               # what the user gave, for the replay line
    numeric_budget: int = 256 * 2**20   # bytes one batched numeric evaluation may use (memory.py)
    sizes: tuple[int, ...] | None = None  # elements of each statement's value (None: unknown, plugin code)


def prepare(expression: str, values: Mapping[str, Any], options: CheckOptions) -> Prepared:
    """Parse, resolve values, validate --wrt. Raises InputError."""
    options.validate()
    table = load_table(options.plugins)
    return prepare_program(parse(expression, table, options.limits), table, values, options)


def prepare_program(program: Program, table: Mapping[str, OpSpec], values: Mapping[str, Any],
                    options: CheckOptions) -> Prepared:
    """`prepare` of a parsed (or directly built) Program. Raises InputError."""
    values = {variable_name(k): v for k, v in values.items()}
    if options.device != "cpu":  # torch is imported only once the expression has parsed
        check_device(options.device)
    unused = [name for name in values if name not in program.inputs]
    builtin = [name for name in unused if name in CONSTANTS]
    if builtin:
        raise InputError(f"'{builtin[0]}' is a built-in constant in expressions ({builtin[0]} = "
                         f"{CONSTANTS[builtin[0]]!r}), so a value given for it is never used; name your "
                         f"variable something else")
    if unused:
        hint = " (it is assigned in the expression)" if unused[0] in program.intermediates else ""
        raise InputError(f"variable '{unused[0]}' is given a value but the expression does not use it{hint}; "
                         f"the expression's variables are: {', '.join(program.inputs) or 'none'}")
    if not program.inputs:
        raise InputError("the expression has no variables, so there is no gradient to check; "
                         "use a name such as x, e.g. 'sin(x).sum()'")
    counts = [spec_elements(values[name]) for name in program.inputs if name in values]
    given = sum(n for n in counts if n <= options.limits.max_elements)  # larger ones: --max-elements says so
    check_inputs(0, "all of them together", given, options.limits.max_memory, ITEMSIZE[options.dtype])  # before making any
    inputs, used = {}, 0
    for name in program.inputs:  # each input refused before it is made if it takes them past --max-memory
        raw = resolve(values[name], name, options.seed, options.limits, used) if name in values \
            else default_value(name, options.seed)
        inputs[name] = raw if is_integer(raw) else round_to_dtype(raw, options.dtype, name)
        used += 8 * inputs[name].size
    integers = [name for name in program.inputs if is_integer(inputs[name])]
    named = [name for name in options.wrt or () if name in integers]
    if named:
        raise InputError(f"--wrt names '{named[0]}', an integer tensor (long); integers have no gradient")
    wrt = tuple(n for n in program.inputs if n not in integers) if options.wrt is None else options.wrt
    missing = [name for name in wrt if name not in program.inputs]
    if missing:
        raise InputError(f"--wrt names '{missing[0]}', which the expression does not use; its variables are: "
                         f"{', '.join(program.inputs) or 'none'}")
    if not wrt:
        raise InputError("--wrt is empty; name at least one variable")
    wrt = tuple(name for name in program.inputs if name in wrt)
    need = check_case(program, table, inputs, wrt, ITEMSIZE[options.dtype],
                      jacobian=options.grad_output is None and not options.fast,
                      max_memory_mb=options.limits.max_memory)
    return Prepared(program, table, inputs, wrt, dict(values), need.numeric_chunk, need.statements)


def load_table(plugins: Iterable[str]) -> Mapping[str, OpSpec]:
    """The built-in table, extended by plugins when there are any."""
    plugins = tuple(plugins)
    from .plugins import REGISTERED
    if not plugins and not REGISTERED:
        return OPS
    from .plugins import extend_table
    return extend_table({**OPS, **REGISTERED}, plugins)


def round_to_dtype(value: np.ndarray, dtype: str, name: str = "value") -> np.ndarray:
    """The value torch will hold in `dtype`, back in float64, so both sides see the same point."""
    if dtype == "float64":
        return value
    import torch
    rounded = torch.tensor(value, dtype=getattr(torch, dtype)).double().numpy()
    if not np.all(np.isfinite(rounded)):
        limit = float(torch.finfo(getattr(torch, dtype)).max)
        raise InputError(f"'{name}' overflows {dtype} (its largest value is {limit:g}); use smaller values "
                         "or another --dtype")
    return rounded


def run_check(expression: str, values: Mapping[str, Any], options: CheckOptions) -> CheckResult:
    """Check the gradient of `expression`: autograd against finite differences.

    Args:
        expression: one or more statements; the last is the output.
        values: variable name → SPEC string, number, list, numpy array or torch tensor.
        options: everything else.

    Returns:
        A CheckResult; `.ok` is the verdict.

    Raises:
        InputError: bad input of any kind (syntax, unknown name, shape mismatch, bad SPEC, nan/inf), and
            options that conflict with each other or with the case (refused before any work: plan.py).
    """
    refuse_complex(values, options.grad_output)
    return _check_prepared(prepare(expression, values, options), options)


def check_program(program: Program, table: Mapping[str, OpSpec], values: Mapping[str, Any],
                  options: CheckOptions) -> CheckResult:
    """`run_check` of a Program built directly from IR nodes (a custom op's call site: call_site.py)."""
    refuse_complex(values, options.grad_output)
    options.validate()
    return _check_prepared(prepare_program(program, table, values, options), options)


def _check_prepared(prep: Prepared, options: CheckOptions) -> CheckResult:
    """prepare → plan → the plan's strategy."""
    grad_output = None if options.grad_output is None else resolve(
        options.grad_output, "--grad-output", options.seed, options.limits)
    plan = plan_check(options, prep, grad_output, FULL_CHECK_BUDGET)
    return carry_out(prep, plan, options, grad_output, replay_command(prep, options, plan.method))


def replay_command(prep: Prepared, options: CheckOptions, method: str, command: str = "check",
                   extra: Iterable[str] = ()) -> str:
    """The exact command that reproduces a check (`extra`: the command's own options, e.g. step's --optim)."""
    parts = ["gradcheck", command, prep.program.source]
    for name, spec in prep.specs.items():
        parts += ["-v", f"{name}={spec_text(spec)}"]
    overrides = {"method": method, **({"wrt": prep.wrt} if options.wrt is not None else {})}
    parts += [*replay_args(options, overrides), *extra]
    if prep.program.source.startswith("-"):  # '--json' is an expression (-(-json)): after '--', never an option
        parts = parts[:2] + parts[3:] + ["--", prep.program.source]
    return " ".join(shlex.quote(p) for p in parts)


def check(expression: str, *, vars: Mapping[str, Any] | None = None, **keywords: Any) -> CheckResult:
    """Check the gradient of an expression, as `gradcheck check` does.

    Args:
        expression: e.g. "3*a**3 - b**2"; several statements split by ';' or newlines.
        vars: variables whose names clash with an option, e.g. vars={"seed": 1.0}.
        grad_output: upstream gradient for a non-scalar output (a VJP); without it, the full Jacobian.
        wrt: the variables that get gradients ("a,b" or ["a", "b"]); the rest are constants.
        seed, dtype, method, eps, atol, rtol, plugins, device, allow_unreliable, order, directions: as the
            CLI options (every option of `gradcheck check`, named with underscores: options.OPTIONS).
        limits: a parse.Limits; max_elements, max_length, max_depth, max_statements, max_power, max_memory
            set one limit each.
        fast: a projected check along `directions` random directions (True), every element (False), or
            projected only when a full check would be too large (None, the default).
        symbolic: also the exact derivative (sympy) as a third opinion on every element.
        **variables: variable values: numbers, lists, numpy arrays, tensors or SPEC strings.

    Returns:
        CheckResult, with `.ok` and `.inputs["a"].analytic` / `.numeric` / `.ok`.

    Raises:
        InputError: bad input.
    """
    given, variables = split_options(keywords)
    return run_check(expression, {**variables, **(vars or {})}, api_options(given))


def _api_signature() -> inspect.Signature:
    """check()'s signature as help() and editors show it: every option keyword with its default."""
    from .options import CHECK_FIELDS, LIMITS
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("expression", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
              inspect.Parameter("vars", keyword, default=None),
              *(inspect.Parameter(o.name, keyword, default=o.default) for o in CHECK_FIELDS),
              inspect.Parameter("limits", keyword, default=DEFAULT_LIMITS),
              *(inspect.Parameter(o.name, keyword, default=o.default) for o in LIMITS),
              inspect.Parameter("variables", inspect.Parameter.VAR_KEYWORD)]
    return inspect.Signature(params, return_annotation=CheckResult)


check.__signature__ = _api_signature()


def build_graph(expression: str, values: Mapping[str, Any], options: CheckOptions, explain: bool = False):
    """The grad_fn DAG of an expression (for `gradcheck graph` and `--explain`); with `explain`, each
    node's local rule and the gradient flowing into it (for options.grad_output, else ones).
    Raises InputError."""
    prep = prepare(expression, values, options)
    import torch
    from .analytic import record_graph
    grad_output = None if options.grad_output is None else resolve(
        options.grad_output, "--grad-output", options.seed, options.limits)
    return record_graph(prep.program, prep.table, prep.inputs, prep.wrt,
                        getattr(torch, options.dtype), options.device, explain, grad_output)


def assert_gradients(expression: str, **kwargs: Any) -> CheckResult:
    """`check`, for tests: raise AssertionError with the full table unless every gradient agrees.

    Takes the same arguments as `check` and returns its CheckResult when the check passes.
    """
    result = check(expression, **kwargs)
    if not result.ok:
        from .render.table import check_view, to_text
        raise AssertionError("gradients disagree:\n" + to_text(check_view(result)))
    return result


def check_module(module: Any, loss: str | None = None, params: str | Iterable[str] | None = None,
                 wrt_inputs: bool = False, train: bool = False, *, vars: Mapping[str, Any] | None = None,
                 **keywords: Any):
    """Check every parameter gradient of an nn.Module, as `gradcheck module` does.

    Args:
        module: an nn.Module instance; it is left exactly as it was (copies are checked).
        loss: an expression with `out` bound to forward's output (a tuple: out[0]); None checks the
            output itself (a scalar: gradient; with grad_output: a VJP; else the full Jacobian).
        params: fnmatch globs ("layer.*,head.bias" or a list) choosing the checked parameters.
        wrt_inputs: also check forward's float tensor arguments.
        train: train mode (dropout, batch statistics); default eval mode.
        vars: values whose names clash with an option, e.g. vars={"seed": 1.0}.
        grad_output, seed, dtype, method, eps, atol, rtol, plugins, allow_unreliable, fast, directions,
            limits, ...: as `check` (every option of options.OPTIONS, named with underscores).
        **values: forward's arguments by name, and the names `loss` uses.

    Returns:
        A ModuleResult (a CheckResult): `.ok`, `.parameters["layer.weight"].analytic` / `.numeric` / `.ok`,
        `.buffers`, `.frozen`, `.unused`.

    Raises:
        InputError: bad input.
    """
    from .module import ModuleRequest, run_module_check
    from .options import split_globs
    import inspect as _inspect
    given, values = split_options(keywords)
    if given.get("wrt") is not None:
        raise InputError("check_module chooses what is checked with params= and wrt_inputs=, not wrt=")
    options = api_options(given)
    cls = type(module)
    try:  # the replay line names the class's file where it has one
        path = _inspect.getsourcefile(cls) if cls.__module__ != "__main__" else None
        label = f"{_short_path(path)}:{cls.__name__}" if path else cls.__name__
    except TypeError:
        label = cls.__name__
    request = ModuleRequest(loss=loss, params=split_globs(params), wrt_inputs=bool(wrt_inputs), train=bool(train),
                            label=label)
    return run_module_check(module, {**values, **(vars or {})}, options, request)


def assert_module_gradients(module: Any, loss: str | None = None, **kwargs: Any):
    """`check_module`, for tests: raise AssertionError naming the failing dotted parameters (and the
    full report) unless every gradient agrees. Returns the result when it passes."""
    result = check_module(module, loss, **kwargs)
    if not result.ok:
        from .render.module import module_view
        from .render.table import to_text
        failing = [name for name, r in result.parameters.items() if not r.ok]
        failing += [name for name, r in result.inputs.items() if not r.ok]
        raise AssertionError(f"gradients of {', '.join(failing) or 'the module'} disagree:\n"
                             + to_text(module_view(result)))
    return result


def _short_path(path: str) -> str:
    """A path relative to the working directory when it lies under it."""
    import os
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
