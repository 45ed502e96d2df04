"""The torch side: leaves with requires_grad, the gradient / VJP / Jacobian, and the grad_fn tree."""
from __future__ import annotations

import dataclasses
import enum
import functools
from typing import Any, Callable, Mapping

import numpy as np

from . import inplace
from .errors import InputError
from .evaluate import TorchBackend, Walker, is_finite
from .graph import Dag, GraphNode, RecordingBackend, read_dag, read_graph
from .ops import OpSpec
from .parse import Call, Program

MAX_JACOBIAN_ELEMENTS = 20_000_000  # output elements × input elements in jacobian mode
JACOBIAN_CHUNK_BYTES = 8 * 2**20  # identity rows and their VJPs per batched backward of a full Jacobian


class Mode(enum.Enum):
    GRADIENT = "gradient"   # scalar output
    VJP = "vjp"             # --grad-output
    JACOBIAN = "jacobian"   # non-scalar output, no --grad-output


@dataclasses.dataclass(frozen=True)
class Analytic:
    """What autograd said, as float64 numpy arrays."""

    output: np.ndarray
    mode: Mode
    weights: np.ndarray | None          # the upstream gradient actually used (None: Jacobian)
    gradients: dict[str, np.ndarray]    # inputs and intermediates, in order
    intermediates: tuple[str, ...]      # the names among `gradients` that are intermediates
    graph: GraphNode | None
    calls: tuple[tuple[Call, list[Any]], ...] = ()  # plugin op call sites and the tensors they got
    # a projected Jacobian check: the output weights of each direction, shape (k, *output.shape);
    # gradients then hold one VJP a direction, shape (k, *target.shape)
    projection_weights: np.ndarray | None = None
    # a structured Jacobian check (structured.py): the entries on each pattern and how its verification
    # went; gradients then hold the entries (1-D) where verified, the full Jacobian where not
    structured: dict[str, Any] = dataclasses.field(default_factory=dict)
    backward_error: str = ""  # a plugin's backward raised: its gradients are nan, and this says why


# Device types gradcheck can compute on, each with torch's own availability test.
_DEVICE_BACKENDS = ("cpu", "cuda", "mps", "xpu")


def check_device(name: str) -> None:
    """Refuse a --device torch cannot use here, before any tensor is made. Raises InputError."""
    import torch

    hint = "use cpu, or cuda, cuda:N, mps or xpu where this torch build and machine have one"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown --device '{name}'; {hint}") from None
    if device.type == "meta":
        raise InputError("--device meta holds shapes but no values, so there is no gradient to compare; "
                         "use cpu or a GPU")
    if device.type not in _DEVICE_BACKENDS:
        raise InputError(f"--device '{name}' is not a device gradcheck can compute on; {hint}")
    if device.type == "cpu":
        return
    module = torch.backends.mps if device.type == "mps" else getattr(torch, device.type)
    if not module.is_available():
        raise InputError(f"--device {name}: this torch ({torch.__version__}) has no usable {device.type} "
                         "device on this machine; use --device cpu, or a torch build with "
                         f"{device.type} support")
    count = getattr(getattr(torch, device.type), "device_count", lambda: 1)()
    if device.index is not None and device.index >= count:
        raise InputError(f"--device {name}: there {'is' if count == 1 else 'are'} only {count} "
                         f"{device.type} device{'' if count == 1 else 's'} (indices 0 to {count - 1})")


def _to_numpy(t: Any) -> np.ndarray:
    import torch
    # force: a double backward may hand back a ZeroTensor (abs's second derivative), which numpy() refuses
    return t.detach().to("cpu", dtype=torch.float64).numpy(force=True)


def _refusal(err: BaseException) -> str | None:
    """What to say when torch itself refused what a custom Function's backward returned (its count or a
    shape); None for any other error."""
    text = str(err).strip().splitlines()[0] if isinstance(err, RuntimeError) and str(err).strip() else ""
    if "incorrect number of gradients" in text:
        hint = "backward returns one gradient per forward argument (None for the non-tensor ones)"
    elif "returned an invalid gradient" in text:
        hint = "each gradient must have the shape of its forward argument"
    else:
        return None
    return f"backward failed: {text}; {hint}"


