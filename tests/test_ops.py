"""Every row of the op table, in every mode, against oracles that do not share its code.

Cases come from `helpers.op_cases()`, which reads `gradcheck_cli.ops.OPS`: a new row is tested here
without editing this file. Two oracles: `torch.autograd.functional.jacobian` of the same function
written directly in torch (all rows), and sympy's exact derivative (scalar elementwise rows).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from gradcheck_cli import check
from gradcheck_cli.numeric import METHODS
from gradcheck_cli.ops import OPS, Group, functions
from helpers import OpCase, op_cases, oracle_jacobians, points, sympy_gradients, sympy_rows, torch_function, vjp

CASES = op_cases()
IDS = [case.id for case in CASES]

# The analytic side is torch autograd, like the oracle: they agree to rounding.
ANALYTIC_TOL = dict(rtol=1e-10, atol=1e-12)
# The numeric side is an independent engine: held to the float64 defaults it is judged by.
NUMERIC_TOL = dict(rtol=1e-7, atol=1e-8)


def _assert_against(case: OpCase, result, expected: dict[str, np.ndarray], what: str,
                    numeric_tol: dict = NUMERIC_TOL, analytic_tol: dict = ANALYTIC_TOL) -> None:
    assert result.ok, f"{case.expr} ({what}): gradcheck says the gradients disagree"
    assert list(result.inputs) == list(case.inputs)
    for name, oracle in expected.items():
        got = result.inputs[name]
        assert got.analytic.shape == oracle.shape, f"{case.expr} ({what}): analytic shape of {name}"
        assert_allclose(got.analytic, oracle, **analytic_tol,
                        err_msg=f"{case.expr} ({what}): analytic d/d{name} vs torch.autograd.functional.jacobian")
        assert_allclose(got.numeric, oracle, **numeric_tol,
                        err_msg=f"{case.expr} ({what}): numeric d/d{name} vs torch.autograd.functional.jacobian")
        assert got.ok


def test_every_row_has_a_case():
    assert {case.op for case in CASES} == {name for name, row in OPS.items() if not row.mutates}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jacobian_mode(case: OpCase):
    """A non-scalar output with no --grad-output: the full Jacobian, shape output + input."""
    result = check(case.expr, **case.values)
    out = case.torch_output()
    assert result.mode == "jacobian"
    assert result.output_shape == tuple(out.shape)
    assert_allclose(result.output_value, out.numpy(), rtol=1e-14, atol=0)
    expected = oracle_jacobians(case.torch_fn, case.inputs)
    for name, jac in expected.items():
        assert jac.shape == tuple(out.shape) + case.inputs[name].shape
    _assert_against(case, result, expected, "jacobian")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_mode(case: OpCase):
    """The scalar `(EXPR).sum()`: a gradient of each input's shape."""
    result = check(f"({case.expr}).sum()", **case.values)
    assert result.mode == "gradient"
    assert result.output_shape == ()
    expected = oracle_jacobians(lambda *t: case.torch_fn(*t).sum(), case.inputs)
    _assert_against(case, result, expected, "gradient")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vjp_mode(case: OpCase):
    """--grad-output g: the vector-Jacobian product g · J, as Q.backward(gradient=g)."""
    out_shape = tuple(case.torch_output().shape)
    weights = np.random.default_rng(7).uniform(-2.0, 2.0, size=out_shape)
    result = check(case.expr, grad_output=weights.tolist(), **case.values)
    assert result.mode == "vjp"
    assert_allclose(result.grad_output, weights, rtol=0, atol=0)
    jacobians = oracle_jacobians(case.torch_fn, case.inputs)
    expected = {name: vjp(weights, jac) for name, jac in jacobians.items()}
    _assert_against(case, result, expected, "vjp")


