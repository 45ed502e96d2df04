"""The grad_fn tree as frozen dataclasses, read from `grad_fn.next_functions`; Graphviz DOT text."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

MAX_GRAPH_DEPTH = 200  # deeper branches end in a "…" node, so JSON and rendering stay bounded


@dataclasses.dataclass(frozen=True)
class GraphNode:
    """One autograd node. `shared` marks a node already expanded elsewhere in the tree."""

    name: str
    next: tuple["GraphNode", ...] = ()
    variable: str | None = None
    shared: bool = False
    truncated: bool = False


class _Pending:
    __slots__ = ("fn", "depth", "children", "shared", "truncated", "done")

    def __init__(self, fn: Any, depth: int):
        self.fn, self.depth = fn, depth
        self.children: list[_Pending] = []
        self.shared = self.truncated = False
        self.done: GraphNode | None = None


def read_graph(grad_fn: Any, names: Mapping[int, str]) -> GraphNode | None:
    """Walk grad_fn iteratively (depth-first, first occurrence expanded) into a GraphNode tree.

    Args:
        grad_fn: the output tensor's grad_fn (None for a leaf).
        names: id(leaf tensor) → variable name, for AccumulateGrad nodes.
    """
    if grad_fn is None:
        return None
    root = _Pending(grad_fn, 0)
    order, stack, seen = [], [root], set()
    while stack:
        item = stack.pop()
        order.append(item)
        leaf = hasattr(item.fn, "variable")
        if not leaf and id(item.fn) in seen:
            item.shared = True
            continue
        seen.add(id(item.fn))
        nexts = [fn for fn, _ in item.fn.next_functions if fn is not None]
        if item.depth >= MAX_GRAPH_DEPTH and nexts:
            item.truncated = True
            continue
        item.children = [_Pending(fn, item.depth + 1) for fn in nexts]
        stack.extend(reversed(item.children))
    for item in reversed(order):  # children are finished before their parent
        variable = getattr(item.fn, "variable", None)
        item.done = GraphNode(
            name=type(item.fn).__name__,
            next=tuple(child.done for child in item.children),
            variable=names.get(id(variable)) if variable is not None else None,
            shared=item.shared,
            truncated=item.truncated,
        )
    return root.done


def label(node: GraphNode) -> str:
    """A node's one-line label: AccumulateGrad (a), MulBackward0 (shared)."""
    text = node.name
    if node.variable:
        text += f" ({node.variable})"
    if node.shared:
        text += " (shown above)"
    if node.truncated:
        text += " …"
    return text


def iter_nodes(root: GraphNode):
    """(node, parent index or None, index) in depth-first order, iteratively."""
    stack = [(root, None)]
    index = 0
    while stack:
        node, parent = stack.pop()
        yield node, parent, index
        me = index
        index += 1
        stack.extend((child, me) for child in reversed(node.next))


def to_dot(root: GraphNode | None, title: str = "") -> str:
    """Graphviz DOT text of the tree, edges pointing from a node to the nodes it feeds."""
    lines = ["digraph grad_fn {", "  rankdir=TB;", '  node [shape=box, fontname="monospace"];']
    if title:
        lines.append(f'  label="{_escape(title)}"; labelloc=t;')
    if root is not None:
        for node, parent, index in iter_nodes(root):
            style = ', style=filled, fillcolor="#d7f0d7"' if node.variable else ""
            lines.append(f'  n{index} [label="{_escape(label(node))}"{style}];')
            if parent is not None:
                lines.append(f"  n{parent} -> n{index};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_dict(root: GraphNode | None) -> dict | None:
    """The SPEC's JSON form: {"name", "next": [...]}, AccumulateGrad with "variable"; iterative."""
    if root is None:
        return None
    built: dict[int, dict] = {}
    nodes = list(iter_nodes(root))
    for node, parent, index in nodes:
        entry: dict[str, Any] = {"name": node.name}
        if node.variable:
            entry["variable"] = node.variable
        if node.shared:
            entry["shared"] = True
        if node.truncated:
            entry["truncated"] = True
        entry["next"] = []
        built[index] = entry
        if parent is not None:
            built[parent]["next"].append(entry)
    return built[0]
