"""`gradcheck module`: every parameter gradient of an nn.Module, autograd against finite differences.

The module is a target (target.py, module_target.py): its checked parameters (by dotted name) and,
with --wrt-inputs, forward's float tensor arguments. The analytic side differentiates a copy in the
check's dtype; the numeric side differences a float64 copy through torch.func.functional_call, one
parameter tensor at a time (numeric.column_derivative, or directional_derivative for a projected
check), and every element is decided from its evidence as `check` decides it (evidence.element_check).
A parameter autograd gives no gradient (None) while the loss depends on it numerically fails ("gets
no gradient"); one the loss does not depend on at all is listed as unused.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import inspect
from typing import Any, Mapping

import numpy as np

from .api import CheckOptions, random_directions, round_to_dtype
from .compare import CheckResult, GradientResult, default_tolerances, element_result, failed_with, projected_result, \
    versions
from .errors import InputError
from .evidence import element_check
from .module_load import replay_command
from .module_target import ModuleRunner, ModuleTarget, NumericSide, copy_module, inputs_of, to_numpy
from .target import checked as checked_inputs
from .numeric import METHODS, NumericEngine, column_derivative
from .values import default_value, is_integer, resolve
from .verdict import SAFETY, Evidence, Policy

AUTO_PROJECT_ELEMENTS = 20_000   # checked elements (× output elements for a Jacobian) above which auto projects
MODULE_METHODS = ("auto", "richardson", "central")


@dataclasses.dataclass(frozen=True)
class ModuleResult(CheckResult):
    """A module check: CheckResult with the module's parameters, buffers, frozen and unused ones.

    `inputs` holds forward's arguments when they are checked (--wrt-inputs); `parameters` the checked
    parameters by dotted name; `blamed` each failing parameter's custom autograd.Functions.
    """

    module: str = ""
    loss: str | None = None
    train: bool = False
    parameters: dict[str, GradientResult] = dataclasses.field(default_factory=dict)
    buffers: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    frozen: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()            # parameters with requires_grad that --params left out
    reasons: dict[str, str] = dataclasses.field(default_factory=dict)   # not-ok name → why
    blamed: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def results(self) -> list[GradientResult]:
        return [*self.parameters.values(), *self.inputs.values()]


@dataclasses.dataclass(frozen=True)
class ModuleRequest:
    """What to check of a module beyond CheckOptions."""

    loss: str | None = None
    params: tuple[str, ...] | None = None   # fnmatch globs over dotted names
    wrt_inputs: bool = False
    train: bool = False
    label: str = ""                          # "model.py:Model", or the class name from Python
    init: str = ""                           # --init text, for the replay line


def _module_hint(method: str, eps: float | None) -> str:
    """What to try where the numeric side cannot tell (a module has no --symbolic)."""
    if eps is not None:
        return "try a smaller --eps, or none (a step chosen per element)"
    if method == "richardson":
        return "try --method central, another --eps, or a point further from a kink"
    return "try --method richardson or another --eps"


def _validate(options: CheckOptions) -> None:
    options.validate()
    if options.method not in MODULE_METHODS:
        raise InputError(f"gradcheck module takes --method {', '.join(MODULE_METHODS)}, not '{options.method}' "
                         "(complex step would need every layer to take complex values; the Taylor test is for check)")
    if options.order != 1:
        raise InputError("gradcheck module checks first derivatives; --order 2 is for check")
    if options.symbolic:
        raise InputError("--symbolic needs an expression; a module has no sympy form")
    if options.device != "cpu":
        raise InputError("gradcheck module runs on the CPU (--device cpu)")


def _forward_names(module: Any, label: str) -> tuple[list[str], list[str]]:
    """(every forward parameter name, those without a default)."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        raise InputError(f"cannot read the signature of {label}.forward") from None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        raise InputError(f"{label}.forward takes *args; gradcheck passes forward's arguments by name (-v NAME=...)")
    named = [p for p in params if p.kind is not p.VAR_KEYWORD]
    return [p.name for p in named], [p.name for p in named if p.default is p.empty]


