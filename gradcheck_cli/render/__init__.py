"""Views of results, found through one registry: (result kind, format) → renderer.

A renderer takes the result and a View (what the command asks of the output) and returns either text,
written to stdout as it is, or a rich renderable, printed on the command's console. Every command of
cli.py dispatches through `render`, and its `--format` choices are `formats(kind)`, so adding an output
format is a renderer file and its lines in REGISTRY below. Renderers are imported only when used: rich
is never loaded for JSON, and nothing is loaded for `--help`.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class View:
    """What a command asks of its output, beyond the result itself."""

    rows: int = 20                  # elements shown per variable (0: all)
    explain: Any = None             # the explained grad_fn DAG of `check --explain`
    title: str = ""
    expression: str = ""
    terminal: bool = False          # the console is a colour terminal (plots draw in colour)
    width: int = 80


# kind → format → "module:function" (relative to this package); the function is (result, View) → output.
REGISTRY: dict[str, dict[str, str]] = {
    "check": {"table": "views:check_table", "json": "views:check_json"},
    "ladder": {"table": "views:ladder_table", "json": "views:ladder_json"},
    "accumulate": {"table": "views:accumulate_table", "json": "views:accumulate_json"},
    "step": {"table": "views:step_table", "json": "views:step_json"},
    "module": {"table": "views:module_table", "json": "views:module_json"},
    "batch": {"table": "views:batch_table", "json": "views:batch_json", "github": "views:batch_github",
              "junit": "views:batch_junit"},
    "graph": {"table": "views:graph_table", "json": "views:graph_json"},
    "steps": {"table": "views:steps_table", "json": "views:steps_json"},
    "ops": {"table": "views:ops_table", "json": "views:ops_json"},
}

FILE_FORMATS = frozenset({"junit"})  # written to a file (--junit FILE), not chosen with --format


def formats(kind: str) -> tuple[str, ...]:
    """The --format choices of a result kind, table first."""
    return tuple(f for f in REGISTRY[kind] if f not in FILE_FORMATS)


def renderer(kind: str, fmt: str) -> Callable[[Any, View], Any]:
    module, _, function = REGISTRY[kind][fmt].partition(":")
    return getattr(importlib.import_module(f".{module}", __name__), function)


def render(kind: str, fmt: str, result: Any, view: View = View()) -> Any:
    """The result as `fmt` shows it: text (str) or a rich renderable."""
    return renderer(kind, fmt)(result, view)
