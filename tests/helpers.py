"""Oracles and shared helpers for the test suite.

Every op row of `gradcheck_cli.ops.OPS` becomes an `OpCase` here: an expression, seeded points inside
the row's `domain`, and the same function written directly in torch. The oracle gradient is
`torch.autograd.functional.jacobian` of that torch function; for scalar elementwise rows there is a
second, symbolic oracle from sympy. A new row is picked up automatically when its name is a torch
function (or a sympy function); otherwise `op_cases` fails and says which oracle to add.
"""
from __future__ import annotations

import dataclasses
import json
import math
import operator
import subprocess
import sys
from typing import Any, Callable

import numpy as np
import sympy
import torch

from gradcheck_cli.ops import OPS, Group, Kind, OpSpec

# ---------------------------------------------------------------- points inside a domain


GRID_STEP = 0.1


def points(domain: tuple[float, float], shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Seeded values for several inputs at once, strictly inside `domain` and inside [-2, 2].

    Values are drawn without replacement from the grid k·0.1 + 0.05 and jittered by under 0.02, so
    any two values (across all inputs) differ by more than 0.06 and every value is more than 0.03
    from a multiple of 0.1. That keeps finite-difference steps (at most 0.02 for Richardson) from
    straddling a kink: ties of max/min/maximum, 0 for abs/relu, clamp bounds such as ±0.5. Values
    within 0.25 of 0 are left out (the pole of 1/x), and so is a 10% margin at finite bounds.
    """
    lo, hi = max(domain[0], -2.0), min(domain[1], 2.0)
    margin = 0.1 * (hi - lo)
    grid = np.arange(np.floor(lo / GRID_STEP), np.ceil(hi / GRID_STEP) + 1) * GRID_STEP + GRID_STEP / 2
    grid = grid[(grid > lo + margin) & (grid < hi - margin) & (np.abs(grid) >= 0.25)]
    sizes = [math.prod(shape) for shape in shapes.values()]
    if sum(sizes) > grid.size:
        raise ValueError(f"only {grid.size} well-separated points in {domain}; use smaller shapes")
    rng = np.random.default_rng(seed)
    drawn = rng.choice(grid, size=sum(sizes), replace=False) + rng.uniform(-0.02, 0.02, size=sum(sizes))
    out, used = {}, 0
    for (name, shape), size in zip(shapes.items(), sizes):
        out[name] = drawn[used:used + size].reshape(shape)
        used += size
    return out


# ---------------------------------------------------------------- the same functions, directly in torch

def _values(out: Any) -> torch.Tensor:
    """torch.max(x, dim) returns (values, indices); the SPEC's max(dim=) is the values alone."""
    return out.values if hasattr(out, "values") and not isinstance(out, torch.Tensor) else out


# Rows whose name is not a torch function, or which need arguments: how to write them in torch.
TORCH_DIRECT: dict[str, Callable[..., torch.Tensor]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
    "pow": operator.pow,
    "neg": operator.neg,
    "softplus": torch.nn.functional.softplus,
    "clone": torch.clone,
}

F = torch.nn.functional
_LABELS = torch.tensor([0, 2])

# Rows that cannot be written `name(x)` / `name(a, b)` / `name(x, dim=1)`: (expr, shapes, torch fn).
SPECIAL_CASES: dict[str, list[tuple[str, dict[str, tuple[int, ...]], Callable[..., torch.Tensor]]]] = {
    "clamp": [
        ("clamp(x, min=-0.5, max=0.5)", {"x": (2, 3)}, lambda x: torch.clamp(x, min=-0.5, max=0.5)),
        ("x.clamp(max=0.3)", {"x": (4,)}, lambda x: torch.clamp(x, max=0.3)),
    ],
    "matmul": [
        ("a @ b", {"a": (2, 3), "b": (3, 2)}, torch.matmul),
        ("matmul(a, b)", {"a": (3,), "b": (3, 2)}, torch.matmul),
    ],
    "reshape": [("x.reshape(3, 2)", {"x": (2, 3)}, lambda x: x.reshape(3, 2)),
                ("reshape(x, (2, -1))", {"x": (6,)}, lambda x: x.reshape(2, -1))],
    "view": [("x.view(6)", {"x": (2, 3)}, lambda x: x.view(6))],
    "flatten": [("flatten(x)", {"x": (2, 3)}, torch.flatten),
                ("flatten(x, 1)", {"x": (2, 3, 2)}, lambda x: torch.flatten(x, 1)),
                ("x.flatten(0, 1)", {"x": (2, 2, 2)}, lambda x: x.flatten(0, 1))],
    "transpose": [("x.transpose(0, 1)", {"x": (2, 3)}, lambda x: torch.transpose(x, 0, 1)),
                  ("transpose(x, 2, 0)", {"x": (2, 1, 3)}, lambda x: torch.transpose(x, 2, 0))],
    "T": [("x.T", {"x": (2, 3)}, lambda x: x.T)],
    "getitem": [("x[:, 1]", {"x": (2, 3)}, lambda x: x[:, 1]),
                ("x[1:3]", {"x": (4,)}, lambda x: x[1:3]),
                ("x[0, ::2]", {"x": (2, 5)}, lambda x: x[0, ::2])],
    "detach": [("x * detach(x)", {"x": (3,)}, lambda x: x * x.detach()),
               ("x.detach() * sin(x)", {"x": (3,)}, lambda x: x.detach() * torch.sin(x))],
    "unsqueeze": [("x.unsqueeze(0)", {"x": (2, 3)}, lambda x: x.unsqueeze(0)),
                  ("unsqueeze(x, dim=-1)", {"x": (3,)}, lambda x: torch.unsqueeze(x, -1))],
    "squeeze": [("x.squeeze()", {"x": (2, 1, 3)}, torch.squeeze),
                ("squeeze(x, 0)", {"x": (1, 3)}, lambda x: torch.squeeze(x, 0)),
                ("x.squeeze(1)", {"x": (2, 3)}, lambda x: x.squeeze(1))],
    "cat": [("cat((a, b))", {"a": (2, 3), "b": (1, 3)}, lambda a, b: torch.cat((a, b))),
            ("torch.cat([a, b], dim=1)", {"a": (2, 1), "b": (2, 2)}, lambda a, b: torch.cat([a, b], dim=1))],
    "stack": [("stack((a, b), dim=1)", {"a": (3,), "b": (3,)}, lambda a, b: torch.stack((a, b), dim=1)),
              ("torch.stack([a, b])", {"a": (2, 2), "b": (2, 2)}, lambda a, b: torch.stack([a, b]))],
    "where": [("where(c > 0.3, a, b)", {"c": (2, 3), "a": (2, 3), "b": (3,)},
               lambda c, a, b: torch.where(c > 0.3, a, b)),
              ("where(x > 0, x, 0.5 * x)", {"x": (4,)}, lambda x: torch.where(x > 0, x, 0.5 * x))],
    "lt": [("x * (x < 0.3)", {"x": (2, 3)}, lambda x: x * (x < 0.3))],
    "le": [("a * (a <= b)", {"a": (2, 3), "b": (3,)}, lambda a, b: a * (a <= b))],
    "gt": [("where(a > b, a, b)", {"a": (2, 3), "b": (2, 3)}, lambda a, b: torch.where(a > b, a, b))],
    "ge": [("x * (x >= 0.3)", {"x": (4,)}, lambda x: x * (x >= 0.3))],
    "eq": [("x * (x == x.max(dim=1, keepdim=True))", {"x": (2, 3)},
            lambda x: x * (x == x.max(dim=1, keepdim=True).values))],
    "ne": [("x * (x != x.max())", {"x": (2, 3)}, lambda x: x * (x != x.max()))],
    "linear": [("linear(x, w, b)", {"x": (2, 3), "w": (4, 3), "b": (4,)}, F.linear),
               ("linear(x, w)", {"x": (3,), "w": (2, 3)}, F.linear),
               ("F.linear(x, w, None)", {"x": (2, 2, 3), "w": (2, 3)}, F.linear)],
    "mse_loss": [("a * mse_loss(a, b)", {"a": (2, 3), "b": (2, 3)}, lambda a, b: a * F.mse_loss(a, b)),
                 ("a * F.mse_loss(b, a)", {"a": (3,), "b": (3,)}, lambda a, b: a * F.mse_loss(b, a))],
    "cross_entropy": [
        ("x[0] * cross_entropy(x, t)", {"x": (2, 3)}, lambda x: x[0] * F.cross_entropy(x, _LABELS)),
        ("x * cross_entropy(x, t)", {"x": (3,)}, lambda x: x * F.cross_entropy(x, torch.tensor(1))),
        ("x[0] * cross_entropy(x, p)", {"x": (2, 3), "p": (2, 3)},
         lambda x, p: x[0] * F.cross_entropy(x, p))],
    "logsumexp": [("logsumexp(x, dim=1)", {"x": (2, 3)}, lambda x: torch.logsumexp(x, dim=1)),
                  ("x.logsumexp(dim=0, keepdim=True)", {"x": (2, 3)},
                   lambda x: torch.logsumexp(x, dim=0, keepdim=True))],
    "norm": [("norm(x, dim=1)", {"x": (2, 3)}, lambda x: torch.linalg.vector_norm(x, dim=1)),
             ("x.norm(p=1, dim=0)", {"x": (2, 3)}, lambda x: torch.linalg.vector_norm(x, ord=1, dim=0)),
             ("x.norm(p=3, dim=1)", {"x": (2, 3)}, lambda x: torch.linalg.vector_norm(x, ord=3, dim=1)),
             ("x.norm(p=inf, dim=1)", {"x": (2, 3)},
              lambda x: torch.linalg.vector_norm(x, ord=math.inf, dim=1))],
}


def torch_function(name: str) -> Callable[..., torch.Tensor] | None:
    """The torch function a row named `name` stands for, written directly (not the row's impl)."""
    if name in TORCH_DIRECT:
        return TORCH_DIRECT[name]
    return getattr(torch, name, None)


# ---------------------------------------------------------------- one case per (row, spelling)

# Integer constants some cases use (SPEC strings, as a user gives them); the torch functions close over them.
CONSTANTS: dict[str, dict[str, str]] = {
    "x[0] * cross_entropy(x, t)": {"t": "long([0, 2])"},
    "x * cross_entropy(x, t)": {"t": "long(1)"},
}


@dataclasses.dataclass(frozen=True)
class OpCase:
    """An expression with a non-scalar output, seeded inputs, and the same function in torch."""

    op: str
    expr: str
    inputs: dict[str, np.ndarray]
    torch_fn: Callable[..., torch.Tensor]

    @property
    def values(self) -> dict[str, Any]:
        """What `check` is given: the inputs, and integer constants (long labels) where the case has any."""
        return {**self.inputs, **CONSTANTS.get(self.expr, {})}

    @property
    def id(self) -> str:
        shapes = ",".join("x".join(map(str, v.shape)) or "0d" for v in self.inputs.values())
        return f"{self.op}:{self.expr}:{shapes}"

    def torch_output(self, values: dict[str, np.ndarray] | None = None) -> torch.Tensor:
        values = self.inputs if values is None else values
        return self.torch_fn(*(torch.tensor(v, dtype=torch.float64) for v in values.values()))


def _generic(row: OpSpec) -> list[tuple[str, dict[str, tuple[int, ...]], Callable]]:
    """Cases derived from the row's group and parameters alone, for rows with no special case."""
    fn = torch_function(row.name)
    if fn is None:
        raise LookupError(f"op '{row.name}' has no torch oracle: add it to TORCH_DIRECT or "
                          "SPECIAL_CASES in tests/helpers.py")
    tensors = [p.name for p in row.tensor_params]
    required_literals = [p for p in row.params if p.kind is not Kind.TENSOR and p.required]
    if required_literals:
        raise LookupError(f"op '{row.name}' needs arguments: add a case to SPECIAL_CASES in tests/helpers.py")
    if row.group is Group.ELEMENTWISE:
        names = ["x"] if len(tensors) == 1 else ["a", "b"][:len(tensors)]
        shapes = {n: (2, 3) for n in names}
        cases = [(f"{row.name}({', '.join(names)})", shapes, fn)] if row.named else []
        if row.syntax:
            cases.append((row.syntax, shapes, fn))
        if len(names) == 2:  # broadcasting: a row against a column
            cases.append((f"{row.syntax or row.name + '(a, b)'}", {"a": (2, 1), "b": (3,)}, fn))
        return cases
    if row.group is Group.REDUCTION:
        return [(f"{row.name}(x, dim=1)", {"x": (2, 3)}, lambda x: _values(fn(x, dim=1))),
                (f"x.{row.name}(dim=0, keepdim=True)", {"x": (2, 3)},
                 lambda x: _values(fn(x, dim=0, keepdim=True)))]
    if row.group is Group.ALONG_DIM:
        return [(f"{row.name}(x, dim=1)", {"x": (2, 3)}, lambda x: fn(x, dim=1)),
                (f"x.{row.name}(dim=0)", {"x": (2, 3)}, lambda x: fn(x, dim=0))]
    raise LookupError(f"op '{row.name}' ({row.group.value}): add a case to SPECIAL_CASES in tests/helpers.py")


def op_cases(table: dict[str, OpSpec] = OPS) -> list[OpCase]:
    """Every row of the op table as one or more OpCases, with seeded points in its domain."""
    cases = []
    for index, row in enumerate(table.values()):
        if row.mutates:  # in-place methods are statements: tests/test_inplace.py runs them
            continue
        specs = SPECIAL_CASES.get(row.name) or _generic(row)
        for k, (expr, shapes, fn) in enumerate(specs):
            inputs = points(row.domain, shapes, seed=1000 * index + k)
            cases.append(OpCase(row.name, expr, inputs, fn))
    return cases


def oracle_jacobians(fn: Callable[..., torch.Tensor], values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """d fn / d each input by torch.autograd.functional.jacobian: shape output.shape + input.shape."""
    tensors = tuple(torch.tensor(v, dtype=torch.float64) for v in values.values())
    jac = torch.autograd.functional.jacobian(fn, tensors)
    return {name: j.numpy() for name, j in zip(values, jac)}


def vjp(weights: np.ndarray, jacobian: np.ndarray) -> np.ndarray:
    """Contract a Jacobian (out + in) with upstream weights of the output's shape."""
    return np.tensordot(weights, jacobian, axes=weights.ndim)


# ---------------------------------------------------------------- sympy, for scalar elementwise rows

SYMPY_DIRECT: dict[str, Callable[..., Any]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
    "pow": operator.pow, "neg": operator.neg,
    "abs": sympy.Abs,
    "log1p": lambda x: sympy.log(1 + x),
    "expm1": lambda x: sympy.exp(x) - 1,
    "sigmoid": lambda x: 1 / (1 + sympy.exp(-x)),
    "relu": lambda x: sympy.Max(x, 0),
    "softplus": lambda x: sympy.log(1 + sympy.exp(x)),
    "maximum": sympy.Max,
    "clone": lambda x: x,
    "minimum": sympy.Min,
}


def sympy_function(row: OpSpec) -> Callable[..., Any] | None:
    """The row as a sympy expression builder, or None if sympy does not know it."""
    if row.name in SYMPY_DIRECT:
        return SYMPY_DIRECT[row.name]
    return getattr(sympy, row.name, None)


def sympy_rows(table: dict[str, OpSpec] = OPS) -> list[OpSpec]:
    """Elementwise rows whose parameters are all tensors: f(x) or f(a, b) of real numbers."""
    return [row for row in table.values()
            if row.group is Group.ELEMENTWISE and all(p.kind is Kind.TENSOR for p in row.params)
            and len(row.params) <= 2 and not row.mutates]


def sympy_gradients(row: OpSpec, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Exact partial derivatives of row(*vars) at every element, by sympy.diff."""
    fn = sympy_function(row)
    assert fn is not None, f"op '{row.name}' has no sympy oracle: add it to SYMPY_DIRECT in tests/helpers.py"
    symbols = [sympy.Symbol(name, real=True) for name in values]
    expr = fn(*symbols)
    arrays = np.broadcast_arrays(*values.values())
    out = {}
    for sym, name in zip(symbols, values):
        derivative = sympy.diff(expr, sym)
        grad = np.empty(arrays[0].shape)
        for idx in np.ndindex(grad.shape):
            subs = {s: sympy.Float(float(a[idx]), 30) for s, a in zip(symbols, arrays)}
            grad[idx] = float(derivative.evalf(30, subs=subs))
        out[name] = grad
    return out


# ---------------------------------------------------------------- JSON and processes

def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name!r}")


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN / Infinity, as jq and JSON.parse do."""
    return json.loads(text, parse_constant=_refuse_constant)


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `python -c code` in a fresh interpreter of this venv."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
