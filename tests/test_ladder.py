"""--dtype a,b,c: one check per dtype; the verdict says rounding, precision problem, or wrong gradient."""
from __future__ import annotations

import json
import os

from click.testing import CliRunner

from gradcheck_cli.cli import main

PLUGIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "expressions", "plugins",
                      "softplus_ops.py")


def run(*args):
    return CliRunner().invoke(main, ["check", *args, "--json"])


def test_correct_op_is_rounding_only_in_lower_precisions():
    result = run("(tanh(x) * sin(x)).sum()", "-v", "x=randn(6)", "--dtype", "float64,float32,bfloat16")
    assert result.exit_code == 0, result.output
    ladder = json.loads(result.stdout)["ladder"]
    assert [step["dtype"] for step in ladder] == ["float64", "float32", "bfloat16"]
    assert ladder[0]["verdict"] == "right"
    assert all(step["verdict"].startswith("rounding only") for step in ladder[1:])
    assert [step["result"]["dtype"] for step in ladder] == ["float64", "float32", "bfloat16"]


def test_wrong_backward_is_not_excused_as_rounding():
    result = run("bad_softplus(x).sum()", "-v", "x=randn(3)", "--dtype", "float32,float64", "--plugin", PLUGIN)
    assert result.exit_code == 1
    ladder = {step["dtype"]: step for step in json.loads(result.stdout)["ladder"]}
    assert ladder["float64"]["verdict"].startswith("wrong gradient")
    assert ladder["float32"]["verdict"] == ("wrong gradient: float64 fails too, so this is not rounding; "
                                            "float32's looser tolerance hides it")


def test_a_single_dtype_keeps_the_plain_json_shape():
    result = run("exp(x).sum()", "-v", "x=1,2", "--dtype", "float32")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["dtype"] == "float32"


def test_unknown_dtype_is_exit_2():
    result = CliRunner().invoke(main, ["check", "x", "-v", "x=1", "--dtype", "float64,float8"])
    assert result.exit_code == 2
    assert "'float8' is not a dtype" in result.output
