"""What a check differentiates: a target.

A target is named inputs, each with a role, a torch side that autograd differentiates, and a float64
side the numeric engine perturbs. An expression is one kind (its numpy walk stays the independent
reference), a custom op's call site another (the op and the values it received, no source text), an
nn.Module a third (its parameters, a float64 copy under torch.func.functional_call).

The numeric engine needs only `evaluator(name)`: a batch of values of one checked input, shape
(B, *shape), to the batch of outputs, shape (B, *output.shape), every other input held at its value.
numeric.column_derivative and numeric.directional_derivative differentiate any such function, so a
new kind of target gets every difference method (and its error model) without copying the engine.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Callable, Protocol

import numpy as np


class Role(enum.Enum):
    CHECKED = "checked"     # gets a gradient, compared element by element
    CONSTANT = "constant"   # held at its value on both sides (--wrt leaves it out, a long() tensor, a frozen parameter)
    BUFFER = "buffer"       # a module's state: a constant, restored before every evaluation


@dataclasses.dataclass(frozen=True)
class Input:
    name: str               # an expression's variable, a call site's argument, a dotted parameter name
    value: np.ndarray       # the unperturbed value, float64 (int64 for integer tensors)
    role: Role


Evaluator = Callable[[np.ndarray], np.ndarray]


class Target(Protocol):
    """The seam both engines take (see the module docstring)."""

    kind: str                       # "expression" | "call site" | "module"
    label: str                      # what reports call it: the expression, "op(x0, x1)", "model.py:Model"
    inputs: tuple[Input, ...]       # in the order reports list them
    output: np.ndarray              # the float64 output at the unperturbed point

    def evaluator(self, name: str) -> Evaluator:
        """Batched float64 output as a function of the checked input `name` (every other input fixed)."""
        ...


def checked(target: Target) -> tuple[Input, ...]:
    return tuple(i for i in target.inputs if i.role is Role.CHECKED)


def batch_rows(evaluate_one: Callable[[np.ndarray], np.ndarray]) -> Evaluator:
    """An evaluator from a function of one unbatched value: row by row (for targets torch cannot vmap)."""
    def evaluate(batch: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(evaluate_one(row)) for row in batch])
    return evaluate
