"""The grad_fn graph read from `grad_fn.next_functions`: a tree for JSON (SPEC's shape) and the
DAG autograd really has (`Dag`: each node once, one edge per next_functions entry) for `graph`,
its DOT text, SVG/PNG through Graphviz, and `--explain`."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from typing import Any, Mapping

import numpy as np

from .errors import InputError
from .evaluate import TorchBackend
from .ir import Statement

MAX_GRAPH_DEPTH = 200  # deeper branches end in a "…" node, so JSON and rendering stay bounded


@dataclasses.dataclass(frozen=True)
class GraphNode:
    """One autograd node. `shared` marks a node already expanded elsewhere in the tree."""

    name: str
    next: tuple["GraphNode", ...] = ()
    variable: str | None = None
    shared: bool = False
    truncated: bool = False
    produces: str | None = None          # the assigned name of the intermediate this node outputs
    shape: tuple[int, ...] | None = None  # of the tensor the node outputs (a leaf: the variable)
    dtype: str | None = None


class _Pending:
    __slots__ = ("fn", "depth", "children", "shared", "truncated", "done")

    def __init__(self, fn: Any, depth: int):
        self.fn, self.depth = fn, depth
        self.children: list[_Pending] = []
        self.shared = self.truncated = False
        self.done: GraphNode | None = None


def read_graph(grad_fn: Any, names: Mapping[int, str], produced: Mapping[int, str] | None = None) -> GraphNode | None:
    """Walk grad_fn iteratively (depth-first, first occurrence expanded) into a GraphNode tree.

    Args:
        grad_fn: the output tensor's grad_fn (None for a leaf).
        names: id(leaf tensor) → variable name, for AccumulateGrad nodes.
        produced: id(grad_fn) → the assigned name of the tensor it outputs.
    """
    produced = produced or {}
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
        shape, dtype = output_meta(item.fn)
        item.done = GraphNode(
            name=type(item.fn).__name__,
            next=tuple(child.done for child in item.children),
            variable=names.get(id(variable)) if variable is not None else None,
            shared=item.shared,
            truncated=item.truncated,
            produces=produced.get(id(item.fn)),
            shape=shape, dtype=dtype,
        )
    return root.done


def label(node: GraphNode) -> str:
    """A node's one-line label: AccumulateGrad (a), MulBackward0  y, ...  (again: ...) where seen before."""
    text = node.name
    if node.variable:
        text += f" ({node.variable})"
    if node.produces:
        text += f"  {node.produces}"
    if node.shape is not None:
        text += f"  {list(node.shape)} {node.dtype}"
    if node.shared:
        text += "  (again: its gradients add up)"
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


def _escape(text: str) -> str:
    """Text inside a DOT string: a line break of a many-line program becomes DOT's own \\n."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r\n", "\n").replace("\n", "\\n")


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
        if node.produces:
            entry["produces"] = node.produces
        if node.shape is not None:
            entry["shape"], entry["dtype"] = list(node.shape), node.dtype
        if node.shared:
            entry["shared"] = True
        if node.truncated:
            entry["truncated"] = True
        entry["next"] = []
        built[index] = entry
        if parent is not None:
            built[parent]["next"].append(entry)
    return built[0]


def output_meta(fn: Any) -> tuple[tuple[int, ...] | None, str | None]:
    """Shape and dtype of the tensor a node outputs: a leaf's variable, else the metadata autograd keeps
    for the gradient the node receives (the same shape and dtype)."""
    variable = getattr(fn, "variable", None)
    if variable is not None:
        return tuple(variable.shape), str(variable.dtype).replace("torch.", "")
    try:  # a private attribute of torch's Node; a graph without it is still drawn, without shapes
        meta = fn._input_metadata[0]
        return tuple(meta.shape), str(meta.dtype).replace("torch.", "")
    except (AttributeError, IndexError, RuntimeError, TypeError):
        return None, None


# ------------------------------------------------------------------ the DAG

MAX_DAG_NODES = 5_000  # larger graphs are cut, with the cut nodes marked


@dataclasses.dataclass(frozen=True)
class DagNode:
    """One node of the graph: an autograd node, or an input that gets no gradient.

    kind: "op" (a backward node), "leaf" (AccumulateGrad of a variable), "detached" (a detach() /
    no-grad value an op used: `text` is its source) or "constant" (a variable outside --wrt).
    """

    name: str
    kind: str = "op"
    variable: str | None = None
    produces: str | None = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    text: str = ""
    truncated: bool = False
    rule: str = ""                   # --explain: the local derivative rule
    grad: np.ndarray | None = None   # --explain: the gradient flowing into the node


@dataclasses.dataclass(frozen=True)
class Dag:
    """nodes[0] is the output's node. `edges` are autograd's own (node, next function), one per
    next_functions entry, so a node two ops use has two edges; `stops` link an op to an input that
    gets no gradient (drawn dashed). `seed` says what upstream gradient an --explain used."""

    nodes: tuple[DagNode, ...]
    edges: tuple[tuple[int, int], ...]
    stops: tuple[tuple[int, int], ...] = ()
    seed: str = ""

    def children(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {i: [] for i in range(len(self.nodes))}
        for a, b in (*self.edges, *self.stops):
            out[a].append(b)
        return out


def walk_dag(grad_fn: Any) -> tuple[list[Any], list[tuple[int, int]], set[int]]:
    """Autograd's graph from grad_fn, each node once (breadth-first, iteratively): (nodes, edges, cut)."""
    index = {id(grad_fn): 0}
    nodes, edges, cut = [grad_fn], [], set()
    k = 0
    while k < len(nodes):
        fn = nodes[k]
        for nxt, _ in fn.next_functions:
            if nxt is None:
                continue
            if id(nxt) not in index:
                if len(nodes) >= MAX_DAG_NODES:
                    cut.add(k)
                    continue
                index[id(nxt)] = len(nodes)
                nodes.append(nxt)
            edges.append((k, index[id(nxt)]))
        k += 1
    return nodes, edges, cut


