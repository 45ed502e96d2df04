"""Tables that fit: at 80 columns (and wider) every element row keeps its full index and its verdict,
no line but the replay line is wider than the terminal, and the replay line pastes whole."""
from __future__ import annotations

import os
import re
import shlex

import numpy as np
import pytest
from click.testing import CliRunner

from gradcheck_cli import check
from gradcheck_cli.cli import main
from gradcheck_cli.render.table import check_view, next_step, to_text
from helpers import strict_json

PLUGINS = os.path.join(os.path.dirname(__file__), "plugins")
SOFTPLUS = os.path.join(os.path.dirname(__file__), "..", "expressions", "plugins", "softplus_ops.py")
ELEMENT_ROW = re.compile(r"^\[[0-9]")
FULL_INDEX = re.compile(r"^\[(\d+(, \d+)*)?\]")
VERDICT = re.compile(r"\b(PASS|FAIL|UNRELIABLE)\b")


def invoke(*args: str, columns: int = 80, exit_code: int | None = None):
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": str(columns), "TERM": "dumb"})
    result = runner.invoke(main, list(args), catch_exceptions=False)
    if exit_code is not None:
        assert result.exit_code == exit_code, result.stdout + result.stderr
    return result


def assert_fits(text: str, columns: int, dims: int | None = None) -> list[str]:
    """Every line but the replay line fits; every element row has its full index and a verdict."""
    lines = text.splitlines()
    too_wide = [line for line in lines if len(line) > columns and not line.startswith("replay: ")]
    assert not too_wide, "\n".join(too_wide)
    rows = [line for line in lines if ELEMENT_ROW.match(line)]
    assert rows, text
    for row in rows:
        index = FULL_INDEX.match(row)
        assert index, row
        if dims is not None:
            assert index.group(0).count(",") == dims - 1, row
        assert VERDICT.search(row[index.end():]), row
    return rows


CASES = [
    # the repository hook's own case
    (["check", "(sin(x)*3).sum()", "-v", "x=randn(3,4)"], 0, 2),
    # Jacobian mode: indices out.shape + in.shape, four numbers each
    (["check", "x * 2", "-v", "x=randn(3,4)"], 0, 4),
    (["check", "(w @ x).tanh()", "-v", "w=randn(12,11)", "-v", "x=randn(11)", "--wrt", "w"], 0, 3),
    # a failing custom op (its backward is wrong at one element)
    (["check", "onewrong(x).sum()", "-v", "x=randn(4,3)", "--plugin", os.path.join(PLUGINS, "one_wrong.py")], 1, 2),
    (["check", "bad_softplus(x).sum()", "-v", "x=randn(3)", "--plugin", SOFTPLUS], 1, 1),
    # the widest table: a symbolic column too, intermediates, large and negative values
    (["check", "y = x * 1e6; (y**3 - x).sum()", "-v", "x=randn(2,3)", "--symbolic"], None, 2),
]


@pytest.mark.parametrize("columns", [80, 100, 200])
@pytest.mark.parametrize("args, code, dims", CASES, ids=[" ".join(c[0][1:2]) for c in CASES])
def test_every_row_keeps_index_and_verdict(args, code, dims, columns):
    result = invoke(*args, columns=columns, exit_code=code)
    assert_fits(result.stdout, columns, dims)


def test_the_hook_rows_read_index_then_pass():
    rows = assert_fits(invoke("check", "(sin(x)*3).sum()", "-v", "x=randn(3,4)", exit_code=0).stdout, 80, 2)
    assert [row.split("  ")[0].split(" │")[0].strip() for row in rows] == [
        f"[{i}, {j}]" for i in range(3) for j in range(4)]
    assert all(re.search(r"\bPASS\s*$", row) for row in rows)


