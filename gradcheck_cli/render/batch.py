"""BatchResult → a rich summary (one row a case, then each failing case's full table), or
GitHub workflow annotations. Every string from a batch file is data: shown as Text (never markup),
control characters as escapes, and escaped by GitHub's workflow-command rules in annotations."""
from __future__ import annotations

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from ..batch import BatchResult, CaseResult, Status
from .safe import visible
from .step import result_view

_STYLE = {Status.PASS: "gc.ok", Status.FAIL: "gc.fail", Status.ERROR: "gc.fail", Status.XFAIL: "gc.warn",
          Status.XPASS: "gc.fail"}


def _worst(case: CaseResult) -> str:
    worst = case.summary.worst_abs_error if case.summary is not None else None
    return "" if worst is None else ("0" if worst == 0 else f"{worst:.1e}")


_CASE_MIN = 10  # the case's name keeps at least this many columns; past that, file:line folds


class _Summary:
    """The one-row-a-case table, laid out for the width it is drawn at (known only then)."""

    def __init__(self, batch: BatchResult):
        self.batch = batch

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield summary_table(self.batch, options.max_width)


def summary_table(batch: BatchResult, width: int | None = None) -> Table:
    """At `width` (80 columns, say) the case's name wraps first and file:line stays whole, folding only
    where the name would get fewer than _CASE_MIN columns; the verdict, error and time never wrap."""
    table = Table(show_edge=False, pad_edge=False)
    wheres = [Text(visible(f"{case.file}:{case.line}")) for case in batch.cases]
    where = max((w.cell_len for w in wheres), default=5)
    if width is not None:  # the other columns at their widest, and a separator (3) between each two
        others = len("verdict") + len("worst abs err") + len("999 ms") + 4 * 3
        where = max(5, min(where, width - others - _CASE_MIN))
    table.add_column("where", width=where, overflow="fold")
    table.add_column("case", overflow="fold")
    for header, justify in (("verdict", "left"), ("worst abs err", "right"), ("time", "right")):
        table.add_column(header, justify=justify, no_wrap=True)
    for case, at in zip(batch.cases, wheres):
        table.add_row(at, Text(visible(case.name)), Text(case.status.upper(), style=_STYLE[case.status]),
                      _worst(case), f"{case.seconds * 1000:.0f} ms")
    return table


def totals(batch: BatchResult) -> Text:
    parts = [(f"{batch.count(s)} {label}", _STYLE[s]) for s, label in
             ((Status.PASS, "passed"), (Status.FAIL, "failed"), (Status.ERROR, "errors"),
              (Status.XFAIL, "xfailed"), (Status.XPASS, "xpassed")) if batch.count(s)]
    text = Text("PASS " if batch.ok else "FAIL ", style="gc.ok" if batch.ok else "gc.fail")
    for i, (label, style) in enumerate(parts):
        text.append(", " if i else "")
        text.append(label, style=style)
    return text


def batch_view(batch: BatchResult, max_rows: int = 20) -> RenderableType:
    parts: list[RenderableType] = [_Summary(batch)]
    for case in batch.cases:
        if case.status in (Status.FAIL, Status.XPASS, Status.ERROR):
            parts.append(Text(f"\n{visible(case.file)}:{case.line} {visible(case.name)}: {case.status.upper()}",
                              style=_STYLE[case.status]))
            if case.message:
                parts.append(Text(visible(case.message, newlines=True)))
            if case.result is not None and case.status == Status.FAIL:
                parts.append(result_view(case.result, max_rows))
    parts += [Text(""), totals(batch)]
    return Group(*parts)


def _escape(text: str, prop: bool = False) -> str:
    """GitHub's workflow-command escaping (data: % CR LF; properties also : and ,), after control
    characters are made visible, so a stranger's text stays on its one line and starts no command."""
    text = visible(text) if prop else "\r".join(visible(part, newlines=True) for part in text.split("\r"))
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def github_annotations(batch: BatchResult) -> str:
    """`::error file=...,line=...::message` lines, so failures show on the TOML line in a pull request."""
    lines = []
    for case in batch.cases:
        if case.status in (Status.FAIL, Status.XPASS, Status.ERROR):
            props = f"file={_escape(case.file, True)},line={max(case.line, 1)},title={_escape('gradcheck ' + case.name, True)}"
            lines.append(f"::error {props}::{_escape(case.status + ': ' + case.message)}")
    counts = ", ".join(f"{batch.count(s)} {s}" for s in
                       (Status.PASS, Status.FAIL, Status.ERROR, Status.XFAIL, Status.XPASS) if batch.count(s))
    lines.append(f"::notice title=gradcheck batch::{counts or 'no cases'}")
    return "\n".join(lines) + "\n"
