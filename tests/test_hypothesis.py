"""Property tests: arbitrary text is parsed or refused as bad input, never anything else; random
expression trees from the op table's elementwise unary rows and + - * pass at points in each domain."""
from __future__ import annotations

import math
import re

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from gradcheck_cli import InputError, check
from gradcheck_cli.ops import OPS, Group, Kind
from gradcheck_cli.parse import parse
from gradcheck_cli.values import resolve

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = ["x", "y", "w", "sin", "exp", "log", "sum", "mean", "max", "softmax", "reshape", "T", "torch",
          "detach", "(", ")", "[", "]", "+", "-", "*", "/", "**", "@", ".", ",", ":", ";", "=", "\n", " ",
          "0", "1", "2.5", "-1", "1e308", "1e400", "9" * 30, "dim", "keepdim", "True", "None", "inf", "pi",
          "e", "'", '"', "__", "_", "lambda", "if", "else", "for", "in", "not", "and", "...", "{", "}",
          "#", "\\", "\t", "é", "\x00", "%", "//", "<", "==", ":=", "*x", "**x", "j"]

token_text = st.lists(st.sampled_from(TOKENS), max_size=25).map("".join)
any_text = st.one_of(st.text(max_size=80), token_text)


@SETTINGS
@given(any_text)
def test_arbitrary_text_parses_or_is_refused(text):
    try:
        program = parse(text)
    except InputError as err:
        assert err.message
        if err.col is not None:
            assert err.line is not None and err.line >= 1
            assert err.end_col is None or err.end_col > err.col
            assert err.format()  # the caret text renders without error
        return
    assert program.statements
    assert set(program.inputs).isdisjoint(program.intermediates)


@SETTINGS
@given(any_text)
def test_arbitrary_spec_resolves_or_is_refused(text):
    try:
        value = resolve(text, "v", seed=0)
    except InputError as err:
        assert err.message
        return
    assert value.dtype == np.float64
    assert np.all(np.isfinite(value))


# ---------------------------------------------------------------- random expression trees

UNARY = [row for row in OPS.values()
         if row.group is Group.ELEMENTWISE and row.named and len(row.params) == 1
         and row.params[0].kind is Kind.TENSOR and not row.mutates]


def _into_domain(inner: str, domain: tuple[float, float]) -> str:
    """Map any real value into the op's domain (within [-2, 2], less a 10% margin), smoothly:
    lo + (hi − lo)·sigmoid(inner + 0.37), written with the table's own + - * / exp.

    The shift keeps a round inner value (0, as x - x gives) off the middle of the interval, which
    is 0 for symmetric domains: the kink of abs and relu, where a real step straddles two slopes.
    """
    lo, hi = max(domain[0], -2.0), min(domain[1], 2.0)
    margin = 0.1 * (hi - lo)
    lo, hi = lo + margin, hi - margin
    return f"({lo!r} + {hi - lo!r} / (1 + exp(-({inner}) - 0.37)))"


def _unary(row, inner: str, as_method: bool) -> str:
    arg = _into_domain(inner, row.domain)
    return f"{arg}.{row.name}()" if as_method else f"{row.name}({arg})"


leaf = st.one_of(
    st.sampled_from(["x", "y"]),
    st.tuples(st.floats(-2, 2, allow_subnormal=False).map(lambda c: round(c, 3)), st.sampled_from(["x", "y"]))
    .map(lambda t: f"({t[0]!r} * {t[1]})"),
)


def _extend(children):
    unary = st.tuples(st.sampled_from(UNARY), children, st.booleans()).map(lambda t: _unary(*t))
    binary = st.tuples(children, st.sampled_from(["+", "-", "*"]), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
    return st.one_of(unary, binary)


trees = st.recursive(leaf, _extend, max_leaves=8)
points = st.floats(-1.5, 1.5, allow_subnormal=False)


def test_the_tree_strategy_sees_every_unary_row():
    assert {row.name for row in UNARY} >= {"sin", "log", "sqrt", "tanh", "abs", "neg"}


@SETTINGS
@given(tree=trees, x=st.lists(points, min_size=3, max_size=3), y=points)
def test_random_trees_agree(tree, x, y):
    values = {name: value for name, value in (("x", x), ("y", y)) if re.search(rf"\b{name}\b", tree)}
    result = check(f"({tree}).sum()", **values)
    assert result.ok, f"{tree} at {values}"
    for name, grad in result.inputs.items():
        assert np.all(np.isfinite(grad.analytic))
        assert_allclose(grad.numeric, grad.analytic, rtol=1e-7, atol=1e-8)


@settings(max_examples=60, deadline=None)
@given(tree=trees, x=st.lists(points, min_size=3, max_size=3), y=points,
       g=st.lists(st.floats(-2, 2, allow_subnormal=False), min_size=3, max_size=3))
def test_random_trees_agree_as_vjp(tree, x, y, g):
    values = {name: value for name, value in (("x", x), ("y", y)) if re.search(rf"\b{name}\b", tree)}
    result = check(f"({tree}) * (x * 0 + 1)", grad_output=g, x=x, **({"y": y} if "y" in values else {}))
    assert result.mode == "vjp"
    assert result.ok, f"{tree} at {values}, grad_output {g}"


@settings(max_examples=60, deadline=None)
@given(tree=trees, y=points, method=st.sampled_from(["central", "richardson"]))
def test_random_scalar_trees_agree_with_real_steps(tree, y, method):
    tree = re.sub(r"\bx\b", "y", tree)
    result = check(tree, y=y, method=method)
    grad = result.inputs["y"]
    # real-step methods are as good as the function's conditioning allows: judge them by the
    # numeric engine's own error estimate as well as by the defaults
    scale = max(1.0, float(np.abs(grad.analytic)))
    assert abs(float(grad.analytic) - float(grad.numeric)) <= 1e-6 * scale + 2 * float(grad.numeric_error), tree
    assert math.isfinite(float(grad.numeric))
