"""--symbolic end to end: the exact column, and which side it blames where analytic and numeric disagree."""
from __future__ import annotations

import numpy as np
import pytest
import sympy
from numpy.testing import assert_allclose

from gradcheck_cli import InputError, check
from test_wrong_gradient import sin_with_error, swap

X = np.array([0.3, -1.1, 2.0])
S = sympy.Symbol("x")


def _exact(expr: sympy.Expr, points) -> np.ndarray:
    d = sympy.diff(expr, S)
    return np.array([float(d.evalf(40, subs={S: sympy.Float(float(p), 40)})) for p in points])


def test_the_symbolic_column_is_the_exact_derivative(gradcheck):
    data = gradcheck.json("check", "(sin(x)*exp(x)).sum()", "-v", "x=0.3,-1.1,2", "--symbolic")
    assert data["ok"] is True
    assert_allclose(data["inputs"]["x"]["symbolic"], _exact(sympy.sin(S) * sympy.exp(S), X), rtol=1e-15)
    assert "--symbolic" in data["replay"]


def test_symbolic_blames_the_analytic_side(monkeypatch):
    swap(monkeypatch, "sin", torch=sin_with_error(1e-4))
    r = check("sin(x).sum()", x=X, symbolic=True)
    res = r.inputs["x"]
    assert not r.ok and res.wrong.all()
    assert_allclose(res.symbolic, np.cos(X), rtol=1e-15)
    assert all(reason == "symbolic agrees with numeric: the analytic gradient is off" for reason in res.reasons)
    assert "constant factor" in res.diagnosis  # the wrong backward's shape is still described


def test_symbolic_blames_the_numeric_side_and_it_is_no_wrong_gradient(gradcheck):
    # sin at 1e8 with plain central differences: a step of ~600 aliases; autograd's cos(1e8) is right
    r = check("sin(x)", x=1e8, method="central", symbolic=True)
    res = r.inputs["x"]
    assert_allclose(res.symbolic, np.cos(1e8), rtol=1e-15)
    assert_allclose(res.analytic, np.cos(1e8), rtol=1e-15)
    assert not res.passed and not res.wrong  # unreliable, not wrong
    assert res.reasons[()] == "symbolic agrees with analytic: the numeric estimate is off here"
    assert res.diagnosis == ""  # no "constant factor" story about a backward that is right
    assert r.ok is False  # exit 1 unless the user accepts unreliable elements
    assert check("sin(x)", x=1e8, method="central", symbolic=True, allow_unreliable=True).ok is True
    gradcheck("check", "sin(x)", "-v", "x=1e8", "--method", "central", "--symbolic", "--allow-unreliable")


def test_without_symbolic_there_is_no_column():
    assert check("sin(x)", x=0.5).inputs["x"].symbolic is None


@pytest.mark.parametrize("kwargs, message", [
    ({"fast": True}, "--fast"),
    ({"x": "randn(3000)"}, "limit"),
])
def test_symbolic_refusals_are_bad_input(kwargs, message):
    values = {"x": X, **kwargs}
    with pytest.raises(InputError, match=message):
        check("(x*x).sum()", symbolic=True, **values)


def test_cli_refusal_is_one_line_exit_2(gradcheck):
    out = gradcheck("check", "(x*x).sum()", "-v", "x=randn(3)", "--symbolic", "--fast", exit_code=2)
    assert "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0
