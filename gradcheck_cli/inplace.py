"""In-place statements on the torch side: what torch refuses, in plain words, under the statement that
caused it.

torch refuses some in-place changes at once (a leaf that requires grad: the walker says so, see
`evaluate.explain_refusal`) and others only at backward (a tensor saved for the gradient was changed
later). For the second kind the error names no statement, so `blame` re-runs the program and asks,
after each in-place statement, whether a saved tensor of the graph has become unusable: the first
statement after which one has is the cause. A change made through memory that another name shares
(a view or a detach() of it) is refused up front: the numeric side rebinds names, and cannot follow
a write into memory that two names see.
"""
from __future__ import annotations

from typing import Any

from .errors import InputError
from .parse import Program

_SAVED_CHANGED = "modified by an inplace operation"
_FREED = "Trying to backward through the graph a second time"


def is_inplace_error(err: BaseException) -> bool:
    """A RuntimeError from backward that an in-place change (or a freed graph) caused."""
    return isinstance(err, RuntimeError) and (_SAVED_CHANGED in str(err) or _FREED in str(err))


def backward_error(program: Program, err: RuntimeError, index: int | None) -> InputError:
    """torch's refusal at backward, in plain words with the fix, under statement `index` when known."""
    text = str(err)
    if _FREED in text:
        message = ("torch refuses to backpropagate through this graph a second time: the values it saved for "
                   "the gradient were freed by the first backward; recompute the output (or pass "
                   "retain_graph=True to the first backward)")
    else:
        statement = program.statements[index] if index is not None else None
        name = statement.target if statement is not None else "a tensor"
        message = (f"torch refuses the backward pass: this in-place statement changed '{name}' after an "
                   f"operation had saved it for its gradient (torch: one of the variables needed for gradient "
                   f"computation has been modified by an inplace operation); write the result to a new name "
                   f"(e.g. {name}2 = ...), or change a clone() of it instead")
    if index is None:
        return InputError(message)
    span = program.statements[index].span
    return InputError(message, program.source, span.line, span.col, span.end_col)


def check_aliases(program: Program, index: int, env: dict[str, Any]) -> None:
    """Refuse an in-place change of memory another bound name shares (torch would change both)."""
    import torch

    statement = program.statements[index]
    changed = env[statement.target]
    if not isinstance(changed, torch.Tensor) or changed.numel() == 0:
        return
    storage = changed.untyped_storage().data_ptr()
    for name, value in env.items():
        if name == statement.target or not isinstance(value, torch.Tensor) or value.numel() == 0:
            continue
        if value.untyped_storage().data_ptr() == storage:
            span = statement.span
            raise InputError(f"'{statement.target}' shares memory with '{name}' (one is a view, an alias or a "
                             f"detach() of the other), so this in-place change would change '{name}' too, which "
                             f"gradcheck's numeric side cannot follow; clone() first (e.g. "
                             f"{statement.target} = ... .clone()) and change the copy",
                             program.source, span.line, span.col, span.end_col)


def broken_nodes(roots: list[Any]) -> set[int]:
    """grad_fn nodes reachable from `roots` whose saved tensors torch can no longer use."""
    broken, seen = set(), set()
    stack = [r for r in roots if r is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for attr in dir(node):
            if attr.startswith("_saved_"):
                try:
                    getattr(node, attr)
                except RuntimeError:
                    broken.add(id(node))
                    break
        stack.extend(fn for fn, _ in node.next_functions if fn is not None)
    return broken


def blame(program: Program, run: Any) -> int | None:
    """The first in-place statement after which a saved tensor of the graph is unusable.

    Args:
        run: runs the program in torch, calling `on_statement(index, env)` after each statement.
    """
    import torch

    found: list[int] = []
    known: set[int] = set()

    def after(index: int, env: dict[str, Any]) -> None:
        if found:
            return
        roots = [v.grad_fn for v in env.values() if isinstance(v, torch.Tensor)]
        broken = broken_nodes(roots)
        if program.statements[index].inplace and broken - known:
            found.append(index)
        known.update(broken)

    run(after)
    return found[0] if found else None