def _refused_backward_is_bad_input(run: Callable) -> Callable:
    """A refusal that reaches here (outside the first-order backward, which reports it as a failed check)
    is one clear line, not a traceback; any other error passes through."""
    @functools.wraps(run)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            return run(*args, **kwargs)
        except RuntimeError as err:
            said = _refusal(err)
            if said is None:
                raise
            raise InputError(said) from None
    return checked


@_refused_backward_is_bad_input
def run_analytic(program: Program, table: Mapping[str, OpSpec], inputs: Mapping[str, np.ndarray],
                 wrt: tuple[str, ...], dtype: Any, device: str,
                 grad_output: np.ndarray | None, order: int = 1, fast: bool | None = False,
                 output_directions: Callable[[tuple[int, ...]], np.ndarray] | None = None,
                 structure: Any = None) -> Analytic:
    """Build the program in torch and differentiate its output.

    In Jacobian mode with `fast` (or `fast` None and a Jacobian too large to build), the output is
    contracted with the weights `output_directions(output shape)` gives, one VJP a direction, instead.
    Otherwise, with a `structure` request (structured.Request), each target whose Jacobian has a known
    pattern gets the entries on it, verified by random VJPs, instead of every entry.

    Raises:
        InputError: a statement that is nan/inf, an output no variable reaches, a --grad-output of
            the wrong shape, or a Jacobian too large to build.
    """

    calls: list[tuple[Call, list[Any]]] = []
    out, env, leaves = _build(program, table, inputs, wrt, dtype, device, calls)
    try:
        return _differentiate(program, table, out, env, leaves, wrt, dtype, device, grad_output, order, fast,
                              output_directions, calls, structure)
    except RuntimeError as err:  # torch refusing backward after an in-place change: the user's program
        if not program.modified or not inplace.is_inplace_error(err):
            raise
        index = inplace.blame(program, lambda after: _build(program, table, inputs, wrt, dtype, device,
                                                            after=after))
        raise inplace.backward_error(program, err, index) from None


def _differentiate(program: Program, table: Mapping[str, OpSpec], out: Any, env: dict[str, Any],
                   leaves: dict[str, Any], wrt: tuple[str, ...], dtype: Any, device: str,
                   grad_output: np.ndarray | None, order: int, fast: bool | None, output_directions: Any,
                   calls: list, structure: Any) -> Analytic:
    import torch

    names = {id(t): name for name, t in leaves.items()}
    graph = read_graph(out.grad_fn, names, produced_names(program, env))
    inter = tuple(n for n in _distinct_intermediates(program, env, out) if n not in program.modified)
    targets = [leaves[n] for n in wrt] + [env[n] for n in inter]
    mode, weights = _mode(out, grad_output, dtype, device)
    if order == 2 and mode is Mode.JACOBIAN:  # plan.py refuses it where shapes are known; plugin ops: here
        raise InputError("--order 2 needs a scalar output or --grad-output (it checks d²(g·out)/dx²)")
    projection = None
    if mode is Mode.JACOBIAN and output_directions is not None and (
            fast or (fast is None and _jacobian_size(out, targets) > MAX_JACOBIAN_ELEMENTS)):
        projection = output_directions(tuple(out.shape))
    plugin_code = any(table[op].origin is not None for op in program.ops)
    failure = ""
    found: dict[str, Any] = {}
    try:
        if projection is not None:
            grads = _batched_vjp(out, targets, torch.tensor(projection, dtype=dtype, device=device))
        elif mode is Mode.JACOBIAN:
            names = list(wrt) + list(inter)
            found = {} if structure is None else _structured(program, table, out, env,
                                                             dict(zip(names, targets)), structure, dtype, device)
            built = [n for n in names if n not in found or not found[n].verified]
            full = dict(zip(built, _jacobian(out, [targets[names.index(n)] for n in built]))) if built else {}
            grads = [full[n] if n in full else found[n].values for n in names]
        else:
            # a scalar output's weight is 1: torch makes the same ones itself, and skips its one-time import
            # of sympy (~0.5 s) that checking a given grad_output's shape costs in a fresh process; a
            # --grad-output (its shape checked by _mode) skips that check too (batched_grad.py)
            from .batched_grad import grads as vjp
            raw = (torch.autograd.grad(out, targets, retain_graph=True, allow_unused=True)
                   if mode is Mode.GRADIENT else vjp(out, targets, weights))
            grads = [_to_numpy(g) if g is not None else np.zeros(tuple(t.shape)) for g, t in zip(raw, targets)]
    except InputError:
        raise
    except Exception as err:  # a plugin's backward raised, or torch refused what it returned: a failed check
        if not plugin_code:
            raise  # a built-in op's failing is gradcheck's bug
        failure = _refusal(err) or f"backward raised {type(err).__name__}: {_first_line(err)}"
        lead = (len(projection),) if projection is not None else tuple(out.shape) if mode is Mode.JACOBIAN else ()
        grads = [np.full(lead + tuple(t.shape), np.nan) for t in targets]
        found = {}
    gradients = dict(zip(list(wrt) + list(inter), grads))
    return Analytic(_to_numpy(out), mode, None if weights is None else _to_numpy(weights),
                    gradients, inter, graph, tuple(calls), projection_weights=projection,
                    structured=found if mode is Mode.JACOBIAN and projection is None else {},
                    backward_error=failure)


