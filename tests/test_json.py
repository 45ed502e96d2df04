"""`--format json`: the SPEC's shape, modes, --wrt, scalars, strict JSON, determinism."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from helpers import oracle_jacobians, strict_json

TOP_KEYS = {"ok", "expression", "dtype", "method", "atol", "rtol", "mode", "output", "inputs", "graph"}
INPUT_KEYS = {"shape", "value", "analytic", "numeric", "max_abs_error", "max_rel_error", "ok"}


def _walk_graph(node: dict):
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(current["next"])


def test_shape_of_the_spec_example(gradcheck):
    data = gradcheck.json("check", "3*a**3 - b**2", "-v", "a=2,3", "-v", "b=6,4", "--grad-output", "1,1")
    assert TOP_KEYS <= set(data)
    assert data["ok"] is True
    assert data["expression"] == "3*a**3 - b**2"
    assert data["dtype"] == "float64"
    assert data["method"] in {"central", "richardson", "complex"}
    # float64 defaults: rtol 1e-8 against an exact numeric side, the example's 1e-7 for plain central
    assert_allclose([data["atol"], data["rtol"]], [1e-8, 1e-7 if data["method"] == "central" else 1e-8],
                    rtol=0, atol=0)
    assert data["mode"] == "vjp"
    assert data["output"]["shape"] == [2]
    assert_allclose(data["output"]["value"], [3 * 2**3 - 6**2, 3 * 3**3 - 4**2], rtol=0, atol=0)
    assert list(data["inputs"]) == ["a", "b"]
    for name, value in (("a", [2.0, 3.0]), ("b", [6.0, 4.0])):
        entry = data["inputs"][name]
        assert INPUT_KEYS <= set(entry)
        assert entry["shape"] == [2] and entry["ok"] is True
        assert_allclose(entry["value"], value, rtol=0, atol=0)
        assert isinstance(entry["max_abs_error"], float) and isinstance(entry["max_rel_error"], float)
        assert entry["max_abs_error"] <= 1e-8 + 1e-7 * max(abs(v) for v in entry["numeric"])
        assert_allclose(entry["max_abs_error"],
                        np.max(np.abs(np.subtract(entry["analytic"], entry["numeric"]))), rtol=1e-12, atol=0)


def test_graph_names_and_variables(gradcheck):
    data = gradcheck.json("check", "3*a**3 - b**2", "-v", "a=2,3", "-v", "b=6,4", "--grad-output", "1,1")
    graph = data["graph"]
    assert graph["name"] == "SubBackward0"
    assert [child["name"] for child in graph["next"]] == ["MulBackward0", "PowBackward0"]
    leaves = [node for node in _walk_graph(graph) if node["name"] == "AccumulateGrad"]
    assert sorted(node["variable"] for node in leaves) == ["a", "b"]
    assert all(not node["next"] for node in leaves)
    assert not any("::" in node["name"] for node in _walk_graph(graph))


def test_graph_matches_torch(gradcheck):
    """Node names are type(grad_fn).__name__, read from the same expression built in torch."""
    data = gradcheck.json("check", "(sin(x) * y).sum()", "-v", "x=1,2", "-v", "y=3,4")
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    fn = (torch.sin(x) * y).sum().grad_fn
    assert data["graph"]["name"] == type(fn).__name__
    mul = fn.next_functions[0][0]
    assert data["graph"]["next"][0]["name"] == type(mul).__name__
    assert [n["name"] for n in data["graph"]["next"][0]["next"]] == \
        [type(f).__name__ for f, _ in mul.next_functions]


@pytest.mark.parametrize("expr, extra, mode", [
    ("(x*x).sum()", [], "gradient"),
    ("x*x", ["--grad-output", "1,2,3"], "vjp"),
    ("x*x", [], "jacobian"),
    ("x.sum(dim=0, keepdim=True)", [], "gradient"),  # one element: backward() needs no gradient, as torch
])
def test_modes(gradcheck, expr, extra, mode):
    data = gradcheck.json("check", expr, "-v", "x=1,2,3", *extra)
    assert data["mode"] == mode


def test_one_element_output_is_a_gradient(gradcheck):
    data = gradcheck.json("check", "x.sum(dim=0, keepdim=True)", "-v", "x=1,2,3")
    assert data["output"]["shape"] == [1]
    assert_allclose(data["inputs"]["x"]["analytic"], [1.0, 1.0, 1.0], rtol=0, atol=0)


def test_jacobian_shape_is_output_plus_input(gradcheck):
    data = gradcheck.json("check", "w @ x", "-v", "w=randn(2,3)", "-v", "x=randn(3,4)")
    assert data["mode"] == "jacobian"
    assert data["output"]["shape"] == [2, 4]
    w, x = np.array(data["inputs"]["w"]["value"]), np.array(data["inputs"]["x"]["value"])
    jac = oracle_jacobians(torch.matmul, {"w": w, "x": x})
    for name, shape in (("w", [2, 3]), ("x", [3, 4])):
        entry = data["inputs"][name]
        assert entry["shape"] == shape
        assert np.shape(entry["analytic"]) == (2, 4, *shape)
        assert np.shape(entry["numeric"]) == (2, 4, *shape)
        assert_allclose(entry["analytic"], jac[name], rtol=1e-12, atol=1e-14)
        assert_allclose(entry["numeric"], jac[name], rtol=1e-10, atol=1e-12)


def test_wrt_moves_others_to_constants(gradcheck):
    data = gradcheck.json("check", "(a*b + c).sum()", "-v", "a=1,2", "-v", "b=3,4", "-v", "c=5",
                          "--wrt", "b")
    assert list(data["inputs"]) == ["b"]
    assert set(data["constants"]) == {"a", "c"}
    assert set(data["constants"]["a"]) == {"shape", "value"}
    assert data["constants"]["a"]["shape"] == [2] and data["constants"]["c"]["shape"] == []
    assert_allclose(data["constants"]["a"]["value"], [1.0, 2.0], rtol=0, atol=0)
    assert_allclose(data["constants"]["c"]["value"], 5.0, rtol=0, atol=0)
    assert_allclose(data["inputs"]["b"]["analytic"], [1.0, 2.0], rtol=1e-15)
    leaves = [n for n in _walk_graph(data["graph"]) if n["name"] == "AccumulateGrad"]
    assert [n["variable"] for n in leaves] == ["b"]


def test_wrt_several_keeps_expression_order(gradcheck):
    data = gradcheck.json("check", "(a*b*c).sum()", "-v", "a=1", "-v", "b=2", "-v", "c=3", "--wrt", "c,a")
    assert list(data["inputs"]) == ["a", "c"]
    assert_allclose(data["inputs"]["a"]["analytic"], 6.0, rtol=1e-15)
    assert_allclose(data["inputs"]["c"]["analytic"], 2.0, rtol=1e-15)
    assert list(data["constants"]) == ["b"]


def test_no_constants_key_without_wrt(gradcheck):
    data = gradcheck.json("check", "(a*b).sum()", "-v", "a=1", "-v", "b=2")
    assert "constants" not in data or data["constants"] == {}


@pytest.mark.parametrize("spec, shape", [("2", []), ("[2]", [1]), ("2,3", [2]), ("[[1,2],[3,4]]", [2, 2]),
                                         ("randn(3,4)", [3, 4]), ("ones(2,2)", [2, 2]), ("zeros(3)", [3]),
                                         ("rand(2)", [2])])
def test_scalar_and_tensor_shapes(gradcheck, spec, shape):
    data = gradcheck.json("check", "(a*1.5).sum()", "-v", f"a={spec}")
    assert data["inputs"]["a"]["shape"] == shape
    assert np.shape(data["inputs"]["a"]["value"]) == tuple(shape)
    assert_allclose(data["inputs"]["a"]["analytic"], np.full(shape, 1.5), rtol=1e-15)


def test_scalar_output_value_is_a_number(gradcheck):
    data = gradcheck.json("check", "a*a", "-v", "a=2")
    assert data["mode"] == "gradient"
    assert data["output"]["shape"] == [] and isinstance(data["output"]["value"], float)
    assert_allclose(data["output"]["value"], 4.0, rtol=0, atol=0)
    assert_allclose(data["inputs"]["a"]["analytic"], 4.0, rtol=1e-15)


def test_unnamed_variable_gets_a_seeded_scalar(gradcheck):
    data = gradcheck.json("check", "sin(t)")
    t = data["inputs"]["t"]["value"]
    assert data["inputs"]["t"]["shape"] == []
    assert 0.5 <= t < 1.5
    assert_allclose(data["inputs"]["t"]["analytic"], np.cos(t), rtol=1e-14)


def test_same_seed_same_output(gradcheck):
    args = ("check", "(w @ x).tanh().sum() + sin(s)", "-v", "w=randn(3,4)", "-v", "x=rand(4)", "--seed", "5")
    first = gradcheck(*args, "--json").stdout
    second = gradcheck(*args, "--json").stdout
    assert first == second
    table_first, table_second = gradcheck(*args).stdout, gradcheck(*args).stdout
    assert table_first == table_second


def test_other_seed_other_values(gradcheck):
    args = ("check", "(w*2).sum()", "-v", "w=randn(4)")
    one = gradcheck.json(*args, "--seed", "1")
    two = gradcheck.json(*args, "--seed", "2")
    assert not np.allclose(one["inputs"]["w"]["value"], two["inputs"]["w"]["value"], rtol=1e-3)


def test_a_variable_does_not_depend_on_the_others(gradcheck):
    """A variable's random value depends on the seed, its name and its SPEC only."""
    alone = gradcheck.json("check", "w.sum()", "-v", "w=randn(3)")
    both = gradcheck.json("check", "w.sum() * v.sum()", "-v", "v=randn(5)", "-v", "w=randn(3)")
    assert_allclose(alone["inputs"]["w"]["value"], both["inputs"]["w"]["value"], rtol=0, atol=0)


