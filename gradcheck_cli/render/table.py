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
from .safe import visible

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


# How a table gives way to a narrow terminal, tried in order until it fits: numbers shortened first,
# then the lesser columns dropped (the tolerance rule, the value, the absolute error). The index and
# the verdict are never shortened; a note under the table names what was left out.
_LAYOUTS: tuple[tuple[int, int, tuple[str, ...]], ...] = (
    (10, 6, ()),
    (7, 6, ()),
    (7, 6, ("tol rule",)),
    (7, 4, ("tol rule", "value")),
    (6, 4, ("tol rule", "value", "abs err")),
    (5, 3, ("tol rule", "value", "abs err")),
)
_MEASURE_WIDTH = 10_000  # measure a table unconstrained, to see whether it fits as it is


class FittedTable:
    """A table built when the console's width is known, in the first layout of `layouts` that fits.

    `build(layout, probe)` returns the rich Table of one layout, the names of the columns it left
    out and the notes to print under it (as `Note`s: a wrapped line never starts like a row); with `probe` the cells of wrapping columns hold only what must stay on one line (the verdict
    word, a placeholder of the narrowest useful width), so its measured width says whether it fits.
    The last layout is used whatever its width.
    """

    def __init__(self, build, layouts):
        self.build, self.layouts = build, layouts

    def __rich_console__(self, console, options):
        from rich.measure import Measurement
        for layout in self.layouts:
            probe = self.build(layout, True)[0]
            if Measurement.get(console, options.update_width(_MEASURE_WIDTH), probe).maximum <= options.max_width:
                break
        table, dropped, notes = self.build(layout, False)
        yield table
        if notes:
            yield Note("\n".join(notes))
        if dropped:
            yield Note(f"{', '.join(dropped)} left out to fit {options.max_width} columns (--json has every column)",
                       "gc.dim")

    def __rich_measure__(self, console, options):
        from rich.measure import Measurement
        return Measurement.get(console, options, self.build(self.layouts[0], False)[0])


class Note:
    """Plain text wrapped to the width with a hanging indent, so no wrapped line starts with an index
    such as [1, 2] (a reader, or a script, takes a line that starts so for an element row)."""

    def __init__(self, text: str, style: str = ""):
        self.text, self.style = text, style

    def __rich_console__(self, console, options):
        import textwrap
        for paragraph in self.text.split("\n"):
            lines = textwrap.wrap(paragraph, max(options.max_width, 20), subsequent_indent="  ",
                                  break_long_words=False, break_on_hyphens=False)
            for line in lines or [""]:
                yield Text(line, style=self.style)  # Text: an index such as [i, j] is not markup

    def __rich_measure__(self, console, options):
        from rich.measure import Measurement
        longest = max((len(line) for line in self.text.split("\n")), default=0)
        return Measurement(min(longest, 20), longest)