def _structured(program: Program, table: Mapping[str, OpSpec], out: Any, env: dict[str, Any],
                targets: dict[str, Any], request: Any, dtype: Any, device: str) -> dict[str, Any]:
    """The targets whose Jacobian has a known pattern: their entries, by one batched VJP with the
    colour and random-sign weights of every pattern at once (structured.py)."""
    import torch

    from . import structured

    def inner_shape(node: Call) -> tuple[int, ...]:
        with torch.no_grad():
            return tuple(Walker(program, table, TorchBackend(dtype, device)).node(node, dict(env)).shape)

    starts = {s.target: i + 1 for i, s in enumerate(program.statements) if s.target is not None}
    out_shape = tuple(out.shape)
    patterns = {}
    for name, t in targets.items():
        found = structured.pattern_for(program, table, name, 0 if name in program.inputs else starts[name],
                                       out_shape, tuple(t.shape), inner_shape)
        if found is not None:
            patterns[name] = found
    if not patterns:
        return {}
    signs = structured.sign_rows(request.seed, structured.VJPS, out_shape)
    weights, owned = structured.weight_rows(patterns, signs)
    names = list(patterns)
    grads = _weighted_sums(out, [targets[n] for n in names], torch.tensor(weights, dtype=dtype, device=device))
    return {name: structured.extract(patterns[name], g, owned[name], signs, request.atol, request.rtol)
            for name, g in zip(names, grads)}


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _distinct_intermediates(program: Program, env: dict[str, Any], out: Any) -> tuple[str, ...]:
    """Assigned names that are computed tensors of their own.

    An alias (`y = x`, `w = z`) is the same tensor as what it names, so torch.autograd.grad(out, y)
    would count every use of x, while perturbing y alone counts only the uses of y: such names are left
    out, and the first binding of a tensor carries its gradient.
    """
    import torch

    seen = {id(out)} | {id(env[n]) for n in program.inputs}
    names = []
    for name in program.intermediates:
        value = env[name]
        if isinstance(value, torch.Tensor) and value.requires_grad and id(value) not in seen:
            names.append(name)
        seen.add(id(value))
    return tuple(names)


