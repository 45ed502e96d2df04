"""Blame a failing parameter on the custom autograd.Functions its gradient flows through.

A custom Function's node in the grad_fn graph is an instance of torch's BackwardCFunction whose
`_forward_cls` is the user's Function class. A parameter's gradient flows through a node when the
parameter's AccumulateGrad is reachable from it; those Functions are the suspects, named by class.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping


def _function_name(fn: Any) -> str | None:
    """The user's Function class name when `fn` is a custom Function's backward node, else None."""
    import torch
    if not isinstance(fn, torch.autograd.function.BackwardCFunction):
        return None
    cls = getattr(fn, "_forward_cls", None)
    return getattr(cls, "__name__", None) or type(fn).__name__


def custom_functions(grad_fn: Any, names: Mapping[int, str], failing: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """failing parameter → the custom Functions (class names) its gradient flows through."""
    failing = list(failing)
    if grad_fn is None or not failing:
        return {}
    from .graph import walk_dag
    nodes, edges, _ = walk_dag(grad_fn)
    children: dict[int, list[int]] = {}
    for a, b in edges:
        children.setdefault(a, []).append(b)
    leaf_names = {}
    for k, fn in enumerate(nodes):
        variable = getattr(fn, "variable", None)
        if variable is not None and id(variable) in names:
            leaf_names[k] = names[id(variable)]
    found: dict[str, list[str]] = {n: [] for n in failing}
    for k, fn in enumerate(nodes):
        op = _function_name(fn)
        if op is None:
            continue
        reached, stack, seen = set(), [k], {k}
        while stack:  # iteratively: a graph's depth is the user's to choose
            node = stack.pop()
            if node in leaf_names:
                reached.add(leaf_names[node])
            for nxt in children.get(node, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        for name in failing:
            if name in reached and op not in found[name]:
                found[name].append(op)
    return {n: tuple(ops) for n, ops in found.items() if ops}


def blame(blamed: Mapping[str, tuple[str, ...]]) -> str:
    """One line naming each failing parameter and the custom Functions its gradient flows through."""
    if not blamed:
        return ""
    parts = [f"{name} (through {', '.join(ops)})" for name, ops in blamed.items()]
    ops = sorted({op for o in blamed.values() for op in o})
    return (f"blame: the gradient of {'; '.join(parts)} is wrong; check the backward of "
            f"{', '.join(ops)} (a custom autograd.Function)")