def gradient_table(r: GradientResult, mode: str, max_rows: int = DEFAULT_ROWS) -> FittedTable:
    """One variable's elements: value, analytic, numeric, errors, the deciding rule and the verdict,
    laid out to fit the console (see _LAYOUTS)."""
    unsure = int((~r.passed & ~r.wrong).sum())
    status = Text("all agree", style="gc.ok") if r.passed.all() else Text(
        f"{r.failures} of {r.passed.size} disagree" + (f" ({unsure} where the numeric side is unsure)" if unsure else ""),
        style="gc.warn" if r.ok else "gc.fail")
    title = Text.assemble((r.name, "gc.name"), f"  shape {list(r.shape)}  ", status)
    of, by = getattr(r, "of", r.name) or r.name, getattr(r, "wrt", r.name) or r.name  # a second-order block
    first = {"jacobian": "d out[i] / d " + r.name + "[j]", "hessian": f"d² / d{of}[j] d{by}[k]"}.get(mode, "index")
    if r.projection is not None:
        first = "direction"
    grid_shape = r.analytic.shape
    order = worst_order(r)
    shown = order[:max_rows] if max_rows else order
    flat = {k: v.reshape(-1) for k, v in (("a", r.analytic), ("n", r.numeric), ("abs", r.abs_error),
                                           ("rel", r.rel_error), ("tol", r.tolerance), ("ok", r.passed),
                                           ("why", r.reasons), ("unsure", r.passed | ~r.wrong))}
    rule = r.decided_by.reshape(-1)[shown] if shown.size else np.array([])
    rules = dict(zip((int(i) for i in shown), rule))
    values = np.asarray(r.value).reshape(-1)
    notes = [f"diagnosis: {r.diagnosis}"] if r.diagnosis else []
    if r.projection is not None:
        notes.append(r.projection.statement())
    if r.structure is not None:
        notes.append(r.structure.statement())
    hidden = order.size - len(shown)
    if hidden:
        failing_hidden = int((~r.passed.reshape(-1)[order[len(shown):]]).sum())
        notes.append(f"{hidden} more element{'s' if hidden != 1 else ''} not shown "
                     f"({failing_hidden} of them failing); --rows 0 shows all, JSON has everything")

    def build(layout: tuple[int, int, tuple[str, ...]], probe: bool) -> tuple[Table, tuple[str, ...], list[str]]:
        digits, value_digits, drop = layout
        drop = tuple(d for d in drop if d != "value" or not r.projection)
        headers = [(first, "left"), ("value", "right"), ("analytic", "right"), ("numeric", "right")]
        headers += [("symbolic", "right")] if r.symbolic is not None else []
        headers += [("abs err", "right"), ("rel err", "right"), ("tol rule", "right"), ("verdict", "left")]
        keep = [h not in drop for h, _ in headers]
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False, expand=False)
        for (header, justify), kept in zip(headers, keep):
            if kept:
                table.add_column(escape(header), justify=justify, no_wrap=header != "verdict")
        for k in sorted(int(i) for i in shown):
            value = values[k % max(values.size, 1)] if values.size else float("nan")
            verdict = Text("PASS", style="gc.ok") if flat["ok"][k] else (
                Text("UNRELIABLE", style="gc.warn") if flat["unsure"][k] else Text("FAIL", style="gc.fail"))
            if flat["why"][k] and not probe:
                verdict.append(f" {flat['why'][k]}", style="gc.warn")
            exact = [_num(r.symbolic.reshape(-1)[k], digits)] if r.symbolic is not None else []
            cells = [_index_text(k, grid_shape), "" if r.projection else _num(value, value_digits),
                     _num(flat["a"][k], digits), _num(flat["n"][k], digits), *exact,
                     _err(flat["abs"][k]), _err(flat["rel"][k]),
                     f"{flat['tol'][k]:.1e} {rules[k]}" if np.isfinite(flat["tol"][k]) else rules[k],
                     verdict]
            table.add_row(*(cell for cell, kept in zip(cells, keep) if kept))
        return table, drop, notes

    return FittedTable(build, _LAYOUTS)


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


def custom_ops_table(result: CheckResult) -> FittedTable:
    """One row a check of a custom-op call site, with the blame line under it. Where the "what to fix"
    column would be narrower than FIX_WIDTH, the fixes are listed under the table instead."""

    def build(inline: bool, probe: bool) -> tuple[Table, tuple[str, ...], list[str]]:
        table = Table(title=Text("custom ops, each checked alone at the values it saw", style="gc.head"),
                      title_justify="left", show_edge=False, pad_edge=False)
        for header in ("op", "check", "verdict") + (("what to fix",) if inline else ()):
            table.add_column(header, no_wrap=header != "what to fix")
        fixes = []
        for report in result.custom_ops:
            for finding in report.findings:
                verdict = {"pass": Text("PASS", style="gc.ok"), "fail": Text("FAIL", style="gc.fail"),
                           "unreliable": Text("UNRELIABLE", style="gc.warn")}[finding.verdict]
                where = f"{report.op} @{report.line}:{report.col + 1}"
                fix = Text("x" * FIX_WIDTH if probe else finding.message)
                table.add_row(Text(where), Text(finding.check), verdict, *([fix] if inline else []))
                if finding.message and not inline:
                    fixes.append(f"{where} {finding.check}: {finding.message}")
        return table, (), [*fixes, result.blame or ""]

    return FittedTable(build, (True, False))


