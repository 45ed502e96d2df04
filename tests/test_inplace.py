"""In-place statements: every case torch allows runs and agrees with torch (run directly here as the
oracle), and every case torch refuses is bad input (exit 2) with torch's reason, the fix, and the caret
under the in-place statement, even when torch refuses only at backward."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from gradcheck_cli import InputError, check
from gradcheck_cli.ops import OPS
from helpers import points

F64 = torch.float64
MUTATING = [row for row in OPS.values() if row.mutates and row.named]


def torch_run(fn: Callable[..., torch.Tensor], values: dict[str, np.ndarray]):
    """The program written directly in torch: output and d(out·w)/d each input by autograd."""
    leaves = {n: torch.tensor(v, dtype=F64, requires_grad=True) for n, v in values.items()}
    out = fn(**leaves)
    return out, leaves


def gradients(fn, values, weights=None):
    out, leaves = torch_run(fn, values)
    w = torch.ones_like(out) if weights is None else torch.tensor(weights, dtype=F64)
    grads = torch.autograd.grad(out, list(leaves.values()), w, allow_unused=True)
    return {n: (np.zeros(values[n].shape) if g is None else g.numpy()) for n, g in zip(leaves, grads)}, out


def assert_agrees(expr: str, fn, values: dict, methods=("auto", "central", "richardson"), **extra):
    expected, out = gradients(fn, values)
    for method in methods:
        result = check(expr, method=method, **values, **extra)
        assert result.ok, f"{expr} ({method})"
        assert_allclose(result.output_value, out.detach().numpy(), rtol=1e-13)
        for name, grad in expected.items():
            assert_allclose(result.inputs[name].analytic, grad, rtol=1e-12, atol=1e-13, err_msg=f"{expr} {name}")
            assert_allclose(result.inputs[name].numeric, grad, rtol=1e-7, atol=1e-8, err_msg=f"{expr} {name}")
    return result


def _method_args(row) -> tuple[str, Callable]:
    """Arguments for y.NAME_(...) in the expression and in torch."""
    base = row.name[:-1]
    if base == "clamp":
        return "min=-0.5, max=0.5", lambda y, b: y.clamp_(min=-0.5, max=0.5)
    if row.name == "fill_":
        return "0.25", lambda y, b: y.fill_(0.25)
    if len(row.tensor_params) == 2:
        return "b", lambda y, b: getattr(y, row.name)(b)
    return "", lambda y, b: getattr(y, row.name)()


@pytest.mark.parametrize("row", MUTATING, ids=lambda r: r.name)
def test_every_inplace_method_agrees_with_torch(row):
    """y = x * 1; y.NAME_(...); (y * w).sum(): gradients for x, b and w as torch computes them."""
    args, apply = _method_args(row)
    domain = row.domain if row.name != "pow_" else (0.0, np.inf)
    values = points(domain, {"x": (2, 3), "w": (2, 3), **({"b": (3,)} if "b" in args else {})}, seed=5)

    def fn(x, w, b=None):
        y = x * 1
        apply(y, b)
        return (y * w).sum()
    expr = f"y = x * 1\ny.{row.name}({args})\n(y * w).sum()"
    result = assert_agrees(expr, fn, values)
    # the graph is torch's own: the in-place node is y's grad_fn
    y = torch.tensor(values["x"], dtype=F64, requires_grad=True) * 1
    apply(y, None if "b" not in values else torch.tensor(values["b"], dtype=F64))
    assert result.graph.next[0].next[0].name == type(y.grad_fn).__name__


@pytest.mark.parametrize("op, method", [("+=", "add_"), ("-=", "sub_"), ("*=", "mul_"), ("/=", "div_"),
                                        ("**=", "pow_")])
def test_augmented_assignment_is_the_inplace_method(op, method):
    values = points((0.0, np.inf), {"x": (3,), "v": (3,)}, seed=8)

    def fn(x, v):
        y = x * 2
        getattr(y, method)(v)
        return (y * y).sum()
    assert_agrees(f"y = x * 2\ny {op} v\n(y * y).sum()", fn, values)


ALLOWED = [
    # seed 004's fix: a clone is written into, never a tensor saved for backward
    ("y = x.clone()\ny[0] = y[0].clone() / y[0].sum()\ny[1] = y[1].clone() / y[1].sum()\n(y * w).sum()",
     lambda x, w: _rows_normalised(x, w), {"x": (2, 3), "w": (2, 3)}),
    ("y = x * 1\ny[1] = 5 * x[0]\n(y * y).sum()", lambda x: _set(x * 1, 1, 5 * x[0]).pow(2).sum(), {"x": (3,)}),
    ("y = x * 1\ny[0, 1:] += v\n(y * y).sum()", lambda x, v: _iadd(x, v), {"x": (2, 3), "v": (2,)}),
    ("y = x * 1\ny[x > 0] = 0\n(y * w).sum()", lambda x, w: (torch.where(x > 0, 0.0, x) * w).sum(),
     {"x": (4,), "w": (4,)}),
    ("y = sin(x)\ny.zero_()\ny += x ** 2\ny.sum()", lambda x: (x ** 2).sum(), {"x": (3,)}),
    ("y = x * 1\nz = y * 1\ny *= z\ny.sum()", lambda x: (x * x).sum(), {"x": (3,)}),
]


def _rows_normalised(x, w):
    y = x.clone()
    y[0] = y[0].clone() / y[0].sum()
    y[1] = y[1].clone() / y[1].sum()
    return (y * w).sum()


def _set(y, i, v):
    y[i] = v
    return y


def _iadd(x, v):
    y = x * 1
    y[0, 1:] += v
    return (y * y).sum()


@pytest.mark.parametrize("expr, fn, shapes", ALLOWED, ids=[a[0].replace("\n", "; ") for a in ALLOWED])
def test_allowed_inplace_programs_agree_with_torch(expr, fn, shapes):
    values = points((0.0, np.inf), shapes, seed=3) if "x > 0" not in expr else \
        points((-np.inf, np.inf), shapes, seed=3)
    assert_agrees(expr, fn, values)


def test_setitem_records_copyslices():
    result = check("y = x * 1\ny[0] = 2 * x[1]\ny.sum()", x=[1.0, 2.0])
    assert result.graph.next[0].name == "CopySlices"


def test_inplace_name_is_not_reported_as_an_intermediate():
    """A name changed in place has several values; its gradient would be ambiguous, so it is left out."""
    result = check("y = x * 2\nz = y * 1\ny += 1\n(z * y).sum()", x=[1.0, 2.0])
    assert "y" not in result.intermediates and "z" in result.intermediates


def test_leaf_changed_under_no_grad_keeps_its_gradient():
    # torch: the leaf's value doubles and the gradient is taken at the new value, 2·(2x)
    values = {"x": np.array([1.0, 2.0])}

    def fn(x):
        with torch.no_grad():
            x.mul_(2)
        return (x ** 2).sum()
    assert_agrees("with no_grad(): x.mul_(2)\n(x ** 2).sum()", fn, values)


def test_data_changes_the_value_and_not_the_graph():
    """Seed 002: y = 2x; x.data *= 100; y.backward() gives 2, and x is now 100."""
    result = check("y = 2 * x\nx.data *= 100\ny.sum()", x=[1.0])
    assert result.ok
    assert_allclose(result.inputs["x"].analytic, [2.0], rtol=0)
    assert_allclose(result.inputs["x"].numeric, [2.0], rtol=1e-12)
    after = check("x.data *= 100\n(x * x).sum()", x=[1.0])  # used after the change: 2·100
    assert_allclose(after.inputs["x"].analytic, [200.0], rtol=0)
    assert_allclose(after.inputs["x"].numeric, [200.0], rtol=1e-12)


def test_constant_input_may_be_changed_in_place():
    """--wrt leaves c a constant (no requires_grad): torch lets it change, and so does gradcheck."""
    result = check("c[0] = 5\n(c * x).sum()", c=[1.0, 2.0], x=[3.0, 4.0], wrt="x")
    assert result.ok
    assert_allclose(result.inputs["x"].analytic, [5.0, 2.0], rtol=0)


# ---- what torch refuses: exit 2, torch's reason and the fix, the caret under the statement

REFUSED = [
    # seed 004: a leaf that requires grad, changed in place
    ("a[2] = 1\na.sum()", ["a=1,2,3"], "leaf that requires grad", "a[2] = 1"),
    ("x += 1\nx.sum()", ["x=1,2"], "leaf that requires grad", "x += 1"),
    ("x.mul_(2)\nx.sum()", ["x=1,2"], "leaf that requires grad", "x.mul_(2)"),
    # seed 004's softmax loop: x[i] is saved by the division, then overwritten (torch refuses at backward)
    ("z = exp(x - x.max())\nz[0] = z[0] / z[0].sum()\nz[1] = z[1] / z[1].sum()\n(z * w).sum()",
     ["x=[[1,2],[3,4]]", "w=[[1,2],[3,5]]"], "changed 'z' after an operation had saved it", "z[0] = z[0] / z[0].sum()"),
    ("y = x ** 2\nwith no_grad(): x.mul_(2)\n(x + y).sum()", ["x=1,2"], "saved it for its gradient", "x.mul_(2)"),
    ("y = exp(x)\ns = y.sum()\ny.mul_(2)\ns + y.sum()", ["x=1,2"], "saved it for its gradient", "y.mul_(2)"),
    # writes through memory another name sees: torch would change both names
    ("y = x * 1\ny *= y\ny.sum()", ["x=1,2"], "saved it for its gradient", "y *= y"),
    ("y = x.detach()\ny[0] = 5\n(x * y).sum()", ["x=1,2"], "shares memory with 'x'", "y[0] = 5"),
    ("y = x * 1\nz = y[0]\nz.mul_(2)\ny.sum()", ["x=1,2"], "shares memory with 'y'", "z.mul_(2)"),
    ("y = x * 1\nz = y\nz += 1\ny.sum()", ["x=1,2"], "shares memory with 'y'", "z += 1"),
]


@pytest.mark.parametrize("expr, values, words, under", REFUSED, ids=[r[0].replace("\n", "; ") for r in REFUSED])
def test_refused_inplace_is_bad_input_with_the_caret(gradcheck, expr, values, words, under):
    args = [a for v in values for a in ("-v", v)]
    stderr = gradcheck.error("check", expr, *args)
    first, source, caret = stderr.splitlines()[:3]
    assert words in first
    assert "clone()" in first or "new name" in first
    line = next(i for i, text in enumerate(expr.splitlines()) if text.endswith(under))
    col = expr.splitlines()[line].index(under)
    assert source == "  " + expr.splitlines()[line]
    assert caret.index("^") - 2 == col and caret.count("^") == len(under)
    with pytest.raises(InputError) as info:  # the API: the same error, placed on the statement
        check(expr, **{v.split("=")[0]: v.split("=", 1)[1] for v in values})
    assert info.value.line == line + 1 and info.value.col == col


def test_torch_refuses_the_same_leaf_change():
    """The oracle for the first refusal above: torch itself raises."""
    a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        a[2] = 1


def test_torch_refuses_the_softmax_loop_at_backward():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    z = torch.exp(x - x.max())
    z[0] = z[0] / z[0].sum()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_reassigning_a_name_suggests_a_new_one(gradcheck):
    """Seed 004's x = torch.exp(x - x.max()): one binding a name, with the fix in the message."""
    stderr = gradcheck.error("check", "x = exp(x - x.max())\nx.sum()", "-v", "x=1,2")
    assert "give this value a new name (e.g. 'x2 = ...')" in stderr.splitlines()[0]
    assert stderr.splitlines()[2] == "  ^"


