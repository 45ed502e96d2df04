"""The library's front door: options in, CheckResult out. Never prints, never exits."""
from __future__ import annotations

import dataclasses
import inspect
import shlex
import zlib
from typing import Any, Iterable, Mapping

import numpy as np

from .analytic import Mode, check_device, non_finite_error, run_analytic
from .compare import (ORDER2_FACTOR, CheckResult, GradientResult, default_tolerances,
                      failed_with, projected_result, taylor_result, versions)
from .custom import blame_line, inspect_call
from .errors import InputError
from .memory import check_case, check_inputs
from .numeric import TAYLOR, NumericEngine, choose_method
from .ops import CONSTANTS, OPS, OpSpec
from .parse import DEFAULT_LIMITS, Program, parse
from .structured import Request, check_structured, expanded
from .values import default_value, is_integer, resolve, spec_elements
from .evidence import element_check, one_sided, refuse_complex, unreliable_hint
from .options import (DEFAULT_DIRECTIONS, DTYPES, MAX_DIRECTIONS, MAX_REPLAY_ELEMENTS, METHOD_CHOICES,  # noqa: F401
                      SEED_RANGE, CheckOptions, api_options, replay_args, spec_text, split_names, split_options,
                      variable_name)
from .verdict import SAFETY, Evidence, Policy

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


