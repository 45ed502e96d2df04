"""The notebook examples the tool was built from, through the API and the CLI, with their answers.

Each expected gradient is derived here (by hand, sympy or torch) rather than copied from a run.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy
import torch
from numpy.testing import assert_allclose

from gradcheck_cli import check

EXACT = dict(rtol=1e-12, atol=1e-12)


def test_cubic_vjp_api():
    # d/da (3a³ − b²) = 9a², d/db = −2b; grad_output 1,1 leaves them as they are
    r = check("3*a**3 - b**2", a=[2, 3], b=[6, 4], grad_output=[1, 1])
    assert r.ok and r.mode == "vjp"
    a, b = np.array([2.0, 3.0]), np.array([6.0, 4.0])
    assert_allclose(r.output_value, 3 * a**3 - b**2, **EXACT)
    for name, expected in (("a", 9 * a**2), ("b", -2 * b)):
        assert_allclose(r.inputs[name].analytic, expected, **EXACT)
        assert_allclose(r.inputs[name].numeric, expected, **EXACT)
        assert r.inputs[name].ok
    # the notebook's literal answer, derived by hand
    assert_allclose(r.inputs["a"].analytic, [36, 81], **EXACT)
    assert_allclose(r.inputs["b"].analytic, [-12, -8], **EXACT)


def test_cubic_vjp_cli(gradcheck):
    data = gradcheck.json("check", "3*a**3 - b**2", "-v", "a=2,3", "-v", "b=6,4", "--grad-output", "1,1")
    assert data["ok"] is True and data["mode"] == "vjp"
    assert_allclose(data["output"]["value"], [3 * 8 - 36, 3 * 27 - 16], **EXACT)
    assert_allclose(data["inputs"]["a"]["analytic"], [36, 81], **EXACT)
    assert_allclose(data["inputs"]["a"]["numeric"], [36, 81], rtol=1e-10)
    assert_allclose(data["inputs"]["b"]["analytic"], [-12, -8], **EXACT)
    assert_allclose(data["inputs"]["b"]["numeric"], [-12, -8], rtol=1e-10)


def test_intermediates_mean():
    # y = x + 2; z = 3y²; out = mean(z) over 4 elements: d out/dz = 1/4, d out/dy = 6y/4, dx = dy
    r = check("y = x + 2; z = y*y*3; z.mean()", x="ones(2,2)")
    assert r.ok and r.mode == "gradient"
    y = np.full((2, 2), 3.0)
    assert_allclose(r.output_value, np.mean(3 * y * y), **EXACT)
    assert_allclose(r.inputs["x"].analytic, 6 * y / 4, **EXACT)
    assert_allclose(r.inputs["x"].analytic, np.full((2, 2), 4.5), **EXACT)
    assert_allclose(r.inputs["x"].numeric, np.full((2, 2), 4.5), rtol=1e-12)
    assert list(r.intermediates) == ["y", "z"]
    assert_allclose(r.intermediates["y"].value, y, **EXACT)
    assert_allclose(r.intermediates["y"].analytic, 6 * y / 4, **EXACT)
    assert_allclose(r.intermediates["y"].numeric, 6 * y / 4, rtol=1e-12)
    assert_allclose(r.intermediates["z"].value, 3 * y * y, **EXACT)
    assert_allclose(r.intermediates["z"].analytic, np.full((2, 2), 0.25), **EXACT)
    assert_allclose(r.intermediates["z"].numeric, np.full((2, 2), 0.25), rtol=1e-12)


def test_intermediates_against_torch_autograd_grad():
    """The SPEC: an intermediate's gradient is torch.autograd.grad(out, y)."""
    x = torch.tensor([[0.3, -1.2], [2.0, 0.7]], dtype=torch.float64, requires_grad=True)
    y = torch.sin(x) * 2
    z = y * y + x
    out = (z * x).sum()
    gx, gy, gz = torch.autograd.grad(out, [x, y, z])
    r = check("y = sin(x) * 2; z = y*y + x; (z * x).sum()", x=x.detach().numpy())
    assert r.ok
    for result, expected in ((r.inputs["x"], gx), (r.intermediates["y"], gy), (r.intermediates["z"], gz)):
        assert_allclose(result.analytic, expected.numpy(), **EXACT)
        assert_allclose(result.numeric, expected.numpy(), rtol=1e-10, atol=1e-12)


def test_intermediates_in_json(gradcheck):
    data = gradcheck.json("check", "y = x + 2; z = y*y*3; z.mean()", "-v", "x=ones(2,2)")
    assert data["ok"] is True
    assert_allclose(data["inputs"]["x"]["analytic"], [[4.5, 4.5], [4.5, 4.5]], **EXACT)
    assert list(data["intermediates"]) == ["y", "z"]
    for name in ("y", "z"):
        entry = data["intermediates"][name]
        assert entry["shape"] == [2, 2] and entry["ok"] is True
        assert set(entry) >= {"shape", "value", "analytic", "numeric", "max_abs_error", "max_rel_error", "ok"}
    assert_allclose(data["intermediates"]["y"]["value"], [[3, 3], [3, 3]], **EXACT)


