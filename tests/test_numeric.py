"""The numeric engine on its own terms: step sizes, methods, shapes at the edges, sizes."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from gradcheck_cli import InputError, check
from helpers import oracle_jacobians

H = 1e-3


def test_eps_is_the_absolute_central_step():
    # ((x+h)³ − (x−h)³) / 2h = 3x² + h² exactly: at x = 1 the estimate is 3 + h², which a large
    # step makes fail at the default tolerances
    r = check("x**3", x=1.0, method="central", eps=H)
    h = (1.0 + H) - 1.0  # the step actually taken is the representable one
    assert_allclose(r.eps, H, rtol=0, atol=0)
    assert_allclose(r.inputs["x"].numeric, 3 + h**2, rtol=1e-9)
    assert r.ok is False


def test_eps_is_the_complex_step():
    # Im (x + ih)³ / h = 3x² − h² at x = 1
    r = check("x**3", x=1.0, method="complex", eps=H)
    assert_allclose(r.inputs["x"].numeric, 3 - H**2, rtol=1e-13)


def test_richardson_extrapolates_the_step_away():
    # the error of a central difference of a cubic is exactly h²: one Richardson level removes it
    r = check("x**3", x=1.0, method="richardson", eps=H)
    assert r.ok
    assert_allclose(r.inputs["x"].numeric, 3.0, rtol=1e-10)


@pytest.mark.parametrize("method", ["central", "richardson", "complex"])
def test_default_steps_pass_a_smooth_function(method):
    x = np.array([-2.0, -0.3, 0.5, 3.0, 40.0])
    r = check("(exp(sin(x)) * x).sum()", x=x, method=method)
    t = torch.tensor(x, requires_grad=True)
    (torch.exp(torch.sin(t)) * t).sum().backward()
    assert r.ok
    # central differences carry an h² truncation error (h ≈ 6e-6·|x|); the others are near exact
    assert_allclose(r.inputs["x"].numeric, t.grad.numpy(), rtol=1e-7 if method == "central" else 1e-10)


def test_auto_picks_complex_step():
    assert check("sin(x)", x=1.0).method == "complex"


def test_steps_scale_with_the_point():
    # at |x| = 1e6 a fixed step of 1e-5 would be lost to rounding; the chosen step is relative
    x = np.array([1e6, -3e5])
    r = check("(x**2).sum()", x=x, method="central")
    assert r.ok
    assert_allclose(r.inputs["x"].numeric, 2 * x, rtol=1e-8)


def test_intermediate_is_perturbed_and_the_rest_rerun():
    # out = z + y where z = y²: d out/d y counts both paths, d out/d z only the last
    r = check("y = sin(x); z = y * y; (z + y).sum()", x=[0.4, 1.2])
    y = np.sin([0.4, 1.2])
    assert_allclose(r.intermediates["y"].numeric, 2 * y + 1, rtol=1e-12)
    assert_allclose(r.intermediates["z"].numeric, np.ones(2), rtol=1e-12)
    assert_allclose(r.inputs["x"].numeric, (2 * y + 1) * np.cos([0.4, 1.2]), rtol=1e-12)


def test_intermediate_that_is_the_output_is_not_reported():
    r = check("y = x * 2; z = y.sum(); z", x=[1.0, 2.0])
    assert list(r.intermediates) == ["y"]


def test_constants_are_held_fixed():
    r = check("(a * b).sum()", a=[1.0, 2.0], b=[3.0, 5.0], wrt="a")
    assert list(r.inputs) == ["a"] and list(r.constants) == ["b"]
    assert_allclose(r.inputs["a"].numeric, [3.0, 5.0], rtol=1e-12)


def test_broadcast_input_gradient_is_summed():
    # a (2,1) against b (3,): each a[i] meets three b's
    a, b = np.array([[0.5], [1.5]]), np.array([1.0, 2.0, 4.0])
    r = check("(a * b).sum()", a=a, b=b)
    assert_allclose(r.inputs["a"].numeric, np.full((2, 1), b.sum()), rtol=1e-12)
    assert_allclose(r.inputs["b"].numeric, np.full(3, a.sum()), rtol=1e-12)


@pytest.mark.parametrize("expr, spec, kw, shape", [
    ("x.sum()", "zeros(0)", {}, (0,)),
    ("(x * 2).sum()", "zeros(2, 0)", {}, (2, 0)),
    ("x * 2", "zeros(0)", {}, (0, 0)),
    ("x * 2", "zeros(0)", {"grad_output": "zeros(0)"}, (0,)),
])
def test_empty_tensors(expr, spec, kw, shape):
    r = check(expr, x=spec, **kw)
    assert r.ok
    assert r.inputs["x"].analytic.shape == shape and r.inputs["x"].numeric.shape == shape


def test_many_dims_up_to_the_limit():
    shape = (1,) * 62 + (2,)
    r = check("(x * x).sum()", x=np.full(shape, 1.5))
    assert r.ok
    assert_allclose(r.inputs["x"].numeric, np.full(shape, 3.0), rtol=1e-12)


def test_jacobian_too_large_is_refused_fast_when_every_element_is_asked_for():
    start = time.perf_counter()
    with pytest.raises(InputError, match="--grad-output"):
        check("x * 2", x="randn(5000)", fast=False)
    assert time.perf_counter() - start < 2.0


def test_jacobian_too_large_is_projected_by_default():
    r = check("x * 2", x="randn(5000)")
    assert r.projected and r.ok and r.inputs["x"].projection.elements == 5000**2


def test_large_vjp_is_fast():
    n = 100_000
    start = time.perf_counter()
    r = check("sin(x) * 2", x=f"randn({n})", grad_output=f"ones({n})")
    assert time.perf_counter() - start < 20.0
    assert r.ok
    assert_allclose(r.inputs["x"].numeric, 2 * np.cos(r.inputs["x"].value), rtol=1e-12)


def test_dense_jacobian_matches_torch():
    x = np.random.default_rng(3).normal(size=(3, 4))
    r = check("softmax(x @ x.T, dim=1)", x=x)
    expected = oracle_jacobians(lambda t: torch.softmax(t @ t.T, dim=1), {"x": x})["x"]
    assert r.ok
    assert_allclose(r.inputs["x"].numeric, expected, rtol=1e-9, atol=1e-12)


def test_max_min_tie_with_dim_follows_torch():
    """With dim=, torch routes the gradient to one index; complex step takes the same branch."""
    x = np.array([[2.0, 2.0, 1.0], [0.5, 3.0, 3.0]])
    for name in ("max", "min"):
        t = torch.tensor(x, requires_grad=True)
        getattr(torch, name)(t, dim=1).values.sum().backward()
        r = check(f"x.{name}(dim=1).sum()", x=x)
        assert_allclose(r.inputs["x"].analytic, t.grad.numpy(), rtol=0, atol=0)
        assert r.ok, name


@pytest.mark.parametrize("p", [0.5, 1, 2, 3, -1, "inf", "-inf"])
def test_norm_orders(p):
    x = np.array([[0.5, -2.0, 1.5], [3.0, -0.25, 1.0]])
    ordinal = float(p)
    r = check(f"x.norm(p={p}, dim=1).sum() + x.norm(p={p})", x=x)
    t = torch.tensor(x, requires_grad=True)
    (torch.linalg.vector_norm(t, ord=ordinal, dim=1).sum() + torch.linalg.vector_norm(t, ord=ordinal)).backward()
    assert r.ok
    assert_allclose(r.inputs["x"].analytic, t.grad.numpy(), rtol=1e-14)
    assert_allclose(r.inputs["x"].numeric, t.grad.numpy(), rtol=1e-9)


def test_norm_of_order_zero_counts_and_has_no_gradient():
    r = check("x.norm(p=0) * x.sum()", x=[0.0, 2.0, -3.0])
    assert_allclose(r.output_value, 2.0 * -1.0, rtol=0)
    assert r.ok
    assert_allclose(r.inputs["x"].numeric, [2.0, 2.0, 2.0], rtol=1e-12)


@pytest.mark.parametrize("method", ["complex", "central", "richardson"])
@pytest.mark.parametrize("expr", ["w\nq", "y = w * 2; q", "w.sum(); q * 3", "y = w.sum(); (q * w).sum()"])
def test_inputs_and_intermediates_that_do_not_reach_the_output(expr, method):
    """Their gradient is zero on both sides (autograd's allow_unused), whatever their shape."""
    w = np.array([0.5, 1.5, -2.5])
    r = check(expr, w=w, q=0.75, method=method)
    assert r.ok
    q_grad = 3.0 if "q * 3" in expr else (w.sum() if "q * w" in expr else 1.0)
    assert_allclose(r.inputs["q"].analytic, q_grad, rtol=1e-15)
    assert_allclose(r.inputs["q"].numeric, q_grad, rtol=1e-9)
    expected_w = np.full(3, 0.75) if "q * w" in expr else np.zeros(3)
    assert_allclose(r.inputs["w"].analytic, expected_w, rtol=0, atol=0)
    assert_allclose(r.inputs["w"].numeric, expected_w, rtol=1e-9, atol=1e-12)
    for name, result in r.intermediates.items():
        assert_allclose(result.numeric, np.zeros_like(result.analytic), atol=1e-12)
        assert_allclose(result.analytic, 0.0, atol=0)


@pytest.mark.parametrize("method", ["complex", "central", "richardson"])
def test_unused_input_whose_shape_does_not_broadcast_to_the_output(method):
    # w (3,) never reaches the (2,) output: a zero Jacobian of shape (2, 3)
    r = check("y = w * 2; q * 3", w=[1.0, 2.0, 3.0], q=[1.0, 2.0], method=method)
    assert r.ok and r.mode == "jacobian"
    assert_allclose(r.inputs["w"].numeric, np.zeros((2, 3)), rtol=0, atol=1e-12)
    assert_allclose(r.inputs["q"].numeric, 3 * np.eye(2), rtol=1e-9, atol=1e-12)


# ---- domain edges: steps must never use a value from across the edge ----

EDGE_CASES = [  # (expression, sympy form, point): the point sits closer to a domain edge than any default step
    ("log(x)", "log(x)", 1e-13),
    ("log(x)", "log(x)", 1e-9),
    ("sqrt(x)", "sqrt(x)", 1e-12),
    ("x * sqrt(x)", "x*sqrt(x)", 1e-14),
    ("log1p(x)", "log(1 + x)", -1 + 2**-30),
    ("log(x - 3)", "log(x - 3)", 3 + 2**-35),
    ("log(x) * relu(x)", "log(x)*x", 1e-10),
]


@pytest.mark.parametrize("method", ["richardson", "central"])
@pytest.mark.parametrize("expr, exact, point", EDGE_CASES)
def test_differences_near_a_domain_edge_are_accurate(expr, exact, point, method):
    import sympy
    s = sympy.Symbol("x")
    want = float(sympy.diff(sympy.sympify(exact), s).evalf(40, subs={s: sympy.Float(point, 40)}))
    r = check(expr, x=point, method=method)
    assert r.ok, r.inputs["x"].reasons
    # x − 3 near 3 keeps few significant bits of the distance; the rest are exact to ~1e-10
    assert_allclose(r.inputs["x"].numeric, want, rtol=1e-7 if "- 3" in expr else 1e-10)
    assert np.all(r.inputs["x"].numeric_error < 1e-6 * abs(want))


def test_one_sided_ladder_uses_only_points_inside_the_domain():
    # a probe that records every point it is asked for: the estimate must come out right even though
    # the first ladder's larger steps leave the domain (nan there), and the final ladders stay inside
    from gradcheck_cli.numeric import richardson
    x = np.array([1e-12, 2.0])
    asked = []

    def probe(offsets):
        asked.append([x + o for o in offsets])
        with np.errstate(all="ignore"):
            return [np.log(x + o) for o in offsets]

    value, error = richardson(probe, x, None, lambda s: s, lambda v: v)
    assert_allclose(value, 1 / x, rtol=1e-10)
    assert np.all(error < 1e-8 / x)
    assert len(asked) >= 2  # an edge pass ran
    assert all(np.all(p[0] > 0) for p in asked[-1])  # the last ladder never left the domain
    assert any(np.any(p[0] <= 0) for p in asked[0])  # while the first one did


def test_away_from_edges_no_extra_pass_runs():
    from gradcheck_cli.numeric import richardson
    x = np.array([0.5, 2.0])
    calls = []

    def probe(offsets):
        calls.append(len(offsets))
        return [np.log(x + o) for o in offsets]

    richardson(probe, x, None, lambda s: s, lambda v: v)
    assert len(calls) == 1


def test_a_jump_that_shrinks_with_the_step_is_no_kink():
    # central differences at sin(1e8) alias (step ~600); one-sided differences at a step of 1.5 disagree,
    # but shrink 16x with the step: curvature, not a kink, so no "not differentiable" excuse
    r = check("sin(x)", x=1e8, method="central")
    assert "not differentiable" not in r.inputs["x"].reasons[()]
    assert r.ok is False
    # a real kink keeps its jump at any step
    k = check("relu(x)", x=0.0, method="central")
    assert k.ok and k.inputs["x"].reasons[()].startswith("not differentiable here: left 0, right 1")


def _plain_softmax(x, axes):
    """softmax's plain complex form, as ops.py computed it before the complex-step fast path."""
    s = x - np.max(np.real(x), axis=axes, keepdims=True)
    ex = np.exp(s)
    return ex / np.sum(ex, axis=axes, keepdims=True)


@pytest.mark.parametrize("shape, dim", [((3000,), 0), ((30, 40), 1), ((30, 40), 0), ((5, 6, 200), (0, 2)),
                                        ((5, 6, 200), None)])
def test_softmax_on_a_complex_step_batch_gives_the_plain_numbers(shape, dim):
    """ops_complex.softmax (a batch of the point plus one imaginary step a row) against the plain form:
    the same values, and Im/h (the derivative complex step reads) to a few ulp, against torch's Jacobian."""
    from gradcheck_cli import ops_complex
    from gradcheck_cli.ops import _axes
    rng = np.random.default_rng(5)
    x = rng.normal(size=shape) * 3
    rows = min(x.size, 300)
    cols = rng.choice(x.size, rows, replace=False)
    h = 1e-20 * np.abs(x.reshape(-1)[cols])
    batch = np.repeat(x[None].astype(complex), rows, axis=0)
    batch.reshape(rows, -1)[np.arange(rows), cols] += 1j * h
    axes = _axes(batch, dim)
    fast = ops_complex.softmax(batch, axes)
    assert fast is not None
    plain = _plain_softmax(batch, axes)
    assert_allclose(fast.real, plain.real, rtol=1e-14)
    per_row = h.reshape((rows,) + (1,) * len(shape))
    assert_allclose(fast.imag / per_row, plain.imag / per_row, rtol=1e-12, atol=1e-300)
    dims = tuple(range(len(shape))) if dim is None else dim
    jac = oracle_jacobians(lambda t: torch.softmax(t, dims) if isinstance(dims, int) else
                           torch.exp(t - torch.logsumexp(t, dims, keepdim=True)), {"x": x})["x"]
    expected = jac.reshape(x.size, x.size)[:, cols].T
    assert_allclose((fast.imag / per_row).reshape(rows, -1), expected, rtol=1e-9, atol=1e-15)


def test_softmax_fast_path_declines_what_is_no_complex_step_batch():
    """Rows whose real parts differ (by a bit: -0.0 is not 0.0), dense imaginary parts, a real or
    non-contiguous input: None, so the plain form runs; the point itself with no step at all is one."""
    from gradcheck_cli import ops_complex
    rng = np.random.default_rng(6)
    real = rng.normal(size=(64, 100))
    same = np.repeat(real[:1], 64, axis=0).astype(complex)
    assert_allclose(ops_complex.softmax(same, (1,)), _plain_softmax(same, (1,)), rtol=1e-14)
    assert ops_complex.softmax(real.astype(complex), (1,)) is None  # rows differ
    assert ops_complex.softmax(same + 1e-20j, (1,)) is None  # every imaginary part set: dense
    assert ops_complex.softmax(same.real, (1,)) is None  # real: nothing to gain
    assert ops_complex.softmax(np.asfortranarray(same), (1,)) is None
    shared = same.copy()  # every row stepped at row 0's element, by different steps: each counted once
    shared[:, 3] += 1e-20j * np.arange(1, 65)
    shared[10, 50] += 1e-19j
    assert_allclose(ops_complex.softmax(shared, (1,)), _plain_softmax(shared, (1,)), rtol=1e-14, atol=0)
    assert_allclose(ops_complex.softmax(shared, (1,)).imag, _plain_softmax(shared, (1,)).imag, rtol=1e-12)
    signed = same.copy()
    signed[:, 7] = 0.0
    signed[5, 7] = -0.0
    assert ops_complex.softmax(signed, (1,)) is None


def test_the_batched_vjp_of_a_dense_jacobian_imports_no_sympy_and_gives_torchs_numbers():
    """The first Jacobian (or --grad-output VJP) in a fresh process skips torch's check of grad_outputs (it
    imports sympy, ~0.6 s): in a subprocess, _jacobian and one VJP through softmax and a custom Function
    leave sympy unimported and equal torch.autograd.grad's, entry for entry."""
    import subprocess
    import sys
    code = """
import sys, torch
from gradcheck_cli import analytic, batched_grad
class Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * g
x = torch.randn(400, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
y = torch.randn(400, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_()
out = torch.softmax(Cube.apply(x) * y, 0)
jx, jy = analytic._jacobian(out, [x, y])
w = torch.randn(400, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
vx, vy = batched_grad.grads(out, [x, y], w)  # one VJP, as --grad-output takes
assert "sympy" not in sys.modules, "sympy imported"
eye = torch.eye(400, dtype=torch.float64)
gx, gy = torch.autograd.grad(out, (x, y), eye, retain_graph=True, is_grads_batched=True)
assert (torch.from_numpy(jx) == gx).all() and (torch.from_numpy(jy) == gy).all()
ux, uy = torch.autograd.grad(out, (x, y), w, retain_graph=True)
assert torch.equal(vx, ux) and torch.equal(vy, uy)
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


@pytest.mark.parametrize("name", ["sin", "cos", "exp"])
def test_small_imaginary_forms_give_numpys_complex_numbers(name):
    """ops_complex.sin/cos/exp on a batch whose imaginary parts are all tiny (a gradient-mode complex
    step): numpy's complex values to an ulp, Im/h to an ulp against the real derivative, exact zeros kept."""
    from gradcheck_cli import ops_complex
    rng = np.random.default_rng(11)
    a = rng.normal(size=(2, 5000)) * 4
    h = 1e-20 * np.abs(a)
    h[:, ::7] = 0.0  # elements no step reached
    x = a + 1j * h
    fast = getattr(ops_complex, name)(x)
    plain = getattr(np, name)(x)
    assert fast is not None
    assert_allclose(fast.real, plain.real, rtol=4e-16, atol=0)
    assert_allclose(fast.imag, plain.imag, rtol=4e-16, atol=0)
    assert (fast.imag[:, ::7] == 0).all()
    derivative = {"sin": np.cos, "cos": lambda v: -np.sin(v), "exp": np.exp}[name]
    stepped = h != 0
    assert_allclose(fast.imag[stepped] / h[stepped], derivative(a)[stepped], rtol=4e-16)


@pytest.mark.parametrize("name", ["sin", "cos", "exp"])
def test_small_imaginary_forms_decline_what_they_cannot_promise(name):
    """A large imaginary part, a non-finite or (exp) overflowing real part, a small or real input: None."""
    from gradcheck_cli import ops_complex
    form = getattr(ops_complex, name)
    base = np.full((2, 5000), 0.5) + 1e-20j
    assert form(base) is not None
    big = base.copy()
    big[1, 9] += 1e-6j  # cosh(1e-6) is not 1 in float64
    for bad in (big, base + np.inf, base * np.nan, base[:, :10], base.real):
        assert form(bad) is None
    if name == "exp":
        assert form(base + 709.5) is None  # e^a overflows: inf·0 would be nan where numpy gives 0


@pytest.mark.parametrize("batched", [False, True])
def test_a_vjp_falls_back_to_torchs_public_call_where_its_internals_refuse(batched, monkeypatch):
    """Another torch's private engine call (a TypeError), or weights not made like the output: the public
    torch.autograd.grad, with the same numbers."""
    import torch.autograd.graph
    from gradcheck_cli import batched_grad
    x = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).requires_grad_()
    out = torch.softmax(x ** 3, 0)
    w = torch.randn((3, 5) if batched else (5,), dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    vjp = batched_grad.grads_batched if batched else batched_grad.grads
    (expected,) = torch.autograd.grad(out, [x], w, retain_graph=True, is_grads_batched=batched)
    calls = []

    def refuse(*args, **kwargs):
        calls.append(1)
        raise TypeError("_engine_run_backward() got an unexpected keyword argument")
    monkeypatch.setattr(torch.autograd.graph, "_engine_run_backward", refuse)
    (got,) = vjp(out, [x], w)
    assert calls and torch.equal(got, expected)
    monkeypatch.undo()
    (got,) = vjp(out, [x], w.float())  # not the output's dtype: the public call decides (and casts)
    (public,) = torch.autograd.grad(out, [x], w.float(), retain_graph=True, is_grads_batched=batched)
    assert torch.equal(got, public)