FIX_WIDTH = 30  # narrowest "what to fix" column worth having


def next_step(result: CheckResult) -> str:
    """What to do about a failing check, in one sentence."""
    if result.ok:
        return ""
    wrong = [r for r in result.custom_ops if any(f.verdict == "fail" for f in r.findings)]
    if wrong:
        return (f"Next: fix the backward of {', '.join(dict.fromkeys(r.op for r in wrong))} (see \"what to fix\" "
                "above), then run the replay line again.")
    groups = [*result.results(), *result.hessians.values()]
    if not any(r.wrong.any() for r in groups):
        tries = ["a check without --eps (a step chosen per element)"] if result.eps else []
        if not any(r.symbolic is not None for r in groups):
            tries.append("--symbolic for the exact value")
        if result.method != "richardson":
            tries.append("--method richardson")
        tries.append("--allow-unreliable if this is as good as it gets")
        return ("Next: the numeric side is unsure where they disagree; try " + ", ".join(tries[:-1])
                + (", or " if len(tries) > 1 else "") + tries[-1] + ".")
    worst = next(r for r in groups if r.wrong.any())
    return (f"Next: look at the FAIL rows of {worst.name} above (the worst come first; --rows 0 shows all), "
            "then run the replay line with --json for every number.")


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
    if not result.ok:
        text.append("\n" + next_step(result))
    return text


def replay_line(command: str) -> Text:
    """The replay command as one physical line at any width, so it pastes whole (print with crop=False)."""
    return Text(f"replay: {visible(command)}", style="gc.dim", no_wrap=True, overflow="ignore", end="\n")


def check_view(result: CheckResult, max_rows: int = DEFAULT_ROWS, explain=None) -> RenderableType:
    """The whole report of one check; `explain` (a graph.Dag with rules and gradients) replaces the
    plain grad_fn tree (`check --explain`)."""
    parts: list[RenderableType] = [
        Text.assemble(("gradcheck ", "gc.head"), visible(result.expression, newlines=True)),
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
    if explain is not None:
        from .graph import dag_tree
        graph = dag_tree(explain, "grad_fn graph, explained")
    else:
        graph = graph_tree(result.graph)
    parts += [Text(""), graph, Text(""), verdict_line(result),
              replay_line(result.replay),
              Text(", ".join(f"{k} {v}" for k, v in result.versions.items()), style="gc.dim")]
    return Group(*parts)


def to_text(renderable: RenderableType, width: int = 120) -> str:
    """Plain text of a renderable, for assertion messages and logs."""
    from io import StringIO

    from rich.console import Console
    buffer = StringIO()
    Console(file=buffer, width=width, color_system=None, theme=THEME, highlight=False).print(renderable, crop=False)
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


def ops_table(table: Iterable[OpSpec]) -> FittedTable:
    """`gradcheck ops`: one row a function, read from the op table. Where "what it is" would be narrower
    than FIX_WIDTH, the group column is left out and each group is named after the description."""
    rows = list(table)

    def build(with_group: bool, probe: bool) -> tuple[Table, tuple[str, ...], list[str]]:
        out = Table(title="supported functions (also as methods: x.sum(dim=0))", title_justify="left",
                    show_edge=False, pad_edge=False)
        out.add_column("function", no_wrap=True)
        if with_group:
            out.add_column("group", no_wrap=True)
        out.add_column("what it is")
        for spec in rows:
            call = spec.signature() if not spec.syntax else f"{spec.syntax}  {spec.signature()}"
            group = spec.group.value + ("" if spec.complex_ok else " (no complex step)")
            doc = "x" * FIX_WIDTH if probe else (spec.doc if with_group else f"{spec.doc} [{group}]")
            out.add_row(Text(call), *([Text(group)] if with_group else []), Text(doc))  # Text: "[min, max]" is not markup
        return out, (), []

    return FittedTable(build, (True, False))