def test_reshape_with_grad_output(gradcheck):
    # out = (2x).reshape(2,2); g · d out / dx = 2·g flattened in row-major order
    g = [[1, 0.1], [0.01, 0.001]]
    data = gradcheck.json("check", "(2*x).reshape(2,2)", "-v", "x=1,2,3,4", "--grad-output", str(g))
    assert data["mode"] == "vjp" and data["output"]["shape"] == [2, 2]
    expected = 2 * np.array(g).reshape(-1)
    assert_allclose(data["inputs"]["x"]["analytic"], expected, **EXACT)
    assert_allclose(data["inputs"]["x"]["analytic"], [2, 0.2, 0.02, 0.002], **EXACT)
    assert_allclose(data["inputs"]["x"]["numeric"], expected, rtol=1e-12)


def test_detach_is_a_stop_gradient():
    # x² + (x held constant)³: only 2x flows; at x = 1 the gradient is 2
    r = check("x**2 + detach(x)**3", x=1)
    assert r.ok
    assert_allclose(r.inputs["x"].analytic, 2.0, **EXACT)
    assert_allclose(r.inputs["x"].numeric, 2.0, rtol=1e-12)
    assert_allclose(r.output_value, 2.0, **EXACT)
    method = check("x**2 + x.detach()**3", x=1)
    assert_allclose(method.inputs["x"].numeric, 2.0, rtol=1e-12)


@pytest.mark.parametrize("method", ["complex", "central", "richardson"])
def test_detach_held_by_every_method(method):
    x = sympy.Symbol("x")
    at = 1.7
    expected = float(sympy.diff(x**2, x).subs(x, at))  # x³ is held constant
    r = check("x**2 + detach(x)**3", x=at, method=method)
    assert r.ok
    assert_allclose(r.inputs["x"].numeric, expected, rtol=1e-8)


def test_indexing_weights():
    # w0² + 2 w1²: gradient [2 w0, 4 w1] = [1, 2] at 0.5, 0.5
    r = check("w[0]**2 + 2*w[1]**2", w=[0.5, 0.5])
    assert r.ok
    assert_allclose(r.inputs["w"].analytic, [2 * 0.5, 4 * 0.5], **EXACT)
    assert_allclose(r.inputs["w"].analytic, [1, 2], **EXACT)
    assert_allclose(r.inputs["w"].numeric, [1, 2], rtol=1e-12)


def test_cos_sum():
    a = np.array([1.0, 2.0, 3.0])
    r = check("cos(a).sum()", a=a)
    assert r.ok
    assert_allclose(r.inputs["a"].analytic, -np.sin(a), **EXACT)
    assert_allclose(r.inputs["a"].numeric, -np.sin(a), rtol=1e-12)


def test_weights_times_three(gradcheck):
    data = gradcheck.json("check", "(weights*3).sum()", "-v", "weights=randn(3)")
    assert data["inputs"]["weights"]["shape"] == [3]
    assert_allclose(data["inputs"]["weights"]["analytic"], [3, 3, 3], **EXACT)
    assert_allclose(data["inputs"]["weights"]["numeric"], [3, 3, 3], rtol=1e-12)


def test_leading_minus_from_the_cli(gradcheck):
    # -mean(log p): gradient −1 / (n p)
    p = np.array([0.2, 0.7])
    data = gradcheck.json("check", "-log(p).mean()", "-v", "p=0.2,0.7")
    assert data["ok"] is True and data["expression"] == "-log(p).mean()"
    assert_allclose(data["output"]["value"], -np.mean(np.log(p)), **EXACT)
    assert_allclose(data["inputs"]["p"]["analytic"], -1 / (2 * p), **EXACT)
    assert_allclose(data["inputs"]["p"]["numeric"], -1 / (2 * p), rtol=1e-12)


@pytest.mark.parametrize("args", [
    ["check", "-log(p).mean()", "-v", "p=0.2,0.7"],
    ["check", "-v", "p=0.2,0.7", "-log(p).mean()"],
    ["check", "--seed", "3", "-log(p).mean()", "-v", "p=0.2,0.7"],
    ["check", "-v", "p=0.2,0.7", "--", "-log(p).mean()"],
])
def test_leading_minus_anywhere_on_the_line(gradcheck, args):
    data = gradcheck.json(*args)
    assert data["expression"] == "-log(p).mean()"
    assert_allclose(data["inputs"]["p"]["analytic"], [-2.5, -1 / 1.4], **EXACT)


def test_leading_minus_through_the_console_script():
    """As a user types it: the installed `gradcheck` script in a real process."""
    import subprocess
    import sys
    from pathlib import Path
    script = Path(sys.executable).with_name("gradcheck")
    done = subprocess.run([str(script), "check", "-log(p).mean()", "-v", "p=0.2,0.7", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    from helpers import strict_json
    data = strict_json(done.stdout)
    assert_allclose(data["inputs"]["p"]["analytic"], [-2.5, -1 / 1.4], **EXACT)


def test_an_alias_is_not_reported_as_its_own_intermediate():
    # y = x is x itself: torch.autograd.grad(out, y) would count every use of x
    from gradcheck_cli import check
    r = check("y = x; z = y*2 + x; z.sum()", x=[1.0, 2.0])
    assert r.ok
    assert list(r.intermediates) == ["z"]
    np.testing.assert_allclose(r.inputs["x"].analytic, [3.0, 3.0], rtol=1e-15)
    w = check("z = x*2; w = z; (w + z).sum()", x=[1.0, 2.0])
    assert w.ok and list(w.intermediates) == ["z"]
    np.testing.assert_allclose(w.intermediates["z"].numeric, [2.0, 2.0], rtol=1e-14)
