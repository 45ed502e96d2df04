"""The human views: the rich table on a colourless fixed-width console, the grad_fn tree, DOT, ops."""
from __future__ import annotations

import dataclasses
import re
import shlex
from io import StringIO

import numpy as np
import pytest
import torch
from rich.console import Console

from gradcheck_cli import check, ops
from gradcheck_cli.ops import OPS, functions
from gradcheck_cli.render.table import THEME, check_view, graph_tree
from helpers import strict_json


def render(renderable, width: int = 120) -> str:
    buffer = StringIO()
    Console(file=buffer, width=width, color_system=None, theme=THEME, highlight=False).print(renderable)
    return buffer.getvalue()


def rows_of(text: str) -> list[str]:
    """The per-element rows of the tables: lines that start with an index such as [0] or [1, 2]."""
    return [line for line in text.splitlines() if re.match(r"\[[\d, ]*\]\s", line)]


CUBIC = dict(expression="3*a**3 - b**2", a=[2, 3], b=[6, 4], grad_output=[1, 1])


def test_grad_fn_chain_in_the_table():
    text = render(check_view(check(**CUBIC)))
    order = ["SubBackward0", "MulBackward0", "PowBackward0", "AccumulateGrad (a)", "PowBackward0",
             "AccumulateGrad (b)"]
    tree = text[text.index("grad_fn"):]
    positions, start = [], 0
    for name in order:  # depth-first, in this order
        start = tree.index(name, start)
        positions.append(start)
        start += len(name)
    assert positions == sorted(positions)
    assert "torch::autograd" not in text


def test_pass_verdicts_rule_and_replay():
    r = check(**CUBIC)
    text = render(check_view(r), width=300)  # the replay line unwrapped
    rows = rows_of(text)
    assert len(rows) == 4 and all(row.rstrip().endswith("PASS") for row in rows)
    # |numeric| ≥ 8 here, so rtol·|numeric| (≥ 8e-8) outweighs atol 1e-8: rtol decides each row
    assert r.method == "complex" and (r.atol, r.rtol) == (1e-8, 1e-8)
    assert all(" rtol " in row for row in rows)
    assert "PASS all 4 gradient elements agree" in text
    assert "atol 1e-08" in text and "rtol 1e-08" in text
    replay = next(line for line in text.splitlines() if line.startswith("replay: "))
    assert replay == f"replay: {r.replay}"


def test_rule_column_says_which_part_decided():
    # d/dx sum(x*y) = y: where y is 0 only atol can pass; where y is 5, rtol·5 = 5e-8 > 1e-8
    text = render(check_view(check("(x*y).sum()", x=[1.0, 2.0], y=[0.0, 5.0], wrt="x")))
    rows = {row.split()[0]: row for row in rows_of(text)}
    assert re.search(r"1\.0e-08 atol", rows["[0]"])
    assert re.search(r"6\.0e-08 rtol", rows["[1]"])  # 1e-8 + 1e-8·5
    # plain central differences are judged at rtol 1e-7: 1e-8 + 1e-7·5
    text = render(check_view(check("(x*y).sum()", x=[1.0, 2.0], y=[0.0, 5.0], wrt="x", method="central")))
    assert re.search(r"5\.1e-07 rtol", {row.split()[0]: row for row in rows_of(text)}["[1]"])