def read_dag(grad_fn: Any, names: Mapping[int, str], produced: Mapping[int, str],
             no_grad: list[tuple[Any, str, str, str]] = (), grads: Mapping[int, np.ndarray] | None = None,
             seed: str = "") -> Dag | None:
    """The DAG from the output's grad_fn.

    Args:
        names: id(leaf tensor) → variable name.
        produced: id(grad_fn) → the assigned name of the tensor it outputs.
        no_grad: (consumer grad_fn, kind, label, why) for each input without gradient an op used
            (RecordingBackend.no_grad_inputs).
        grads: id(node) → the gradient that flowed into it (--explain); rules are added then.
    """
    if grad_fn is None:
        return None
    from .rules import rule
    fns, edges, cut = walk_dag(grad_fn)
    nodes = []
    for k, fn in enumerate(fns):
        variable = getattr(fn, "variable", None)
        shape, dtype = output_meta(fn)
        name = type(fn).__name__
        nodes.append(DagNode(name=name, kind="leaf" if variable is not None else "op",
                             variable=names.get(id(variable)) if variable is not None else None,
                             produces=produced.get(id(fn)), shape=shape, dtype=dtype, truncated=k in cut,
                             rule=rule(name) if grads is not None else "",
                             grad=None if grads is None else grads.get(id(fn))))
    where = {id(fn): k for k, fn in enumerate(fns)}
    stops, seen = [], {}
    for consumer, kind, label, why in no_grad:
        if id(consumer) not in where:
            continue
        if (kind, label) not in seen:
            seen[(kind, label)] = len(nodes)
            nodes.append(DagNode(name=why, kind=kind, variable=label if kind == "constant" else None,
                                 text=label if kind == "detached" else ""))
        link = (where[id(consumer)], seen[(kind, label)])
        if link not in stops:
            stops.append(link)
    return Dag(tuple(nodes), tuple(edges), tuple(stops), seed)


class RecordingBackend(TorchBackend):
    """The torch backend, remembering which op used which tensor and which values it held without
    history (detach(), x.data, a comparison's mask, a name assigned under no_grad), so the graph can
    show the inputs that get no gradient (autograd keeps no trace of them)."""

    TEXT_LIMIT = 40  # a longer no_grad statement is shown by its name

    def __init__(self, dtype: Any, device: Any, source: str):
        super().__init__(dtype, device)
        self.lines = source.splitlines()
        self.uses: list[tuple[Any, list[Any]]] = []
        self.detached: dict[int, tuple[Any, str, str]] = {}

    def apply(self, spec: Any, args: list[Any]) -> Any:
        out = super().apply(spec, args)
        self.uses.append((out, [a for a in _tensors(args) if hasattr(a, "requires_grad")]))
        return out

    def hold(self, key: Any, compute: Any) -> Any:
        """A value without history: a Call (detach, .data, a comparison) or a no_grad Statement."""
        out = super().hold(key, compute)
        if getattr(out, "requires_grad", True):
            return out  # a number, or a tensor that still has its history
        if isinstance(key, Statement):
            text = key.text if len(key.text) <= self.TEXT_LIMIT else key.target or "no_grad"
            why = "no_grad"
        else:
            span = key.span
            inside = 0 < span.line <= len(self.lines)
            text = self.lines[span.line - 1][span.col:span.end_col] if inside else key.op
            why = "detach" if key.op == "detach" else "mask"
        self.detached[id(out)] = (out, text, why)  # the tensor is kept, so its id stays its own
        return out

    def no_grad_inputs(self, constants: Mapping[str, Any]) -> list[tuple[Any, str, str, str]]:
        """(consumer grad_fn, kind, label, why) for each held value or named constant an op used; why is
        detach, mask or no_grad for a held value, constant for a named one."""
        named = {id(t): name for name, t in constants.items() if hasattr(t, "requires_grad") and not t.requires_grad}
        found = []
        for out, args in self.uses:
            if getattr(out, "grad_fn", None) is None:
                continue
            for arg in args:
                if arg.requires_grad:
                    continue
                if id(arg) in self.detached:
                    _, text, why = self.detached[id(arg)]
                    found.append((out.grad_fn, "detached", text, why))
                elif id(arg) in named:
                    found.append((out.grad_fn, "constant", named[id(arg)], "constant"))
        return found