def _select(module: Any, globs: tuple[str, ...] | None) -> tuple[list[str], list[str], list[str]]:
    """(checked, frozen, skipped) dotted parameter names."""
    names = [(n, p.requires_grad) for n, p in module.named_parameters()]
    frozen = [n for n, rg in names if not rg]
    trainable = [n for n, rg in names if rg]
    if globs is None:
        return trainable, frozen, []
    for glob in globs:
        if not any(fnmatch.fnmatchcase(n, glob) for n, _ in names):
            raise InputError(f"--params '{glob}' matches no parameter; the parameters are: "
                             f"{', '.join(n for n, _ in names) or 'none'}")
    chosen = [n for n in trainable if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not chosen:
        raise InputError(f"--params {','.join(globs)} selects only frozen parameters (requires_grad=False): "
                         f"{', '.join(n for n in frozen if any(fnmatch.fnmatchcase(n, g) for g in globs))}")
    return chosen, frozen, [n for n in trainable if n not in chosen]


def run_module_check(module: Any, values: Mapping[str, Any], options: CheckOptions,
                     request: ModuleRequest = ModuleRequest()) -> ModuleResult:
    """Check every (selected) parameter gradient of `module`; the module itself is left as it was.

    Raises:
        InputError: bad input (arguments, loss, options, a forward that raises).
    """
    _validate(options)
    import torch
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"expected an nn.Module instance, not {type(module).__name__}")
    label = request.label or type(module).__name__
    rng = torch.get_rng_state()
    try:
        return _run(module, values, options, request, label)
    finally:
        torch.set_rng_state(rng)  # the caller's random stream goes on as if no check had run


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """The loss parsed and every value resolved."""

    program: Any
    table: Any
    arrays: dict[str, np.ndarray]     # forward's arguments given with -v, then the loss's other names
    arg_names: list[str]
    loss_names: list[str]
    wrt_inputs: tuple[str, ...]


def _prepare(module: Any, values: Mapping[str, Any], options: CheckOptions, request: ModuleRequest,
             label: str) -> _Prepared:
    from .api import load_table
    from .parse import parse
    forward, required = _forward_names(module, label)
    table = load_table(options.plugins)
    program = parse(request.loss, table, options.limits) if request.loss is not None else None
    loss_names = [n for n in program.inputs if n != "out"] if program is not None else []
    if program is not None and "out" not in program.inputs:
        raise InputError("--loss must use 'out', the forward's output, e.g. --loss \"(out - label).mean()\"",
                         program.source, 1, 0, len(program.source))
    if "out" in values and "out" not in forward:
        raise InputError("'out' is the forward's output in --loss; it cannot be given with -v")
    unknown = [n for n in values if n not in forward and n not in loss_names]
    if unknown:
        raise InputError(f"-v {unknown[0]}= is neither an argument of {label}.forward({', '.join(forward)}) "
                         f"nor a name --loss uses{' (' + ', '.join(loss_names) + ')' if loss_names else ''}")
    missing = [n for n in required if n not in values]
    if missing:
        raise InputError(f"{label}.forward({', '.join(forward)}) needs {', '.join(missing)}: give "
                         f"{' '.join(f'-v {n}=...' for n in missing)} (e.g. -v {missing[0]}=\"randn(2,3)\")")
    arrays: dict[str, np.ndarray] = {}
    used = 0
    for name in [n for n in forward if n in values] + [n for n in loss_names if n not in forward]:
        raw = resolve(values[name], name, options.seed, options.limits, used) if name in values \
            else default_value(name, options.seed)
        arrays[name] = raw if is_integer(raw) else round_to_dtype(raw, options.dtype, name)
        used += 8 * arrays[name].size
    arg_names = [n for n in forward if n in values]
    wrt_inputs = tuple(n for n in arg_names if not is_integer(arrays[n])) if request.wrt_inputs else ()
    if request.wrt_inputs and not wrt_inputs:
        raise InputError(f"--wrt-inputs: {label}.forward has no float tensor argument given with -v")
    return _Prepared(program, table, arrays, arg_names, loss_names, wrt_inputs)


def _tensor(value: np.ndarray, dtype: Any) -> Any:
    import torch
    return torch.tensor(value) if is_integer(value) else torch.tensor(value, dtype=dtype)


