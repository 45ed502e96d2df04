"""Views of `gradcheck step` and `check --accumulate`: rich tables and the SPEC's JSON dicts."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..compare import plain
from .table import DEFAULT_ROWS, check_view, replay_line

if TYPE_CHECKING:  # the results' modules import the core; keep this view importable on its own
    from ..accumulate import AccumulateResult
    from ..stepping import ParamStep, StepResult


def _num(x: float) -> str:
    return f"{x:.8g}"


def _err(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def optimizer_text(result: "StepResult") -> str:
    """SGD(lr=0.01, momentum=0.1): the optimizer as given."""
    hyper = ", ".join(f"{k}={v!r}" for k, v in result.optimizer.hyper.items())
    return f"{result.optimizer.name}({hyper})"


def _rows(param: "ParamStep", max_rows: int) -> list[int]:
    """The elements shown: failing first, then in order; at most max_rows (0: all)."""
    bad = ~param.passed.reshape(-1) | ~param.gradient.passed.reshape(-1)
    order = np.concatenate([np.flatnonzero(bad), np.flatnonzero(~bad)])
    return sorted(int(k) for k in (order[:max_rows] if max_rows else order))


def _index(flat: int, shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(flat, shape)) + "]" if shape else ""


class StepTable:
    """One row a step and parameter element: gradients, torch's new value, the reference's, their gap.

    A renderable that reads the console's width: below 100 columns it drops the "before" column
    (the previous step's torch value) and shows 5 significant digits, so step, element and verdict
    always fit.
    """

    def __init__(self, result: "StepResult", max_rows: int = DEFAULT_ROWS):
        self.result = result
        self.max_rows = max_rows

    def __rich_console__(self, console: Any, options: Any) -> Any:
        yield self.table(options.max_width >= 100)

    def table(self, wide: bool) -> Table:
        digits = 8 if wide else 5
        table = Table(show_edge=False, pad_edge=False, expand=False)
        headers = [("step", "right"), ("param", "left")] + ([("before", "right")] if wide else [])
        grads = ("analytic grad", "numeric grad") if wide else ("analytic", "numeric")
        headers += [(grads[0], "right"), (grads[1], "right"), ("torch", "right"),
                    ("reference", "right"), ("|diff|", "right"), ("verdict", "left")]
        labels = [param.name + _index(k, param.passed.shape) for record in self.result.steps
                  for param in record.params.values() for k in _rows(param, self.max_rows)]
        for header, justify in headers:
            keep = header in ("step", "param", "verdict", "|diff|")
            # "FAIL value" and every element's name with its whole index (a dotted module parameter's too)
            width = 10 if header == "verdict" else max(map(len, labels), default=5) if header == "param" \
                else len(header)
            table.add_column(header, justify=justify, no_wrap=True, min_width=width if keep else None)
        hidden = 0
        for record in self.result.steps:
            first = True
            for param in record.params.values():
                shown = _rows(param, self.max_rows)
                hidden += param.passed.size - len(shown)
                flat = {k: np.asarray(v).reshape(-1) for k, v in (
                    ("before", param.before), ("a", param.gradient.analytic), ("n", param.gradient.numeric),
                    ("t", param.torch), ("r", param.reference), ("d", param.abs_error))}
                grad_ok, new_ok = param.gradient.passed.reshape(-1), param.passed.reshape(-1)
                for k in shown:
                    if grad_ok[k] and new_ok[k]:
                        verdict = Text("PASS", style="gc.ok")
                    else:
                        verdict = Text("FAIL", style="gc.fail")
                        verdict.append(" grad" if not grad_ok[k] else " value", style="gc.warn")
                    cells = [str(record.step) if first else "", Text(param.name + _index(k, param.passed.shape))]
                    cells += [f"{flat['before'][k]:.{digits}g}"] if wide else []
                    cells += [f"{flat['a'][k]:.{digits}g}" + ("*" if param.reused else ""),
                              f"{flat['n'][k]:.{digits}g}", f"{flat['t'][k]:.{digits}g}",
                              f"{flat['r'][k]:.{digits}g}", _err(flat["d"][k]), verdict]
                    table.add_row(*cells)
                    first = False
            table.add_section()
        notes = ["* the gradient of step 1, stepped on again (--no-recompute)"] if not self.result.recompute else []
        if hidden:
            notes.append(f"{hidden} more element rows not shown; --rows 0 shows all, JSON has everything")
        if notes:
            table.caption = Text("\n".join(notes))
            table.caption_justify = "left"
        return table


def step_view(result: "StepResult", max_rows: int = DEFAULT_ROWS) -> RenderableType:
    """The whole report of `gradcheck step`."""
    loop = ("zero_grad, recompute the loss, backward, step" if result.recompute
            else "one backward, then step() again on the same .grad (no zero_grad, no recompute)")
    losses = ", ".join(f"{r.step}: {_num(r.loss)}" for r in result.steps[:6])
    losses += ", …" if len(result.steps) > 6 else ""
    parts: list[RenderableType] = [
        Text.assemble(("gradcheck step ", "gc.head"), result.expression) if result.module is None else
        Text.assemble(("gradcheck module ", "gc.head"), f"{result.module} --optim, loss {result.expression}"),
        Text(f"optimizer {optimizer_text(result)}"
             + (f" from {result.optimizer.origin}" if result.optimizer.origin else " (torch.optim)")
             + f"; {len(result.steps)} step{'s' if len(result.steps) != 1 else ''}: {loop}", style="gc.dim"),
        Text(f"reference: the documented update rule in numpy, fed the numeric gradient at its own parameters; "
             f"loss before each step {losses}", style="gc.dim"),
    ]
    if result.constants:
        parts.append(Text("constants: " + ", ".join(result.constants), style="gc.dim"))
    parts += [Text(""), StepTable(result, max_rows), Text("")]
    failure = result.first_failure()
    line = Text("PASS " if result.ok else "FAIL ", style="gc.ok" if result.ok else "gc.fail")
    line.append(f"torch's {result.optimizer.name} agrees with the reference at every step" if failure is None
                else f"the trajectories part at {failure}")
    line.append(f"  (|torch − reference| ≤ atol {result.atol:g} + rtol {result.rtol:g}·|reference|, gradients "
                f"by the same rule; method {result.method}, {result.dtype})", style="gc.dim")
    parts += [line, replay_line(result.replay),
              Text(", ".join(f"{k} {v}" for k, v in result.versions.items()), style="gc.dim")]
    return Group(*parts)


def _literal(value: Any) -> Any:
    """A keyword's literal as JSON: tuples as lists, non-finite numbers as text; True/False/None as they are."""
    if isinstance(value, tuple):
        return [_literal(v) for v in value]
    if isinstance(value, float):
        return plain(value)
    return value


def step_dict(result: "StepResult") -> dict[str, Any]:
    """The SPEC's JSON object for `gradcheck step` (plus the settings used and where it failed)."""
    steps = []
    for record in result.steps:
        params = {}
        for name, p in record.params.items():
            entry = {"shape": list(p.passed.shape), "before": plain(p.before),
                     "grad_analytic": plain(p.gradient.analytic), "grad_numeric": plain(p.gradient.numeric),
                     "grad_reference": plain(p.fed),
                     "torch": plain(p.torch), "reference": plain(p.reference),
                     "max_abs_error": plain(p.max_abs_error), "grad_ok": p.gradient.ok, "ok": p.ok}
            if p.reused:
                entry["grad_reused"] = True
            found = p.first_failure()
            if found is not None:
                entry["reason"] = f"{name}{_index(found[0], p.passed.shape)}: {found[1]}"
            params[name] = entry
        steps.append({"step": record.step, "loss": plain(record.loss), "params": params, "ok": record.ok})
    return {
        "ok": result.ok,
        "expression": result.expression,
        **({} if result.module is None else {"module": result.module}),
        "optimizer": {"name": result.optimizer.name, "hyper": {k: _literal(v) for k, v in result.optimizer.hyper.items()},
                      "origin": result.optimizer.origin},
        "recompute": result.recompute, "dtype": result.dtype, "method": result.method,
        "atol": result.atol, "rtol": result.rtol,
        "steps": steps,
        "first_failure": result.first_failure(),
        "constants": {name: {"shape": list(np.shape(v)), "value": plain(v)} for name, v in result.constants.items()},
        "replay": result.replay, "versions": result.versions,
    }


def result_view(result: Any, max_rows: int = DEFAULT_ROWS) -> RenderableType:
    """The view of any case's result: a check, a step run or an accumulation."""
    from ..accumulate import AccumulateResult
    from ..stepping import StepResult
    if isinstance(result, StepResult):
        return step_view(result, max_rows)
    if isinstance(result, AccumulateResult):
        return accumulate_view(result, max_rows)
    from ..module import ModuleResult
    if isinstance(result, ModuleResult):
        from .module import module_view
        return module_view(result, max_rows)
    return check_view(result, max_rows)


def result_dict(result: Any) -> dict[str, Any]:
    """The JSON of any case's result: a check, a step run or an accumulation."""
    from ..accumulate import AccumulateResult
    from ..stepping import StepResult
    from .json import check_dict
    if isinstance(result, StepResult):
        return step_dict(result)
    if isinstance(result, AccumulateResult):
        return accumulate_dict(result)
    from ..module import ModuleResult
    if isinstance(result, ModuleResult):
        from .json import module_dict
        return module_dict(result)
    return check_dict(result)


def _values(array: np.ndarray, limit: int = 4) -> str:
    flat = np.asarray(array).reshape(-1)
    text = ", ".join(f"{v:.6g}" for v in flat[:limit])
    return f"[{text}{', …' if flat.size > limit else ''}]" if np.ndim(array) else text


def accumulate_table(result: "AccumulateResult") -> Table:
    """One row a pass and variable: .grad after the pass beside k × the numeric gradient."""
    table = Table(title=Text(".grad over repeated backward() calls: accumulated until zeroed", style="gc.head"),
                  title_justify="left", show_edge=False, pad_edge=False, expand=False)
    for header, justify in (("pass", "right"), ("zeroed", "left"), ("variable", "left"),
                            (".grad", "right"), ("k", "right"), ("k × numeric", "right"), ("|diff|", "right"),
                            ("verdict", "left")):
        table.add_column(header, justify=justify, no_wrap=header in ("pass", "zeroed", "k", "verdict"))
    zeroed_before = None
    for p in result.passes:
        if zeroed_before is not None and p.zeroed != zeroed_before:
            table.add_section()
        zeroed_before = p.zeroed
        for name, g in p.grads.items():
            diff = float(np.max(g.abs_error, initial=0.0))
            table.add_row(str(p.number), "yes" if p.zeroed else "no", Text(name), _values(g.analytic),
                          str(p.factor), _values(g.numeric),
                          _err(diff), Text("PASS", style="gc.ok") if g.ok else Text("FAIL", style="gc.fail"))
    return table


def accumulate_view(result: "AccumulateResult", max_rows: int = DEFAULT_ROWS) -> RenderableType:
    """`check --accumulate N`: the check, then the accumulation table and its verdict."""
    n = len(result.passes) // 2
    line = Text("PASS " if result.accumulate_ok else "FAIL ", style="gc.ok" if result.accumulate_ok else "gc.fail")
    bad = [p for p in result.passes if not p.ok]
    line.append(f"{n} backward() calls without zeroing give 1×..{n}× the gradient; with .grad.zero_() before "
                "each, 1× every time" if not bad else
                f"pass {bad[0].number} ({'zeroed' if bad[0].zeroed else 'not zeroed'}) differs from "
                f"{bad[0].factor} × the numeric gradient")
    return Group(check_view(result.check, max_rows), Text(""), accumulate_table(result), line)


def accumulate_dict(result: "AccumulateResult") -> dict[str, Any]:
    """The check's JSON with "accumulate": one entry a pass, unzeroed group first."""
    from .json import check_dict
    out = check_dict(result.check)
    out["ok"] = result.ok
    out["accumulate"] = [{"pass": p.number, "zeroed": p.zeroed,
                          "grad": {n: plain(g.analytic) for n, g in p.grads.items()},
                          "expected": {n: plain(g.numeric) for n, g in p.grads.items()},
                          "ok": p.ok} for p in result.passes]
    return out
