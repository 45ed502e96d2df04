"""`gradcheck check --accumulate N`: .grad adds up over backward() calls until zeroed (seed 001's 3, 6, 9)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sympy

from gradcheck_cli.accumulate import run_accumulate
from gradcheck_cli.api import CheckOptions
from gradcheck_cli.errors import InputError

ONE_WRONG = str(Path(__file__).parent / "plugins" / "one_wrong.py")


def test_the_notebooks_three_six_nine(gradcheck):
    """seed 001: (weights * 3).sum() on ones(4), backward three times: 3, 6, 9; with .grad.zero_(): 3, 3, 3."""
    data = gradcheck.json("check", "(weights * 3).sum()", "-v", "weights=ones(4)", "--accumulate", "3")
    assert data["ok"] and data["inputs"]["weights"]["analytic"] == [3.0] * 4
    passes = data["accumulate"]
    assert [(p["pass"], p["zeroed"]) for p in passes] == [(1, False), (2, False), (3, False),
                                                          (1, True), (2, True), (3, True)]
    assert [p["grad"]["weights"] for p in passes] == [[3.0] * 4, [6.0] * 4, [9.0] * 4] + [[3.0] * 4] * 3
    assert [p["expected"]["weights"] for p in passes] == [p["grad"]["weights"] for p in passes]
    assert all(p["ok"] for p in passes)


def test_the_table_shows_each_pass(gradcheck):
    out = gradcheck("check", "(weights * 3).sum()", "-v", "weights=ones(4)", "--accumulate", "3").stdout
    table = out[out.index(".grad over repeated backward() calls"):]
    rows = [[c.strip() for c in line.split("│")] for line in table.splitlines() if line.count("│") == 7]
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == [
        ("1", "no", "[3, 3, 3, 3]", "1"), ("2", "no", "[6, 6, 6, 6]", "2"), ("3", "no", "[9, 9, 9, 9]", "3"),
        ("1", "yes", "[3, 3, 3, 3]", "1"), ("2", "yes", "[3, 3, 3, 3]", "1"), ("3", "yes", "[3, 3, 3, 3]", "1")]
    assert "PASS 3 backward() calls without zeroing give 1×..3× the gradient" in " ".join(out.split())


def test_accumulation_matches_k_times_the_sympy_gradient():
    """seed 002's y = x + 2; z = y*y*3; out = z.mean(): d/dx = 6(x+2)/4, so 4.5 at x = 1; k passes give 4.5k."""
    x = sympy.Symbol("x")
    exact = float(sympy.diff(3 * (x + 2) ** 2 / 4, x).subs(x, 1))
    result = run_accumulate("y = x + 2; z = y*y*3; z.mean()", {"x": "ones(2,2)"}, CheckOptions(), 4)
    assert result.ok
    for p in result.passes:
        assert np.allclose(p.grads["x"].analytic, exact * p.factor, rtol=1e-12)
        assert p.factor == (1 if p.zeroed else p.number)


def test_a_vjp_accumulates_too(gradcheck):
    """seed 001's y2.backward(v) with v = [0.1, 1.0, 0.001]: .grad = 4x·v per pass."""
    data = gradcheck.json("check", "x*x*2", "-v", "x=1,2,3", "--grad-output", "0.1,1,0.001", "--accumulate", "2")
    once = 4 * np.array([1.0, 2.0, 3.0]) * np.array([0.1, 1.0, 0.001])
    assert np.allclose(data["accumulate"][1]["grad"]["x"], 2 * once) and np.allclose(data["accumulate"][3]["grad"]["x"], once)


def test_a_wrong_backward_fails_every_pass():
    result = run_accumulate("onewrong(w).sum()", {"w": "randn(9)"}, CheckOptions(plugins=(ONE_WRONG,)), 2)
    assert not result.ok and not result.accumulate_ok
    assert [p.ok for p in result.passes] == [False] * 4
    assert np.flatnonzero(~result.passes[1].grads["w"].passed).tolist() == [7]


@pytest.mark.parametrize("args,message", [
    (["x*2", "-v", "x=1,2"], "--accumulate calls backward(), which needs a scalar output or --grad-output"),
    (["x.sum()", "-v", "x=1,2", "--accumulate", "0"], "Invalid value for '--accumulate'"),
    (["x.sum()", "-v", "x=1,2", "--fast"], "--accumulate compares whole gradients; this check is projected"),
    (["x.sum()", "-v", "x=1,2", "--dtype", "float64,float32"], "--accumulate runs one dtype"),
])
def test_refused(gradcheck, args, message):
    full = [*args] if "--accumulate" in args else [*args, "--accumulate", "2"]
    err = gradcheck.error("check", *full)
    assert message in err, err


def test_the_api_limits_the_passes():
    with pytest.raises(InputError, match="--accumulate must be between 1 and 1000"):
        run_accumulate("x.sum()", {"x": [1.0]}, CheckOptions(), 1001)


def test_float32_accumulates_against_the_float64_reference(gradcheck):
    data = gradcheck.json("check", "(sin(w) * 3).sum()", "-v", "w=0.1,0.2,0.3", "--dtype", "float32",
                          "--accumulate", "5")
    assert data["ok"] and data["dtype"] == "float32"
    fifth = data["accumulate"][4]
    assert fifth["pass"] == 5 and not fifth["zeroed"]
    assert np.allclose(fifth["grad"]["w"], 5 * 3 * np.cos([0.1, 0.2, 0.3]), rtol=1e-6)