def forward_inputs(module: Any, values: Mapping[str, Any], options: CheckOptions, request: ModuleRequest):
    """(forward's keyword arguments as tensors in the check's dtype, out → the checked quantity)."""
    import torch
    label = request.label or type(module).__name__
    prep = _prepare(module, values, options, request, label)
    dtype = getattr(torch, options.dtype)
    args = {n: _tensor(prep.arrays[n], dtype) for n in prep.arg_names}
    return args, lambda out: _apply_loss(prep.program, prep.table, out, prep.arrays, prep.loss_names, dtype, label)


def _run(module: Any, values: Mapping[str, Any], options: CheckOptions, request: ModuleRequest,
         label: str) -> ModuleResult:
    import torch
    from .analytic import Mode
    dtype = getattr(torch, options.dtype)
    prep = _prepare(module, values, options, request, label)
    program, table, arrays = prep.program, prep.table, prep.arrays
    arg_names, loss_names, wrt_inputs = prep.arg_names, prep.loss_names, prep.wrt_inputs
    checked, frozen, skipped = _select(module, request.params)
    if not checked and not wrt_inputs:  # a check that checks nothing must not pass in CI
        what = (f"every parameter is frozen (requires_grad=False: {', '.join(frozen)})" if frozen
                else "the module has no parameters")
        raise InputError(f"nothing to check: {what}; pass --wrt-inputs to check the gradients of its inputs")

    # the analytic side: a copy in the check's dtype
    twin = copy_module(module, dtype, request.train, label)
    args = {n: _tensor(arrays[n], dtype) for n in arg_names}
    for n in wrt_inputs:
        args[n].requires_grad_(True)
    runner = ModuleRunner(twin, args, options.seed, label)
    with torch.enable_grad():
        raw_out = runner.forward()
        y = _apply_loss(program, table, raw_out, arrays, loss_names, dtype, label)
    grad_output = None if options.grad_output is None else resolve(
        options.grad_output, "--grad-output", options.seed, options.limits)
    from .analytic import _mode
    mode, weights_t = _mode(y, grad_output, dtype, "cpu")
    params = dict(twin.named_parameters())
    targets = {**{n: params[n] for n in checked}, **{n: args[n] for n in wrt_inputs}}
    connected = _connected(y, targets)
    method = "richardson" if options.method == "auto" else options.method
    atol, rtol = default_tolerances(options.dtype, method)
    atol = atol if options.atol is None else options.atol
    rtol = rtol if options.rtol is None else options.rtol
    out_shape = tuple(y.shape)
    jacobian = mode is Mode.JACOBIAN
    total = sum(int(t.numel()) for t in targets.values()) * (int(np.prod(out_shape)) if jacobian else 1)
    projected = bool(options.fast) or (options.fast is None and total > AUTO_PROJECT_ELEMENTS)
    k = options.directions
    output_weights = random_directions(options.seed, "", k, out_shape).astype(np.float64) \
        if projected and jacobian else None
    gradients = _gradients(y, {n: targets[n] for n in connected}, mode, weights_t, output_weights)
    weights = None if weights_t is None else to_numpy(weights_t)

    # the numeric side: a float64 copy (of the values the analytic side holds), through functional_call
    numeric_twin = copy_module(module, dtype, request.train, label).to(torch.float64)
    if request.train:  # batch statistics alone, no running-stat update in place: what vmap can batch;
        # the output is the same (train mode normalizes by the batch's own statistics), and the rows are
        # still used should vmap's unperturbed row not reproduce the plain forward
        torch.func.replace_all_batch_norm_modules_(numeric_twin)
    numeric_args = {n: _tensor(arrays[n], torch.float64) for n in arg_names}
    side = NumericSide(ModuleRunner(numeric_twin, numeric_args, options.seed, label),
                       _numeric_reduce(program, table, arrays, loss_names, label))
    if not np.all(np.isfinite(side.output)):
        raise InputError(f"the {'loss' if program is not None else 'output'} of {label} is nan or inf at this "
                         "point; choose inputs inside the domain of every layer")
    target = ModuleTarget(label, inputs_of(numeric_twin, tuple(targets), {n: arrays[n] for n in arg_names},
                                           wrt_inputs), side)
    bases = {i.name: i.value for i in checked_inputs(target)}
    engine = _Engine(target, METHODS[method], options.eps)
    policy = Policy(options.allow_unreliable)
    hint = _module_hint(method, options.eps)
    results: dict[str, GradientResult] = {}
    unused: list[str] = []
    reasons: dict[str, str] = {}
    for name in targets:
        base = bases[name]
        gradient = gradients.get(name)
        if projected:
            result = _projected(engine, name, base, gradient, weights, output_weights, out_shape, jacobian,
                                options, atol, rtol, policy, hint)
        else:
            numeric = column_derivative(engine._function(name, 0), base, out_shape, weights, engine.method,
                                        options.eps, engine.chunk(name))
            if gradient is None:
                result = element_result(name, base, Evidence(np.zeros(numeric.value.shape), numeric.value,
                                                             SAFETY * numeric.error), atol, rtol, policy)
            else:
                result = element_check(engine, name, 0, base, gradient, numeric, weights, None, atol, rtol,
                                       policy, hint)
        if gradient is None:
            if result.ok:  # zero numerically too: the loss does not depend on it at all
                unused.append(name)
                continue
            result = failed_with(result, "gets no gradient")
            reasons[name] = "gets no gradient"
        elif not result.ok:
            reasons[name] = result.diagnosis or f"{result.failures} of {result.passed.size} " \
                                                f"{'projections' if projected else 'elements'} disagree"
        results[name] = result
    from .graph import read_graph
    from .module_blame import blame, custom_functions
    names = {id(t): n for n, t in {**params, **args}.items()}
    graph = read_graph(y.grad_fn, names)
    failing = [n for n in results if not results[n].ok]
    blamed = custom_functions(y.grad_fn, names, failing)
    request_replay = replay_command(label, request, values, arg_names, loss_names, options, method)
    return ModuleResult(
        expression=request.loss if request.loss is not None else "out", dtype=options.dtype, method=method,
        atol=atol, rtol=rtol, eps=options.eps, seed=options.seed, mode=mode.value,
        output_shape=out_shape, output_value=to_numpy(y), grad_output=weights if mode is Mode.VJP else None,
        inputs={n: results[n] for n in wrt_inputs if n in results},
        intermediates={}, constants={n: arrays[n] for n in arrays if n not in wrt_inputs},
        graph=graph, replay=request_replay, versions=versions(), blame=blame(blamed),
        module=label, loss=request.loss, train=request.train,
        parameters={n: results[n] for n in checked if n in results},
        buffers={n: tuple(b.shape) for n, b in module.named_buffers()}, frozen=tuple(frozen),
        unused=tuple(unused), skipped=tuple(skipped), reasons=reasons, blamed=blamed,
    )


