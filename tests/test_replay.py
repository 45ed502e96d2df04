"""The replay line reruns the check it came from, also for expressions that begin with a minus."""
from __future__ import annotations

import json
import shlex

import pytest
from click.testing import CliRunner

from gradcheck_cli.cli import main


@pytest.mark.parametrize("expr", ["--json", "-log(p).mean()", "--p.sum()"])
def test_replay_of_a_leading_minus_reruns_the_same_check(expr):
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "80"})
    first = runner.invoke(main, ["check", "--json", "-v", "p=0.2,0.7", "--", expr] if "p" in expr
                          else ["check", "--json", "--", expr], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    replay = shlex.split(data["replay"])
    assert replay[:2] == ["gradcheck", "check"] and replay[-2:] == ["--", expr]
    again = runner.invoke(main, [*replay[1:-2], "--json", *replay[-2:]], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    rerun = json.loads(again.stdout)
    assert rerun["expression"] == expr
    assert rerun["output"] == data["output"]
    assert {n: r["analytic"] for n, r in rerun["inputs"].items()} == \
        {n: r["analytic"] for n, r in data["inputs"].items()}
