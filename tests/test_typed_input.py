"""Input a user can type that used to end in a traceback (issue 11): each now passes, fails as a check
(exit 1, the exception named) or is refused (exit 2, one clear line), driven as a user drives the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from gradcheck_cli import InputError, check

PLUGIN = str(Path(__file__).parent / "plugins" / "raising_backward.py")


def first_line(stderr: str) -> str:
    assert stderr.startswith("error: "), stderr
    return stderr.splitlines()[0][len("error: "):]


# ---------------------------------------------------------------- valid input that crashed


@pytest.mark.parametrize("columns", ["80", "200"])
def test_one_element_output_passes(gradcheck, columns):
    gradcheck.runner.env["COLUMNS"] = columns
    result = gradcheck("check", "x", "-v", "x=[0.25]")
    assert "output shape [1], value 0.25" in result.stdout
    assert "PASS" in result.stdout and "Traceback" not in result.stdout
    data = gradcheck.json("check", "x", "-v", "x=[0.25]")
    oracle = torch.autograd.functional.jacobian(lambda t: t, torch.tensor([0.25], dtype=torch.float64))
    assert data["mode"] == "gradient" and data["output"]["shape"] == [1]  # one element: backward() needs no g
    assert_allclose(data["inputs"]["x"]["analytic"], oracle.numpy().reshape(1))


def test_negative_seed_with_fast_is_reproducible(gradcheck):
    args = ("check", "sin(x)", "-v", "x=randn(5)", "--seed", "-1", "--fast")
    first, second = gradcheck.json(*args), gradcheck.json(*args)
    assert first["ok"] and first == second
    assert gradcheck.json("check", "sin(x)", "-v", "x=randn(5)", "--seed", "1", "--fast") != first


@pytest.mark.parametrize("seed", ["18446744073709551616", "-9223372036854775809"])
def test_seed_outside_torch_range_is_refused(gradcheck, seed):
    assert "--seed must be an integer from" in first_line(gradcheck.error("check", "sin(x)", "-v", "x=1", "--seed", seed))


def test_order_2_with_an_input_the_output_does_not_use(gradcheck):
    data = gradcheck.json("check", "detach(x) + y**3", "-v", "x=1", "-v", "y=2", "--order", "2")
    assert data["ok"]
    hessian = torch.autograd.functional.hessian(lambda y: y ** 3, torch.tensor(2.0, dtype=torch.float64))
    assert_allclose(data["hessians"]["y"]["analytic"], hessian.numpy())
    assert_allclose(data["hessians"]["x"]["analytic"], 0.0)


@pytest.mark.parametrize("expr", ["x*2", "(x*2).sum()"])
def test_empty_input_with_fast(gradcheck, expr):
    data = gradcheck.json("check", expr, "-v", "x=[]", "--fast")
    assert data["ok"] and data["inputs"]["x"]["shape"] == [0]


@pytest.mark.parametrize("dims", [32, 33, 63])
def test_taylor_over_many_dims(gradcheck, dims):
    spec = "ones(" + ",".join(["1"] * dims) + ")"
    data = gradcheck.json("check", "sin(x).sum()", "-v", f"x={spec}", "--method", "taylor")
    assert data["ok"] and data["inputs"]["x"]["shape"] == [1] * dims
    assert_allclose(np.asarray(data["inputs"]["x"]["analytic"]).reshape(-1), [np.cos(1.0)])


@pytest.mark.parametrize("signs, value", [(1200, 1.0), (1201, -1.0)])
def test_a_spec_of_many_signs(gradcheck, signs, value):
    spec = "-" * signs + "1"
    data = gradcheck.json("check", "x*x", "-v", f"x={spec}")
    assert data["inputs"]["x"]["value"] == value
    assert_allclose(data["inputs"]["x"]["analytic"], 2 * value)
    data = gradcheck.json("check", "x*3", "-v", "x=1,2", "--grad-output", f"[{spec}, 1]")
    assert_allclose(data["inputs"]["x"]["analytic"], [3 * value, 3.0])
    assert "cannot read the value of 'x'" in first_line(gradcheck.error("check", "x", "-v", "x=" + "-" * 1200))


def test_a_sign_before_a_list_stays_refused(gradcheck):
    assert "only numbers and lists of numbers" in first_line(gradcheck.error("check", "x.sum()", "-v", "x=-[1,2]"))


# ---------------------------------------------------------------- --device


@pytest.mark.parametrize("device, message", [
    ("bogus", "unknown --device 'bogus'; use cpu, or cuda"),
    ("CPU", "unknown --device 'CPU'"),
    ("", "unknown --device ''"),
    ("cuda:abc", "unknown --device 'cuda:abc'"),
    ("meta", "--device meta holds shapes but no values"),
    ("hip", "--device 'hip' is not a device gradcheck can compute on"),
])
def test_device_refused(gradcheck, device, message):
    stderr = gradcheck.error("check", "sin(x)", "-v", "x=1", "--device", device)
    assert first_line(stderr).startswith(message) and len(stderr.splitlines()) == 1


@pytest.mark.parametrize("device, available", [
    ("cuda", torch.cuda.is_available()), ("cuda:0", torch.cuda.is_available()),
    ("mps", torch.backends.mps.is_available()), ("xpu", torch.xpu.is_available()),
])
def test_device_missing_on_this_machine(gradcheck, device, available):
    if available:
        pytest.skip(f"{device} is available here")
    stderr = gradcheck.error("check", "sin(x)", "-v", "x=1", "--device", device)
    assert first_line(stderr).startswith(f"--device {device}: this torch ({torch.__version__}) has no usable")
    stderr = gradcheck.error("graph", "sin(x)", "-v", "x=1", "--device", device)
    assert "has no usable" in first_line(stderr)


def test_device_cpu_index_is_cpu(gradcheck):
    assert gradcheck.json("check", "sin(x)", "-v", "x=1", "--device", "cpu:0")["ok"]


# ---------------------------------------------------------------- --grad-output must have the output's shape


@pytest.mark.parametrize("expr, grad_output, given, expected", [
    ("x*2", "[[1,1]]", "[1, 2]", "[2]"),
    ("x*2", "1,1,1", "[3]", "[2]"),
    ("x.sum()", "[1]", "[1]", "[]"),
    ("x*y", "1,1,1,1", "[4]", "[2, 2]"),
])
def test_grad_output_of_another_shape_is_refused(gradcheck, expr, grad_output, given, expected):
    values = ["-v", "x=1,2"] + (["-v", "y=[[1],[2]]"] if "y" in expr else [])
    message = first_line(gradcheck.error("check", expr, *values, "--grad-output", grad_output))
    assert message.startswith(f"--grad-output has shape {given} but the output has shape {expected}")
    with pytest.raises(InputError, match=r"--grad-output has shape"):
        check(expr, x=[1, 2], y=[[1], [2]], grad_output=grad_output) if "y" in expr else \
            check(expr, x=[1, 2], grad_output=grad_output)


def test_torch_refuses_the_same_shapes():
    """The oracle: torch's backward(gradient=) refuses a [1, 2] gradient for a [2] output."""
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="Mismatch in shape"):
        (x * 2).backward(gradient=torch.ones(1, 2))


