"""An expression (or a custom op's call site) as a target (target.py): the parsed Program over the numpy walk.

The numpy walk stays the independent reference: the evaluator is NumericEngine's batched function of one
input, every other input held at its value, so numeric.column_derivative and directional_derivative give
what the engine's own columns and directions give.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .numeric import NumericEngine
from .ops import OpSpec
from .parse import Program
from .target import Evaluator, Input, Role


class ExpressionTarget:
    """A Program with its values: named inputs (checked: --wrt; constant: the rest), a float64 evaluator."""

    def __init__(self, program: Program, table: Mapping[str, OpSpec], inputs: Mapping[str, np.ndarray],
                 wrt: tuple[str, ...], kind: str = "expression"):
        self.kind = kind
        self.label = program.source
        self.program = program
        self.table = table
        self.inputs = tuple(Input(name, np.asarray(inputs[name]), Role.CHECKED if name in wrt else Role.CONSTANT)
                            for name in program.inputs)
        self._values = dict(inputs)
        self._engine: NumericEngine | None = None

    @classmethod
    def of(cls, prep) -> "ExpressionTarget":
        """The target of a prepared case (api.Prepared)."""
        return cls(prep.program, prep.table, prep.inputs, prep.wrt)

    @property
    def engine(self) -> NumericEngine:
        """The numpy walk, run once at the unperturbed point when first asked for."""
        if self._engine is None:
            self._engine = NumericEngine(self.program, self.table, self._values, "richardson")
        return self._engine

    @property
    def output(self) -> np.ndarray:
        return self.engine.output

    def evaluator(self, name: str) -> Evaluator:
        if name not in self.program.inputs:
            raise KeyError(f"'{name}' is not an input of {self.label!r}")
        return self.engine._function(name, 0)