def test_numbers_shorten_and_dropped_columns_are_named():
    wide = invoke("check", "(sin(x)*3).sum()", "-v", "x=randn(3,4)", columns=200).stdout
    narrow = invoke("check", "(sin(x)*3).sum()", "-v", "x=randn(3,4)", columns=80).stdout
    assert "tol rule" in wide and "left out" not in wide
    assert "tol rule left out to fit 80 columns (--json has every column)" in narrow
    # the value shown is the analytic gradient 3·cos(x), rounded to fewer digits, never cut with "…"
    x = strict_json(invoke("check", "--json", "(sin(x)*3).sum()", "-v", "x=randn(3,4)").stdout)["inputs"]["x"]
    first = 3 * np.cos(x["value"][0][0])
    row = next(line for line in narrow.splitlines() if line.startswith("[0, 0]"))
    cells = [cell.strip() for cell in row.split("│")]
    assert "…" not in narrow
    assert float(cells[2]) == pytest.approx(first, rel=1e-6) and cells[2] != f"{first:.10g}"


@pytest.mark.parametrize("columns", [80, 120])
def test_replay_line_is_one_physical_line_that_pastes(columns):
    args = ["check", "bad_softplus(x).sum()", "-v", "x=randn(3)", "--plugin", SOFTPLUS, "--atol", "1e-9"]
    text = invoke(*args, columns=columns, exit_code=1).stdout
    replays = [line for line in text.splitlines() if line.startswith("replay: ")]
    assert len(replays) == 1
    words = shlex.split(replays[0][len("replay: "):])
    assert words[-2:] == ["--plugin", SOFTPLUS] and "--atol" in words  # nothing lost at the end
    again = invoke(*words[1:], "--json", exit_code=1).stdout
    first = invoke(*args, "--json", exit_code=1).stdout
    assert strict_json(again)["inputs"] == strict_json(first)["inputs"]
    line_after = text.splitlines()[text.splitlines().index(replays[0]) + 1]
    assert line_after.startswith("torch ")  # the replay command did not spill onto the next line


def test_output_is_plain_when_piped_or_no_color():
    text = invoke("check", "onewrong(x).sum()", "-v", "x=randn(4,3)", "--plugin",
                  os.path.join(PLUGINS, "one_wrong.py"), exit_code=1).stdout
    assert "\x1b[" not in text


def test_failing_summary_says_what_to_do_next():
    text = invoke("check", "bad_softplus(x).sum()", "-v", "x=randn(3)", "--plugin", SOFTPLUS, exit_code=1).stdout
    flat = " ".join(text.split())
    assert 'Next: fix the backward of bad_softplus (see "what to fix" above), then run the replay line again.' in flat
    passing = invoke("check", "sin(x)", "-v", "x=1", exit_code=0).stdout
    assert "Next:" not in passing


