"""Every bad-input path: exit 2, one clear message on stderr, a caret where there is a position,
never a traceback; and the same cases through the API raise InputError."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from numpy.testing import assert_allclose

from gradcheck_cli import InputError, check
from gradcheck_cli.parse import DEFAULT_LIMITS
from helpers import strict_json


def caret(stderr: str) -> tuple[str, int, int]:
    """(source line, first caret column, column past the last caret) from an error on stderr."""
    lines = stderr.rstrip("\n").splitlines()
    source, row = lines[-2], lines[-1]
    assert row.strip() and set(row.strip()) == {"^"}, f"no caret row in:\n{stderr}"
    assert source.startswith("  ") and row.startswith("  ")  # both indented by two spaces
    return source[2:], row.index("^") - 2, row.rindex("^") - 1


def first_line(stderr: str) -> str:
    assert stderr.startswith("error: "), stderr
    return stderr.splitlines()[0][len("error: "):]


# ---------------------------------------------------------------- positions


@pytest.mark.parametrize("expr, message, col, end", [
    ("sin(x", "syntax error", 3, 4),               # the unclosed '('
    ("x + * 2", "syntax error", 4, 5),             # the '*' with nothing before it
    ("foo(x) + 1", "unknown function 'foo'", 0, 3),
    ("2 * torch.load(x)", "unknown function 'load'", 4, 14),
    ("sin + x", "'sin' is a function", 0, 3),
    ("x // 2", "'//' is not supported", 0, 6),
    ("x.grad + 1", "attribute '.grad' is not allowed", 0, 6),
    ("x**100000", "exponent 100000 is larger than 1000", 3, 9),
    ("x[1.5]", "an index must be an integer literal", 2, 5),
    ("sum(x, dim=0.5)", "'dim' must be", 11, 14),
    ("1if x else 2", "conditional expression is not allowed", 0, 12),  # and no SyntaxWarning on stderr
])
def test_caret_under_the_offending_span(gradcheck, expr, message, col, end):
    stderr = gradcheck.error("check", expr)
    assert message in first_line(stderr)
    source, got_col, got_end = caret(stderr)
    assert source == expr
    assert (got_col, got_end) == (col, end)
    with pytest.raises(InputError) as info:
        check(expr)
    assert message in info.value.message
    assert (info.value.line, info.value.col, info.value.end_col) == (1, col, end)


def test_caret_counts_characters_not_bytes(gradcheck):
    # 'é' is two bytes in UTF-8; the caret must still sit under 'bar'
    stderr = gradcheck.error("check", "é + bar(x)")
    source, col, end = caret(stderr)
    assert source[col:end] == "bar"


def test_error_on_a_later_line_shows_that_line(gradcheck):
    stderr = gradcheck.error("check", "y = x*2\nz = log(y - 10)\nz.sum()", "-v", "x=1")
    assert "'z'" in first_line(stderr) and "nan" in first_line(stderr)
    source, col, end = caret(stderr)
    assert source == "z = log(y - 10)"
    assert (col, end) == (0, len(source))


# ---------------------------------------------------------------- names, shapes, values


@pytest.mark.parametrize("args, message", [
    (["x + y", "-v", "x=1,2", "-v", "y=1,2,3"], "add: The size of tensor a (2) must match"),
    (["a @ b", "-v", "a=randn(2,3)", "-v", "b=randn(2,3)"], "matmul:"),
    (["x.reshape(4)", "-v", "x=1,2,3"], "reshape:"),
    (["x[5]", "-v", "x=1,2"], "index 5 is out of bounds"),
    (["x.sum(dim=2)", "-v", "x=1,2"], "sum:"),
])
def test_shape_mismatch(gradcheck, args, message):
    stderr = gradcheck.error("check", *args)
    assert message in first_line(stderr)
    source, col, end = caret(stderr)
    assert source == args[0]


@pytest.mark.parametrize("spec, message", [
    ("x=abc(", "cannot read the value of 'x'"),
    ("x=[[1,2],[3]]", "not a rectangular array"),
    ("x=randn(-1)", "randn() takes a shape of non-negative integers"),
    ("x=randn(2.5)", "randn() takes a shape of non-negative integers"),
    ("x=", "the value of 'x' is empty"),
    ("x='1'", "cannot read the value of 'x'"),
    ("x=foo(3)", "unknown generator"),
    ("x=full(2)", "full() needs value="),
    ("x=rand(2, low=1, high=0)", "rand() needs low <= high"),
    ("x=inf", "the value of 'x' contains inf"),
    ("x=1,nan", "the value of 'x' contains nan"),
    ("x=randn(3, std=inf)", "randn() needs finite std"),
    ("x=linspace(0, inf, 3)", "linspace takes start, stop and a count"),
    ("x=[1, inf]", "the value of 'x' contains inf"),
    ("x=1if", "cannot read the value of 'x'"),
])
def test_bad_spec(gradcheck, spec, message):
    stderr = gradcheck.error("check", "(x*2).sum()", "-v", spec)
    assert message in first_line(stderr)
    name, _, value = spec.partition("=")
    with pytest.raises(InputError, match="'x'"):
        check("(x*2).sum()", **{name: value})


@pytest.mark.parametrize("spec", ["x", "1x=2", "=2", "x y=2"])
def test_var_option_needs_name_equals_spec(gradcheck, spec):
    stderr = gradcheck.error("check", "x", "-v", spec)
    assert "Invalid value for '-v' / '--var'" in stderr
    assert "NAME=SPEC" in stderr


def test_same_variable_twice(gradcheck):
    assert "given twice" in first_line(gradcheck.error("check", "x", "-v", "x=1", "-v", "x=2"))


def test_unknown_variable(gradcheck):
    stderr = gradcheck.error("check", "x.sum()", "-v", "x=1,2", "-v", "z=1")
    assert "'z'" in first_line(stderr) and "does not use it" in first_line(stderr)
    assert "variables are: x" in first_line(stderr)
    with pytest.raises(InputError, match="'z'"):
        check("x.sum()", x=[1, 2], z=1)


def test_value_for_an_intermediate_is_refused(gradcheck):
    stderr = gradcheck.error("check", "y = x*2; y.sum()", "-v", "y=1")
    assert "'y'" in first_line(stderr) and "assigned" in first_line(stderr)


def test_wrt_naming_an_unused_variable(gradcheck):
    stderr = gradcheck.error("check", "(a*b).sum()", "-v", "a=1", "-v", "b=2", "--wrt", "a,q")
    assert "--wrt names 'q'" in first_line(stderr)
    with pytest.raises(InputError, match="'q'"):
        check("(a*b).sum()", a=1, b=2, wrt="q")


@pytest.mark.parametrize("expr", ["2*3", "pi * e", "x = 1; x * 2"])
def test_expression_without_variables(gradcheck, expr):
    assert "Traceback" not in gradcheck.error("check", expr)


def test_output_independent_of_the_variables(gradcheck):
    stderr = gradcheck.error("check", "detach(x) * 2", "-v", "x=1")
    assert "does not depend on any variable" in first_line(stderr)
    stderr = gradcheck.error("check", "a * detach(b)", "-v", "a=1", "-v", "b=2", "--wrt", "b")
    assert "does not depend on any variable being differentiated (b)" in first_line(stderr)


@pytest.mark.parametrize("expr, message", [
    ("y = x; y = x*2; y", "assigned twice"),
    ("y = x*2; x = 3; y", "is an input used before this line"),
    ("sin = x; sin", "built-in name"),
    ("(x + 1)[0] = 1; x", "in-place statements change a name"),
    ("a, b = x; a", "assign to one plain name"),
])
def test_bad_assignments(gradcheck, expr, message):
    assert message in first_line(gradcheck.error("check", expr))


@pytest.mark.parametrize("source", ["", "   ", "\n\n"])
def test_empty_expression(gradcheck, source):
    assert "empty" in first_line(gradcheck.error("check", source))


# ---------------------------------------------------------------- nan / inf at the point


@pytest.mark.parametrize("expr, value, kind, statement", [
    ("log(x)", "-1", "nan", "log(x)"),
    ("1/x", "0", "inf", "1/x"),
    ("sqrt(x).sum()", "-1,4", "nan", "sqrt(x).sum()"),
    ("y = log(x); y * 2", "0", "inf", "y = log(x)"),
    ("2**x", "1e6", "inf", "2**x"),
    ("x**(10**400)", "2", "inf", "x**(10**400)"),
])
def test_non_finite_at_the_point(gradcheck, expr, value, kind, statement):
    stderr = gradcheck.error("check", expr, "-v", f"x={value}")
    message = first_line(stderr)
    assert f" is {kind} at this point" in message
    assert statement in message
    source, col, end = caret(stderr)
    assert source[col:end] == statement
    with pytest.raises(InputError, match=kind):
        check(expr, x=value)


def test_non_finite_literal(gradcheck):
    stderr = gradcheck.error("check", "x * 1e400", "-v", "x=1")
    assert "not finite" in first_line(stderr)
    source, col, end = caret(stderr)
    assert source[col:end] == "1e400"


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("g, shown", [("1,2,3", "[3]"), ("[[1,2,3]]", "[1, 3]"), ("5", "[]")])
def test_grad_output_of_the_wrong_shape(gradcheck, g, shown):
    stderr = gradcheck.error("check", "x*2", "-v", "x=1,2", "--grad-output", g)
    assert f"--grad-output has shape {shown}" in first_line(stderr)
    assert "the output has shape [2]" in first_line(stderr)


def test_grad_output_bad_spec(gradcheck):
    stderr = gradcheck.error("check", "x*2", "-v", "x=1,2", "--grad-output", "1,nan")
    assert "--grad-output" in first_line(stderr) and "nan" in first_line(stderr)
    stderr = gradcheck.error("check", "x*2", "-v", "x=1,2", "--grad-output", "os.system('x')")
    assert "--grad-output" in first_line(stderr)


@pytest.mark.parametrize("option, value, message", [
    ("--eps", "-1", "--eps must be a finite number > 0"),
    ("--eps", "0", "--eps must be a finite number > 0"),
    ("--eps", "nan", "--eps must be a finite number > 0"),
    ("--eps", "inf", "--eps must be a finite number > 0"),
    ("--atol", "-1e-3", "--atol must be a finite number >= 0"),
    ("--rtol", "nan", "--rtol must be a finite number >= 0"),
])
def test_bad_numeric_options(gradcheck, option, value, message):
    assert message in first_line(gradcheck.error("check", "x*2", "-v", "x=1", option, value))


@pytest.mark.parametrize("option, value", [("--eps", "abc"), ("--dtype", "float8"), ("--method", "magic"),
                                           ("--seed", "x"), ("--format", "yaml")])
def test_option_values_checked_by_click(gradcheck, option, value):
    stderr = gradcheck.error("check", "x*2", "-v", "x=1", option, value)
    assert f"Invalid value for '{option}'" in stderr


def test_missing_plugin_file(gradcheck):
    stderr = gradcheck.error("check", "x", "--plugin", "/nonexistent/ops.py")
    assert "/nonexistent/ops.py" in first_line(stderr)


# ---------------------------------------------------------------- limits for hostile sizes


def test_element_limit_is_refused_fast(gradcheck):
    start = time.perf_counter()
    stderr = gradcheck.error("check", "x.sum()", "-v", "x=randn(100000,100000)")
    assert time.perf_counter() - start < 2.0
    assert f"{100000 * 100000:,} elements" in first_line(stderr)
    assert f"{DEFAULT_LIMITS.max_elements:,}" in first_line(stderr)
    assert "--max-elements" in first_line(stderr)


@pytest.mark.parametrize("spec", ["ones(5000,5000)", "arange(1e12)", "linspace(0,1,1e9)", "zeros(" + ",".join(["10"] * 20) + ")"])
def test_other_big_generators_are_refused(gradcheck, spec):
    assert "elements" in first_line(gradcheck.error("check", "x.sum()", "-v", f"x={spec}",
                                                    "--max-elements", "1000000"))


def test_max_elements_can_be_raised(gradcheck):
    gradcheck.error("check", "x.sum()", "-v", "x=ones(20)", "--max-elements", "10")
    data = gradcheck.json("check", "x.sum()", "-v", "x=ones(20)", "--max-elements", "20")
    assert_allclose(data["inputs"]["x"]["analytic"], np.ones(20), rtol=0, atol=0)


def test_deeply_nested_parentheses(gradcheck):
    start = time.perf_counter()
    stderr = gradcheck.error("check", "(" * 5000 + "x" + ")" * 5000)
    assert time.perf_counter() - start < 5.0
    assert first_line(stderr)


@pytest.mark.parametrize("expr", ["sin(" * 500 + "x" + ")" * 500, "-" * 5000 + "x", "x" + "[0]" * 3000,
                                  "x" + ".T" * 5000, "x" + ".sum()" * 2000, "-(" * 3000 + "x" + ")" * 3000])
def test_other_deep_nesting(gradcheck, expr):
    # after "--" so that click reads even "----x" as the expression, not as an option
    assert first_line(gradcheck.error("check", "--", expr))


def test_nesting_below_the_limit_works():
    # 50 nested sines: d/dx sin∘…∘sin by the chain rule, computed directly
    r = check("sin(" * 50 + "x" + ")" * 50, x=0.7)
    value, grad = 0.7, 1.0
    for _ in range(50):
        grad *= np.cos(value)
        value = np.sin(value)
    assert r.ok
    assert_allclose(r.inputs["x"].analytic, grad, rtol=1e-12)


def test_long_chain_of_additions(gradcheck):
    n = 150
    r = check("+".join(["a"] * n), a=0.5)
    assert r.ok
    assert_allclose(r.inputs["a"].analytic, float(n), rtol=0, atol=0)
    assert_allclose(r.inputs["a"].numeric, float(n), rtol=1e-12)
    for terms in (5000, 12000):
        start = time.perf_counter()
        stderr = gradcheck.error("check", "+".join(["a"] * terms))
        assert time.perf_counter() - start < 5.0
        assert first_line(stderr)


def test_expression_length_limit(gradcheck):
    stderr = gradcheck.error("check", "a" + "+a" * 15000)
    assert "characters long" in first_line(stderr) and "--max-length" in first_line(stderr)


def test_huge_exponents(gradcheck):
    assert "larger than" in first_line(gradcheck.error("check", "x**-5000", "-v", "x=1"))
    assert "not finite" in first_line(gradcheck.error("check", "x**" + "9" * 400, "-v", "x=1"))
    assert first_line(gradcheck.error("check", "x**" + "9" * 5000, "-v", "x=1"))  # past int digit limit


def test_max_power_can_be_raised(gradcheck):
    data = gradcheck.json("check", "x**2000", "-v", "x=1", "--max-power", "3000")
    assert_allclose(data["inputs"]["x"]["analytic"], 2000.0, rtol=0, atol=0)


def test_too_many_dims(gradcheck):
    ones = ",".join(["1"] * 70)
    assert "dims" in first_line(gradcheck.error("check", "x.sum()", "-v", f"x=zeros({ones})"))
    assert "dims" in first_line(gradcheck.error("check", f"x.reshape({ones})", "-v", "x=1"))


@pytest.mark.parametrize("terms", [300, 450, 700, 5000])
def test_raised_depth_limit_never_gives_a_traceback(gradcheck, terms):
    """--max-depth may be raised past what Python's recursion can walk: still bad input, not a crash."""
    args = ("check", "+".join(["a"] * terms), "-v", "a=0.5", "--max-depth", "100000", "--max-length", "100000")
    result = gradcheck(*args, exit_code=None)
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 0:
        assert_allclose(strict_json(gradcheck(args[0], "--json", *args[1:]).stdout)["inputs"]["a"]["analytic"],
                        float(terms), rtol=0, atol=0)
    else:
        assert result.exit_code == 2 and "nests too deeply" in first_line(result.stderr)


