"""A wrong backward is caught: op rows are swapped (by monkeypatch, restored after each test) for
torch.autograd.Functions whose backward is off by a known relative error."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from gradcheck_cli import check
from gradcheck_cli import ops
from helpers import strict_json

X = np.array([0.3, -1.1, 2.0, 0.7])


def sin_with_error(relative: float):
    """sin whose backward is cos·(1 + relative): a bug of that relative size."""

    class Sin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.sin(x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * torch.cos(x) * (1 + relative)

    return Sin.apply


def mul_with_error(relative: float):
    """a*b whose backward to b is a·(1 + relative); to a it is right."""

    class Mul(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, grad):
            a, b = ctx.saved_tensors
            return grad * b, grad * a * (1 + relative)

    def apply(a, b):
        as_tensor = [x if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=torch.float64) for x in (a, b)]
        return Mul.apply(*as_tensor)

    return apply


def swap(monkeypatch, name: str, **fields) -> None:
    monkeypatch.setitem(ops.OPS, name, dataclasses.replace(ops.OPS[name], **fields))


def test_off_by_1e6_relative_fails_at_the_defaults(monkeypatch):
    swap(monkeypatch, "sin", torch=sin_with_error(1e-6))
    r = check("sin(x).sum()", x=X)
    assert r.ok is False
    grad = r.inputs["x"]
    assert grad.ok is False and not grad.passed.any()
    assert_allclose(grad.analytic, np.cos(X) * (1 + 1e-6), rtol=1e-14)
    assert_allclose(grad.numeric, np.cos(X), rtol=1e-12)  # the numeric side does not use the row's torch
    assert_allclose(grad.abs_error, 1e-6 * np.abs(np.cos(X)), rtol=1e-6)
    assert_allclose(grad.max_rel_error, 1e-6, rtol=1e-6)


def test_the_correct_op_passes(monkeypatch):
    swap(monkeypatch, "sin", torch=sin_with_error(0.0))
    r = check("sin(x).sum()", x=X)
    assert r.ok
    assert_allclose(r.inputs["x"].analytic, np.cos(X), rtol=1e-15)


def test_the_table_is_restored_after_monkeypatch(monkeypatch):
    with monkeypatch.context() as patch:
        swap(patch, "sin", torch=sin_with_error(1e-6))
        assert check("sin(x).sum()", x=X).ok is False
    assert check("sin(x).sum()", x=X).ok is True


@pytest.mark.parametrize("method", ["complex", "central", "richardson"])
def test_every_method_catches_it(monkeypatch, method):
    swap(monkeypatch, "sin", torch=sin_with_error(1e-6))
    r = check("sin(x).sum()", x=X, method=method)
    assert r.method == method and r.ok is False
    assert_allclose(r.inputs["x"].numeric, np.cos(X), rtol=1e-9)


@pytest.mark.parametrize("mode", ["gradient", "vjp", "jacobian"])
def test_caught_in_every_mode(monkeypatch, mode):
    swap(monkeypatch, "sin", torch=sin_with_error(1e-6))
    expr, kw = {"gradient": ("sin(x).sum()", {}), "vjp": ("sin(x)", {"grad_output": [1, 2, 3, 4]}),
                "jacobian": ("sin(x)", {})}[mode]
    r = check(expr, x=X, **kw)
    assert r.mode == mode and r.ok is False
    if mode == "jacobian":  # only the diagonal is wrong; the zeros agree
        passed = r.inputs["x"].passed
        assert not np.diag(passed).any() and passed[~np.eye(4, dtype=bool)].all()


def test_torch_gradcheck_tolerances_would_miss_it(monkeypatch):
    """At torch.autograd.gradcheck's atol 1e-5 / rtol 1e-3, a relative 1e-6 error slips through:
    the reason the defaults here are tighter."""
    swap(monkeypatch, "sin", torch=sin_with_error(1e-6))
    assert check("sin(x).sum()", x=X, atol=1e-5, rtol=1e-3).ok is True
    t = torch.tensor(X, requires_grad=True)
    assert torch.autograd.gradcheck(sin_with_error(1e-6), (t,), atol=1e-5, rtol=1e-3)


def test_one_input_wrong_the_other_right(monkeypatch):
    swap(monkeypatch, "mul", torch=mul_with_error(1e-6))
    a, b = np.array([1.5, -0.5]), np.array([0.25, 2.0])
    r = check("(a * b).sum()", a=a, b=b)
    assert r.ok is False
    assert r.inputs["a"].ok is True
    assert r.inputs["b"].ok is False
    assert_allclose(r.inputs["a"].analytic, b, rtol=1e-15)
    assert_allclose(r.inputs["b"].analytic, a * (1 + 1e-6), rtol=1e-15)


def test_a_wrong_numeric_implementation_is_caught_too(monkeypatch):
    """The comparison is symmetric: a numpy side wrong by 1e-6 in slope also fails."""
    swap(monkeypatch, "sin", numpy=lambda z: np.sin(z * (1 + 1e-6)))
    r = check("sin(x).sum()", x=X)
    assert r.ok is False
    assert_allclose(r.inputs["x"].numeric, np.cos(X * (1 + 1e-6)) * (1 + 1e-6), rtol=1e-10)


def test_float32_catches_a_large_error_and_passes_the_right_one(monkeypatch):
    swap(monkeypatch, "sin", torch=sin_with_error(1e-2))
    assert check("sin(x).sum()", x=X, dtype="float32").ok is False
    swap(monkeypatch, "sin", torch=sin_with_error(0.0))
    assert check("sin(x).sum()", x=X, dtype="float32").ok is True


def test_exit_1_and_the_failure_report(gradcheck, monkeypatch):
    swap(monkeypatch, "sin", torch=sin_with_error(1e-6))
    result = gradcheck("check", "sin(x).sum()", "-v", "x=0.3,-1.1,2.0,0.7", exit_code=1)
    tables = result.stdout.split("grad_fn")[0]  # the per-element rows, before the graph
    assert tables.count("FAIL") == 4 and "PASS" not in tables
    assert "4 of 4" in result.stdout
    data = strict_json(gradcheck("check", "--json", "sin(x).sum()", "-v", "x=0.3,-1.1,2.0,0.7",
                                 exit_code=1).stdout)
    assert data["ok"] is False and data["inputs"]["x"]["ok"] is False
    failures = data["inputs"]["x"]["failures"]
    assert [f["index"] for f in failures] == [[0], [1], [2], [3]]
    for f, x in zip(failures, X):
        assert_allclose(f["analytic"], np.cos(x) * (1 + 1e-6), rtol=1e-14)
        assert_allclose(f["numeric"], np.cos(x), rtol=1e-12)
        assert f["abs_error"] > f["tolerance"]
        assert_allclose(f["tolerance"], data["atol"] + data["rtol"] * abs(np.cos(x)), rtol=1e-9)
        assert f["reason"] == "outside tolerance"


def test_exit_0_when_right(gradcheck, monkeypatch):
    swap(monkeypatch, "sin", torch=sin_with_error(0.0))
    result = gradcheck("check", "sin(x).sum()", "-v", "x=0.3,-1.1,2.0,0.7", exit_code=0)
    assert "FAIL" not in result.stdout


@pytest.mark.parametrize("fmt", ["table", "json"])
@pytest.mark.parametrize("relative, status", [(0.0, 0), (1e-6, 1)])
def test_exit_status_is_the_same_in_every_format(gradcheck, monkeypatch, fmt, relative, status):
    swap(monkeypatch, "sin", torch=sin_with_error(relative))
    result = gradcheck("check", "sin(x).sum()", "-v", "x=0.3,2.0", "--format", fmt, exit_code=status)
    assert result.stderr == ""
    if fmt == "json":
        assert strict_json(result.stdout)["ok"] is (status == 0)
    else:
        assert ("PASS all" if status == 0 else "FAIL 2 of 2") in result.stdout


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_bad_input_is_exit_2_in_every_format(gradcheck, fmt):
    stderr = gradcheck.error("check", "sin(x", "--format", fmt)
    assert stderr.startswith("error: syntax error")
