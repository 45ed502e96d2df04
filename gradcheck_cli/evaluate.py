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
from .parse import Call, Name, Node, Num, Program


class Backend:
    """How ops are applied: subclasses say how numbers become tensors and how rows are called."""

    name = "backend"

    def lift(self, number: float) -> Any:
        raise NotImplementedError

    def apply(self, spec: OpSpec, args: list[Any]) -> Any:
        raise NotImplementedError

    def detach(self, node: Call, value: Any) -> Any:
        raise NotImplementedError


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

    def detach(self, node: Call, value: Any) -> Any:
        return value.detach()


class NumpyBackend(Backend):
    """Batched numpy arrays: axis 0 holds perturbations, the rest is the logical tensor.

    `held` maps each detach() node to its value at the unperturbed point: the numeric engine holds
    a detached subexpression there, so perturbations never flow through it (a stop-gradient).
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

    def detach(self, node: Call, value: Any) -> Any:
        if self.recording:
            self.held[id(node)] = value
            return value
        return self.held[id(node)]


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
            try:
                value = self.node(statement.value, env)
            except RecursionError:  # only reachable when --max-depth was raised past what Python can walk
                raise InputError("the expression nests too deeply to evaluate; lower --max-depth",
                                 self.program.source, statement.span.line, statement.span.col,
                                 statement.span.end_col) from None
            if statement.target is not None:
                env[statement.target] = value
            if on_statement is not None:
                on_statement(index, value)
        return value

    def rerun(self, env: dict[str, Any], start: int, node: Call | None = None, fallback: Any = None) -> Any:
        """The output, re-run from statement `start` over `env` (or the value of `node`, a node of the
        last statement); `fallback` when no statement is left to run (the perturbed name is the output)."""
        if node is not None:
            self.run(env, start, stop=len(self.program.statements) - 1)
            return self.node(node, env)
        if start < len(self.program.statements):
            return self.run(env, start)
        return fallback

    def node(self, node: Node, env: dict[str, Any]) -> Any:
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Name):
            return env[node.id]
        return self.call(node, env)

    def call(self, node: Call, env: dict[str, Any]) -> Any:
        spec = self.table[node.op]
        args = [self.node(a, env) if isinstance(a, (Num, Name, Call)) else a for a in node.args]
        tensors = [i for i, p in enumerate(spec.params) if p.kind is Kind.TENSOR]
        if all(isinstance(args[i], float) for i in tensors) and spec.scalars:
            return _fold(spec, args)
        if not spec.scalars:
            args = [self.backend.lift(a) if i in tensors and isinstance(a, float) else a
                    for i, a in enumerate(args)]
        if spec.group is Group.STOP_GRADIENT:
            return self.backend.detach(node, args[0])
        if self.observe is not None:
            self.observe(node, args)
        try:
            return self.backend.apply(spec, args)
        except InputError as err:
            raise err.located(self.program.source, node.span) from None
        except RecursionError:
            raise
        except _OP_ERRORS as err:
            raise InputError(f"{spec.name}: {_first_line(err)}", self.program.source, node.span.line,
                             node.span.col, node.span.end_col) from None
        except Exception as err:  # a plugin's own code raised something else: its message, not a traceback
            if spec.origin is None:
                raise
            raise InputError(f"{spec.name} (from {spec.origin}) raised {type(err).__name__}: {_first_line(err)}",
                             self.program.source, node.span.line, node.span.col, node.span.end_col) from None


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