def test_no_variables_is_reported_as_such(gradcheck):
    message = first_line(gradcheck.error("check", "2*3"))
    assert "--wrt" not in message and "variable" in message


def test_negative_rows_is_refused(gradcheck):
    stderr = gradcheck.error("check", "(x*3).sum()", "-v", "x=randn(5)", "--rows", "-1")
    assert "--rows" in stderr


def test_float16_overflow_is_bad_input(gradcheck):
    message = first_line(gradcheck.error("check", "clamp(x, max=1)", "-v", "x=70000", "--dtype", "float16"))
    assert "'x' overflows float16" in message


def test_unwritable_dot_path_prints_nothing(gradcheck, tmp_path):
    stderr = gradcheck.error("graph", "x*2", "-v", "x=1", "--dot", str(tmp_path / "no" / "such" / "dir.dot"))
    assert "cannot write" in stderr


@pytest.mark.parametrize("args", [
    ["check", "x*2", "-v", "x=1if"],
    ["check", "x*2if", "-v", "x=1"],
    ["module", "tests/modules/layers.py:NormNet", "--init", "features=1if", "-v", "x=randn(3,4)"],
])
def test_text_python_warns_about_gets_our_one_line_only(args):
    """'1if' makes Python's parser print a SyntaxWarning ("invalid decimal literal"). In a fresh process,
    where nothing captures warnings, stderr is our one message (and a caret line for an expression)."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "gradcheck_cli", *args], capture_output=True, text=True,
                          cwd=root, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: ")
