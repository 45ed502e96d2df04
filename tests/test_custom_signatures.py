"""Custom ops called the way real code calls them: literals, omitted defaults, several outputs,
in-place ops, wrappers; and the per-call-site checks judged against forward's own arguments."""
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
SIGS = os.path.join(HERE, "plugins", "signature_ops.py")
CORPUS = os.path.join(HERE, "plugins", "realworld_ops.py")


def run(*args, width=80):
    result = CliRunner().invoke(main, list(args), env={"COLUMNS": str(width), "NO_COLOR": "1"})
    assert "Traceback" not in result.output
    return result


def checks_of(stdout: str) -> dict:
    report = json.loads(stdout)
    return {c["check"]: c for r in report.get("custom_ops", []) for c in r["checks"]}


# ---- literals reach forward as Python values and never require grad ----

def test_literals_reach_forward_as_python_float_int_and_bool():
    result = run("check", "typed(x, 1e-6, 3, True).sum()", "-v", "x=0.5,-1.5", "--plugin", SIGS, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    np.testing.assert_allclose(out["inputs"]["x"]["analytic"], [-3 * 0.25, -3 * 2.25], rtol=1e-15)
    assert list(out["inputs"]) == ["x"] and not out.get("constants")  # the literals are no variables
    assert all(c["ok"] for c in checks_of(result.stdout).values())


def test_a_float_where_an_int_is_expected_is_the_plugins_own_error():
    result = run("check", "typed(x, 1e-6, 3.0, True).sum()", "-v", "x=0.5", "--plugin", SIGS)
    assert result.exit_code == 2
    assert "typed: got float, float, bool" in result.stderr
    assert "1e-06 as a Python float, 3.0 as a Python float" in result.stderr


def test_a_literal_where_the_op_needs_a_tensor_says_to_pass_a_variable(tmp_path):
    plugin = tmp_path / "needs_tensor.py"
    plugin.write_text(
        "import torch\n"
        "class MulExp(torch.autograd.Function):\n"
        "    @staticmethod\n"
        "    def forward(ctx, x, y):\n"
        "        ctx.save_for_backward(x, y)\n"
        "        return x * y.exp()\n"
        "    @staticmethod\n"
        "    def backward(ctx, g):\n"
        "        x, y = ctx.saved_tensors\n"
        "        return g * y.exp(), g * x * y.exp()\n"
        "OPS = {'mul_exp': MulExp.apply}\n")
    literal = run("check", "mul_exp(x, 2.0).sum()", "-v", "x=0.3", "--plugin", str(plugin))
    assert literal.exit_code == 2
    assert literal.stderr.startswith("error: mul_exp: 'float' object has no attribute 'exp' (literals reach the op "
                                     "as Python numbers, as in Python: 2.0 as a Python float; where it needs a "
                                     "tensor, pass a variable instead")
    variable = run("check", "mul_exp(x, y).sum()", "-v", "x=0.3", "-v", "y=2.0", "--wrt", "x", "--plugin",
                   str(plugin), "--json")
    assert variable.exit_code == 0, variable.output
    np.testing.assert_allclose(json.loads(variable.stdout)["inputs"]["x"]["analytic"], np.exp(2.0), rtol=1e-15)


@pytest.mark.parametrize("annotation", ["torch.Tensor", "'torch.Tensor'"])
def test_a_literal_for_a_parameter_annotated_tensor_is_a_constant_tensor(tmp_path, annotation):
    plugin = tmp_path / "annotated.py"
    plugin.write_text(
        "import torch\n"
        "class MulExp(torch.autograd.Function):\n"
        "    @staticmethod\n"
        f"    def forward(ctx, x: torch.Tensor, y: {annotation}, flag: bool = False):\n"
        "        assert isinstance(y, torch.Tensor) and not y.requires_grad and type(flag) is bool\n"
        "        ctx.save_for_backward(x, y)\n"
        "        return x * y.exp()\n"
        "    @staticmethod\n"
        "    def backward(ctx, g):\n"
        "        x, y = ctx.saved_tensors\n"
        "        return g * y.exp(), g * x * y.exp(), None\n"
        "OPS = {'mul_exp': MulExp.apply}\n")
    result = run("check", "mul_exp(x, 2.0, True).sum()", "-v", "x=0.3,-1.0", "--plugin", str(plugin), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    np.testing.assert_allclose(out["inputs"]["x"]["analytic"], [np.exp(2.0)] * 2, rtol=1e-15)
    assert list(out["inputs"]) == ["x"]
    assert all(c["ok"] for c in checks_of(result.stdout).values())


def test_signature_is_read_from_forward_in_gradcheck_ops():
    result = run("ops", "--plugin", CORPUS, "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    text = json.dumps(rows["linear_fn"]) + json.dumps(rows["focal_loss"]) + json.dumps(rows["swish"])
    assert "linear_fn(input, weight, bias=None)" in text
    assert "focal_loss(logits, targets, gamma=2.0, alpha=0.25)" in text
    assert "swish(x, beta)" in text  # setup_context style: forward has no ctx


# ---- optional arguments may be left out, and are then not passed ----

@pytest.mark.parametrize("expr, expected", [
    ("affine(x, w).sum()", lambda x, w: w),
    ("affine(x, w, b).sum()", lambda x, w: w),
])
def test_omitted_optional_argument_is_not_passed(expr, expected):
    x, w = np.array([0.5, -2.0]), np.array([1.5, 3.0])
    values = {"x": x, "w": w} if "b" not in expr else {"x": x, "w": w, "b": [0.1, 0.2]}
    r = check(expr, plugins=[SIGS], **values)
    assert r.ok, [(f.check, f.message) for rep in r.custom_ops for f in rep.findings]
    np.testing.assert_allclose(r.inputs["x"].analytic, expected(x, w), rtol=1e-15)
    np.testing.assert_allclose(r.inputs["w"].analytic, x, rtol=1e-15)


def test_linear_function_from_the_pytorch_docs_without_bias_on_the_command_line():
    result = run("check", "linear_fn(x, W).sum()", "-v", "x=[[0.5,-1.0,2.0]]", "-v", "W=[[0.2,-0.7,1.1],[0.9,0.4,-0.3]]",
                 "--plugin", CORPUS, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    np.testing.assert_allclose(out["inputs"]["x"]["analytic"], [[1.1, -0.3, 0.8]], rtol=1e-14)
    np.testing.assert_allclose(out["inputs"]["W"]["analytic"], [[0.5, -1.0, 2.0]] * 2, rtol=1e-14)
    found = checks_of(result.stdout)
    assert found["gradient count"]["ok"]  # 3 gradients (grad_bias None) for 2 arguments: a trailing None


# ---- a Function with several outputs is indexed ----

def test_several_outputs_are_indexed():
    x = [0.3, -1.1, 2.0]
    first = check("sincos(x)[0].sum()", x=x, plugins=[CORPUS])
    second = check("sincos(x)[1].sum()", x=x, plugins=[CORPUS])
    assert first.ok and second.ok
    np.testing.assert_allclose(first.inputs["x"].analytic, np.cos(x), rtol=1e-15)
    np.testing.assert_allclose(second.inputs["x"].analytic, -np.sin(x), rtol=1e-15)


def test_several_outputs_of_different_shapes_assigned_to_a_name():
    import sympy as sp
    a, b = sp.symbols("a b")
    f = (a + b) * (a ** 2 + b ** 2)
    r = check("y = sum_and_sq(x); y[0] * y[1].sum()", x=[0.3, 1.0], plugins=[SIGS])
    assert r.ok and r.intermediates == {}
    at = {a: 0.3, b: 1.0}
    np.testing.assert_allclose(r.inputs["x"].analytic, [float(f.diff(a).subs(at)), float(f.diff(b).subs(at))],
                               rtol=1e-14)


def test_the_per_op_check_covers_every_output_even_the_unused_one():
    r = check("sincos_forgets_cos(x)[0].sum()", x=[0.3, -1.1], plugins=[CORPUS])
    assert r.inputs["x"].ok  # the expression only uses the first output, whose gradient is right
    failing = {f.check: f.message for rep in r.custom_ops for f in rep.findings if not f.ok}
    assert "gradient values" in failing and not r.ok


@pytest.mark.parametrize("expr, words, col", [
    ("sincos(x)", "the output is 2 outputs of one op; check one of them, e.g. sincos(x)[0]", 0),
    ("sincos(x)[2].sum()", "index 2 is out of range: this op returns 2 outputs", 0),
    ("sincos(x)[0, 1]", "choose one with a single integer index", 0),
])
def test_several_outputs_misused_is_bad_input(expr, words, col):
    result = run("check", expr, "-v", "x=0.5,1.0", "--plugin", CORPUS)
    assert result.exit_code == 2
    assert words in result.stderr
    assert result.stderr.splitlines()[-1].index("^") == col + 2  # under the source, shown indented by 2


# ---- in place with ctx.mark_dirty ----

def test_mark_dirty_in_place_function_is_checked():
    result = run("check", "scale_(x * 1, 3.0).sum()", "-v", "x=0.5,-2.0", "--plugin", CORPUS, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["inputs"]["x"]["analytic"] == [3.0, 3.0]
    found = checks_of(result.stdout)
    assert found["in place (ctx.mark_dirty)"]["ok"]
    assert "declares it with ctx.mark_dirty" in found["in place (ctx.mark_dirty)"]["message"]
    assert found["gradient values"]["ok"] and "inputs unchanged" not in found


def test_mark_dirty_on_a_leaf_is_bad_input_with_the_fix():
    result = run("check", "scale_(x, 3.0).sum()", "-v", "x=0.5,-2.0", "--plugin", CORPUS)
    assert result.exit_code == 2
    assert "scale_ modifies its input in place (ctx.mark_dirty)" in result.stderr
    assert "e.g. scale_(1 * x)" in result.stderr


def test_undeclared_in_place_change_still_fails():
    result = run("check", "inplace(x).sum()", "-v", "x=0.5,-1.0", "--plugin", os.path.join(HERE, "plugins", "broken_ops.py"),
                 "--json")
    assert result.exit_code == 1
    assert "modifies input 0 in place" in checks_of(result.stdout)["inputs unchanged"]["message"]


# ---- wrappers: forward's arguments, not the wrapper's, are what backward answers to ----

def test_lambda_wrapper_adding_eps_passes_the_count_check():
    result = run("check", "layer_norm_1e6(x, w, b).sum()", "-v", "x=[[0.3,-1.2,2.0]]", "-v", "w=1.5,-0.5,0.8",
                 "-v", "b=0.1,0.2,-0.3", "--plugin", CORPUS, "--json")
    assert result.exit_code == 0, result.output
    found = checks_of(result.stdout)
    assert found["gradient count"]["ok"] and found["gradient dtype and shape"]["ok"]
    out = json.loads(result.stdout)
    np.testing.assert_allclose(out["inputs"]["b"]["analytic"], [1.0, 1.0, 1.0], rtol=1e-15)


def test_gradient_is_paired_with_its_own_argument_when_non_tensors_come_first():
    args = ["-v", "idx=[[0,1,2,2],[1,0,1,3]]", "-v", "vals=0.5,-1.5,2.0,0.25",
            "-v", "d=[[0.3,-0.2],[1.0,0.4],[-0.6,0.9],[0.2,0.7]]", "--wrt", "vals,d"]
    right = run("check", "spmm(idx, vals, (3, 4), d).sum()", *args, "--plugin", CORPUS, "--json")
    assert right.exit_code == 0, right.output
    assert checks_of(right.stdout)["gradient dtype and shape"]["ok"]
    wrong = run("check", "spmm_f32(idx, vals, (3, 4), d).sum()", *args, "--plugin", SIGS, "--json")
    message = checks_of(wrong.stdout)["gradient dtype and shape"]["message"]
    assert message == ("gradient 1 ('values') has dtype float32 and shape [4]; the argument has float64 and [4]")


def test_wrong_count_that_torch_refuses_is_a_failed_check_naming_the_fix():
    """A wrong gradient count is the op's defect, not the user's input: exit 1, every element failed
    with torch's refusal, and the "gradient count" line names what to return."""
    args = ["layer_norm_no_eps_none(x, w, b, 1e-5).sum()", "-v", "x=[[0.3,-1.2,2.0]]",
            "-v", "w=1.5,-0.5,0.8", "-v", "b=0.1,0.2,-0.3", "--plugin", CORPUS]
    result = run("check", *args, "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    refusal = ("backward failed: function LayerNormNoEpsNoneBackward returned an incorrect number of gradients "
               "(expected 4, got 3); backward returns one gradient per forward argument (None for the "
               "non-tensor ones)")
    for name, nans in (("x", [["nan"] * 3]), ("w", ["nan"] * 3), ("b", ["nan"] * 3)):
        entry = data["inputs"][name]
        assert not entry["ok"] and entry["diagnosis"] == refusal and entry["analytic"] == nans
        assert [f["reason"] for f in entry["failures"]] == [refusal] * 3
    assert checks_of(result.stdout)["gradient count"]["message"].endswith("return one per argument, None for eps")
    table = run("check", *args)
    assert table.exit_code == 1 and "Traceback" not in table.output


# ---- inputs that do not require grad are not checked ----

def test_garbage_gradient_for_a_constant_is_ignored_as_torch_does():
    values = ["-v", "a=0.5,-1.5", "-v", "b=2.0,3.0", "--plugin", CORPUS, "--json"]
    held = run("check", "mul_wrong_for_constant(a, b).sum()", "--wrt", "a", *values)
    assert held.exit_code == 0, held.output
    assert json.loads(held.stdout)["inputs"]["a"]["analytic"] == [2.0, 3.0]
    both = run("check", "mul_wrong_for_constant(a, b).sum()", *values)
    assert both.exit_code == 1
    out = json.loads(both.stdout)
    assert out["inputs"]["b"]["analytic"] == [999.0, 999.0]
    np.testing.assert_allclose(out["inputs"]["b"]["numeric"], [0.5, -1.5], rtol=1e-10)


def test_a_call_with_no_input_that_requires_grad_is_not_inspected():
    r = check("mul_wrong_for_constant(b, b).sum() + (a * 2).sum()", a=[1.0], b=[2.0], wrt="a", plugins=[CORPUS])
    assert r.ok and r.custom_ops == () and r.blame == ""


# ---- the numpy forward is compared with the torch forward first ----

def test_a_wrong_numpy_forward_is_blamed_not_the_backward():
    result = run("check", "logcosh_bad_numpy(x).sum()", "-v", "x=0.3,1.2", "--plugin", SIGS, "--json")
    assert result.exit_code == 1
    found = checks_of(result.stdout)
    assert not found["numpy forward"]["ok"]
    assert found["numpy forward"]["message"].startswith("the numpy forward is wrong: NUMPY_OPS['logcosh_bad_numpy'] "
                                                        f"gives {np.log(np.cosh(1.2)) + 0.12:.10g} where the torch "
                                                        f"forward gives {np.log(np.cosh(1.2)):.10g} (element [1])")
    assert "gradient values" not in found  # not judged: the numeric side differentiates another function
    out = json.loads(result.stdout)
    assert out["blame"].startswith("blame: logcosh_bad_numpy (line 1, column 1): its numpy forward")


def test_a_right_numpy_forward_agrees():
    result = run("check", "logcosh(x).sum()", "-v", "x=0.3,1.2", "--plugin", SIGS, "--json")
    assert result.exit_code == 0, result.output
    assert checks_of(result.stdout)["numpy forward"]["ok"]
    np.testing.assert_allclose(json.loads(result.stdout)["inputs"]["x"]["analytic"], np.tanh([0.3, 1.2]), rtol=1e-15)


# ---- the per-op values check uses the main table's evidence and rule ----

@pytest.mark.parametrize("width", [80, 160])
def test_per_op_values_are_unreliable_where_the_numeric_side_cannot_judge(width):
    result = run("check", "rounded_sq(x).sum()", "-v", "x=0.3", "--plugin", SIGS, "--json")
    out = json.loads(result.stdout)
    assert out["inputs"]["x"]["unreliable"] == 1  # the main table: the numeric side is unsure here
    found = checks_of(result.stdout)
    assert found["gradient values"]["verdict"] == "unreliable" and found["gradient values"]["ok"]
    assert out["blame"] == "every custom op passes its own checks at the values it saw"
    table = run("check", "rounded_sq(x).sum()", "-v", "x=0.3", "--plugin", SIGS, width=width)
    row = next(line for line in table.stdout.splitlines() if "gradient values" in line)
    assert "UNRELIABLE" in row and "FAIL" not in row
    assert max(len(line) for line in table.stdout.splitlines() if "│" in line) <= width


# ---- determinism compares copies ----

def test_a_backward_returning_its_own_changing_buffer_is_not_deterministic():
    result = run("check", "returns_buffer(x).sum()", "-v", "x=0.5,1.0", "--plugin", SIGS, "--json")
    assert result.exit_code == 1
    assert not checks_of(result.stdout)["deterministic"]["ok"]
    # torch.autograd.gradcheck catches it too (its reentrancy check)
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location("sigs_for_oracle", SIGS)
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    x = torch.tensor([0.5, 1.0], dtype=torch.float64, requires_grad=True)
    with pytest.raises(Exception, match="reentrant|Jacobian mismatch"):
        torch.autograd.gradcheck(module.OPS["returns_buffer"], (x,))


def test_call_text_writes_literals_and_leaves_omitted_arguments_out():
    from gradcheck_cli.api import load_table
    from gradcheck_cli.custom import call_text
    from gradcheck_cli.plugins import Omitted
    spec = load_table([CORPUS])["focal_loss"]
    text = call_text(spec, [torch.ones(2), torch.zeros(2), Omitted(2.0), 0.5], {0: "x0", 1: "x1"})
    assert text == "focal_loss(x0, x1, alpha=0.5)"
    spec = load_table([CORPUS])["spmm"]
    assert call_text(spec, [torch.ones(2), torch.ones(2), (3, 4), torch.ones(2)], {0: "x0", 1: "x1", 3: "x3"}) \
        == "spmm(x0, x1, (3, 4, ), x3)"


def test_custom_op_decorator_reads_forward_with_non_tensor_arguments(monkeypatch):
    from gradcheck_cli import custom_op, plugins
    monkeypatch.setattr(plugins, "REGISTERED", {})

    @custom_op("scaled_pow")
    class ScaledPow(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, power, scale=1.0):
            ctx.save_for_backward(x)
            ctx.power, ctx.scale = power, scale
            return scale * x ** power

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return ctx.scale * ctx.power * x ** (ctx.power - 1) * g, None, None

    r = check("scaled_pow(x, 3).sum() + scaled_pow(x, 2, scale=0.5).sum()", x=[0.5, -2.0])
    assert r.ok
    np.testing.assert_allclose(r.inputs["x"].analytic, [3 * 0.25 + 0.5, 3 * 4.0 - 2.0], rtol=1e-15)
    with pytest.raises(InputError, match="missing 'power'"):
        check("scaled_pow(x)", x=[1.0])
