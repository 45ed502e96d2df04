"""A custom op's call site as a target: the op and the values it received, never source text.

Custom-op inspection (custom.py) checks each plugin call on its own, at the arguments it saw. The program
it checks is built here directly from IR nodes (ir.py): the op's Call with a Name for every tensor
argument and each literal exactly as the op received it (omitted optional arguments stay omitted); an
op with several differentiable outputs is checked as one VJP, Σ_k (op(...)[k] * g_k).sum(). Nothing is
written out and parsed again: a literal that would not survive `repr` and the parser (a string with
quotes, an odd float) reaches the op as it was. `call_text` writes the same call for people (labels,
reports) only.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from .errors import Span
from .ir import Call, Name, Num, Program, Statement
from .ops import OpSpec
from .plugins import Omitted


def _literal_text(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + "".join(f"{_literal_text(v)}, " for v in value) + ")"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def call_text(spec: OpSpec, args: list[Any], names: dict[int, str], in_place: bool = False) -> str:
    """The call site as expression text, for people: tensors by variable name, literals as written, omitted
    arguments left out (those after one are named). An in-place op gets computed copies (`x0 * 1`),
    as torch refuses to modify a leaf that requires grad."""
    parts, named = [], False
    for i, (param, arg) in enumerate(zip(spec.params, args)):
        if isinstance(arg, Omitted):
            named = True
            continue
        text = (f"{names[i]} * 1" if in_place else names[i]) if i in names else _literal_text(arg)
        parts.append(f"{param.name}={text}" if named else text)
    return f"{spec.name}({', '.join(parts)})"


@dataclasses.dataclass(frozen=True)
class CallSite:
    """One call of a custom op: the op, every argument as it received it, and a name for each tensor."""

    spec: OpSpec
    args: tuple[Any, ...]        # in parameter order: tensors, literals, Omitted
    names: Mapping[int, str]     # argument position → variable name, for every tensor argument
    in_place: bool = False       # the op writes into an input (ctx.mark_dirty): it gets computed copies

    def label(self, outputs: list[int] | None = None) -> str:
        """What reports call the program `program(outputs)` checks."""
        call = call_text(self.spec, list(self.args), dict(self.names), self.in_place)
        if outputs is None:
            return call
        return " + ".join(f"({call}[{k}] * g{k}).sum()" for k in outputs)

    def program(self, outputs: list[int] | None = None) -> Program:
        """The call as a Program: the op's output (`outputs` None), or for an op with several outputs the
        scalar Σ_k (op(...)[k] * g_k).sum() over the differentiable `outputs` (g_k: variables)."""
        label = self.label(outputs)
        span = Span(1, 0, len(label))
        if outputs is None:
            value = self._call(span)
        else:
            terms = [Call("sum", (Call("mul", (Call("getitem", (self._call(span), (k,)), span), Name(f"g{k}", span)),
                                           span), None, False), span) for k in outputs]
            value = terms[0]
            for term in terms[1:]:
                value = Call("add", (value, term), span)
        ops = {self.spec.name} | ({"mul"} if self.in_place else set())
        ops |= set() if outputs is None else {"sum", "mul", "getitem"} | ({"add"} if len(outputs) > 1 else set())
        inputs = tuple(self.names[i] for i in sorted(self.names)) + tuple(f"g{k}" for k in outputs or ())
        return Program(label, (Statement(None, value, span, label),), inputs, (), frozenset(ops))

    def _call(self, span: Span) -> Call:
        """A fresh Call node of the op (each use its own node, as a parsed expression has)."""
        def argument(i: int, arg: Any) -> Any:
            if i not in self.names:
                return arg
            name = Name(self.names[i], span)
            return Call("mul", (name, Num(1.0, span)), span) if self.in_place else name
        return Call(self.spec.name, tuple(argument(i, a) for i, a in enumerate(self.args)), span)

    def target(self, table: Mapping[str, OpSpec], values: Mapping[str, np.ndarray], wrt: tuple[str, ...],
               outputs: list[int] | None = None):
        """The call site as a target (target.py): its program over the numpy walk, kind "call site"."""
        from .expression_target import ExpressionTarget
        return ExpressionTarget(self.program(outputs), table, values, wrt, kind="call site")
