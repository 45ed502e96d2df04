"""One walker for the IR, over either backend: torch (autograd) or numpy (the numeric engine).

A backend decides how an op row is applied to its values; the walker only walks. Numbers in the
expression stay Python floats until an op needs a tensor, so `x**2` records PowBackward0 as in
plain PyTorch and a numpy array's batch axis is never disturbed by a literal.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from .errors import InputError
from .ops import Group, Kind, OpSpec
from .parse import Call, Name, Node, Num, Program, Statement, _arg_nodes


class Backend:
    """How ops are applied: subclasses say how numbers become tensors and how rows are called.

    Values with no history (detach(), comparisons, assignments under no_grad) are *held*: `hold`
    computes one at the point and keeps it, keyed by its node or statement, so a numeric re-run with
    a perturbed input sees the same constant; `shift` is the same for an in-place change made with no
    history (under no_grad, or through x.data): the name keeps its own dependence, plus a held offset.
    """

    name = "backend"

    def lift(self, number: float) -> Any:
        raise NotImplementedError

    def apply(self, spec: OpSpec, args: list[Any]) -> Any:
        raise NotImplementedError

    def hold(self, key: Any, compute: Callable[[], Any]) -> Any:
        raise NotImplementedError

    def shift(self, key: Any, current: Any, compute: Callable[[], Any]) -> Any:
        raise NotImplementedError

    def has_held(self, key: Any) -> bool:
        """Whether `key`'s value is held already, so its subtree need not be walked."""
        return False

    def data(self, value: Any) -> Any:
        """What `x.data` hands an in-place change (torch: the same memory, no history)."""
        return value


class TorchBackend(Backend):
    """Plain torch tensors on one dtype and device; autograd records the graph."""

    name = "torch"

    def __init__(self, dtype: Any, device: Any = "cpu"):
        self.dtype = dtype
        self.device = device

    def lift(self, number: float) -> Any:
        import torch
        return torch.tensor(number, dtype=self.dtype, device=self.device)

    def apply(self, spec: OpSpec, args: list[Any]) -> Any:
        return spec.torch(*args)

    def hold(self, key: Any, compute: Callable[[], Any]) -> Any:
        import torch
        with torch.no_grad():
            return compute()

    def shift(self, key: Any, current: Any, compute: Callable[[], Any]) -> Any:
        import torch
        with torch.no_grad():
            result = compute()
        return current if isinstance(current, torch.Tensor) else result

    def data(self, value: Any) -> Any:
        return value.data if hasattr(value, "data") else value


class NumpyBackend(Backend):
    """Batched numpy arrays: axis 0 holds perturbations, the rest is the logical tensor.

    `held` maps each held node or statement (by id) to its value at the unperturbed point, recorded
    on the first (unperturbed) walk: perturbations never flow through a stop-gradient.
    """

    name = "numpy"

    def __init__(self, held: dict[int, np.ndarray] | None = None):
        self.held = {} if held is None else held
        self.recording = held is None

    def lift(self, number: float) -> np.ndarray:
        return np.full((1,), number)

    def apply(self, spec: OpSpec, args: list[Any]) -> Any:
        if spec.group is Group.ELEMENTWISE:
            arrays = [a for a in args if isinstance(a, np.ndarray)]
            if len(arrays) > 1:
                rank = max(a.ndim for a in arrays)
                args = [_grow(a, rank) if isinstance(a, np.ndarray) else a for a in args]
        return spec.numpy(*args)

    def hold(self, key: Any, compute: Callable[[], Any]) -> Any:
        if self.recording:
            self.held[id(key)] = compute()
        return self.held[id(key)]

    def shift(self, key: Any, current: Any, compute: Callable[[], Any]) -> Any:
        if self.recording:
            self.held[id(key)] = np.asarray(compute()) - current
        return current + self.held[id(key)]

    def has_held(self, key: Any) -> bool:
        return not self.recording and id(key) in self.held


def _grow(x: np.ndarray, rank: int) -> np.ndarray:
    """Insert unit axes after the batch axis up to `rank`, so numpy broadcasts as torch does."""
    return x.reshape(x.shape[:1] + (1,) * (rank - x.ndim) + x.shape[1:])


# Shape errors and the like surface from torch/numpy as these; they are the user's input, not a bug.
_OP_ERRORS = (RuntimeError, ValueError, IndexError, TypeError)


