"""Custom ops: load a plugin file or module, validate OPS / NUMPY_OPS, extend a copy of the table.

A plugin defines `OPS = {"name": callable}` (torch tensors in, a tensor out; e.g. `MyFn.apply`) and
optionally `NUMPY_OPS = {"name": callable}` (numpy in and out) for the numeric engine. Without a
numpy version the numeric engine calls the torch callable in float64 with autograd off. Optional:
`ELEMENTWISE = {"name", ...}` declares ops that act element by element (they are then evaluated on a
whole batch of perturbations at once); `ARITY = {"name": n}` when the signature cannot be read.

An op's parameters are read from its signature (a Function's `forward`, without ctx): each may be a
tensor expression or a literal (`myop(x, 1e-6)`, `myop(x, 2, True)`), which reaches the op as the
Python value it is (as a constant tensor where the parameter is annotated `torch.Tensor`) and never
requires grad; parameters with a default may be left out, and then are
not passed at all. An op with several outputs returns a tuple, indexed in the expression: `f(x)[0]`.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .errors import InputError
from .ops import Group, Kind, OpSpec, Param

_LOADED: dict[str, ModuleType] = {}


def load_module(ref: str, base_dir: str | None = None) -> ModuleType:
    """A plugin by file path (FILE.py, relative to base_dir if given) or by module name."""
    is_file = ref.endswith(".py") or os.sep in ref or "/" in ref
    path = os.path.join(base_dir, ref) if is_file and base_dir and not os.path.isabs(ref) else ref
    key = os.path.abspath(path) if is_file else ref
    if key in _LOADED:
        return _LOADED[key]
    try:
        if is_file:
            if not os.path.isfile(path):
                raise InputError(f"plugin file not found: {path}")
            name = "gradcheck_plugin_" + hashlib.sha1(key.encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise InputError(f"cannot load plugin {path}: not a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(ref)
    except InputError:
        raise
    except Exception as err:  # the plugin's own code failed: report it as the user's input
        raise InputError(f"plugin {ref} failed to load: {type(err).__name__}: {err}") from None
    _LOADED[key] = module
    return module


class Omitted:
    """An optional argument the expression left out. It is not passed, so the op's own default
    applies and a Function's backward returns as many gradients as the user's own call would need."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:  # shown in signatures as the default itself
        return repr(self.value)


def present(args: Iterable[Any]) -> list[Any]:
    """The arguments as the op is called: trailing omitted ones dropped, inner ones at their defaults."""
    args = list(args)
    while args and isinstance(args[-1], Omitted):
        args.pop()
    return [a.value if isinstance(a, Omitted) else a for a in args]


def function_class(fn: Any) -> type | None:
    """The torch.autograd.Function subclass whose .apply `fn` is (unwrapped), else None."""
    owner = getattr(getattr(fn, "__wrapped__", fn), "__self__", None)
    if inspect.isclass(owner) and hasattr(owner, "forward") and hasattr(owner, "backward"):
        return owner
    return None


def takes_ctx(cls: type) -> bool:
    """Whether cls.forward takes ctx first (the classic style), not inputs alone with setup_context."""
    import torch
    return getattr(cls, "setup_context", None) is getattr(torch.autograd.Function, "setup_context", None)


def _params(name: str, fn: Callable, declared: Mapping[str, int]) -> tuple[Param, ...]:
    """The op's parameters, read from its signature (a Function's forward, without ctx).

    Every positional parameter may be a tensor expression or a literal (`myop(x, 1e-6, True)`), so
    each is Kind.ANY; those with a default may be left out.
    """
    if name in declared:
        count = int(declared[name])
        return tuple(Param(f"x{i}" if count > 1 else "x", Kind.ANY) for i in range(count))
    cls = function_class(fn)
    target = cls.forward if cls is not None else fn
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        raise InputError(f"plugin op '{name}': cannot read its signature; declare ARITY = {{'{name}': n}}") from None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        raise InputError(f"plugin op '{name}' takes *args; declare ARITY = {{'{name}': n}}")
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if cls is not None and takes_ctx(cls):
        positional = positional[1:]
    return tuple(Param(p.name, _kind(p.annotation)) if p.default is p.empty else
                 Param(p.name, _kind(p.annotation), Omitted(p.default)) for p in positional)