def test_grad_output_of_the_right_shape_still_works(gradcheck):
    data = gradcheck.json("check", "x*y", "-v", "x=1,2", "-v", "y=[[1],[2]]", "--grad-output", "[[1,2],[3,4]]")
    x, y = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    _, vjp = torch.autograd.functional.vjp(lambda a, b: a * b, (x, y), g)
    assert_allclose(data["inputs"]["x"]["analytic"], vjp[0].numpy())
    assert_allclose(data["inputs"]["y"]["analytic"], vjp[1].numpy())


# ---------------------------------------------------------------- broken plugin code


def test_a_backward_torch_refuses_is_a_failed_check(gradcheck):
    """A wrong shape: torch's own refusal fails the check (exit 1) as a raising backward does, as a wrong
    gradient count does."""
    data = gradcheck.json("check", "wrongshape(x).sum()", "-v", "x=1,2", "--plugin", PLUGIN, exit_code=1)
    assert not data["ok"] and data["inputs"]["x"]["analytic"] == ["nan", "nan"]
    assert data["inputs"]["x"]["diagnosis"].startswith(
        "backward failed: Function WrongShapeBackward returned an invalid gradient at index 0 - got [4] but "
        "expected shape compatible with [2]")
    assert_allclose(data["inputs"]["x"]["numeric"], [2.0, 2.0])


