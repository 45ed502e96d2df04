"""One memory budget for a whole case, checked before the case allocates.

What a check holds at its peak, roughly: the inputs; on the torch side every op's output (autograd keeps
them for backward) and as much again in gradients; the Jacobian in Jacobian mode; on the numeric side a
float64 copy of every statement's value and its batched evaluations (complex step doubles each). Shapes
come from a size walk over the program: an op whose output is bounded small (from its arguments' sizes,
before it runs) runs on zero-valued CPU tensors, anything larger on torch's "meta" device, which computes
shapes and allocates nothing. Small programs never touch meta: its kernels cost ~0.1 ms an op and their
first use imports torch._dynamo (about 2 s, the whole of a cold check). Plugin code is never run for this
(it may not support meta tensors, and it runs once per check): with plugin ops only the inputs are counted.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from .errors import InputError
from .evaluate import TorchBackend, Walker
from .ops import Group, OpSpec
from .parse import Program

MB = 2**20
_TORCH_FACTOR = 2     # each op output, and its gradient during backward
_NUMERIC_FACTOR = 4   # a batched row: every value several times over for temporaries (numeric.py's row_bytes)
_COMPLEX = 2          # complex step evaluates in complex128
_PROBES = 16          # evaluations a numeric method makes per column, about (Richardson's levels, both sides)
_DIRECTIONS = 16      # a projected check's default directions
SMALL_OP = 1 << 16    # elements an op's output may be bounded by to run on CPU in the size walk
SMALL_WALK = 1 << 20  # elements the walk may hold on CPU in all, before every further op runs on meta


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Bytes a case needs at its peak, by part."""

    inputs: int
    torch: int = 0
    jacobian: int = 0
    numeric: int = 0
    largest: tuple[str, int] | None = None  # the statement with the largest single value, and its bytes
    numeric_chunk: int = 256 * 2**20       # bytes one batched numeric evaluation may use within the budget
    # elements of each statement's value, in order (from the meta walk); None where shapes are unknown
    # before running plugin code (plan.py then decides from the inputs alone)
    statements: tuple[int, ...] | None = None

    @property
    def total(self) -> int:
        return self.inputs + self.torch + self.jacobian + self.numeric


def size_text(count: float) -> str:
    """Bytes for people: 7.2 GB, 480 MB, 12 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} bytes"


def input_bytes(elements: int, itemsize: int = 8) -> int:
    """The least an input element costs a check: its float64 value, the numeric side's copy, and the
    torch leaf with its gradient."""
    return elements * (8 + 8 + 2 * itemsize)


def check_inputs(used_bytes: int, name: str, elements: int, max_memory_mb: int, itemsize: int = 8) -> None:
    """Refuse an input that would take the case's inputs past the budget (before it is made)."""
    total = used_bytes + input_bytes(elements, itemsize)
    if total > max_memory_mb * MB:
        raise InputError(f"the inputs alone would need {size_text(total)} ({name}: {elements:,} elements at "
                         f"{input_bytes(1, itemsize)} bytes each in a check); the memory limit "
                         f"for one case is {max_memory_mb:,} MB: use smaller inputs, or raise it with --max-memory")


def estimate(program: Program, table: Mapping[str, OpSpec], inputs: Mapping[str, np.ndarray],
             wrt: tuple[str, ...], itemsize: int, jacobian: bool, max_bytes: int) -> Estimate:
    """What the whole case will need; `jacobian`: the output may be checked as a full Jacobian."""
    held = input_bytes(sum(int(np.size(v)) for v in inputs.values()), itemsize)
    if any(table[op].origin is not None for op in program.ops):
        return Estimate(held)
    shapes = _meta_sizes(program, table, inputs)
    if shapes is None:  # torch refuses the program: the real run will say why, with a caret
        return Estimate(held)
    op_elements, statements = shapes
    statement_elements = sum(n for _, n in statements)
    out_elements = statements[-1][1] if statements else 0
    torch_bytes = _TORCH_FACTOR * itemsize * op_elements
    jacobian_bytes = 0
    if jacobian and out_elements > 1:
        targets = sum(int(np.size(inputs[n])) for n in wrt) + sum(n for t, n in statements[:-1] if t)
        from .analytic import MAX_JACOBIAN_ELEMENTS
        jacobian_bytes = 3 * 8 * min(out_elements * targets, MAX_JACOBIAN_ELEMENTS)  # torch, numpy, errors
    from .numeric import MEMORY_BUDGET
    row = 8 * _COMPLEX * _NUMERIC_FACTOR * (sum(int(np.size(v)) for v in inputs.values()) + op_elements)
    rows = _PROBES * max(sum(int(np.size(inputs[n])) for n in wrt), _DIRECTIONS)  # a full check's probes
    # the numeric engine evaluates in batches of at most `chunk` bytes (one row at least): what is left
    chunk = int(min(MEMORY_BUDGET, max(MB, max_bytes - held - torch_bytes - jacobian_bytes - 8 * statement_elements)))
    numeric_bytes = 8 * statement_elements + min(max(chunk, row), row * rows)
    largest = max(statements, key=lambda s: s[1], default=None)
    return Estimate(held, torch_bytes, jacobian_bytes, numeric_bytes,
                    None if largest is None else (largest[0], 8 * largest[1]), chunk,
                    tuple(n for _, n in statements))