@pytest.mark.parametrize("expr, words, under", [
    ("z = x.mul_(2)\nz", "'mul_' changes a tensor in place", "x.mul_"),
    ("(x + 1).mul_(2)", "in-place statements change a name", "x + 1"),
    ("x[0].mul_(2)\nx", "in-place statements change a name", "x[0]"),
    ("sum += 1", "'sum' is a built-in name", "sum"),
])
def test_inplace_misuse_is_refused_by_the_parser(expr, words, under):
    with pytest.raises(InputError) as info:
        check(expr, x=[1.0, 2.0])
    err = info.value
    assert words in err.message
    assert err.source.splitlines()[err.line - 1][err.col:err.end_col] == under


def test_data_change_of_a_saved_tensor_is_caught_as_a_wrong_gradient():
    """x.data bypasses torch's version check: PowBackward0 then uses the changed x, and torch's gradient
    is silently wrong (4x instead of 2x). gradcheck's numeric side follows the maths, so the check fails."""
    x = torch.tensor([0.5, 1.5], dtype=F64, requires_grad=True)
    y1 = x ** 2
    x.data *= 2
    (y1 + 0 * x).sum().backward()
    assert_allclose(x.grad.numpy(), [2.0, 6.0])  # torch: 2 · (2x), not 2x
    result = check("y1 = x**2\nx.data *= 2\n(y1 + 0 * x).sum()", x=[0.5, 1.5])
    assert not result.ok
    assert_allclose(result.inputs["x"].analytic, x.grad.numpy(), rtol=0)
    assert_allclose(result.inputs["x"].numeric, [1.0, 3.0], rtol=1e-12)