def _tensors(args: list[Any]) -> list[Any]:
    """An op's arguments with the items of list and tuple arguments (cat's tensors, a tensor index)."""
    out = []
    for arg in args:
        out.extend(arg if isinstance(arg, (list, tuple)) else [arg])
    return out


def node_label(node: DagNode) -> str:
    """`AddBackward0  y`, `AccumulateGrad (x)`, `detach(x)  (detached: no gradient)`, `constant b`."""
    if node.kind == "detached":
        why = {"mask": "a mask", "no_grad": "under no_grad"}.get(node.name, "detached")
        return f"{node.text or node.name}  ({why}: no gradient)"
    if node.kind == "constant":
        return f"constant {node.variable}  (no gradient)"
    text = node.name + (f" ({node.variable})" if node.variable else "") + (f"  {node.produces}" if node.produces else "")
    return text + (" …" if node.truncated else "")


def meta_text(node: DagNode) -> str:
    return "" if node.shape is None else f"{list(node.shape)} {node.dtype}"


def grad_text(grad: np.ndarray | None, limit: int = 6) -> str:
    """A gradient in one short line: g = 2.5 or g = [1, 0.5, …] (12 values)."""
    if grad is None:
        return "g = (none reached it)"
    arr = np.asarray(grad, dtype=np.float64)
    if arr.ndim == 0:
        return f"g = {float(arr):.6g}"
    flat = [f"{v:.4g}" for v in arr.reshape(-1)[:limit]]
    more = f", … ({arr.size} values)" if arr.size > limit else ""
    return f"g = [{', '.join(flat)}{more}]" + (f" shape {list(arr.shape)}" if arr.ndim > 1 else "")


def to_dot(dag: Dag | None, title: str = "") -> str:
    """Graphviz DOT of the DAG: each node once, edges in the direction gradients flow (output to leaves)."""
    lines = ["digraph grad_fn {", "  rankdir=TB;",
             '  node [shape=box, style=rounded, fontname="monospace", fontsize=11];',
             '  edge [color="#555555"];']
    if title:
        lines.append(f'  label="{_escape(title)}"; labelloc=t; fontname="monospace";')
    if dag is not None:
        for k, node in enumerate(dag.nodes):
            parts = [node_label(node), meta_text(node)]
            if node.rule:
                parts.append(node.rule)
            if node.grad is not None or node.rule and node.kind in ("op", "leaf"):
                parts.append(grad_text(node.grad))
            text = "\\n".join(_escape(p) for p in parts if p)
            style = {"leaf": ', style="rounded,filled", fillcolor="#d7f0d7"',
                     "detached": ', style="dashed", color="#888888", fontcolor="#666666"',
                     "constant": ', style="dashed", color="#888888", fontcolor="#666666"'}.get(node.kind, "")
            if k == 0:
                style = ', style="rounded,filled", fillcolor="#dde8f8"'
            lines.append(f'  n{k} [label="{text}"{style}];')
        for a, b in dag.edges:
            lines.append(f"  n{a} -> n{b};")
        for a, b in dag.stops:
            lines.append(f'  n{a} -> n{b} [style=dashed, color="#888888", arrowhead=none];')
    lines.append("}")
    return "\n".join(lines) + "\n"


INSTALL_HINT = ("needs Graphviz's `dot` program, which is not installed: apt-get install graphviz "
                "(Debian/Ubuntu), brew install graphviz (macOS) or conda install graphviz "
                "(pip install graphviz brings only its Python wrapper); --dot FILE writes the DOT text without it")


def render_dot(dot: str, fmt: str, option: str) -> bytes:
    """DOT text → SVG or PNG bytes through Graphviz's `dot`. Raises InputError without it."""
    program = shutil.which("dot")
    if program is None:
        raise InputError(f"{option} {INSTALL_HINT}")
    done = subprocess.run([program, f"-T{fmt}"], input=dot.encode(), capture_output=True, timeout=120)
    if done.returncode != 0:
        raise InputError(f"{option}: Graphviz could not draw the graph: "
                         f"{done.stderr.decode(errors='replace').strip().splitlines()[-1:] or ['no message']}")
    return done.stdout