@pytest.mark.parametrize("op, named", [("raises", "backward raised ValueError: backward exploded")])
def test_broken_backward_is_a_failed_check(gradcheck, op, named):
    result = gradcheck("check", f"{op}(x).sum()", "-v", "x=1,2", "--plugin", PLUGIN, exit_code=1)
    assert named in result.stdout and "Traceback" not in result.stdout + result.stderr
    assert f"blame: {op} (line 1, column 1)" in result.stdout
    data = gradcheck.json("check", f"{op}(x).sum()", "-v", "x=1,2", "--plugin", PLUGIN, exit_code=1)
    assert not data["ok"] and not data["inputs"]["x"]["ok"]
    assert data["inputs"]["x"]["analytic"] == ["nan", "nan"]
    assert_allclose(data["inputs"]["x"]["numeric"], [2.0, 2.0])  # d/dx sum(2x), which the forward computes


@pytest.mark.parametrize("extra", [["--fast"], ["--method", "taylor", "--grad-output", "1,1"], []])
def test_broken_backward_in_every_mode(gradcheck, extra):
    result = gradcheck("check", "raises(x)", "-v", "x=1,2", "--plugin", PLUGIN, *extra, exit_code=1)
    assert "backward raised ValueError" in result.stdout


def test_broken_double_backward_fails_only_the_hessian(gradcheck):
    data = gradcheck.json("check", "cube2(x).sum()", "-v", "x=1,2", "--order", "2", "--plugin", PLUGIN, exit_code=1)
    assert data["inputs"]["x"]["ok"]
    assert_allclose(data["inputs"]["x"]["analytic"], [3.0, 12.0])  # 3x²
    assert not data["hessians"]["x"]["ok"]


def test_broken_backward_in_a_batch_fails_and_so_does_a_refused_one(gradcheck, tmp_path):
    cases = tmp_path / "cases.txt"
    cases.write_text("raises(x).sum() -v x=1,2\nwrongshape(x).sum() -v x=1,2\nsin(x) -v x=1\n")
    data = gradcheck.json("batch", str(cases), "--plugin", PLUGIN, exit_code=1)
    assert [c["status"] for c in data["cases"]] == ["fail", "fail", "pass"]
    assert "backward failed: Function WrongShapeBackward" in data["cases"][1]["message"]
    assert "backward raised ValueError" in str(data["cases"][0])


def test_forward_raising_anything_is_bad_input(gradcheck):
    stderr = gradcheck.error("check", "fwdraises(x).sum()", "-v", "x=1,2", "--plugin", PLUGIN)
    assert first_line(stderr) == f"fwdraises (from {PLUGIN}) raised KeyError: 'forward exploded'"
    assert stderr.splitlines()[-1] == "  " + "^" * len("fwdraises(x)")


# ---------------------------------------------------------------- streams that cannot encode the report


def _gradcheck(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "NO_COLOR": "1", "COLUMNS": "80", **env}
    return subprocess.run([sys.executable, "-m", "gradcheck_cli", *args], capture_output=True, env=environ,
                          timeout=120)


def test_ascii_stream_gets_fallbacks():
    done = _gradcheck("check", "sin(x)*x", "-v", "x=1,2", "--grad-output", "1,1", PYTHONIOENCODING="ascii")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    text = done.stdout.decode("ascii")  # every byte is ASCII
    assert "|analytic - numeric| <= atol" in text and "1e-08*|numeric|" in text
    assert "`-- MulBackward0" in text  # rich's own ASCII tree guides
    done = _gradcheck("check", "sin(x) + ä", "-v", "x=1", PYTHONIOENCODING="ascii")  # ä is a name
    assert done.returncode == 0 and "gradcheck sin(x) + \\xe4" in done.stdout.decode("ascii")
    done = _gradcheck("check", "sin(x) + €", "-v", "x=1", PYTHONIOENCODING="ascii")
    assert done.returncode == 2 and b"Traceback" not in done.stderr
    # click writes its own stderr as UTF-8 when the stream claims ASCII: the message arrives whole
    assert done.stderr.decode("utf-8").startswith("error: syntax error: invalid character '€' (U+20AC)")
