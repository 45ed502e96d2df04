"""Verdicts you can trust (issue 10): one decision per element from evidence, each false verdict of the
issue tried with new functions and points, against sympy and torch oracles."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import sympy
import torch
from numpy.testing import assert_allclose

from gradcheck_cli import InputError, check
from gradcheck_cli.verdict import Policy, Verdict
from test_wrong_gradient import sin_with_error, swap

PLUGIN = os.path.join(os.path.dirname(__file__), "plugins", "verdict_ops.py")
S = sympy.Symbol("x", positive=True)


def exact(expr: sympy.Expr, point: float, order: int = 1) -> float:
    """d^order expr / dx^order at `point`, by sympy at 60 digits."""
    return float(sympy.diff(expr, S, order).evalf(60, subs={S: sympy.Float(point, 60)}))


# ------------------------------------------------------- complex step: a step relative to |x|

@pytest.mark.parametrize("text, expr, x", [
    ("1/(3*x)", 1 / (3 * S), 4e-18),
    ("x*log(x)", S * sympy.log(S), 7e-20),
    ("sqrt(2*x)", sympy.sqrt(2 * S), 5e-19),
    ("log(x)/x", sympy.log(S) / S, 3e-17),
])
def test_complex_step_is_exact_at_tiny_points(text, expr, x):
    r = check(text, x=x)
    res = r.inputs["x"]
    assert r.method == "complex"
    assert r.ok, res.reasons
    assert_allclose(res.numeric, exact(expr, x), rtol=1e-13)


# ------------------------------------------------------- a user's --eps has an honest bound

def test_eps_with_the_default_method_is_unreliable_not_a_constant_factor():
    x, h = 1.5, 3e-3
    r = check("x*exp(x)", x=x, eps=h)
    res = r.inputs["x"]
    assert r.method == "complex"
    # complex step at h: Im f(x+ih)/h = f' − h²f'''/6 + O(h⁴); the gap is the step's own truncation
    truncation = -h**2 * exact(S * sympy.exp(S), x, 3) / 6
    assert_allclose(res.numeric - exact(S * sympy.exp(S), x), truncation, rtol=1e-3)
    assert res.verdict[()] == Verdict.UNRELIABLE and not r.ok
    assert res.diagnosis == ""
    assert res.numeric_error[()] * 2 >= abs(truncation)  # the bound covers the truncation
    assert "--eps" in res.reasons[()] and "--method richardson" not in res.reasons[()]
    assert check("x*exp(x)", x=x, eps=h, allow_unreliable=True).ok


def test_eps_still_catches_a_wrong_backward_beyond_its_bound(monkeypatch):
    swap(monkeypatch, "sin", torch=sin_with_error(1e-2))
    r = check("(sin(x) * x).sum()", x=[0.4, 1.1], eps=3e-3)
    assert r.method == "complex"
    assert not r.ok and r.inputs["x"].wrong.all()
    assert "constant factor" not in r.inputs["x"].diagnosis  # sin' is off, x·sin' is not a factor of the whole
    wide = check("tanh32_2x(x)", x=0.4, eps=1e-4, plugins=[PLUGIN])
    assert not wide.ok and wide.inputs["x"].wrong.all()


@pytest.mark.parametrize("method", ["central", "richardson"])
def test_eps_with_central_and_richardson_bounds_its_truncation(method):
    x, h = 0.8, 1e-2
    r = check("exp(2*x)", x=x, eps=h, method=method)
    res = r.inputs["x"]
    gap = abs(float(res.numeric) - exact(sympy.exp(2 * S), x))
    assert gap <= 2 * float(res.numeric_error) + 1e-14
    assert res.verdict[()] != Verdict.FAIL


# ------------------------------------------------------- central differences at an aliasing point

def test_central_at_an_aliasing_point_does_not_blame_autograd():
    x = 3e7
    r = check("cos(x)", x=x, method="central")
    res = r.inputs["x"]
    assert_allclose(res.analytic, float(-sympy.sin(sympy.Float(x, 60))), rtol=1e-14)  # autograd is right
    assert res.verdict[()] == Verdict.UNRELIABLE and not res.wrong.any()
    assert res.diagnosis == ""
    assert "× numeric" not in res.diagnosis
    assert check("cos(x)", x=x).ok  # the default method is exact there


def test_central_in_its_h2_regime_still_passes_and_fails():
    assert check("(sin(x) * x).sum()", x=[0.3, 1.7, -2.2], method="central").ok
    r = check("cube_wide(x).sum()", x=[0.5, 1.5, -0.7], method="central", plugins=[PLUGIN])
    assert r.inputs["x"].wrong.all() and "2.5 × numeric" in r.inputs["x"].diagnosis


# ------------------------------------------------------- a forward rounded through float32

def test_a_float32_rounded_forward_is_unreliable_not_a_wrong_gradient():
    r = check("tanh32(x).sum()", x=[0.3, -1.2, 2.0], plugins=[PLUGIN])
    res = r.inputs["x"]
    assert_allclose(res.analytic, 1 - np.tanh([0.3, -1.2, 2.0]) ** 2, rtol=1e-15)
    assert not res.wrong.any()
    assert not r.ok and check("tanh32(x).sum()", x=[0.3, -1.2, 2.0], plugins=[PLUGIN], allow_unreliable=True).ok
    for reason in res.reasons[res.unreliable]:
        assert "unreliable" in reason and "--method richardson" not in reason  # it is already richardson
    assert r.method == "richardson"


def test_a_float32_rounded_forward_with_a_wrong_backward_still_fails():
    r = check("tanh32_2x(x).sum()", x=[0.3, -1.2, 2.0], plugins=[PLUGIN])
    assert not r.ok and r.inputs["x"].wrong.all()


# ------------------------------------------------------- kinks: proven, or no excuse

def test_a_wrong_backward_near_a_pole_fails_and_is_no_kink():
    x = 2e-9
    wrong = check("inv_square_3x(x)", x=x, plugins=[PLUGIN])
    res = wrong.inputs["x"]
    assert not wrong.ok and res.wrong.all()
    assert "not differentiable" not in res.reasons[()]
    assert_allclose(res.numeric, exact(1 / S**2, x), rtol=1e-6)
    assert "3 × numeric" in res.diagnosis
    right = check("inv_square(x)", x=x, plugins=[PLUGIN])
    assert right.ok, right.inputs["x"].reasons


def test_a_smooth_function_is_never_a_kink():
    r = check("ysin_off(y)", y=0.9, plugins=[PLUGIN])
    res = r.inputs["y"]
    assert not r.ok and res.wrong.all()
    assert "not differentiable" not in res.reasons[()]
    assert res.decision.kink is None or not res.decision.kink.any()


@pytest.mark.parametrize("op, ok, chose", [("leaky", True, 0.1), ("leaky_bad", False, 2.0)])
def test_a_real_kink_is_reported_and_judged_by_its_sides(op, ok, chose):
    r = check(f"{op}(x).sum()", x=[0.0, 0.6, -0.4], plugins=[PLUGIN])
    res = r.inputs["x"]
    assert r.ok is ok
    assert res.reasons[0] == f"not differentiable here: left 0.1, right 1, autograd chose {chose:g}"
    assert res.passed[1:].all()


def _smooth_cases():
    """The op table's cases whose every op is declared free of kinks, at points where a kink would show:
    every element the same (ties between arguments) and, for one input whose domain holds it, 0."""
    from gradcheck_cli.ops import OPS
    from gradcheck_cli.parse import parse
    from helpers import op_cases
    out = []
    for case in op_cases():
        ops = parse(case.expr, OPS).ops
        if any(OPS[op].may_kink for op in ops):
            continue
        domain = OPS[case.op].domain
        for point in [0.5] + ([0.0] if domain[0] < 0 < domain[1] and len(case.inputs) == 1 else []):
            inputs = {k: np.full(np.shape(v), point) for k, v in case.inputs.items()}
            out.append(pytest.param(case.expr, {**case.values, **inputs}, id=f"{case.expr}@{point}"))
    return out


@pytest.mark.parametrize("expr, values", _smooth_cases())
def test_an_op_declared_smooth_has_no_kink_at_ties_or_zero(expr, values, monkeypatch):
    """OpSpec.kinks=False lets a small check skip its both-sides look at every element: each such row,
    looked at from both sides anyway (forced), shows no kink where one would be (ties, 0)."""
    from gradcheck_cli.numeric import NumericEngine
    monkeypatch.setattr(NumericEngine, "can_kink", True)
    r = check(expr, **values)
    for res in r.inputs.values():
        assert res.decision.kink is None or not res.decision.kink.any(), res.reasons


def test_a_small_smooth_check_probes_no_sides_and_a_kinked_one_does(monkeypatch):
    """The skip is real (the test above would pass vacuously if nothing were skipped), and relu still
    gets every element of a small input looked at from both sides, so its kink at 0 is reported."""
    from gradcheck_cli.numeric import NumericEngine
    calls = []
    original = NumericEngine.one_sided
    monkeypatch.setattr(NumericEngine, "one_sided", lambda self, *a: calls.append(a[3].size) or original(self, *a))
    assert check("(sin(x) * x**2).sum()", x=[0.0, 0.5, -1.0]).ok
    assert calls == []
    r = check("(relu(x) * x**2 + relu(x)).sum()", x=[0.0, 0.5, -1.0])
    assert calls == [3]
    assert r.inputs["x"].reasons[0] == "not differentiable here: left 0, right 1, autograd chose 0"


# ------------------------------------------------------- second order: the full Hessian

def test_order_two_catches_a_wrong_mixed_partial_as_gradgradcheck_does():
    x, y = torch.tensor([0.7, -0.4], dtype=torch.float64), torch.tensor([1.3, 0.5], dtype=torch.float64)
    sys_plugins = [PLUGIN]
    import importlib.util
    spec = importlib.util.spec_from_file_location("verdict_ops", PLUGIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    inputs = (x.clone().requires_grad_(), y.clone().requires_grad_())
    with pytest.raises(Exception):  # torch's own oracle says the double backward is wrong
        torch.autograd.gradgradcheck(mod.OPS["xxy_detached"], inputs)
    assert torch.autograd.gradgradcheck(mod.OPS["xxy"], inputs)
    wrong = check("xxy_detached(x, y).sum()", x=x.tolist(), y=y.tolist(), plugins=sys_plugins)
    assert wrong.ok  # the first derivatives are right
    second = check("xxy_detached(x, y).sum()", x=x.tolist(), y=y.tolist(), plugins=sys_plugins, order=2)
    assert not second.ok
    assert set(second.hessians) == {"x", "x,y", "y,x", "y"}
    failing = {name for name, block in second.hessians.items() if not block.ok}
    assert failing == {"x,y"}
    # d²(Σ x²y)/dx_i dy_j = 2 x_i δ_ij: what the differenced gradient function gives
    assert_allclose(second.hessians["x,y"].numeric, np.diag(2 * x.numpy()), atol=1e-8)
    assert_allclose(second.hessians["x,y"].analytic, 0.0)
    right = check("xxy(x, y).sum()", x=x.tolist(), y=y.tolist(), plugins=sys_plugins, order=2)
    assert right.ok
    assert_allclose(right.hessians["x,y"].analytic, np.diag(2 * x.numpy()), rtol=1e-14)
    assert_allclose(right.hessians["x"].analytic, np.diag(2 * y.numpy()), rtol=1e-14)


def test_order_two_mixed_block_against_sympy():
    a, b = sympy.symbols("a b")
    f = sympy.sin(a) * sympy.exp(b) + a**3 * b
    at = {a: 0.4, b: -0.3}
    r = check("sin(a) * exp(b) + a**3 * b", a=0.4, b=-0.3, order=2)
    assert r.ok
    assert_allclose(float(r.hessians["a,b"].analytic), float(sympy.diff(f, a, b).subs(at)), rtol=1e-13)
    assert_allclose(float(r.hessians["b,a"].numeric), float(sympy.diff(f, b, a).subs(at)), rtol=1e-8)


def test_order_two_json_and_table_show_the_mixed_blocks(gradcheck):
    data = gradcheck.json("check", "a*a*b", "-v", "a=0.5", "-v", "b=2", "--order", "2")
    assert set(data["hessians"]) == {"a", "a,b", "b,a", "b"}
    assert_allclose(data["hessians"]["a,b"]["analytic"], 1.0)  # d²(a²b)/da db = 2a
    text = gradcheck("check", "a*a*b", "-v", "a=0.5", "-v", "b=2", "--order", "2").stdout
    assert "d² / da[j] db[k]" in text


# ------------------------------------------------------- diagnoses that the numbers support

def test_no_factor_is_claimed_against_a_numeric_zero():
    r = check("cube_bump(x).sum()", x=[0.0, 1.0, -2.0], plugins=[PLUGIN])
    res = r.inputs["x"]
    assert not r.ok and res.wrong.tolist() == [True, False, False]
    assert res.numeric[0] == pytest.approx(0.0, abs=1e-12)
    assert "factor" not in res.diagnosis and "× numeric" not in res.diagnosis
    assert res.diagnosis == "wrong only where the input is zero"


def test_no_constant_factor_where_the_ratio_varies():
    r = check("cube_jitter(x).sum()", x=[0.5, 1.5, -0.8], plugins=[PLUGIN])
    res = r.inputs["x"]
    ratio = res.analytic / res.numeric
    assert_allclose(ratio, [1 + 3e-5, 1 - 5e-5, 1.0], rtol=1e-9)  # the per-element ratios differ
    assert res.wrong.tolist() == [True, True, False]
    assert "constant factor" not in res.diagnosis


def test_taylor_diagnosis_gives_the_right_factor_and_relu_at_zero_passes():
    r = check("cube_wide(x).sum()", x=[0.5, 1.5, -0.7], method="taylor", plugins=[PLUGIN])
    assert not r.ok
    assert "2.5 × numeric" in r.inputs["x"].diagnosis  # 7.5x² against 3x²
    assert_allclose(r.inputs["x"].numeric, 3 * np.array([0.5, 1.5, -0.7]) ** 2, rtol=1e-6)
    k = check("relu(x).sum()", x=[0.0, 0.5, -0.3], method="taylor")
    assert k.ok, k.inputs["x"].reasons
    assert k.inputs["x"].reasons[0] == "not differentiable here: left 0, right 1, autograd chose 0"


# ------------------------------------------------------- policy is read, not stored; complex refused

def test_allow_unreliable_is_applied_when_the_verdict_is_read():
    r = check("cos(x)", x=3e7, method="central")
    res = r.inputs["x"]
    assert not res.ok
    relaxed = dataclasses.replace(res, policy=Policy(allow_unreliable=True))
    assert relaxed.ok and (relaxed.verdict == res.verdict).all()


@pytest.mark.parametrize("value", [np.array([1 + 2j, 0.5]), torch.tensor([1 + 1j]), 2 + 0.5j, [1.0, 3j]])
def test_complex_inputs_are_refused(value):
    with pytest.raises(InputError, match="'z' is complex"):
        check("(z * 2).sum()", z=value)


def test_order_two_above_the_full_size_is_a_projected_check_of_the_vjp_function():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=110), rng.normal(size=110)  # 220 elements together: above the full check's 200
    right = check("xxy(x, y).sum()", x=x, y=y, plugins=[PLUGIN], order=2)
    block = right.hessians["projected"]
    assert right.ok and block.projection is not None and block.projection.elements == 220 * 220
    # u·H·v for H of Σ x²y: blocks [[2y], [2x]; [2x], [0]] on the diagonals, computed here directly
    import gradcheck_cli.api as api
    d = api.random_directions(0, "order 2", 16, (2, 220)).astype(np.float64)
    u, v = d[:, 0], d[:, 1]
    expected = (u[:, :110] * 2 * y * v[:, :110]).sum(1) + (u[:, :110] * 2 * x * v[:, 110:]).sum(1) \
        + (u[:, 110:] * 2 * x * v[:, :110]).sum(1)
    assert_allclose(block.analytic, expected, rtol=1e-12)
    assert_allclose(block.numeric, expected, rtol=1e-7)
    wrong = check("xxy_detached(x, y).sum()", x=x, y=y, plugins=[PLUGIN], order=2)
    assert not wrong.ok and wrong.hessians["projected"].wrong.any()


def test_the_cli_shows_the_evidence_behind_an_unreliable_element(gradcheck):
    result = gradcheck("check", "exp(3*x)", "-v", "x=0.5", "--eps", "2e-3", exit_code=1)
    assert "UNRELIABLE numeric estimate unreliable here" in result.stdout
    assert "1 unreliable: the numeric side cannot tell" in result.stdout
    assert "constant factor" not in result.stdout
    data = gradcheck.json("check", "exp(3*x)", "-v", "x=0.5", "--eps", "2e-3", exit_code=1)
    (failure,) = data["inputs"]["x"]["failures"]
    assert failure["verdict"] == "unreliable"
    assert failure["abs_error"] <= failure["tolerance"] + failure["bound"]
    assert failure["bound"] > failure["tolerance"]
    gradcheck("check", "exp(3*x)", "-v", "x=0.5", "--eps", "2e-3", "--allow-unreliable")


def test_kinks_are_noted_in_json_even_where_the_numeric_side_agrees(gradcheck):
    data = gradcheck.json("check", "abs(x).sum() + relu(x).sum()", "-v", "x=0,2")
    assert data["ok"] is True
    # d/dx (|x| + relu x) at 0: left −1 + 0, right 1 + 1; torch chooses 0 + 0
    assert data["inputs"]["x"]["notes"] == [
        {"index": [0], "note": "not differentiable here: left -1, right 2, autograd chose 0"}]


# ------------------------------------------------------- the rule, element by element, over many blocks

def _rule_by_hand(a: np.ndarray, n: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    """The module docstring's rule written out plainly, one whole-array step at a time (no blocks)."""
    with np.errstate(all="ignore"):
        e, t = np.abs(a - n), atol + rtol * np.abs(n)
        verdict = np.where(e <= t + b, Verdict.UNRELIABLE, Verdict.FAIL)
        verdict = np.where((e <= t) | ((b <= t) & (e <= t + b)), Verdict.PASS, verdict)
        return np.where(np.isfinite(e), verdict, Verdict.FAIL).astype(np.int8)


