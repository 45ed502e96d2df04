"""Jacobian structure from the expression tree, for column compression in the numeric engine.

With respect to one input x, every value is one of:
- CONST: does not depend on x (or only through detach);
- ALIGNED: element o depends on x only through x broadcast to the value's shape, element by
  element — so the Jacobian has one nonzero per row, and every element of x can be perturbed at once;
- DENSE: anything else (reductions, matmul, softmax, reshapes, plugin ops not declared elementwise).

`plan()` says how to differentiate a program's output: CONST output → zero; ALIGNED output → perturb
everything at once;
output = sum/mean over an ALIGNED value → the same, contracted with the reduction's weights;
otherwise column by column.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping

import numpy as np

from .evaluate import Backend, Walker
from .ops import Group, OpSpec
from .parse import Call, Program


class Struct(enum.IntEnum):
    CONST = 0
    ALIGNED = 1
    DENSE = 2


@dataclasses.dataclass(frozen=True)
class Plan:
    """How the numeric engine differentiates the output with respect to one variable."""

    kind: str                       # "zero" | "aligned" | "reduced" | "dense"
    inner: Call | None = None       # for "reduced": the ALIGNED argument of the final sum/mean
    reduce_op: str | None = None    # "sum" | "mean"
    dim: Any = None
    keepdim: bool = False


class _StructBackend(Backend):
    """Values are Struct tags; shapes are not needed because ALIGNED is defined by broadcasting."""

    name = "structure"

    def lift(self, number: float) -> Struct:
        return Struct.CONST

    def apply(self, spec: OpSpec, args: list[Any]) -> Struct:
        tags = [a for a in args if isinstance(a, Struct)]
        tags += [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, Struct)]
        worst = max(tags, default=Struct.CONST)
        if worst is Struct.CONST:
            return Struct.CONST
        return worst if spec.group is Group.ELEMENTWISE else Struct.DENSE

    def hold(self, key: Any, compute: Any) -> Struct:
        return Struct.CONST

    def shift(self, key: Any, current: Any, compute: Any) -> Any:
        return current  # a change with no history adds a constant

    def has_held(self, key: Any) -> bool:
        return True


def _tag(program: Program, table: Mapping[str, OpSpec], name: str, start: int) -> tuple[dict, Walker]:
    env: dict[str, Any] = {n: Struct.CONST for n in (*program.inputs, *program.intermediates)}
    env[name] = Struct.ALIGNED
    return env, Walker(program, table, _StructBackend())


def plan(program: Program, table: Mapping[str, OpSpec], name: str, start: int) -> Plan:
    """The cheapest exact way to differentiate the output with respect to `name`."""
    if start >= len(program.statements):
        return Plan("aligned")
    env, walker = _tag(program, table, name, start)
    for index in range(start, len(program.statements) - 1):
        statement = program.statements[index]
        env[statement.target] = _scalar_safe(walker.node(statement.value, env))
    final = program.statements[-1].value
    tag = _scalar_safe(walker.node(final, env))
    if tag is Struct.CONST:  # no dependence (or only through detach): the derivative is exactly 0
        return Plan("zero")
    if tag is Struct.ALIGNED:
        return Plan("aligned")
    if isinstance(final, Call) and final.op in ("sum", "mean") and isinstance(final.args[0], Call):
        if _scalar_safe(walker.node(final.args[0], env)) is Struct.ALIGNED:
            return Plan("reduced", final.args[0], final.op, final.args[1], final.args[2])
    return Plan("dense")


def _scalar_safe(value: Any) -> Struct:
    """Numbers folded by the walker carry no dependence."""
    return value if isinstance(value, Struct) else Struct.CONST


def reduction_weights(weights: np.ndarray, inner_shape: tuple[int, ...], op: str, dim: Any,
                      keepdim: bool) -> np.ndarray:
    """d out / d inner contracted with `weights`, for out = inner.sum(dim) or inner.mean(dim)."""
    nd = len(inner_shape)
    axes = tuple(range(nd)) if dim is None else tuple(d % max(nd, 1) for d in ((dim,) if isinstance(dim, int) else dim))
    if nd == 0:
        axes = ()
    w = np.asarray(weights, dtype=np.float64)
    if not keepdim or dim is None:
        w = w.reshape([1 if i in axes else inner_shape[i] for i in range(nd)]) if nd else w.reshape(())
    w = np.broadcast_to(w, inner_shape)
    if op == "mean":
        count = int(np.prod([inner_shape[a] for a in axes])) if axes else 1
        w = w / count
    return w


def unbroadcast(values: np.ndarray, shape: tuple[int, ...], reduce: np.ufunc = np.add) -> np.ndarray:
    """Sum an array of a broadcast shape back down to `shape` (the adjoint of broadcasting); another
    ufunc (np.minimum) reduces the broadcast copies its own way."""
    extra = values.ndim - len(shape)
    out = reduce.reduce(values, axis=tuple(range(extra))) if extra > 0 else values
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and out.shape[i] != 1)
    return reduce.reduce(out, axis=axes, keepdims=True) if axes else out
