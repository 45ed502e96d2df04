"""Custom ops: right Functions pass (also at large magnitudes and in float32); wrong ones are caught
with the right diagnosis, the right op is blamed, and the beyond-values checks fire."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gradcheck_cli import InputError, check
from gradcheck_cli.cli import main

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "plugins", "corpus_ops.py")
BROKEN = os.path.join(HERE, "plugins", "broken_ops.py")
X = [-1.5, -0.3, 0.4, 2.0]


def sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x)))


@pytest.mark.parametrize("expr, x, dtype", [
    ("good_softplus(x).sum()", X, "float64"),
    ("good_softplus(x).sum()", X, "float32"),
    ("good_cube(x).sum()", [1e4, -2e4, 3.5e4], "float64"),
    ("good_cube(x).sum()", [0.5, -1.25, 2.0], "float32"),
    ("(good_softplus(x) * sin(x)).mean()", X, "float64"),
])
def test_right_functions_pass(expr, x, dtype):
    r = check(expr, x=x, plugins=[CORPUS], dtype=dtype)
    assert r.ok, r.inputs["x"].diagnosis
    assert r.blame == "every custom op passes its own checks at the values it saw"
    xt = torch.tensor(x, dtype=torch.float64)
    if "cube" in expr:
        expected = 3 * xt.numpy() ** 2
        np.testing.assert_allclose(r.inputs["x"].analytic, expected, rtol=1e-6 if dtype == "float32" else 1e-14)


def test_right_matrix_function_matches_jacobian():
    a = torch.randn(2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    r = check("good_mat(A)", A=a, plugins=[CORPUS])
    jac = torch.autograd.functional.jacobian(lambda t: t @ torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64), a)
    assert r.ok and r.mode == "jacobian"
    np.testing.assert_allclose(r.inputs["A"].analytic, jac.numpy(), rtol=1e-14)
    np.testing.assert_allclose(r.inputs["A"].numeric, jac.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("op, expected", [
    ("double_softplus", "a constant factor: analytic = 2 × numeric"),
    ("flipped_softplus", "sign flipped: analytic = −numeric"),
    ("negbranch_softplus", "wrong only where the input is negative (there a constant factor: analytic = 3 × numeric)"),
    ("tiny_softplus", "a constant factor: analytic = (1 + 1e-06) × numeric"),
])
def test_wrong_functions_are_caught_with_their_diagnosis(op, expected):
    r = check(f"{op}(x).sum()", x=X, plugins=[CORPUS])
    assert not r.ok
    diagnosis = r.inputs["x"].diagnosis
    assert diagnosis.startswith(expected), diagnosis
    np.testing.assert_allclose(r.inputs["x"].numeric, sigmoid(X), rtol=1e-10)


def test_transposed_gradient_is_named():
    a = torch.randn(2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    r = check("(transposed_mat(A) * W).sum()", A=a, W=w, wrt="A", plugins=[CORPUS])
    assert not r.ok
    assert r.inputs["A"].diagnosis == "transposed: analytic = numeric.T"


def test_blame_names_the_wrong_op_among_right_ones():
    r = check("(double_softplus(x) * good_softplus(x)).sum() + cos(x).sum()", x=X, plugins=[CORPUS])
    assert not r.ok
    assert r.blame.startswith("blame: double_softplus (line 1, column 2)")
    assert "the other custom ops are right" in r.blame
    verdicts = {report.op: report.ok for report in r.custom_ops}
    assert verdicts == {"double_softplus": False, "good_softplus": True}


@pytest.mark.parametrize("expr, check_name, words", [
    ("nonegrad(x, y).sum()", "no None gradient", "returns None for input 1"),
    ("inplace(x).sum()", "inputs unchanged", "modifies input 0 in place"),
    ("ignores(x).sum()", "scales with grad_output", "multiply by grad_output"),
    ("rnd(x).sum()", "deterministic", "disagree"),
    ("f32(x).sum()", "gradient dtype and shape", "dtype float32"),
])
def test_beyond_values_checks(expr, check_name, words):
    values = {"x": [0.5, -1.0, 2.0]}
    if "y" in expr:
        values["y"] = [1.5, 2.5, -0.5]
    result = CliRunner().invoke(main, ["check", expr, "--plugin", BROKEN, "--json",
                                       *[a for k, v in values.items() for a in ("-v", f"{k}={','.join(map(str, v))}")]])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    failing = {c["check"]: c["message"] for r in report["custom_ops"] for c in r["checks"] if not c["ok"]}
    assert check_name in failing, failing
    assert words in failing[check_name]


def test_numpy_ops_are_used_for_the_numeric_side():
    r = check("good_softplus(x).sum()", x=X, plugins=[CORPUS])
    np.testing.assert_allclose(r.inputs["x"].numeric, sigmoid(X), rtol=1e-10)
    assert r.method == "richardson"


def test_plugin_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="plugin file not found"):
        check("f(x)", x=1.0, plugins=[str(tmp_path / "missing.py")])
    bad = tmp_path / "bad.py"
    bad.write_text("raise ValueError('boom')\n")
    with pytest.raises(InputError, match="failed to load: ValueError: boom"):
        check("f(x)", x=1.0, plugins=[str(bad)])
    clash = tmp_path / "clash.py"
    clash.write_text("import torch\nOPS = {'sin': torch.sin}\n")
    with pytest.raises(InputError, match="'sin' is a built-in"):
        check("sin(x)", x=1.0, plugins=[str(clash)])
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(InputError, match="defines no OPS"):
        check("x", x=1.0, plugins=[str(empty)])


def test_ops_lists_plugin_ops():
    result = CliRunner().invoke(main, ["ops", "--plugin", CORPUS, "--json"])
    names = {row["name"] for row in json.loads(result.stdout)}
    import importlib.util
    spec = importlib.util.spec_from_file_location("corpus_for_test", CORPUS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(module.OPS) <= names
    assert "sin" in names


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_device_checks_against_the_cpu_reference():
    r = check("(good_softplus(x) * sin(x)).sum()", x=X, plugins=[CORPUS], device="cuda")
    assert r.ok
    np.testing.assert_allclose(r.inputs["x"].analytic, r.inputs["x"].numeric, rtol=1e-9)


def test_custom_op_decorator_registers_for_expressions(monkeypatch):
    from gradcheck_cli import custom_op, plugins
    monkeypatch.setattr(plugins, "REGISTERED", {})

    @custom_op("scaled_cube", elementwise=True)
    class ScaledCube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return 2 * x ** 3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 6 * x ** 2 * g

    r = check("scaled_cube(x).sum()", x=[0.5, -2.0])
    assert r.ok
    np.testing.assert_allclose(r.inputs["x"].analytic, [6 * 0.25, 6 * 4.0], rtol=1e-14)
    with pytest.raises(InputError, match="built-in"):
        custom_op("exp")(ScaledCube)


def test_forward_mode_is_checked_when_the_function_defines_jvp():
    right = check("square_jvp(x).sum()", x=X, plugins=[CORPUS])
    wrong = check("square_wrong_jvp(x).sum()", x=X, plugins=[CORPUS])
    finding = {f.check: f for r in right.custom_ops for f in r.findings}
    assert finding["forward mode (jvp)"].ok and right.ok
    finding = {f.check: f for r in wrong.custom_ops for f in r.findings}
    assert not finding["forward mode (jvp)"].ok and not wrong.ok
    assert "jvp disagrees" in finding["forward mode (jvp)"].message
    # the backward itself is right: the gradient values pass
    assert finding["gradient values"].ok and wrong.inputs["x"].ok


def test_order_two_checks_the_hessian_against_sympy():
    import sympy as sp
    a, b = sp.symbols("a b")
    r = check("(sin(a) * exp(b) + a**3 * b).sum()", a=[0.3], b=[-0.7], order=2)
    assert r.ok
    f = sp.sin(a) * sp.exp(b) + a**3 * b
    at = {a: 0.3, b: -0.7}
    np.testing.assert_allclose(r.hessians["a"].analytic.ravel(), [float(sp.diff(f, a, 2).subs(at))], rtol=1e-13)
    np.testing.assert_allclose(r.hessians["b"].numeric.ravel(), [float(sp.diff(f, b, 2).subs(at))], rtol=1e-8)


def test_order_two_catches_a_backward_that_is_not_differentiable():
    first = check("cube_flat(x).sum()", x=X, plugins=[CORPUS])
    assert first.ok  # first derivatives are right
    second = check("cube_flat(x).sum()", x=X, plugins=[CORPUS], order=2)
    assert not second.ok
    np.testing.assert_allclose(second.hessians["x"].numeric, np.diag(6 * np.array(X)), rtol=1e-6, atol=1e-6)


def test_order_two_needs_a_scalar_or_grad_output():
    with pytest.raises(InputError, match="--order 2 needs a scalar output or --grad-output"):
        check("x * 2", x=[1.0, 2.0], order=2)
