"""--method taylor: the fitted order of the Taylor remainder is 2 for a right gradient and 1 for a wrong one."""
from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

from gradcheck_cli import InputError, check
from gradcheck_cli.cli import main

PLUGIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "expressions", "plugins",
                      "softplus_ops.py")


def orders(result, name="x"):
    text = result.inputs[name].reasons.ravel()
    return np.array([float(t.rsplit(" ", 1)[1]) for t in text if t.startswith("Taylor remainder order")])


@pytest.mark.parametrize("expr, x", [
    ("(sin(x) * exp(-x)).sum()", "randn(5)"), ("sin(x)", "1e8"), ("log(x)", "1e-7"), ("x**3", "1e5"),
    ("exp(x)", "30"), ("(softmax(x) * w).sum()", "randn(4)"),
])
def test_right_gradients_have_order_two(expr, x):
    extra = {"w": "randn(4)", "wrt": "x"} if "w" in expr else {}
    r = check(expr, x=x, method="taylor", **extra)
    assert r.ok and r.method == "taylor"
    np.testing.assert_allclose(orders(r), 2.0, atol=0.1)


def test_wrong_backward_has_order_one():
    r = check("bad_softplus(x).sum()", x="randn(4)", method="taylor", plugins=[PLUGIN])
    assert not r.ok
    np.testing.assert_allclose(orders(r), 1.0, atol=0.1)


def test_linear_function_is_at_rounding_level():
    r = check("(3 * x).sum()", x="randn(3)", method="taylor")
    assert r.ok
    assert set(r.inputs["x"].reasons.ravel()) == {"remainder at rounding level (linear here)"}


def test_taylor_needs_a_scalar_or_grad_output():
    with pytest.raises(InputError, match="--method taylor needs"):
        check("x * 2", x=[1.0, 2.0], method="taylor")


def test_cli_exit_status_and_table():
    right = CliRunner().invoke(main, ["check", "tanh(x).sum()", "-v", "x=randn(3)", "--method", "taylor"])
    wrong = CliRunner().invoke(main, ["check", "bad_softplus(x).sum()", "-v", "x=randn(3)", "--method", "taylor",
                                      "--plugin", PLUGIN])
    assert right.exit_code == 0 and "Taylor remainder order 2.00" in right.stdout
    assert wrong.exit_code == 1 and "Taylor remainder order 1.00" in wrong.stdout