def _apply_loss(program: Any, table: Any, out: Any, arrays: Mapping[str, np.ndarray], loss_names: list[str],
                dtype: Any, label: str) -> Any:
    """The checked quantity on the analytic side: the loss of `out`, or `out` itself (a tensor)."""
    import torch
    if program is None:
        if isinstance(out, (tuple, list)):
            raise InputError(f"{label}.forward returns {len(out)} outputs; choose what to check with --loss, "
                             "e.g. --loss \"out[0].sum()\"")
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            raise InputError(f"{label}.forward returns {type(out).__name__}, not a float tensor; use --loss")
        return out
    from .evaluate import TorchBackend, Walker
    env = {"out": tuple(out) if isinstance(out, list) else out}
    for name in loss_names:
        env[name] = torch.tensor(arrays[name]) if is_integer(arrays[name]) else torch.tensor(arrays[name], dtype=dtype)
    value = Walker(program, table, TorchBackend(dtype)).run(env)
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise InputError(f"--loss gives {type(value).__name__}, not a float tensor; index a tuple output: out[0]",
                         program.source, 1, 0, len(program.source))
    return value


def _numeric_reduce(program: Any, table: Any, arrays: Mapping[str, np.ndarray], loss_names: list[str], label: str):
    """Batched module outputs → batched checked quantity: the loss walked over numpy (its own reference)."""
    if program is None:
        return lambda out: np.asarray(out, dtype=np.float64)
    from .evaluate import NumpyBackend, Walker
    recorder = NumpyBackend()
    constants = {n: np.asarray(arrays[n])[None] for n in loss_names}

    def reduce(out: Any) -> np.ndarray:
        backend = recorder if recorder.recording and not recorder.held else NumpyBackend(recorder.held)
        env = {"out": out, **constants}
        with np.errstate(all="ignore"):
            value = Walker(program, table, backend).run(env)
        recorder.recording = False
        batch = out[0].shape[0] if isinstance(out, tuple) else out.shape[0]
        value = np.asarray(value, dtype=np.float64)
        return value if value.ndim and value.shape[0] == batch else np.broadcast_to(value, (batch,) + value.shape[1:])
    return reduce