def _build(program: Program, table: Mapping[str, OpSpec], inputs: Mapping[str, np.ndarray],
           wrt: tuple[str, ...], dtype: Any, device: str, calls: list | None = None,
           backend: TorchBackend | None = None,
           after: Callable[[int, dict[str, Any]], None] | None = None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Run the program in torch: (output, every binding, the leaf tensors).

    Plugin op calls are appended to `calls` as (node, every argument as the op received it) when a
    list is given; `after(index, env)` sees the bindings after each statement.
    """
    import torch

    leaves = {name: torch.tensor(value, dtype=torch.int64 if np.issubdtype(value.dtype, np.integer) else dtype,
                                 device=device, requires_grad=name in wrt)
              for name, value in inputs.items()}
    env: dict[str, Any] = dict(leaves)
    def observe(node: Call, args: list[Any]) -> None:
        if calls is not None and table[node.op].origin is not None:
            calls.append((node, list(args)))

    walker = Walker(program, table, backend or TorchBackend(dtype, device), observe)

    def check_finite(index: int, value: Any) -> None:
        if program.statements[index].inplace:
            inplace.check_aliases(program, index, env)
        if after is not None:
            after(index, env)
        if not is_finite(value):
            raise non_finite_error(program, index, value, str(dtype).replace("torch.", ""))

    out = walker.run(env, on_statement=check_finite)
    if isinstance(out, tuple):
        span = program.output.span
        raise InputError(f"the output is {len(out)} outputs of one op; check one of them, e.g. "
                         f"{program.output.text}[0]", program.source, span.line, span.col, span.end_col)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise InputError(f"the output does not depend on any variable being differentiated "
                         f"({', '.join(wrt) or 'none'}); nothing to check")
    return out, env, leaves


def produced_names(program: Program, env: Mapping[str, Any]) -> dict[int, str]:
    """id(grad_fn) → the assigned name of the tensor it produced (the first name of an alias)."""
    produced: dict[int, str] = {}
    for name in program.intermediates:
        fn = getattr(env.get(name), "grad_fn", None)
        if fn is not None:
            produced.setdefault(id(fn), name)
    return produced


def record_graph(program: Program, table: Mapping[str, OpSpec], inputs: Mapping[str, np.ndarray],
                 wrt: tuple[str, ...], dtype: Any, device: str, explain: bool = False,
                 grad_output: np.ndarray | None = None) -> Dag | None:
    """The DAG autograd records for the program's output, with the inputs that get no gradient.

    With `explain`, one backward pass runs with hooks on every node, so each node carries its local
    rule and the gradient flowing into it: for `grad_output` (a VJP), else for a seed of ones.
    """
    backend = RecordingBackend(dtype, device, program.source)
    out, env, leaves = _build(program, table, inputs, wrt, dtype, device, backend=backend)
    names = {id(t): name for name, t in leaves.items()}
    no_grad = backend.no_grad_inputs({**leaves, **{n: env[n] for n in program.intermediates if n in env}})
    grads, seed = None, ""
    if explain:
        grads, seed = _flowing_gradients(out, grad_output, dtype, device)
    return read_dag(out.grad_fn, names, produced_names(program, env), no_grad, grads, seed)


def _flowing_gradients(out: Any, grad_output: np.ndarray | None, dtype: Any, device: str) -> tuple[dict, str]:
    """One backward pass with a pre-hook on every node: id(node) → the gradient it received."""
    import torch

    from .graph import walk_dag
    if grad_output is not None:
        weights, seed = _mode(out, grad_output, dtype, device)[1], "the gradients flowing in, for --grad-output"
    else:
        weights = torch.ones_like(out)
        seed = "the gradients flowing in, from the output's gradient 1" + (
            "" if out.numel() == 1 else " in every element (the sum of the Jacobian's rows)")
    grads: dict[int, np.ndarray] = {}
    handles = []
    for fn in walk_dag(out.grad_fn)[0]:
        def hook(grad_outputs: Any, key: int = id(fn)) -> None:
            if grad_outputs and grad_outputs[0] is not None:
                grads[key] = _to_numpy(grad_outputs[0])
        handles.append(fn.register_prehook(hook))
    try:
        out.backward(weights)
    finally:
        for handle in handles:
            handle.remove()
    return grads, seed


def non_finite_error(program: Program, index: int, value: Any, where: str) -> InputError:
    """Bad input: statement `index` is nan or inf at the given point."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(
        value if isinstance(value, float) else _to_numpy(value))
    kind = "nan" if np.isnan(arr).any() else "inf"
    statement = program.statements[index]
    what = f"'{statement.target}'" if statement.target else "the expression"
    return InputError(f"{what} is {kind} at this point (in {where}): {statement.text}; choose values "
                      "inside the domain of every function", program.source, statement.span.line,
                      statement.span.col, statement.span.end_col)


