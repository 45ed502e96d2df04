"""The grad_fn DAG as a terminal tree: each node expanded once, a node reached again says so; with
--explain every node carries its local rule and the gradient flowing into it."""
from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from ..graph import Dag, grad_text, meta_text, node_label

_STYLE = {"leaf": "gc.leaf", "detached": "gc.dim", "constant": "gc.dim"}


def dag_tree(dag: Dag | None, title: str = "grad_fn graph") -> RenderableType:
    """Depth-first from the output, iteratively; a node seen before is one line that says so."""
    if dag is None:
        return Text(f"{title}: none (the output is a leaf)", style="gc.dim")
    explain = any(node.rule for node in dag.nodes)
    tree = Tree(Text(title, style="gc.head"))
    children = dag.children()
    seen: set[int] = set()
    stack: list[tuple[int, Tree, bool]] = [(0, tree, False)]
    while stack:
        k, parent, dashed = stack.pop()
        node = dag.nodes[k]
        line = Text(node_label(node), style=_STYLE.get(node.kind, "gc.head" if k == 0 else ""))
        if meta_text(node):
            line.append(f"  {meta_text(node)}", style="gc.dim")
        if k in seen:
            line.append("  (again: its gradients add up)", style="gc.dim")
            parent.add(line)
            continue
        seen.add(k)
        if explain and node.kind in ("op", "leaf"):
            line.append(f"\n{node.rule}", style="gc.dim")
            line.append(f"\n{grad_text(node.grad)}", style="gc.name")
        branch = parent.add(line, guide_style="gc.dim" if dashed else "")
        stops = {b for a, b in dag.stops if a == k}
        stack.extend((child, branch, child in stops) for child in reversed(children[k]))
    parts: list[RenderableType] = [tree]
    if explain and dag.seed:
        parts.append(Text(f"g: {dag.seed}; each node passes g × its local derivative to the nodes "
                             "below it, and a node used twice adds what it gets (the chain rule)", style="gc.dim"))
    return Group(*parts)
