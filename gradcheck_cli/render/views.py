"""The registered renderers (see render/__init__.py): each (result, View) → text or a rich renderable.

Thin: each names the view function of its format's module, so those modules stay importable alone
(json.py never imports rich)."""
from __future__ import annotations

from typing import Any

from . import View


def _json(data: Any) -> str:
    from .json import dumps
    return dumps(data) + "\n"


def check_table(result: Any, view: View) -> Any:
    from .table import check_view
    return check_view(result, view.rows, view.explain)


def check_json(result: Any, view: View) -> str:
    from .json import check_dict, dag_dict
    return _json({**check_dict(result), **({"explain": dag_dict(view.explain)} if view.explain else {})})


def ladder_table(ladder: Any, view: View) -> Any:
    from .table import ladder_view
    return ladder_view(ladder.results, ladder.verdicts, view.rows)


def ladder_json(ladder: Any, view: View) -> str:
    from .json import check_dict
    return _json({"ok": ladder.ok, "ladder": [{"dtype": r.dtype, "verdict": v, "result": check_dict(r)}
                                              for r, v in zip(ladder.results, ladder.verdicts)]})


def accumulate_table(result: Any, view: View) -> Any:
    from .step import accumulate_view
    return accumulate_view(result, view.rows)


def accumulate_json(result: Any, view: View) -> str:
    from .step import accumulate_dict
    return _json(accumulate_dict(result))


def module_table(result: Any, view: View) -> Any:
    from .module import module_view
    return module_view(result, view.rows)


def module_json(result: Any, view: View) -> str:
    from .json import module_dict
    return _json(module_dict(result))


def step_table(result: Any, view: View) -> Any:
    from .step import step_view
    return step_view(result, view.rows)


def step_json(result: Any, view: View) -> str:
    from .step import step_dict
    return _json(step_dict(result))


def batch_table(result: Any, view: View) -> Any:
    from .batch import batch_view
    return batch_view(result, view.rows)


def batch_json(result: Any, view: View) -> str:
    from .json import batch_dict
    return _json(batch_dict(result))


def batch_github(result: Any, view: View) -> str:
    from .batch import github_annotations
    return github_annotations(result)


def batch_junit(result: Any, view: View) -> str:
    from .junit import junit_xml
    return junit_xml(result)


def graph_table(dag: Any, view: View) -> Any:
    from .graph import dag_tree
    return dag_tree(dag, view.title)


def graph_json(dag: Any, view: View) -> str:
    from .json import dag_dict
    return _json({"expression": view.expression, "graph": dag_dict(dag)})


def steps_table(curves: Any, view: View) -> Any:
    from .steps import steps_view
    return steps_view(curves, terminal=view.terminal, width=view.width)


def steps_json(curves: Any, view: View) -> str:
    from ..steps import curves_dict
    return _json(curves_dict(curves))


def ops_table(rows: Any, view: View) -> Any:
    from .table import ops_table as table
    return table([*rows.functions, *rows.syntax])


def ops_json(rows: Any, view: View) -> str:
    return _json([{"name": s.name, "signature": s.signature(), "group": s.group.value,
                   "complex_step": s.complex_ok, "doc": s.doc} for s in rows.functions])
