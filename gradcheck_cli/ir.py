"""The parsed program: a small IR of statements and nodes, each with a source span (see parse.py)."""
from __future__ import annotations

import dataclasses
from typing import Any, Union

from .errors import Span


@dataclasses.dataclass(frozen=True, eq=False)
class Num:
    value: float
    span: Span


@dataclasses.dataclass(frozen=True, eq=False)
class Name:
    id: str
    span: Span


@dataclasses.dataclass(frozen=True, eq=False)
class Call:
    """An op applied to arguments in its parameter order: nodes for tensors, literals otherwise."""

    op: str
    args: tuple[Any, ...]
    span: Span


Node = Union[Num, Name, Call]


@dataclasses.dataclass(frozen=True, eq=False)
class Statement:
    target: str | None   # the assigned (or, in place, changed) name; None for a bare expression
    value: Node
    span: Span
    text: str            # the statement's source, for messages
    inplace: bool = False    # changes `target` in place: value is a mutating Call whose first argument is it
    untracked: bool = False  # under `with no_grad()` (or through `.data`): torch records no history
    data: bool = False       # through `x.data`: also invisible to autograd's version counter


@dataclasses.dataclass(frozen=True)
class Program:
    source: str
    statements: tuple[Statement, ...]
    inputs: tuple[str, ...]         # free names, in order of first use
    intermediates: tuple[str, ...]  # assigned names, in order
    ops: frozenset[str]             # every op the program uses
    modified: tuple[str, ...] = ()  # names changed in place, in order of first change

    @property
    def output(self) -> Statement:
        return self.statements[-1]


def _walk(node: Node):
    """Every node of a tree, iteratively."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, Call):
            stack.extend(reversed(list(_arg_nodes(current))))


def _arg_nodes(call: Call):
    """The nodes among a call's arguments, in order: tensors, and those inside tuples (cat's tensors,
    a tensor index)."""
    for arg in call.args:
        if isinstance(arg, (Num, Name, Call)):
            yield arg
        elif isinstance(arg, tuple):
            yield from (item for item in arg if isinstance(item, (Num, Name, Call)))


def _names(node: Node) -> list[Name]:
    return [n for n in _walk(node) if isinstance(n, Name)]


def _ops(node: Node) -> set[str]:
    return {n.op for n in _walk(node) if isinstance(n, Call)}