def check_case(program: Program, table: Mapping[str, OpSpec], inputs: Mapping[str, np.ndarray],
               wrt: tuple[str, ...], itemsize: int, jacobian: bool, max_memory_mb: int) -> Estimate:
    """Refuse a case whose estimate is over the budget, naming what to do. Raises InputError."""
    need = estimate(program, table, inputs, wrt, itemsize, jacobian, max_memory_mb * MB)
    if need.total <= max_memory_mb * MB:
        return need
    parts = [f"{what} {size_text(n)}" for what, n in (
        ("inputs", need.inputs), ("autograd", need.torch), ("Jacobian", need.jacobian),
        ("numeric side", need.numeric)) if n]
    if need.jacobian > need.total / 2:
        fix = "use --fast (a projected check), pass --grad-output, or raise it with --max-memory"
    else:
        fix = "use smaller inputs, or raise it with --max-memory"
    where = ""
    if need.largest is not None and need.largest[1] > need.inputs:
        where = f"; the largest value is {need.largest[0]} ({size_text(need.largest[1])})"
    raise InputError(f"this check would need about {size_text(need.total)} ({', '.join(parts)}){where}; "
                     f"the memory limit for one case is {max_memory_mb:,} MB: {fix}")


def _meta_sizes(program: Program, table: Mapping[str, OpSpec],
                inputs: Mapping[str, np.ndarray]) -> tuple[int, list[tuple[str, int]]] | None:
    """(elements of every op output, [(statement, elements)]) from the size walk (see the module doc)."""
    backend = _Counting()
    env: dict[str, Any] = {name: backend.blank(np.shape(v)) for name, v in inputs.items()}
    statements: list[tuple[str, int]] = []

    def record(index: int, value: Any) -> None:
        statement = program.statements[index]
        label = f"'{statement.target}'" if statement.target else "the output"
        statements.append((label, _numel(value)))

    try:
        Walker(program, table, backend).run(env, on_statement=record)
    except Exception:  # noqa: BLE001 - an estimate only: whatever the walk trips on, the real run reports
        return None
    return backend.elements, statements


class _Counting(TorchBackend):
    """Torch on zero-valued CPU tensors while outputs are bounded small, on the meta device otherwise,
    adding up the elements every op produces.

    A bound on an op's output (and its temporaries), known from its group before it runs, decides where
    it runs: the broadcast of its tensor arguments' shapes for arithmetic, reductions and softmax; their
    sum for shape ops (indexing takes ints and slices only); otherwise (matmul) the product of their
    sizes plus their sum.
    """

    def __init__(self) -> None:
        import torch
        super().__init__(torch.float64, "cpu")
        self.elements = 0
        self.held = 0  # elements made on CPU so far

    def blank(self, shape: tuple[int, ...]) -> Any:
        import torch
        n = int(np.prod(shape, dtype=object))
        device = "cpu" if n <= SMALL_OP and self.held + n <= SMALL_WALK else "meta"
        self.held += n if device == "cpu" else 0
        return torch.zeros(shape, dtype=torch.float64, device=device)

    def apply(self, spec: OpSpec, args: list[Any]) -> Any:
        bound = _bound(spec, args)
        if bound <= SMALL_OP and self.held + bound <= SMALL_WALK and not _on_meta(args):
            out = super().apply(spec, args)
        elif spec.group in _ELEMENTWISE and not any(isinstance(a, (tuple, list)) for a in args):
            out = self._elementwise(spec, args)
        else:
            out = super().apply(spec, [_to_meta(a) for a in args])
        n = _numel(out)
        self.elements += n
        if not _on_meta([out]):
            self.held += n
        return out

    def _elementwise(self, spec: OpSpec, args: list[Any]) -> Any:
        """A large elementwise op without running it: its dtype from the op on 0-d CPU stand-ins, its shape
        the broadcast of its arguments' (meta kernels for arithmetic run in Python and import
        torch._dynamo on first use)."""
        import torch
        stand_ins = [torch.zeros((), dtype=a.dtype) if hasattr(a, "is_meta") else a for a in args]
        dtype = super().apply(spec, stand_ins).dtype
        shape = np.broadcast_shapes(*(tuple(a.shape) for a in args if hasattr(a, "is_meta")))
        return torch.empty(shape, dtype=dtype, device="meta")


_ELEMENTWISE = (Group.ELEMENTWISE, Group.STOP_GRADIENT)
_BROADCAST = (*_ELEMENTWISE, Group.REDUCTION, Group.ALONG_DIM)


def _bound(spec: OpSpec, args: list[Any]) -> int:
    shapes = list(_shapes(args))
    sizes = [math.prod(s) for s in shapes]
    if spec.group is Group.SHAPE:
        return sum(sizes)
    if spec.group in _BROADCAST:
        try:
            return math.prod(np.broadcast_shapes(*shapes)) if shapes else 1
        except ValueError:
            pass  # torch says why in the real run
    return math.prod(max(n, 1) for n in sizes) + sum(sizes)


def _shapes(value: Any):
    if isinstance(value, (tuple, list)):
        for v in value:
            yield from _shapes(v)
    elif hasattr(value, "numel"):
        yield tuple(value.shape)


def _on_meta(values: Any) -> bool:
    return any(_on_meta(v) if isinstance(v, (tuple, list)) else getattr(v, "is_meta", False) for v in values)


def _to_meta(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return type(value)(_to_meta(v) for v in value)
    return value.to("meta") if hasattr(value, "is_meta") and not value.is_meta else value


def _numel(value: Any) -> int:
    if isinstance(value, (tuple, list)):
        return sum(_numel(v) for v in value)
    return int(value.numel()) if hasattr(value, "numel") else 1
