"""Variable values: SPEC strings and Python values, through the API and -v."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from gradcheck_cli import check
from gradcheck_cli.values import parse_spec, resolve, rng_for


@pytest.mark.parametrize("spec, expected", [
    ("2", np.array(2.0)),
    ("-2.5", np.array(-2.5)),
    ("2,3", np.array([2.0, 3.0])),
    ("[2]", np.array([2.0])),
    ("[[1,2],[3,4]]", np.array([[1.0, 2.0], [3.0, 4.0]])),
    ("(1, 2)", np.array([1.0, 2.0])),
    ("ones(2,2)", np.ones((2, 2))),
    ("zeros(3)", np.zeros(3)),
    ("full(2,3, value=0.5)", np.full((2, 3), 0.5)),
    ("arange(4)", np.arange(4.0)),
    ("linspace(0, 1, 5)", np.array([0.0, 0.25, 0.5, 0.75, 1.0])),
    ("1e-3", np.array(0.001)),
])
def test_literal_specs(spec, expected):
    value = parse_spec(spec, "v")
    assert value.dtype == np.float64 and value.shape == expected.shape
    assert_allclose(value, expected, rtol=0, atol=0)


@pytest.mark.parametrize("spec, shape", [("randn(3,4)", (3, 4)), ("rand(2)", (2,)), ("randn()", ()),
                                         ("rand(5, low=-1, high=1)", (5,)), ("randn(2, mean=3, std=0.5)", (2,))])
def test_random_specs_are_seeded_by_seed_and_name(spec, shape):
    a = parse_spec(spec, "v", seed=7)
    assert a.shape == shape
    assert_allclose(parse_spec(spec, "v", seed=7), a, rtol=0, atol=0)
    assert not np.array_equal(parse_spec(spec, "w", seed=7), a)
    assert not np.array_equal(parse_spec(spec, "v", seed=8), a)


def test_randn_and_rand_draw_from_the_documented_streams():
    assert_allclose(parse_spec("randn(4)", "w", seed=3), rng_for(3, "w").normal(0.0, 1.0, size=(4,)), rtol=0)
    assert_allclose(parse_spec("rand(4, low=2, high=5)", "w", seed=3), rng_for(3, "w").uniform(2, 5, size=(4,)),
                    rtol=0)
    lo_hi = parse_spec("rand(1000, low=2, high=5)", "w")
    assert lo_hi.min() >= 2 and lo_hi.max() < 5


@pytest.mark.parametrize("value, shape", [
    (2, ()), (2.5, ()), ([2], (1,)), ([[1, 2], [3, 4]], (2, 2)),
    (np.arange(6.0).reshape(2, 3), (2, 3)), (np.float32(1.5), ()),
    (torch.tensor([1.0, 2.0], dtype=torch.float32), (2,)),
    (torch.tensor([1.0, 2.0], requires_grad=True), (2,)),
])
def test_python_values(value, shape):
    array = resolve(value, "v", seed=0)
    assert array.dtype == np.float64 and array.shape == shape
    r = check("(v * 3).sum()", v=value)
    assert_allclose(r.inputs["v"].analytic, np.full(shape, 3.0), rtol=0, atol=0)


def test_resolved_values_are_copies():
    source = np.array([1.0, 2.0])
    r = check("(v * v).sum()", v=source)
    source[:] = 100.0
    assert_allclose(r.inputs["v"].value, [1.0, 2.0], rtol=0, atol=0)


def test_variable_named_like_an_option():
    # vars= passes a variable whose name is also a keyword of check()
    r = check("(seed * 2 + dtype).sum()", vars={"seed": [1.0, 2.0], "dtype": 0.5})
    assert r.seed == 0
    assert_allclose(r.inputs["seed"].analytic, [2.0, 2.0], rtol=0, atol=0)
    assert_allclose(r.inputs["dtype"].analytic, 2.0, rtol=0, atol=0)


def test_float32_point_is_rounded_for_both_sides():
    third = 1 / 3
    r = check("x * x", x=third, dtype="float32")
    x32 = float(np.float32(third))
    assert_allclose(r.inputs["x"].value, x32, rtol=0, atol=0)
    assert_allclose(r.inputs["x"].numeric, 2 * x32, rtol=1e-12)
    assert r.ok


def test_cli_and_api_agree(gradcheck):
    data = gradcheck.json("check", "(w @ x).sum()", "-v", "w=randn(2,3)", "-v", "x=[1, 2, 3]", "--seed", "9")
    r = check("(w @ x).sum()", w="randn(2,3)", x=[1, 2, 3], seed=9)
    assert_allclose(data["inputs"]["w"]["value"], r.inputs["w"].value, rtol=0, atol=0)
    assert_allclose(data["inputs"]["w"]["analytic"], r.inputs["w"].analytic, rtol=0, atol=0)
    assert_allclose(r.inputs["w"].analytic, np.tile([1.0, 2.0, 3.0], (2, 1)), rtol=0, atol=0)