def prepare(expression: str, values: Mapping[str, Any], options: CheckOptions) -> Prepared:
    """Parse, resolve values, validate --wrt. Raises InputError."""
    options.validate()
    table = load_table(options.plugins)
    program = parse(expression, table, options.limits)
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
    return Prepared(program, table, inputs, wrt, dict(values), need.numeric_chunk)


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
        InputError: bad input of any kind (syntax, unknown name, shape mismatch, bad SPEC, nan/inf).
    """
    refuse_complex(values, options.grad_output)
    prep = prepare(expression, values, options)
    import torch

    grad_output = None if options.grad_output is None else resolve(
        options.grad_output, "--grad-output", options.seed, options.limits)
    may_project = options.method != TAYLOR and options.order == 1  # the others test every element
    method = choose_method(options.method, prep.program, prep.table)
    default_atol, default_rtol = default_tolerances(options.dtype, method)
    atol = default_atol if options.atol is None else options.atol
    rtol = default_rtol if options.rtol is None else options.rtol
    # a Jacobian with a known pattern is checked on it (--full builds every entry; --symbolic needs all)
    structure = Request(options.seed, atol, rtol) if (
        options.fast is None and may_project and not options.symbolic) else None
    analytic = run_analytic(prep.program, prep.table, prep.inputs, prep.wrt,
                            getattr(torch, options.dtype), options.device, grad_output, options.order,
                            fast=options.fast if may_project else False,
                            output_directions=lambda shape: random_directions(options.seed, "", options.directions, shape),
                            structure=structure)
    engine = NumericEngine(prep.program, prep.table, prep.inputs, method, options.eps, prep.numeric_budget)
    for index, value in engine.values.items():
        if not np.all(np.isfinite(value)):
            raise non_finite_error(prep.program, index, value, "float64")
    policy = Policy(options.allow_unreliable)
    weights = analytic.weights
    starts = {name: 0 for name in prep.wrt}
    starts.update({stmt.target: i + 1 for i, stmt in enumerate(prep.program.statements)
                   if stmt.target in analytic.intermediates})
    if method == TAYLOR and weights is None:
        raise InputError("--method taylor needs a scalar output or --grad-output (it tests g·out)")
    projected = analytic.projection_weights is not None or bool(options.fast) or (
        options.fast is None and may_project
        and sum(engine.full_cost(name, start) for name, start in starts.items()) > FULL_CHECK_BUDGET)
    if options.symbolic and (projected or method == TAYLOR):
        raise InputError("--symbolic compares every element; this check is "
                         f"{'projected (use --full)' if projected else 'a Taylor test'}")
    exact_engine = None
    if options.symbolic:
        from .symbolic import SymbolicEngine
        exact_engine = SymbolicEngine(engine)
    hint = unreliable_hint(method, options.eps)
    results: dict[str, GradientResult] = {}
    for name, start in starts.items():  # evidence first, then one decision per element
        value = prep.inputs[name] if start == 0 else engine.values[start - 1]
        gradient = analytic.gradients[name]
        if projected:
            results[name] = _projected(engine, analytic, name, start, value, options, atol, rtol, policy, method)
        elif method == TAYLOR:
            forward, orders = engine.taylor(name, start, weights, gradient)
            evidence = Evidence(gradient, forward.value, SAFETY * forward.error, hint=hint)
            passing = np.isnan(orders) | (orders >= 1.7)
            evidence = dataclasses.replace(evidence, one_sided=one_sided(engine, name, start, weights, ~passing))
            results[name] = taylor_result(name, value, evidence, orders, policy)
        elif name in analytic.structured:
            results[name] = check_structured(engine, analytic.structured[name], name, start, value,
                                             analytic.gradients[name], atol, rtol, policy, hint)
        else:
            numeric = engine.derivative(name, start, weights)
            exact = None if exact_engine is None else exact_engine.derivative(name, start, weights)
            results[name] = element_check(engine, name, start, value, gradient, numeric, weights, exact,
                                          atol, rtol, policy, hint)
    hessians = {}
    if options.order == 2 and not analytic.backward_error:  # a backward that raised has no second order
        from .second_order import check_second_order
        total = sum(int(np.size(prep.inputs[n])) for n in prep.wrt)
        hessians = check_second_order(prep.program, prep.table, prep.inputs, prep.wrt,
                                      getattr(torch, options.dtype), options.device, weights,
                                      atol * ORDER2_FACTOR, rtol * ORDER2_FACTOR, policy,
                                      random_directions(options.seed, "order 2", options.directions, (2, total)))
    if analytic.backward_error:  # every gradient is nan: say why on each element
        results = {n: failed_with(r, analytic.backward_error) for n, r in results.items()}
    reports = _inspect_custom_ops(analytic.calls, prep.table, options) if options.inspect_ops else ()
    return CheckResult(
        expression=prep.program.source, dtype=options.dtype, method=method, atol=atol, rtol=rtol,
        eps=options.eps, seed=options.seed, mode=analytic.mode.value,
        output_shape=tuple(analytic.output.shape), output_value=analytic.output,
        grad_output=weights if analytic.mode is Mode.VJP else None,
        inputs={n: results[n] for n in prep.wrt},
        intermediates={n: results[n] for n in analytic.intermediates},
        constants={n: v for n, v in prep.inputs.items() if n not in prep.wrt},
        graph=analytic.graph, replay=replay_command(prep, options, method), versions=versions(),
        custom_ops=reports, blame=blame_line(reports), hessians=hessians,
    )


def random_directions(seed: int, name: str, count: int, shape: tuple[int, ...]) -> np.ndarray:
    """`count` random ±1 arrays of `shape` (int8, to stay small), the same for the same seed and name."""
    rng = np.random.default_rng([seed % 2**64, zlib.crc32(name.encode()), 0x9E3779B9])  # numpy: no negatives
    signs = rng.integers(0, 2, size=(count, *shape), dtype=np.int8)
    return np.subtract(np.multiply(signs, 2, out=signs), 1, out=signs)


def _projected(engine: NumericEngine, analytic, name: str, start: int, value: np.ndarray,
               options: CheckOptions, atol: float, rtol: float, policy: Policy, method: str) -> GradientResult:
    """A projected check of one input or intermediate: g·v against the numeric d/dt f(x + t·v)."""
    gradient = analytic.gradients[name]
    if name in analytic.structured and analytic.structured[name].verified:  # entries on a pattern
        gradient = expanded(analytic.structured[name])
    out_shape = analytic.output.shape
    jacobian = analytic.mode is Mode.JACOBIAN
    k = options.directions
    elements = int(np.size(value)) * (int(np.prod(out_shape)) if jacobian else 1)
    if jacobian:
        weights = analytic.projection_weights
        if weights is None:  # the full Jacobian was small enough to build: contract it the same way
            weights = random_directions(options.seed, "", k, out_shape)
            gradient = np.tensordot(weights, gradient, axes=len(out_shape))
        gradient = gradient.reshape(k, -1)
    else:
        weights = analytic.weights
        gradient = np.broadcast_to(gradient.reshape(1, -1), (k, gradient.size))
    v = random_directions(options.seed, name, k, np.shape(value))
    projected = np.array([g @ row.astype(np.float64) for g, row in zip(gradient, v.reshape(k, -1))])
    numeric = engine.directional(name, start, weights, v)
    evidence = Evidence(projected, numeric.value, SAFETY * numeric.error,
                        hint=unreliable_hint(method, options.eps))
    return projected_result(name, value, evidence, atol, rtol, elements, jacobian, policy)


def _inspect_custom_ops(calls, table: Mapping[str, OpSpec], options: CheckOptions) -> tuple:
    """Each plugin call site checked alone, at the arguments it received (see custom.py)."""
    def check_values(expression: str, values: dict, grad_output: Any, wrt: tuple[str, ...]) -> CheckResult:
        sub = dataclasses.replace(options, grad_output=grad_output, wrt=wrt, inspect_ops=False, order=1,
                                  symbolic=False)
        return run_check(expression, values, sub)

    reports = (inspect_call(table[node.op], node, args, check_values, options.seed) for node, args in calls)
    return tuple(r for r in reports if r is not None)


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
    from .module import ModuleRequest, run_module_check, split_globs
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