def _connected(y: Any, targets: Mapping[str, Any]) -> list[str]:
    """The targets autograd gives a gradient (not None) for y."""
    import torch
    if not y.requires_grad or not targets:
        return []
    grads = torch.autograd.grad(y, list(targets.values()), grad_outputs=torch.ones_like(y), retain_graph=True,
                                allow_unused=True)
    return [n for n, g in zip(targets, grads) if g is not None]


def _gradients(y: Any, targets: Mapping[str, Any], mode: Any, weights: Any,
               output_weights: np.ndarray | None) -> dict[str, np.ndarray]:
    """name → gradient (VJP), full Jacobian, or one VJP per projected output direction (k, *shape)."""
    import torch
    from .analytic import Mode, _jacobian, _weighted_sums
    if not targets:
        return {}
    tensors = list(targets.values())
    if mode is Mode.JACOBIAN:
        if output_weights is not None:
            parts = _weighted_sums(y, tensors, torch.tensor(output_weights, dtype=y.dtype))
        else:
            parts = _jacobian(y, tensors)
        return dict(zip(targets, parts))
    grads = torch.autograd.grad(y, tensors, grad_outputs=weights, retain_graph=True)
    return {n: to_numpy(g) for n, g in zip(targets, grads)}


class _Engine(NumericEngine):
    """NumericEngine's one-sided probes (kinks) over a module target's evaluators instead of an expression."""

    can_kink = True  # a module's forward is any torch code

    def __init__(self, target: ModuleTarget, method: Any, eps: float | None, memory_budget: int = 256 * 2**20):
        self.target, self.method, self.eps, self.memory_budget = target, method, eps, memory_budget
        self.is_complex = False
        self.output = target.output
        self.envs = [{i.name: i.value[None] for i in checked_inputs(target)}]
        params = sum(i.value.size for i in checked_inputs(target))
        self.row_bytes = 8 * 4 * max(params + target.output.size, 1)

    def _function(self, name: str, start: int, node: Any = None):
        return self.target.evaluator(name)

    def chunk(self, name: str) -> int:
        """Columns per batched evaluation: each row holds a perturbed copy of `name` and the forward's values."""
        size = self.envs[0][name].size
        row = 8 * (2 * size + 4 * max(self.target.side.activations, self.output.size, 1))
        return max(1, self.memory_budget // (row * self.method.probes_per_column(self.eps)))


def _projected(engine: _Engine, name: str, base: np.ndarray, gradient: np.ndarray | None, weights: Any,
               output_weights: np.ndarray | None, out_shape: tuple[int, ...], jacobian: bool,
               options: CheckOptions, atol: float, rtol: float, policy: Policy, hint: str) -> GradientResult:
    """g·v against the numeric d/dt f(p + t·v), along random ±1 directions v (as check's --fast)."""
    k = options.directions
    v = random_directions(options.seed, name, k, base.shape)
    flat_v = v.reshape(k, -1).astype(np.float64)
    if gradient is None:
        projections = np.zeros(k)
    elif jacobian:
        projections = np.einsum("kj,kj->k", gradient.reshape(k, -1), flat_v)
    else:
        projections = flat_v @ gradient.reshape(-1)
    w = output_weights if jacobian else weights
    numeric = engine.directional(name, 0, w, v)
    elements = int(base.size) * (int(np.prod(out_shape)) if jacobian else 1)
    evidence = Evidence(projections, numeric.value, SAFETY * numeric.error, hint=hint)
    return projected_result(name, base, evidence, atol, rtol, elements, jacobian, policy)