def test_json_is_strict_and_non_finite_numbers_are_strings(gradcheck):
    # sqrt at 0: the value 0 is finite, the analytic gradient 1/(2·sqrt 0) is inf: exit 1
    result = gradcheck("check", "sqrt(x)", "-v", "x=0", "--json", exit_code=1)
    data = strict_json(result.stdout)
    assert data["ok"] is False
    entry = data["inputs"]["x"]
    assert entry["analytic"] == "inf"
    assert entry["ok"] is False
    assert isinstance(entry["numeric"], float)
    assert entry["failures"][0]["reason"] == "analytic gradient is inf"
    with pytest.raises(ValueError):
        strict_json('{"x": NaN}')  # the oracle itself refuses what jq would refuse


def test_nan_gradient_is_a_failure_with_reason(gradcheck):
    # (−1.5)**x is finite at x = 2, but its derivative (−1.5)^x·log(−1.5) is not real: torch says nan
    result = gradcheck("check", "(-1.5)**x", "-v", "x=2", "--json", exit_code=1)
    data = strict_json(result.stdout)
    assert_allclose(data["output"]["value"], (-1.5) ** 2, rtol=1e-15)
    assert data["inputs"]["x"]["analytic"] == "nan"
    assert data["inputs"]["x"]["failures"][0]["reason"] == "analytic gradient is nan"