def test_next_step_for_a_wrong_builtin(monkeypatch):
    import dataclasses

    import torch

    from gradcheck_cli import ops

    class Sin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.sin(x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * torch.cos(x) * 1.001

    monkeypatch.setitem(ops.OPS, "sin", dataclasses.replace(ops.OPS["sin"], torch=Sin.apply))
    r = check("sin(x).sum()", x=[0.5, 1.0])
    assert r.ok is False
    sentence = next_step(r)
    assert sentence == ("Next: look at the FAIL rows of x above (the worst come first; --rows 0 shows all), "
                        "then run the replay line with --json for every number.")
    assert sentence in " ".join(to_text(check_view(r), 80).split())
    assert next_step(check("cos(x)", x=1.0)) == ""  # sin is patched here


def test_custom_ops_table_lists_fixes_under_it_when_narrow():
    result = check("bad_softplus(x).sum()", x=[0.5, 1.0], plugins=[SOFTPLUS])
    narrow, wide = to_text(check_view(result), 80), to_text(check_view(result), 200)
    fix = next(f for report in result.custom_ops for f in report.findings if not f.ok).message
    assert fix[:30] in " ".join(wide.split()) and fix[:30] in " ".join(narrow.split())
    assert "what to fix" in wide and "what to fix" not in narrow.split("custom ops")[1].splitlines()[1]
    assert max(len(line) for line in narrow.splitlines() if not line.startswith("replay: ")) <= 80


def test_batch_and_ops_tables_fit_80_columns(tmp_path):
    cases = tmp_path / "cases.toml"
    cases.write_text('[[case]]\nname = "a rather long case name that goes on and on and on and on"\n'
                     'expr = "sin(x).sum()"\nvars = { x = "randn(3)" }\n'
                     '[[case]]\nname = "wrong"\nexpr = "bad_softplus(x).sum()"\nvars = { x = [1.0] }\n')
    text = invoke("batch", str(cases), "--plugin", SOFTPLUS, exit_code=1).stdout
    lines = [line for line in text.splitlines() if not line.startswith("replay: ")]
    assert max(map(len, lines)) <= 80, text
    summary = [line for line in lines if re.search(r"\b(PASS|FAIL)\b.*ms$", line)]
    assert len(summary) == 2, text
    ops = invoke("ops", exit_code=0).stdout
    assert max(map(len, ops.splitlines())) <= 80
    assert "…" not in ops
    # the group column gives way to a note after each description; wide, it is a column again
    assert re.search(r"^a \+ b  add\(a, b\)\s+│ a \+ b \[elementwise\]", ops, re.M)
    wide = invoke("ops", columns=200, exit_code=0).stdout
    assert re.search(r"^a \+ b  add\(a, b\)\s+│ elementwise\s+│ a \+ b\s*$", wide, re.M)


@pytest.mark.parametrize("columns", [80, 120])
def test_batch_table_keeps_file_and_line_whole_and_wraps_the_case_name(tmp_path, columns, monkeypatch):
    """At 80 columns the long case name wraps and `FILE:LINE` stays on one line, so it can be copied."""
    monkeypatch.chdir(tmp_path)
    os.mkdir("gradient_suites")
    cases = os.path.join("gradient_suites", "lessons.toml")  # 30 columns with its line
    with open(cases, "w") as handle:
        handle.write('[[case]]\nname = "a rather long case name that goes on and on and on and on"\n'
                     'expr = "sin(x).sum()"\nvars = { x = [1.0] }\n')
    where = f"{cases}:1"
    text = invoke("batch", cases, columns=columns, exit_code=0).stdout
    lines = text.splitlines()
    assert max(map(len, lines)) <= columns, text
    assert any(line.startswith(where + " ") for line in lines), text
    first = next(i for i, line in enumerate(lines) if "PASS" in line)
    name = " ".join(line.split("│")[1].strip() for line in lines[first:] if "│" in line)
    assert name.startswith("a rather long case name that goes on and on and on and on"), text


def test_the_repository_hook_as_a_real_process():
    """The hook's own command, in a fresh process with COLUMNS=80 and stdout a pipe, as a shell runs it."""
    import subprocess
    import sys
    env = {**os.environ, "COLUMNS": "80"}
    env.pop("NO_COLOR", None)
    done = subprocess.run([sys.executable, "-m", "gradcheck_cli", "check", "(sin(x)*3).sum()", "-v", "x=randn(3,4)"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout  # piped: plain text
    rows = [line for line in done.stdout.splitlines() if re.match(r"^\[[0-9]", line)]
    assert len(rows) == 12
    for row in rows:
        assert re.match(r"^\[\d, \d\]", row) and re.search(r"\b(PASS|FAIL)\b", row), row
    assert all(len(line) <= 80 for line in done.stdout.splitlines() if not line.startswith("replay: "))


def test_next_step_for_an_unsure_numeric_side_suggests_what_is_not_in_use():
    r = check("sin(x)", x=1e8, method="central", symbolic=True)
    assert r.ok is False and not r.inputs["x"].wrong.any()
    sentence = next_step(r)
    assert sentence == ("Next: the numeric side is unsure where they disagree; try --method richardson, "
                        "or --allow-unreliable if this is as good as it gets.")
    r = check("exp(x)", x=2.0, eps=1e-3)
    assert r.ok is False and not r.inputs["x"].wrong.any()
    assert next_step(r).startswith("Next: the numeric side is unsure where they disagree; try a check without "
                                   "--eps (a step chosen per element), --symbolic for the exact value, ")