def _sin_wrong_above_one():
    class Sin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.sin(x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * torch.cos(x) * torch.where(x > 1, 1.001, 1.0)

    return Sin.apply


def test_fail_rows_come_first_and_are_marked(monkeypatch):
    monkeypatch.setitem(ops.OPS, "sin", dataclasses.replace(ops.OPS["sin"], torch=_sin_wrong_above_one()))
    x = np.linspace(0.05, 1.0, 40)
    x[[7, 31]] = [1.5, 2.0]  # the two elements whose backward is wrong
    r = check("sin(x).sum()", x=x)
    assert r.ok is False
    text = render(check_view(r, max_rows=5))
    rows = rows_of(text)
    assert len(rows) == 5
    failing = [row for row in rows if "FAIL" in row]
    assert [row.split()[0] for row in failing] == ["[7]", "[31]"]
    assert "35 more elements not shown (0 of them failing)" in " ".join(text.split())
    assert "FAIL 2 of 40 gradient elements disagree" in text


@pytest.mark.parametrize("rows, shown", [(None, 20), ("5", 5), ("0", 50), ("80", 50)])
def test_big_tensors_are_cut_to_rows(gradcheck, rows, shown):
    args = ["check", "(x*3).sum()", "-v", "x=randn(50)"] + (["--rows", rows] if rows else [])
    text = gradcheck(*args).stdout
    assert len(rows_of(text)) == shown
    hidden = 50 - shown
    flat = " ".join(text.split())
    if hidden:
        assert f"{hidden} more elements not shown" in flat
    else:
        assert "not shown" not in flat


def test_jacobian_table_has_one_row_per_entry():
    text = render(check_view(check("x * 2", x=[1.0, 2.0, 3.0])))
    indices = [row.split()[0] + row.split()[1] for row in rows_of(text)]
    assert indices == [f"[{i},{j}]" for i in range(3) for j in range(3)]


def test_intermediates_and_constants_are_shown():
    text = render(check_view(check("y = a * b; (y * 2).sum()", a=[1.0, 2.0], b=[3.0, 4.0], wrt="a")))
    assert "intermediates" in text
    assert re.search(r"^y\s+shape \[2\]", text, re.M)
    assert "constants: b" in text


def test_cli_table_is_colourless_and_complete(gradcheck):
    text = gradcheck("check", "3*a**3 - b**2", "-v", "a=2,3", "-v", "b=6,4", "--grad-output", "1,1").stdout
    assert "\x1b[" not in text
    for name in ("SubBackward0", "MulBackward0", "PowBackward0", "AccumulateGrad (a)", "AccumulateGrad (b)"):
        assert name in text
    assert "PASS all 4 gradient elements agree" in text
    assert "method complex, float64, mode vjp" in text


def test_replay_line_reproduces_the_check(gradcheck):
    args = ["check", "(w @ x).tanh().sum()", "-v", "w=randn(2,3)", "-v", "x=rand(3)", "--seed", "4"]
    text = gradcheck(*args).stdout
    replay = next(line for line in text.splitlines() if line.startswith("replay: "))[len("replay: "):]
    words = shlex.split(replay)
    assert words[:2] == ["gradcheck", "check"]
    again = gradcheck(words[1], "--json", *words[2:]).stdout
    first = gradcheck(args[0], "--json", *args[1:]).stdout
    assert strict_json(again)["inputs"] == strict_json(first)["inputs"]


# ---------------------------------------------------------------- graph


def test_graph_command_prints_the_tree(gradcheck):
    text = gradcheck("graph", "3*a**3 - b**2", "-v", "a=2,3", "-v", "b=6,4").stdout
    assert "SubBackward0" in text and "AccumulateGrad (a)" in text and "AccumulateGrad (b)" in text


def _dot_nodes_and_edges(dot: str):
    """Node name → its label's first line, and the edges (the full parser is in test_graph.py)."""
    nodes = {n: label.split("\\n")[0] for n, label in re.findall(r'^\s*(n\d+) \[label="([^"]*)"', dot, re.M)}
    edges = re.findall(r"^\s*(n\d+) -> (n\d+);", dot, re.M)
    return nodes, edges


def test_graph_writes_dot(gradcheck, tmp_path):
    path = tmp_path / "g.dot"
    gradcheck("graph", "3*a**3 - b**2", "-v", "a=2,3", "-v", "b=6,4", "--dot", str(path))
    dot = path.read_text()
    assert dot.startswith("digraph grad_fn {") and dot.rstrip().endswith("}")
    nodes, edges = _dot_nodes_and_edges(dot)
    assert sorted(nodes.values()) == sorted(["SubBackward0", "MulBackward0", "PowBackward0", "PowBackward0",
                                             "AccumulateGrad (a)", "AccumulateGrad (b)"])
    assert len(edges) == len(nodes) - 1  # no node is used twice here: a tree
    by_label = {label: n for n, label in nodes.items()}
    assert (by_label["SubBackward0"], by_label["MulBackward0"]) in edges
    assert re.search(r'label="AccumulateGrad \(a\)\\n\[2\] float64", style="rounded,filled"', dot)


def test_graph_dot_to_stdout_and_shared_nodes(gradcheck):
    # was: a tree with a second "MulBackward0 (shown above)" node; now autograd's DAG (issue 15)
    dot = gradcheck("graph", "y = x*2; y*y", "-v", "x=1", "--dot", "-").stdout
    nodes, edges = _dot_nodes_and_edges(dot)
    assert sorted(nodes.values()) == ["AccumulateGrad (x)", "MulBackward0", "MulBackward0  y"]
    assert len(edges) == 3  # y feeds the product twice: two edges into one node


def test_graph_dot_escapes_quotes(gradcheck):
    dot = gradcheck("graph", "x * 2", "-v", "x=1", "--dot", "-").stdout
    assert 'label="x * 2"' in dot


def test_graph_tree_renderable_for_a_leaf_output():
    assert "none" in render(graph_tree(None))


def test_graph_errors_are_exit_2(gradcheck, tmp_path):
    gradcheck.error("graph", "sin(x")
    path = tmp_path / "missing" / "g.dot"
    result = gradcheck("graph", "x * 2", "-v", "x=1", "--dot", str(path), exit_code=2)
    assert result.stderr.startswith(f"error: cannot write {path}")
    assert "Traceback" not in result.stderr and not path.exists()


# ---------------------------------------------------------------- ops


def test_ops_lists_every_named_row(gradcheck):
    text = gradcheck("ops").stdout
    for name, row in functions(OPS).items():
        assert row.signature() in text, name
        assert row.doc in text, name
    for row in OPS.values():
        if not row.named:  # reached by syntax: listed by that syntax
            assert row.syntax in text


def test_ops_json_matches_the_table(gradcheck):
    data = gradcheck.json("ops")
    assert [entry["name"] for entry in data] == list(functions(OPS))
    for entry in data:
        row = OPS[entry["name"]]
        assert entry["signature"] == row.signature()
        assert entry["group"] == row.group.value
        assert entry["doc"] == row.doc