class Walker:
    """Evaluates a Program's statements over one backend."""

    def __init__(self, program: Program, table: Mapping[str, OpSpec], backend: Backend,
                 observe: Callable[[Call, list[Any]], None] | None = None):
        self.program = program
        self.table = table
        self.backend = backend
        self.observe = observe  # sees every op call's node and arguments (custom-op inspection)

    def run(self, env: dict[str, Any], start: int = 0,
            on_statement: Callable[[int, Any], None] | None = None, stop: int | None = None) -> Any:
        """Run statements [start, stop), binding assignments into `env`; return the last value."""
        value = None
        for index in range(start, len(self.program.statements) if stop is None else stop):
            statement = self.program.statements[index]
            value = self.statement(statement, env)
            if statement.target is not None:
                env[statement.target] = value
            if on_statement is not None:
                on_statement(index, value)
        return value

    def statement(self, statement: Statement, env: dict[str, Any]) -> Any:
        """One statement's value: what its target is bound to (in place: the changed value)."""
        if statement.inplace and statement.untracked:
            current = env[statement.target]

            def change() -> Any:
                local = dict(env)
                local[statement.target] = self.backend.data(current) if statement.data else current
                return self.node(statement.value, local)
            return self.backend.shift(statement, current, change)
        if statement.untracked:
            return self.backend.hold(statement, lambda: self.node(statement.value, env))
        return self.node(statement.value, env)

    def rerun(self, env: dict[str, Any], start: int, node: Call | None = None, fallback: Any = None) -> Any:
        """The output, re-run from statement `start` over `env` (or the value of `node`, a node of the
        last statement); `fallback` when no statement is left to run (the perturbed name is the output)."""
        if node is not None:
            self.run(env, start, stop=len(self.program.statements) - 1)
            return self.node(node, env)
        if start < len(self.program.statements):
            return self.run(env, start)
        return fallback

    def node(self, root: Node, env: dict[str, Any]) -> Any:
        """The value of an expression tree, by iteration (a sum of 10,000 terms is 10,000 levels deep)."""
        if isinstance(root, Num):
            return root.value
        if isinstance(root, Name):
            return env[root.id]
        done: dict[int, Any] = {}
        stack: list[Call] = [root]
        while stack:
            current = stack[-1]
            spec = self.table[current.op]
            if spec.group is Group.STOP_GRADIENT and self.backend.has_held(current):
                done[id(current)] = self.backend.hold(current, _never)
                stack.pop()
                continue
            pending = [c for c in _arg_nodes(current) if isinstance(c, Call) and id(c) not in done]
            if pending:
                stack.extend(reversed(pending))
                continue
            stack.pop()
            done[id(current)] = self.call(current, env, done)
        return done[id(root)]

    def _value(self, a: Any, env: dict[str, Any], done: dict[int, Any]) -> Any:
        """An argument's value. A method, not a closure: a recursive closure is a reference cycle that
        kept every intermediate (`done`, and the perturbed batch in `env`) alive until the next garbage
        collection, several batches of a projected check at once."""
        if isinstance(a, Call):
            return done[id(a)] if id(a) in done else self.node(a, env)
        if isinstance(a, (Num, Name)):
            return self.node(a, env)
        if isinstance(a, tuple):
            return tuple(self._value(item, env, done) for item in a)
        return a

    def call(self, node: Call, env: dict[str, Any], done: dict[int, Any] | None = None) -> Any:
        spec = self.table[node.op]
        done = {} if done is None else done
        args = [self._value(a, env, done) for a in node.args]
        tensors = [i for i, p in enumerate(spec.params) if p.kind is Kind.TENSOR]
        if all(isinstance(args[i], float) for i in tensors) and spec.scalars and tensors:
            return _fold(spec, args)
        if not spec.scalars:
            lift = self.backend.lift
            args = [lift(a) if i in tensors and isinstance(a, float) else a for i, a in enumerate(args)]
            args = [[lift(t) if isinstance(t, float) else t for t in a]
                    if spec.params[i].kind is Kind.TENSORS else a for i, a in enumerate(args)]
        if spec.group is Group.STOP_GRADIENT:
            return self.backend.hold(node, lambda: self.backend.apply(spec, args))
        if self.observe is not None:
            self.observe(node, args)
        try:
            return self.backend.apply(spec, args)
        except InputError as err:
            raise err.located(self.program.source, node.span) from None
        except RecursionError:
            raise
        except _OP_ERRORS as err:
            message = explain_refusal(str(err), node) if spec.mutates else None
            raise InputError(message or f"{spec.name}: {_first_line(err)}", self.program.source, node.span.line,
                             node.span.col, node.span.end_col) from None
        except Exception as err:  # a plugin's own code raised something else: its message, not a traceback
            if spec.origin is None:
                raise
            raise InputError(f"{spec.name} (from {spec.origin}) raised {type(err).__name__}: {_first_line(err)}",
                             self.program.source, node.span.line, node.span.col, node.span.end_col) from None


def _never() -> Any:
    raise AssertionError("a held value is read before it was recorded")


def explain_refusal(text: str, node: Call) -> str | None:
    """torch's refusal of an in-place change, in plain words with the fix (None: not one of those)."""
    target = node.args[0].id if node.args and isinstance(node.args[0], Name) else "the tensor"
    if "leaf Variable that requires grad is being used in an in-place operation" in text:
        through = " (this writes into a part of it)" if text.startswith("a view of") else ""
        return (f"torch refuses to change '{target}' in place: it is a leaf that requires grad{through}, and "
                f"autograd needs it as given. Change a copy instead ({target}2 = {target}.clone(), then change "
                f"{target}2), or hold '{target}' constant with --wrt")
    if "is a view and" in text and "modified inplace" in text:
        return (f"torch refuses to change '{target}' in place: it is a view whose gradient torch cannot "
                f"rewrite ({_first_line_of(text)}); clone() it first")
    return None


def _first_line_of(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else text


def _fold(spec: OpSpec, args: list[Any]) -> float:
    """An op on numbers alone, in float64 with IEEE semantics (2.0**2000 is inf, not an exception)."""
    with np.errstate(all="ignore"):
        return float(spec.numpy(*(np.float64(a) for a in args)))


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def is_finite(value: Any) -> bool:
    """True when every element of a value (number, array or tensor) is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, tuple):  # an op with several outputs
        return all(is_finite(v) for v in value)
    if hasattr(value, "isfinite"):  # torch tensor
        return bool(value.isfinite().all())
    return bool(np.all(np.isfinite(value)))
