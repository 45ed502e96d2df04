"""Results → rich renderables. Styles by name from one Theme; the Console decides colour."""
from __future__ import annotations

from typing import Iterable

import numpy as np
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.theme import Theme
from rich.tree import Tree

from ..compare import CheckResult, GradientResult, worst_order
from ..graph import GraphNode, iter_nodes, label
from ..ops import OpSpec

THEME = Theme({
    "gc.ok": "bold green", "gc.fail": "bold red", "gc.warn": "yellow", "gc.caret": "bold red",
    "gc.dim": "dim", "gc.name": "bold cyan", "gc.head": "bold", "gc.leaf": "green",
})

DEFAULT_ROWS = 20  # elements shown per variable; the worst first, the rest counted


def _num(x: float, digits: int = 10) -> str:
    return f"{x:.{digits}g}"


def _err(x: float) -> str:
    return "0" if x == 0 else f"{x:.2e}"


def _index_text(flat: int, shape: tuple[int, ...]) -> str:
    if not shape:
        return "[]"
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(flat, shape)) + "]"


def gradient_table(r: GradientResult, mode: str, max_rows: int = DEFAULT_ROWS) -> Table:
    """One variable's elements: value, analytic, numeric, errors, the deciding rule and the verdict."""
    unsure = int((~r.passed & ~r.wrong).sum())
    status = Text("all agree", style="gc.ok") if r.passed.all() else Text(
        f"{r.failures} of {r.passed.size} disagree" + (f" ({unsure} where the numeric side is unsure)" if unsure else ""),
        style="gc.warn" if r.ok else "gc.fail")
    title = Text.assemble((r.name, "gc.name"), f"  shape {list(r.shape)}  ", status)
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False, expand=False)
    of, by = getattr(r, "of", r.name) or r.name, getattr(r, "wrt", r.name) or r.name  # a second-order block
    first = {"jacobian": "d out[i] / d " + r.name + "[j]", "hessian": f"d² / d{of}[j] d{by}[k]"}.get(mode, "index")
    if r.projection is not None:
        first = "direction"
    headers = [(first, "left"), ("value", "right"), ("analytic", "right"), ("numeric", "right")]
    headers += [("symbolic", "right")] if r.symbolic is not None else []
    headers += [("abs err", "right"), ("rel err", "right"), ("tol rule", "right"), ("verdict", "left")]
    for header, justify in headers:
        table.add_column(escape(header), justify=justify, no_wrap=header != "verdict")
    grid_shape = r.analytic.shape
    order = worst_order(r)
    shown = order[:max_rows] if max_rows else order
    flat = {k: v.reshape(-1) for k, v in (("a", r.analytic), ("n", r.numeric), ("abs", r.abs_error),
                                           ("rel", r.rel_error), ("tol", r.tolerance), ("ok", r.passed),
                                           ("why", r.reasons), ("unsure", r.passed | ~r.wrong))}
    rule = r.decided_by.reshape(-1)[shown] if shown.size else np.array([])
    rules = dict(zip((int(i) for i in shown), rule))
    values = np.asarray(r.value).reshape(-1)
    for k in sorted(int(i) for i in shown):
        value = values[k % max(values.size, 1)] if values.size else float("nan")
        verdict = Text("PASS", style="gc.ok") if flat["ok"][k] else (
            Text("UNRELIABLE", style="gc.warn") if flat["unsure"][k] else Text("FAIL", style="gc.fail"))
        if flat["why"][k]:
            verdict.append(f" {flat['why'][k]}", style="gc.warn")
        exact = [_num(r.symbolic.reshape(-1)[k])] if r.symbolic is not None else []
        table.add_row(_index_text(k, grid_shape), "" if r.projection else _num(value, 6),
                      _num(flat["a"][k]), _num(flat["n"][k]), *exact,
                      _err(flat["abs"][k]), _err(flat["rel"][k]),
                      f"{flat['tol'][k]:.1e} {rules[k]}" if np.isfinite(flat["tol"][k]) else rules[k],
                      verdict)
    notes = [f"diagnosis: {r.diagnosis}"] if r.diagnosis else []
    if r.projection is not None:
        notes.append(r.projection.statement())
    hidden = order.size - len(shown)
    if hidden:
        failing_hidden = int((~r.passed.reshape(-1)[order[len(shown):]]).sum())
        notes.append(f"{hidden} more element{'s' if hidden != 1 else ''} not shown "
                     f"({failing_hidden} of them failing); --rows 0 shows all, JSON has everything")
    if notes:
        table.caption = Text("\n".join(notes))  # plain text: an index such as [i, j] is not markup
        table.caption_justify = "left"
    return table


def graph_tree(root: GraphNode | None, title: str = "grad_fn graph") -> RenderableType:
    """The grad_fn tree; AccumulateGrad leaves named by their variable."""
    if root is None:
        return Text(f"{title}: none (the output is a leaf)", style="gc.dim")
    tree = Tree(Text(title, style="gc.head"))
    made: dict[int, Tree] = {}
    for node, parent, index in iter_nodes(root):
        style = "gc.leaf" if node.variable else ""
        made[index] = (tree if parent is None else made[parent]).add(Text(label(node), style=style))
    return tree