def _mode(out: Any, grad_output: np.ndarray | None, dtype: Any, device: str) -> tuple[Mode, Any]:
    import torch

    shape = tuple(out.shape)
    if grad_output is not None:
        if tuple(grad_output.shape) != shape:  # as out.backward(gradient=g) refuses, never reshaped
            raise InputError(f"--grad-output has shape {list(grad_output.shape)} but the output has shape "
                             f"{list(shape)}; give a gradient of the output's own shape, as "
                             f"out.backward(gradient=g) needs (e.g. {_ones_spec(shape)})")
        weights = torch.tensor(grad_output, dtype=dtype, device=device)
        return Mode.VJP, weights
    if out.numel() == 1:
        return Mode.GRADIENT, torch.ones_like(out)
    return Mode.JACOBIAN, None


def _ones_spec(shape: tuple[int, ...]) -> str:
    """A SPEC of ones with this shape, for messages."""
    return "1" if not shape else f"ones({','.join(map(str, shape))})"


def _jacobian_size(out: Any, targets: list[Any]) -> int:
    return out.numel() * sum(t.numel() for t in targets)


def _jacobian(out: Any, targets: list[Any]) -> list[np.ndarray]:
    """Row by row: d out[i] / d target, stacked to shape out.shape + target.shape."""
    import torch

    total = _jacobian_size(out, targets)
    if total > MAX_JACOBIAN_ELEMENTS:
        raise InputError(f"the full Jacobian would have {total:,} elements; pass --grad-output to check "
                         "a vector-Jacobian product instead, reduce the output (e.g. .sum()), or use --fast")
    if out.numel() == 0:  # an empty output has an empty Jacobian
        return [np.zeros(tuple(out.shape) + tuple(t.shape)) for t in targets]
    # rows of the identity a chunk at a time, written into the final layout: no n×n identity, and the
    # batched backward's temporaries stay small (a fresh 72 MB array costs as much to touch as to fill)
    n = out.numel()
    jacobians = [np.empty((n, *t.shape)) for t in targets]
    chunk = max(1, min(n, JACOBIAN_CHUNK_BYTES // (8 * (n + sum(t.numel() for t in targets)))))
    eye = torch.zeros((chunk, n), dtype=out.dtype, device=out.device)
    for lo in range(0, n, chunk):
        rows = min(chunk, n - lo)
        weights = eye[:rows]
        weights.zero_()
        weights[torch.arange(rows), torch.arange(lo, lo + rows)] = 1
        for jac, part in zip(jacobians, _batched_vjp(out, targets, weights.reshape((rows, *out.shape)))):
            jac[lo:lo + rows] = part
    return [j.reshape(tuple(out.shape) + tuple(t.shape)) for j, t in zip(jacobians, targets)]


def _weighted_sums(out: Any, targets: list[Any], weights: Any) -> list[np.ndarray]:
    """A few VJPs, one backward each, as gradients of the scalars Σ weights[r]·out: the same numbers as
    grad_outputs=weights[r] (the products are exact), without torch's one-time import of sympy that a
    tensor grad_outputs costs in a fresh process. Arrays of shape (k, *target.shape)."""
    import torch

    rows: list[list[np.ndarray]] = [[] for _ in targets]
    for w in weights:
        grads = torch.autograd.grad((out * w).sum(), targets, retain_graph=True, allow_unused=True)
        for k, (g, t) in enumerate(zip(grads, targets)):
            rows[k].append(_to_numpy(g) if g is not None else np.zeros(tuple(t.shape)))
    return [np.stack(r) for r in rows]


def _batched_vjp(out: Any, targets: list[Any], weights: Any) -> list[np.ndarray]:
    """One VJP per row of `weights` (shape (k, *out.shape)): arrays of shape (k, *target.shape)."""
    import torch

    from .batched_grad import grads_batched

    try:  # every row at once (vmap over the backward); custom Functions may not support it
        grads = grads_batched(out, targets, weights)
        return [_to_numpy(g) if g is not None else np.zeros((weights.shape[0], *t.shape))
                for g, t in zip(grads, targets)]
    except (RuntimeError, NotImplementedError):
        pass
    rows: list[list[np.ndarray]] = [[] for _ in targets]
    for w in weights:
        grads = torch.autograd.grad(out, targets, grad_outputs=w, retain_graph=True, allow_unused=True)
        for k, (g, t) in enumerate(zip(grads, targets)):
            rows[k].append(_to_numpy(g) if g is not None else np.zeros(tuple(t.shape)))
    return [np.stack(r) if r else np.zeros((0, *t.shape)) for r, t in zip(rows, targets)]
