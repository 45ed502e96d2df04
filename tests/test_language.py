"""The language grown to paste the notebooks in: no_grad blocks, .data, comparisons and masks, long()
integer constants, torch./F. prefixes, and messages that point learners the right way."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from gradcheck_cli import InputError, check
from gradcheck_cli.parse import parse
from gradcheck_cli.values import parse_spec

F64 = torch.float64


def torch_grad(fn, **values):
    leaves = {n: torch.tensor(v, dtype=F64, requires_grad=True) for n, v in values.items()}
    out = fn(**leaves)
    grads = torch.autograd.grad(out, list(leaves.values()), allow_unused=True)
    return {n: np.zeros(np.shape(values[n])) if g is None else g.numpy() for n, g in zip(leaves, grads)}


# ---- with no_grad()

NO_GRAD_SEED = ["y1 = x**2\nwith no_grad(): y2 = x**3\ny1 + y2",
                "y1 = x ** 2\nwith torch.no_grad():\n    y2 = x ** 3\ny3 = y1 + y2",
                "y1 = x**2\nwith torch.autograd.no_grad(): y2 = x**3\ny1 + y2"]


@pytest.mark.parametrize("expr", NO_GRAD_SEED)
def test_no_grad_seed_gives_two(expr):
    """Seed 002: y1 = x**2, y2 = x**3 under no_grad; d(y1 + y2)/dx at x = 1 is 2x = 2, not 2 + 3."""
    expected = torch_grad(lambda x: x ** 2 + (x ** 3).detach(), x=1.0)["x"]
    for method in ("auto", "central", "richardson"):
        result = check(expr, x=1, method=method)
        assert result.ok
        assert_allclose(result.inputs["x"].analytic, expected, rtol=0)
        assert_allclose(result.inputs["x"].numeric, 2.0, rtol=1e-10)
    assert [n.name for n in result.graph.next] == ["PowBackward0"]  # y2 has no grad_fn


def test_indented_block_makes_every_name_constant():
    expr = "y1 = x**2\nwith no_grad():\n    y2 = x**3\n    y4 = y2 * sin(x)\n(y1 * y4).sum()"
    result = check(expr, x=[0.7, 1.3])
    expected = torch_grad(lambda x: (x ** 2 * ((x ** 3) * torch.sin(x)).detach()).sum(), x=[0.7, 1.3])["x"]
    assert result.ok
    assert_allclose(result.inputs["x"].analytic, expected, rtol=1e-13)
    assert_allclose(result.inputs["x"].numeric, expected, rtol=1e-10)
    assert "y2" not in result.intermediates and "y4" not in result.intermediates


def test_semicolon_does_not_continue_a_with_line():
    """`with no_grad(): y2 = x**3; y3 = y1 + y2`: y3 is outside the block, so it has a gradient."""
    program = parse("y1 = x**2\nwith no_grad(): y2 = x**3; y3 = y1 + y2\n2 * y3")
    assert [(s.target, s.untracked) for s in program.statements] == [
        ("y1", False), ("y2", True), ("y3", False), (None, False)]
    result = check("y1 = x**2\nwith no_grad(): y2 = x**3; y3 = y1 + y2\ny3 * 1", x=1)
    assert_allclose(result.inputs["x"].analytic, 2.0, rtol=0)
    assert "y3" in result.intermediates


@pytest.mark.parametrize("expr, words, under", [
    ("y1 = x**2; with no_grad(): y2 = x**3; y1 + y2", "a 'with' block starts its own line", "; with"),
    ("with open(x): y = x\ny", "only 'with no_grad():'", "open(x)"),
    ("with no_grad():\n    x * 2\nx", "an expression under no_grad has no gradient", "x * 2"),
    ("with no_grad():\n    with no_grad(): y = x\ny", "with blocks do not nest", "with no_grad(): y = x"),
])
def test_with_misuse_is_explained(expr, words, under):
    with pytest.raises(InputError) as info:
        parse(expr)
    err = info.value
    assert words in err.message
    assert err.source.splitlines()[err.line - 1][err.col:err.end_col] == under


def test_no_grad_alias_is_the_tensor_itself():
    """torch: `with no_grad(): y = x` makes y the same tensor as x (it still requires grad)."""
    result = check("with no_grad(): y = x\n(y * x).sum()", x=[1.0, 2.0])
    assert_allclose(result.inputs["x"].analytic, [2.0, 4.0], rtol=0)


def test_data_reads_without_history():
    """x.data is x without its history, like detach(): d(x · x.data)/dx = x."""
    result = check("(x * x.data).sum()", x=[1.5, -2.0])
    assert result.ok
    assert_allclose(result.inputs["x"].analytic, [1.5, -2.0], rtol=0)
    assert_allclose(result.inputs["x"].numeric, [1.5, -2.0], rtol=1e-12)


# ---- comparisons, masks, long()

def test_comparisons_are_constant_masks():
    x = np.array([-1.2, 0.4, 2.0])
    result = check("where(x > 0, x ** 2, -x)", x=x, grad_output=[1, 1, 1])
    assert_allclose(result.inputs["x"].analytic, np.where(x > 0, 2 * x, -1.0), rtol=0)
    masked = check("(x * (x >= 0.4)).sum()", x=x)
    assert_allclose(masked.inputs["x"].numeric, [0.0, 1.0, 1.0], rtol=0, atol=1e-12)
    with pytest.raises(InputError, match="does not depend on any variable"):
        check("x > 0", x=x)


def test_long_spec_is_an_int64_constant():
    assert parse_spec("long([0, 2])", "t").dtype == np.int64
    assert parse_spec("long(arange(3))", "t").tolist() == [0, 1, 2]
    with pytest.raises(InputError, match="long\\(\\) needs whole numbers"):
        parse_spec("long([0.5])", "t")
    logits = np.array([[1.0, 2.0, 0.5], [0.1, -1.0, 2.0]])
    result = check("cross_entropy(z, label)", z=logits, label="long([0, 2])")
    assert list(result.inputs) == ["z"] and result.constants["label"].dtype == np.int64
    expected = torch_grad(lambda z: torch.nn.functional.cross_entropy(z, torch.tensor([0, 2])), z=logits)["z"]
    assert_allclose(result.inputs["z"].analytic, expected, rtol=1e-13)
    assert result.graph.name == "NllLossBackward0"


def test_long_cannot_be_differentiated():
    with pytest.raises(InputError, match="integer tensor"):
        check("cross_entropy(z, label)", z=[[1.0, 2.0]], label="long([1])", wrt="label")


def test_integer_index_and_mask_index():
    x = np.array([1.0, -2.0, 3.0])
    by_label = check("(x[i] ** 2).sum()", x=x, i="long([0, 2, 2])")
    assert_allclose(by_label.inputs["x"].analytic, [2.0, 0.0, 12.0], rtol=0)
    assert_allclose(by_label.inputs["x"].numeric, [2.0, 0.0, 12.0], rtol=1e-12)
    by_mask = check("(x[x > 0] ** 2).sum()", x=x)
    assert_allclose(by_mask.inputs["x"].numeric, [2.0, 0.0, 6.0], rtol=1e-12)


def test_linear_records_addmm_like_nn_linear():
    result = check("linear(x, w, b).sum()", x="randn(2, 3)", w="randn(4, 3)", b="randn(4)")
    assert result.ok and result.graph.next[0].name == "AddmmBackward0"
    layer = torch.nn.Linear(3, 4)  # the notebook's nn.Linear records the same node
    assert type(layer(torch.randn(2, 3)).grad_fn).__name__ == "AddmmBackward0"


@pytest.mark.parametrize("prefixed, plain", [
    ("torch.exp(x).sum()", "exp(x).sum()"),
    ("torch.cat((x, x)).sum()", "cat((x, x)).sum()"),
    ("F.softplus(x).sum()", "softplus(x).sum()"),
    ("torch.nn.functional.mse_loss(x, 2 * x)", "mse_loss(x, 2 * x)"),
])
def test_torch_prefixes(prefixed, plain):
    a, b = check(prefixed, x=[0.5, 1.5]), check(plain, x=[0.5, 1.5])
    assert_allclose(a.inputs["x"].analytic, b.inputs["x"].analytic, rtol=0)


# ---- messages that point the right way

def test_numpy_namespace_is_not_needed(gradcheck):
    stderr = gradcheck.error("check", "np.sin(x)")
    assert "numpy's namespace is not needed: write sin(...)" in stderr.splitlines()[0]
    assert stderr.splitlines()[2] == "  ^^"


@pytest.mark.parametrize("name, value", [("e", "2.718281828459045"), ("pi", "3.141592653589793")])
def test_builtin_constant_given_a_value(gradcheck, name, value):
    stderr = gradcheck.error("check", f"x * {name}", "-v", f"{name}=3")
    assert f"'{name}' is a built-in constant in expressions ({name} = {value})" in stderr


@pytest.mark.parametrize("name", ["α", "x_1", "Δw"])
def test_any_identifier_is_a_variable(gradcheck, name):
    data = gradcheck.json("check", f"{name} ** 2", "-v", f"{name}=1.5")
    assert_allclose(data["inputs"][name]["analytic"], 3.0, rtol=0)


def test_caret_under_the_first_unknown_name(gradcheck):
    stderr = gradcheck.error("check", "foo(x) + bar(x)")
    assert "unknown function 'foo'" in stderr.splitlines()[0]
    assert stderr.splitlines()[2] == "  ^^^"


@pytest.mark.parametrize("terms", [300, 2000])
def test_a_flat_sum_is_not_deep(terms):
    """300 (or 2,000) terms nest as deep as Python's parser makes them, but they are one chain."""
    result = check("+".join(["x"] * terms), x=0.5)
    assert result.ok
    assert_allclose(result.inputs["x"].analytic, terms, rtol=1e-12)
    assert_allclose(result.inputs["x"].numeric, terms, rtol=1e-12)


def test_a_chain_too_long_for_python_says_how_to_split_it():
    with pytest.raises(InputError, match="split it into statements"):
        parse("+".join(["x"] * 6000))


def test_real_nesting_still_has_a_limit():
    with pytest.raises(InputError, match="nests deeper than 200 levels"):
        parse("-" * 250 + "x")


@pytest.mark.parametrize("expr, words", [
    ("y = x * 2\ny.backward()", "leave backward() out"),
    ("print(x)", "leave print out"),
    ("x.grad", "it is what gradcheck computes"),
    ("tensor([1.0]) * x", "give values with -v"),
])
def test_notebook_lines_explain_themselves(expr, words):
    with pytest.raises(InputError, match=re.escape(words)):
        parse(expr)


def test_long_constants_stay_integers_in_json(gradcheck):
    data = gradcheck.json("check", "cross_entropy(z, t)", "-v", "z=[[1, 2, 0.5], [0, 1, 3]]", "-v", "t=long([1, 2])")
    assert data["constants"]["t"] == {"shape": [2], "value": [1, 2]}
    assert all(isinstance(v, int) for v in data["constants"]["t"]["value"])
    assert list(data["inputs"]) == ["z"]