def _kind(annotation: Any) -> Kind:
    """A parameter annotated as a tensor takes a literal as a constant tensor (what the op expects);
    any other takes it as the Python value it is."""
    if isinstance(annotation, str):
        return Kind.TENSOR if annotation in ("Tensor", "torch.Tensor") else Kind.ANY
    is_tensor = getattr(annotation, "__name__", None) == "Tensor" and getattr(annotation, "__module__", "") == "torch"
    return Kind.TENSOR if is_tensor else Kind.ANY


def _call_present(fn: Callable, name: str) -> Callable:
    """The torch callable, called with the arguments the expression gave (see `present`)."""
    def run(*args: Any) -> Any:
        given = present(args)
        try:
            return fn(*given)
        except RuntimeError as err:
            if "leaf Variable that requires grad" in str(err):
                raise InputError(f"{name} modifies its input in place (ctx.mark_dirty), and torch refuses that "
                                 "for an input that requires grad; pass a computed tensor instead, e.g. "
                                 f"{name}(1 * x)") from None
            raise
        except (TypeError, AttributeError) as err:
            numbers = [a for a in given if isinstance(a, (int, float)) and not isinstance(a, bool)]
            if not numbers:
                raise
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            which = ", ".join(f"{a!r} as a Python {type(a).__name__}" for a in numbers)
            raise InputError(f"{name}: {text} (literals reach the op as Python numbers, as in Python: {which}; "
                             "where it needs a tensor, pass a variable instead, -v NAME=VALUE, with --wrt naming "
                             "the others to hold it constant)") from None
    run.__wrapped__ = fn
    return run


def _to_torch(value: Any) -> Any:
    """A numpy argument as a float64 tensor (a copy: an in-place op must not write into the engine's
    arrays); integer and boolean arrays keep their dtype (indices); anything else as it is."""
    import torch
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype.kind in "iub":
        return torch.tensor(value)
    return torch.tensor(value, dtype=torch.float64)