@pytest.mark.parametrize("method", [m for m in METHODS if m != "complex"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_real_step_methods(case: OpCase, method: str):
    """Methods other than complex step also pass every correct op, and report the method used."""
    result = check(f"({case.expr}).sum()", method=method, **case.values)
    assert result.method == method
    expected = oracle_jacobians(lambda *t: case.torch_fn(*t).sum(), case.inputs)
    # central differences are accurate to about eps^(2/3); Richardson to far better
    tol = dict(rtol=1e-7, atol=1e-8) if method == "richardson" else dict(rtol=5e-8, atol=1e-8)
    _assert_against(case, result, expected, method, numeric_tol=tol)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_passes_for_correct_ops(case: OpCase):
    """A float32 analytic side, judged against the float64 reference at the dtype's defaults."""
    result = check(f"({case.expr}).sum()", dtype="float32", **case.values)
    assert result.dtype == "float32"
    assert_allclose([result.atol, result.rtol], [1e-5, 1e-4], rtol=0, atol=0)
    # the point is rounded to float32 first, and both sides (and the oracle) see that point
    rounded = {name: result.inputs[name].value for name in case.inputs}
    for name, value in rounded.items():
        assert_allclose(value, case.inputs[name].astype(np.float32).astype(np.float64), rtol=0, atol=0)
    expected = oracle_jacobians(lambda *t: case.torch_fn(*t).sum(), rounded)
    _assert_against(case, result, expected, "float32",
                    analytic_tol=dict(rtol=1e-5, atol=1e-6), numeric_tol=NUMERIC_TOL)


@pytest.mark.parametrize("row", sympy_rows(), ids=lambda row: row.name)
def test_scalar_elementwise_against_sympy(row):
    """d f / d x_i from sympy.diff, element by element, for every elementwise row."""
    names = ["x"] if len(row.params) == 1 else ["a", "b"]
    values = points(row.domain, {name: (4,) for name in names}, seed=50)
    call = f"{row.name}({', '.join(names)})" if row.named else row.syntax
    result = check(f"({call}).sum()", **values)
    assert result.ok
    for name, exact in sympy_gradients(row, values).items():
        assert_allclose(result.inputs[name].analytic, exact, rtol=1e-12, atol=1e-14,
                        err_msg=f"{row.name}: analytic d/d{name} vs sympy")
        assert_allclose(result.inputs[name].numeric, exact, rtol=1e-9, atol=1e-12,
                        err_msg=f"{row.name}: numeric d/d{name} vs sympy")


@pytest.mark.parametrize("row", [r for r in OPS.values() if r.named and r.group is Group.REDUCTION
                                 and any(p.name == "dim" for p in r.params)],
                         ids=lambda row: row.name)
def test_full_reduction_is_scalar(row):
    """A reduction with no dim reduces everything (and keepdim keeps every axis as size 1)."""
    x = points(row.domain, {"x": (2, 3)}, seed=3)["x"]
    result = check(f"{row.name}(x)", x=x)
    assert result.mode == "gradient" and result.output_shape == ()
    kept = check(f"x.{row.name}(keepdim=True)", x=x)
    assert kept.output_shape == (1, 1)
    assert_allclose(kept.output_value.reshape(()), result.output_value, rtol=1e-15)
    assert_allclose(kept.inputs["x"].analytic, result.inputs["x"].analytic, rtol=1e-15)


def test_table_names_are_callable_functions():
    """Every named row is reachable by name; the syntax-only rows are not."""
    named = functions(OPS)
    assert set(named) == {name for name, row in OPS.items() if row.named}
    assert {"T", "getitem"} <= set(OPS) - set(named)


def test_torch_namespace_is_an_alias():
    """torch.sin(x) is sin(x): the same gradient."""
    x = points((-np.inf, np.inf), {"x": (3,)}, seed=11)["x"]
    plain, qualified = check("sin(x).sum()", x=x), check("torch.sin(x).sum()", x=x)
    assert_allclose(qualified.inputs["x"].analytic, plain.inputs["x"].analytic, rtol=0, atol=0)
    assert_allclose(qualified.inputs["x"].analytic, np.cos(x), rtol=1e-15)


def test_max_tie_follows_torch():
    """At a tie, torch's full max() splits the gradient evenly; the numeric side must agree."""
    x = np.array([1.0, 3.0, 3.0])
    t = torch.tensor(x, requires_grad=True)
    torch.max(t).backward()
    for method in ("auto", "central", "richardson"):
        result = check("x.max()", x=x, method=method)
        assert result.ok, method
        assert_allclose(result.inputs["x"].analytic, t.grad.numpy(), rtol=0, atol=0)
        assert_allclose(result.inputs["x"].numeric, t.grad.numpy(), rtol=1e-9, atol=1e-12)


UNARY_AT_ZERO = [row for row in OPS.values()
                 if row.group is Group.ELEMENTWISE and len(row.params) == 1 and row.domain[0] < 0 < row.domain[1]
                 and not row.mutates]
KINKS_AT_ZERO = {"abs", "relu"}  # a real step there straddles both slopes; torch picks the slope 0


@pytest.mark.parametrize("row, method", [
    (row, method) for row in UNARY_AT_ZERO for method in ("auto", "central", "richardson")
    if method == "auto" or row.name not in KINKS_AT_ZERO
], ids=lambda v: getattr(v, "name", v))
def test_unary_rows_at_exactly_zero(row, method):
    """0 is a common test point (zeros(3)): every row must pass there, kinks following torch."""
    x = np.zeros(3)
    call = f"{row.name}(x)" if row.named else row.syntax
    result = check(f"({call}).sum()", x=x, method=method)
    fn = torch_function(row.name)
    expected = oracle_jacobians(lambda t: fn(t).sum(), {"x": x})["x"]
    assert result.ok, f"{row.name} at 0 ({method})"
    assert_allclose(result.inputs["x"].analytic, expected, rtol=1e-15, atol=0)
    assert_allclose(result.inputs["x"].numeric, expected, rtol=1e-7, atol=1e-8)