def test_json_has_no_rich_markup(gradcheck):
    text = gradcheck("check", "x*x", "-v", "x=1,2", "--format", "json").stdout
    data = strict_json(text)
    assert data["mode"] == "jacobian"
    assert "\x1b[" not in text
    assert json.loads(text) == data


def test_float32_json_reports_its_tolerances(gradcheck):
    data = gradcheck.json("check", "(exp(x)).sum()", "-v", "x=0.1,0.2", "--dtype", "float32")
    assert data["dtype"] == "float32"
    assert_allclose([data["atol"], data["rtol"]], [1e-5, 1e-4], rtol=0, atol=0)
    x32 = np.array([0.1, 0.2], dtype=np.float32).astype(np.float64)
    assert_allclose(data["inputs"]["x"]["value"], x32, rtol=0, atol=0)
    assert_allclose(data["inputs"]["x"]["numeric"], np.exp(x32), rtol=1e-12)
    assert_allclose(data["inputs"]["x"]["analytic"], np.exp(x32), rtol=1e-6)


@pytest.mark.parametrize("option, value", [("--atol", 0.5), ("--rtol", 0.25)])
def test_given_tolerances_are_echoed(gradcheck, option, value):
    data = gradcheck.json("check", "x.sum()", "-v", "x=1,2", option, str(value))
    assert_allclose(data[option[2:]], value, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["central", "richardson", "complex"])
def test_method_used_is_echoed(gradcheck, method):
    data = gradcheck.json("check", "sin(x).sum()", "-v", "x=1,2", "--method", method)
    assert data["method"] == method
    assert_allclose(data["inputs"]["x"]["numeric"], np.cos([1.0, 2.0]), rtol=1e-8)


def test_the_spec_example_with_central_differences_echoes_its_tolerances(gradcheck):
    data = gradcheck.json("check", "3*a**3 - b**2", "-v", "a=2,3", "-v", "b=6,4", "--grad-output", "1,1",
                          "--method", "central")
    assert data["ok"] is True and data["method"] == "central"
    assert (data["atol"], data["rtol"]) == (1e-08, 1e-07)
    # the numeric side of the example: d/da 3a³ = 9a², d/db −b² = −2b, to central-difference accuracy
    assert_allclose(data["inputs"]["a"]["numeric"], [36.0, 81.0], rtol=1e-9)
    assert_allclose(data["inputs"]["b"]["numeric"], [-12.0, -8.0], rtol=1e-9)