def _to_numpy(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return tuple(_to_numpy(v) for v in value)
    if hasattr(value, "detach"):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _torch_in_float64(fn: Callable) -> Callable:
    """The numeric engine's fallback: the torch callable in float64, autograd off, numpy in/out."""
    def run(*args: Any) -> Any:
        import torch
        with torch.no_grad():
            return _to_numpy(fn(*(_to_torch(a) for a in args)))
    return run


def _float64(value: Any) -> Any:
    """An op's output (one array, or a tuple of them for several outputs) as float64 arrays."""
    if isinstance(value, (tuple, list)):
        return tuple(np.asarray(v, dtype=np.float64) for v in value)
    return np.asarray(value, dtype=np.float64)


def _batched(fn: Callable, whole_batch: bool, user_numpy: bool) -> Callable:
    """Adapt an unbatched numpy function to batched arrays (axis 0 = perturbations).

    Literal arguments pass through as the Python values they are; arrays are copies, so an op that
    writes into its inputs cannot change the engine's values. Several outputs stay a tuple.
    """
    def run(*args: Any) -> Any:
        args = [a.copy() if isinstance(a, np.ndarray) else a for a in present(args)]
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        if any(np.iscomplexobj(a) for a in arrays):
            raise ValueError("plugin ops do not support complex step; use --method richardson")
        if whole_batch:
            return _float64(fn(*args))
        size = max((a.shape[0] for a in arrays), default=1)
        rows = [_float64(fn(*(np.asarray(a[i if a.shape[0] > 1 else 0]) if isinstance(a, np.ndarray) else a
                              for a in args)))
                for i in range(size)]
        if isinstance(rows[0], tuple):
            return tuple(np.stack([r[k] for r in rows]) for k in range(len(rows[0])))
        return np.stack(rows)
    run.user_numpy = user_numpy  # the plugin gave its own numpy forward (custom.py compares the two)
    return run


def plugin_rows(module: ModuleType, ref: str, taken: Iterable[str] = ()) -> list[OpSpec]:
    """Validate a plugin module's OPS / NUMPY_OPS and build table rows; `taken` names may not be reused."""
    ops = getattr(module, "OPS", None)
    if ops is None and hasattr(module, "OPTIMIZERS"):  # an optimizer plugin (gradcheck step) needs no ops
        return []
    if not isinstance(ops, dict) or not ops:
        raise InputError(f"plugin {ref} defines no OPS dict; add OPS = {{'name': callable}}")
    clash = sorted(set(ops) & set(taken))
    if clash:
        raise InputError(f"plugin {ref}: '{clash[0]}' is a built-in function; give the op another name")
    numpy_ops = getattr(module, "NUMPY_OPS", {}) or {}
    elementwise = set(getattr(module, "ELEMENTWISE", ()) or ())
    declared = getattr(module, "ARITY", {}) or {}
    if not isinstance(numpy_ops, dict):
        raise InputError(f"plugin {ref}: NUMPY_OPS must be a dict of name → callable")
    for name in list(numpy_ops) + list(elementwise):
        if name not in ops:
            raise InputError(f"plugin {ref}: '{name}' is in NUMPY_OPS or ELEMENTWISE but not in OPS")
    return [_row(name, fn, numpy_ops.get(name), name in elementwise, declared.get(name), ref)
            for name, fn in ops.items()]


def _row(name: Any, fn: Any, numpy_fn: Any, elementwise: bool, arity: int | None, ref: str) -> OpSpec:
    """One custom op as a table row (file plugins and the @custom_op decorator share this)."""
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise InputError(f"plugin {ref}: op name {name!r} must be an identifier not starting with '_'")
    if not callable(fn) or (numpy_fn is not None and not callable(numpy_fn)):
        raise InputError(f"plugin {ref}: '{name}' is not callable")
    params = _params(name, fn, {name: arity} if arity is not None else {})
    numeric = numpy_fn or _torch_in_float64(fn)
    source = "its numpy version" if numpy_fn is not None else "the torch op in float64"
    return OpSpec(name=name, params=params, torch=_call_present(fn, name),
                  numpy=_batched(numeric, elementwise, numpy_fn is not None),
                  group=Group.ELEMENTWISE if elementwise else Group.CUSTOM,
                  doc=f"custom op from {ref} (numeric side: {source})", complex_ok=False, origin=ref)


# Ops registered from Python with @custom_op; every check sees them, as if given with --plugin.
REGISTERED: dict[str, OpSpec] = {}


def custom_op(name: str, numpy: Callable | None = None, elementwise: bool = False,
              arity: int | None = None) -> Callable:
    """Register a custom op for expressions, from Python.

    Decorates a torch.autograd.Function subclass (its .apply is used) or a function of tensors.

    Args:
        name: the function name in expressions.
        numpy: a numpy version for the numeric side (default: the torch op in float64, no autograd).
        elementwise: the op acts element by element (lets the numeric side perturb all at once).
        arity: number of arguments (tensors or literals), when the signature cannot be read.

    Example:
        @custom_op("my_softplus", elementwise=True)
        class MySoftplus(torch.autograd.Function): ...
    """
    def register(target: Any) -> Any:
        fn = target.apply if isinstance(target, type) and hasattr(target, "apply") else target
        row = _row(name, fn, numpy, elementwise, arity, "@custom_op")
        from .ops import OPS
        if name in OPS:
            raise InputError(f"@custom_op: '{name}' is a built-in function; give the op another name")
        REGISTERED[name] = row
        return target
    return register


def extend_table(table: Mapping[str, OpSpec], refs: Iterable[str], base_dir: str | None = None) -> dict[str, OpSpec]:
    """A copy of `table` with every plugin's ops added. A plugin may not redefine a built-in."""
    out = dict(table)
    for ref in refs:
        for row in plugin_rows(load_module(ref, base_dir), ref, table):
            out[row.name] = row
    return out