def custom_ops_table(result: CheckResult) -> Table:
    """One row a check of a custom-op call site, with the blame line under it."""
    table = Table(title=Text("custom ops, each checked alone at the values it saw", style="gc.head"),
                  title_justify="left", show_edge=False, pad_edge=False)
    for header in ("op", "check", "verdict", "what to fix"):
        table.add_column(header, no_wrap=header != "what to fix")
    for report in result.custom_ops:
        for finding in report.findings:
            verdict = {"pass": Text("PASS", style="gc.ok"), "fail": Text("FAIL", style="gc.fail"),
                       "unreliable": Text("UNRELIABLE", style="gc.warn")}[finding.verdict]
            table.add_row(Text(f"{report.op} @{report.line}:{report.col + 1}"), Text(finding.check), verdict,
                          Text(finding.message))
    table.caption = Text(result.blame or "")
    table.caption_justify = "left"
    return table


def verdict_line(result: CheckResult) -> Text:
    failing = sum(r.failures for r in result.results())
    total = sum(r.passed.size for r in result.results())
    text = Text("PASS " if result.ok else "FAIL ", style="gc.ok" if result.ok else "gc.fail")
    what = "projections" if result.projected else "gradient elements"
    text.append(f"all {total} {what} agree" if not failing else f"{failing} of {total} {what} disagree")
    unsure = sum(int(r.unreliable.sum()) for r in result.results())
    if unsure:
        text.append(f" ({unsure} unreliable: the numeric side cannot tell)")
    checks = [f for r in result.custom_ops for f in r.findings]
    if checks:
        bad = sum(not f.ok for f in checks)
        text.append(f"; {bad} of {len(checks)} custom-op checks fail" if bad else f"; {len(checks)} custom-op checks pass")
    text.append(f"  (|analytic − numeric| ≤ atol {result.atol:g} + rtol {result.rtol:g}·|numeric|; "
                f"method {result.method}, {result.dtype}, mode {result.mode})", style="gc.dim")
    return text


def check_view(result: CheckResult, max_rows: int = DEFAULT_ROWS) -> RenderableType:
    """The whole report of one check."""
    parts: list[RenderableType] = [
        Text.assemble(("gradcheck ", "gc.head"), result.expression),
        Text(f"output shape {list(result.output_shape)}"
             + (f", value {_num(float(result.output_value.reshape(-1)[0]))}" if result.output_value.size == 1 else ""),
             style="gc.dim"),
    ]
    if result.constants:
        parts.append(Text("constants: " + ", ".join(result.constants), style="gc.dim"))
    for heading, group, mode in (("inputs", result.inputs, result.mode),
                                 ("intermediates", result.intermediates, result.mode),
                                 ("second order (Hessian of the output)", result.hessians, "hessian")):
        if group:
            parts.append(Text(f"\n{heading}", style="gc.head"))
            parts.extend(gradient_table(r, mode, max_rows) for r in group.values())
    if result.custom_ops:
        parts += [Text(""), custom_ops_table(result)]
    parts += [Text(""), graph_tree(result.graph), Text(""), verdict_line(result),
              Text(f"replay: {result.replay}", style="gc.dim"),
              Text(", ".join(f"{k} {v}" for k, v in result.versions.items()), style="gc.dim")]
    return Group(*parts)


def to_text(renderable: RenderableType, width: int = 120) -> str:
    """Plain text of a renderable, for assertion messages and logs."""
    from io import StringIO

    from rich.console import Console
    buffer = StringIO()
    Console(file=buffer, width=width, color_system=None, theme=THEME, highlight=False).print(renderable)
    return buffer.getvalue()


def ladder_view(results, verdicts, max_rows: int = DEFAULT_ROWS) -> RenderableType:
    """`--dtype a,b,c`: each dtype's failing tables, then one summary row a dtype."""
    summary = Table(title=Text("dtype ladder (float64 is the reference)", style="gc.head"), title_justify="left",
                    show_edge=False, pad_edge=False)
    for header in ("dtype", "verdict", "atol", "rtol", "worst rel err", "what it means"):
        summary.add_column(header, no_wrap=header != "what it means")
    parts: list[RenderableType] = []
    for result, meaning in zip(results, verdicts):
        if not result.ok:
            parts += [Text(f"\n{result.dtype}", style="gc.head"), check_view(result, max_rows)]
        worst = max((r.max_rel_error for r in result.results()), default=0.0)
        summary.add_row(result.dtype, Text("PASS", style="gc.ok") if result.ok else Text("FAIL", style="gc.fail"),
                        f"{result.atol:g}", f"{result.rtol:g}", f"{worst:.1e}", meaning)
    return Group(*parts, Text(""), summary)


def ops_table(table: Iterable[OpSpec]) -> Table:
    """`gradcheck ops`: one row a function, read from the op table."""
    out = Table(title="supported functions (also as methods: x.sum(dim=0))", title_justify="left",
                show_edge=False, pad_edge=False)
    out.add_column("function", no_wrap=True)
    out.add_column("group", no_wrap=True)
    out.add_column("what it is")
    for spec in table:
        call = spec.signature() if not spec.syntax else f"{spec.syntax}  {spec.signature()}"
        group = spec.group.value + ("" if spec.complex_ok else " (no complex step)")
        out.add_row(Text(call), Text(group), Text(spec.doc))  # Text: "[min, max]" is not markup
    return out