@pytest.mark.parametrize("shape", [(), (7,), (300, 500), (3, 70000)])
def test_decide_gives_the_plain_rule_and_its_numbers_at_any_size(shape):
    """decide's blocked pass (tolerance and relative error kept only block by block, worked out whole when
    read) against the rule by hand and errors()' arrays: every verdict, tolerance and relative error equal,
    with passing, failing, unreliable, 0/0, nan and inf elements in every block."""
    from gradcheck_cli.verdict import Evidence, decide, errors
    rng = np.random.default_rng(11)
    n = rng.normal(size=shape)
    a = n + rng.choice([0.0, 1e-9, 1e-6, 1e-3], size=shape) * rng.normal(size=shape)
    b = rng.choice([0.0, 1e-9, 1e-5, np.inf, np.nan], size=shape)
    if n.size > 4:
        flat_n, flat_a = n.reshape(-1), a.reshape(-1)
        flat_n[::97], flat_a[::97] = 0.0, 0.0           # 0/0: no relative error
        flat_a[5::101], flat_a[7::103] = np.nan, np.inf  # non-finite analytic values fail
    atol, rtol = 1e-7, 1e-5
    decision = decide(Evidence(a, n, b), atol, rtol)
    np.testing.assert_array_equal(decision.verdict, _rule_by_hand(a, n, b, atol, rtol))
    abs_error, rel_error, tolerance, atol_decides = errors(a, n, atol, rtol)
    np.testing.assert_array_equal(decision.abs_error, abs_error)
    np.testing.assert_array_equal(decision.tolerance, tolerance)
    np.testing.assert_array_equal(decision.rel_error, rel_error)
    np.testing.assert_array_equal(decision.atol_decides, atol_decides)
    assert decision.verdict.shape == decision.tolerance.shape == decision.rel_error.shape == shape
    if n.size > 1000:
        assert {Verdict.PASS, Verdict.FAIL, Verdict.UNRELIABLE} <= set(np.unique(decision.verdict).tolist())
    if n.size > 4:
        replaced = dataclasses.replace(decision, verdict=np.zeros(shape, dtype=np.int8))  # as failed_with does
        np.testing.assert_array_equal(replaced.tolerance, tolerance)
