"""The symbolic engine (sympy): exact derivatives, a third opinion beside autograd and differences.

Oracles that do not share its code: `torch.autograd.functional.jacobian` of the same function written
directly in torch (every op row, via `helpers.op_cases()`), sympy differentiating hand-written formulas
(`helpers.sympy_gradients`, scalar elementwise rows), values worked out by hand, and the numeric
engine (complex step, exact to rounding on these smooth cases).
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np
import pytest
import sympy
import torch
from numpy.testing import assert_allclose

from gradcheck_cli.api import CheckOptions, prepare
from gradcheck_cli.errors import InputError
from gradcheck_cli.numeric import NumericEngine
from gradcheck_cli.ops import OPS
from gradcheck_cli.symbolic import MAX_SYMBOLIC_ELEMENTS, MAX_SYMBOLIC_WORK, SymbolicEngine
from helpers import OpCase, op_cases, oracle_jacobians, points, run_python, sympy_gradients, sympy_rows, vjp

CASES = op_cases()
IDS = [case.id for case in CASES]
CORPUS = os.path.join(os.path.dirname(__file__), "plugins", "corpus_ops.py")

# torch is exact to rounding on these small cases; the symbolic side is exact to 50 digits
TORCH_TOL = dict(rtol=1e-12, atol=1e-14)
# the numeric engine (complex step) is exact to rounding too, but it is another engine's arithmetic
NUMERIC_TOL = dict(rtol=1e-9, atol=1e-12)


def engines(expr: str, plugins: tuple[str, ...] = (), **values) -> tuple[NumericEngine, SymbolicEngine]:
    prep = prepare(expr, values, CheckOptions(plugins=plugins))
    numeric = NumericEngine(prep.program, prep.table, prep.inputs, "complex")
    return numeric, SymbolicEngine(numeric)


def torch_gradient(fn, **values) -> dict[str, np.ndarray]:
    """d fn / d each input by torch autograd, fn returning a scalar."""
    return oracle_jacobians(fn, {k: np.asarray(v, dtype=np.float64) for k, v in values.items()})


# ---------------------------------------------------------------- every op row, every mode

def test_every_row_has_a_case():
    assert {case.op for case in CASES} == {name for name, row in OPS.items() if not row.mutates}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jacobian_mode(case: OpCase):
    """weights None: the full Jacobian, shape output.shape + input.shape."""
    numeric, symbolic = engines(case.expr, **case.values)
    for name, oracle in oracle_jacobians(case.torch_fn, case.inputs).items():
        got = symbolic.derivative(name, 0, None)
        assert got.dtype == np.float64 and got.shape == oracle.shape
        assert_allclose(got, oracle, **TORCH_TOL, err_msg=f"{case.expr}: d/d{name} vs torch")
        assert_allclose(got, numeric.derivative(name, 0, None).value, **NUMERIC_TOL)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_mode(case: OpCase):
    """A scalar output, weights 1: a gradient of each input's shape."""
    numeric, symbolic = engines(f"({case.expr}).sum()", **case.values)
    expected = oracle_jacobians(lambda *t: case.torch_fn(*t).sum(), case.inputs)
    for name, oracle in expected.items():
        got = symbolic.derivative(name, 0, np.ones(()))
        assert got.shape == case.inputs[name].shape
        assert_allclose(got, oracle, **TORCH_TOL, err_msg=f"({case.expr}).sum(): d/d{name} vs torch")
        assert_allclose(got, numeric.derivative(name, 0, np.ones(())).value, **NUMERIC_TOL)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vjp_mode(case: OpCase):
    """Upstream weights of the output's shape: the vector-Jacobian product g · J."""
    numeric, symbolic = engines(case.expr, **case.values)
    weights = np.random.default_rng(7).uniform(-2.0, 2.0, size=numeric.output.shape)
    for name, jac in oracle_jacobians(case.torch_fn, case.inputs).items():
        got = symbolic.derivative(name, 0, weights)
        assert got.shape == case.inputs[name].shape
        assert_allclose(got, vjp(weights, jac), **TORCH_TOL, err_msg=f"{case.expr}: g·J for {name} vs torch")
        assert_allclose(got, numeric.derivative(name, 0, weights).value, **NUMERIC_TOL)


@pytest.mark.parametrize("row", sympy_rows(), ids=lambda row: row.name)
def test_elementwise_rows_against_sympy_formulas(row):
    """Scalar elementwise rows against sympy differentiating the textbook formula (Abs, Max, log(1+x)...)
    at 30 digits: independent of the op table's own sympy forms."""
    expr = next(case.expr for case in CASES if case.op == row.name)
    names = ["x"] if len(row.tensor_params) == 1 else ["a", "b"]
    values = points(row.domain, {n: (2, 3) for n in names}, seed=11)
    _, symbolic = engines(f"({expr}).sum()", **values)
    for name, oracle in sympy_gradients(row, values).items():
        assert_allclose(symbolic.derivative(name, 0, np.ones(())), oracle, rtol=1e-14, atol=1e-15,
                        err_msg=f"{row.name}: d/d{name} vs sympy's formula")


# ---------------------------------------------------------------- the paths through the engine

@pytest.mark.parametrize("expr, fn", [
    ("sin(x).sum(dim=1)", lambda x: torch.sin(x).sum(dim=1)),                      # reduced
    ("exp(x).mean(dim=0, keepdim=True)", lambda x: torch.exp(x).mean(dim=0, keepdim=True)),
    ("x * y", lambda x: x * torch.tensor([[1.5, -2.0, 0.5], [3.0, 0.25, -1.0]], dtype=torch.float64)),
    ("softmax(x, dim=1) * x", lambda x: torch.softmax(x, dim=1) * x),                # dense
    ("h = tanh(x @ x.T); h @ x", lambda x: torch.tanh(x @ x.T) @ x),
])
def test_structure_paths(expr, fn):
    """Aligned (one walk, a symbol per element), reduced (a sum/mean of aligned) and dense (a walk per
    element) agree with torch in all three modes; y is broadcast against x (aligned, summed back)."""
    x = np.array([[0.3, -1.2, 0.7], [1.1, 0.4, -0.6]])
    values = {"x": x} if "y" not in expr else {"x": x[0], "y": [[1.5, -2.0, 0.5], [3.0, 0.25, -1.0]]}
    numeric, symbolic = engines(expr, **values)
    jac = oracle_jacobians(fn, {"x": values["x"]})["x"]
    weights = np.random.default_rng(3).uniform(-1, 1, numeric.output.shape)
    assert_allclose(symbolic.derivative("x", 0, None), jac, **TORCH_TOL)
    assert_allclose(symbolic.derivative("x", 0, weights), vjp(weights, jac), **TORCH_TOL)


def test_intermediate_aligned():
    """y = x*x; z = sin(y): d out / d y is cos(y), with x*x held at its value, and d/dz is 1."""
    x = np.array([0.3, 1.2, -2.5])
    numeric, symbolic = engines("y = x*x; z = sin(y); z.sum()", x=x)
    y = x * x
    exact = np.array([float(sympy.cos(sympy.Float(float(v), 50))) for v in y])
    assert_allclose(symbolic.derivative("y", 1, np.ones(())), exact, rtol=1e-15, atol=0)
    assert_allclose(symbolic.derivative("z", 2, np.ones(())), np.ones(3), rtol=0, atol=0)
    assert_allclose(symbolic.derivative("x", 0, np.ones(())), 2 * x * np.cos(y), rtol=1e-13)
    assert_allclose(symbolic.derivative("y", 1, None), exact, rtol=1e-15, atol=0)  # shape () + (3,)
    _, symbolic = engines("y = x*x; z = sin(y); z", x=x)
    assert_allclose(symbolic.derivative("y", 1, None), np.diag(exact), rtol=1e-15, atol=0)


def test_intermediate_dense():
    """An intermediate that a softmax mixes: column by column, against torch at the intermediate."""
    x = np.array([0.3, -1.2, 0.7, 0.1])
    c = np.array([1.0, -2.0, 0.5, 3.0])
    numeric, symbolic = engines("y = exp(x); z = softmax(y); (z * c).sum()", x=x, c=c)
    ct = torch.tensor(c)
    oracle = torch_gradient(lambda y: (torch.softmax(y, dim=0) * ct).sum(), y=np.exp(x))["y"]
    assert_allclose(symbolic.derivative("y", 1, np.ones(())), oracle, **TORCH_TOL)
    assert_allclose(symbolic.derivative("y", 1, np.ones(())),
                    numeric.derivative("y", 1, np.ones(())).value, **NUMERIC_TOL)


def test_detach_is_held_constant():
    """detach(x**3) is the constant 1 at x = 1: the gradient is that of x**2 alone."""
    _, symbolic = engines("y1 = x**2; y2 = detach(x**3); (y1 + y2).sum()", x=[1.0])
    assert symbolic.derivative("x", 0, np.ones(())).tolist() == [2.0]
    x = np.array([0.5, -1.5, 2.0])
    _, symbolic = engines("(x * detach(softmax(x))).sum()", x=x)  # dense, through a held softmax
    held = torch.softmax(torch.tensor(x), dim=0).numpy()
    assert_allclose(symbolic.derivative("x", 0, np.ones(())), held, rtol=1e-15)


def test_no_dependence_is_exactly_zero():
    """An output that depends on x only through detach: zeros of the right shape in both modes."""
    _, symbolic = engines("y = x; z = detach(y) * 2; z", x=[1.0, 2.0])
    assert symbolic.derivative("x", 0, None).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert symbolic.derivative("x", 0, np.ones(2)).tolist() == [0.0, 0.0]


def test_integer_powers_of_negative_bases():
    """x**3 and x**2.0 at negative x are real (torch's convention), 2**x and x**-1 too."""
    x = np.array([-1.5, 2.0, -0.25])
    _, symbolic = engines("(x**3 + x**2.0 + 2**x + x**-1).sum()", x=x)
    oracle = torch_gradient(lambda t: (t**3 + t**2.0 + 2**t + t**-1).sum(), x=x)["x"]
    assert_allclose(symbolic.derivative("x", 0, np.ones(())), oracle, **TORCH_TOL)


# ---------------------------------------------------------------- kinks: torch's conventions

@pytest.mark.parametrize("expr, x, expected, fn", [
    ("relu(x).sum()", [0.0, 1.0, -1.0], [0.0, 1.0, 0.0], lambda t: torch.relu(t).sum()),
    ("abs(x).sum()", [0.0, 1.0, -1.0], [0.0, 1.0, -1.0], lambda t: torch.abs(t).sum()),
    ("max(x)", [1.0, 1.0, -1.0], [0.5, 0.5, 0.0], torch.max),
    ("min(x)", [1.0, 1.0, 2.0], [0.5, 0.5, 0.0], torch.min),
    ("x.reshape(1, 3).max(dim=1).sum()", [1.0, 1.0, -1.0], [1.0, 0.0, 0.0],
     lambda t: t.reshape(1, 3).max(dim=1).values.sum()),
    ("x.reshape(1, 3).min(dim=1).sum()", [-1.0, -1.0, 1.0], [1.0, 0.0, 0.0],
     lambda t: t.reshape(1, 3).min(dim=1).values.sum()),
    ("maximum(x, 1).sum()", [1.0, 2.0, 0.0], [0.5, 1.0, 0.0],
     lambda t: torch.maximum(t, torch.ones(3, dtype=torch.float64)).sum()),
    ("minimum(x, 1).sum()", [1.0, 2.0, 0.0], [0.5, 0.0, 1.0],
     lambda t: torch.minimum(t, torch.ones(3, dtype=torch.float64)).sum()),
    ("clamp(x, 0, 1).sum()", [0.0, 1.0, 0.5, -1.0, 2.0], [1.0, 1.0, 1.0, 0.0, 0.0],
     lambda t: torch.clamp(t, 0, 1).sum()),
    ("norm(x, p=inf)", [1.0, -1.0, 0.5], [0.5, -0.5, 0.0],
     lambda t: torch.linalg.vector_norm(t, ord=math.inf)),
])
def test_kinks(expr, x, expected, fn):
    """At 0, at a tie, at a clamp bound: the values torch's backward gives, exactly."""
    _, symbolic = engines(expr, x=x)
    got = symbolic.derivative("x", 0, np.ones(()))
    assert got.tolist() == expected
    assert_allclose(got, torch_gradient(fn, x=x)["x"], rtol=0, atol=0)


# ---------------------------------------------------------------- where float64 differences are poor

def test_sin_at_1e8_is_exact():
    """sin at 1e8: central differences lose about half the digits; the symbolic derivative is
    cos(1e8) correctly rounded, as sympy computes it at 60 digits."""
    numeric, symbolic = engines("sin(x).sum()", x=[1e8])
    exact = float(sympy.cos(sympy.Float(1e8, 60)))
    assert symbolic.derivative("x", 0, np.ones(())).tolist() == [exact]
    prep = prepare("sin(x).sum()", {"x": [1e8]}, CheckOptions())
    central = NumericEngine(prep.program, prep.table, prep.inputs, "central").derivative("x", 0, np.ones(()))
    assert abs(central.value[0] - exact) > 1e-9 * abs(exact)  # the case is a hard one for differences


def test_cancellation_is_exact():
    """(1 + x)**2 - 1 - 2x is x**2: at x = 1e-9 float64 evaluates it with catastrophic cancellation,
    so differences (and even autograd's 2(1 + x) - 2) are off; the symbolic side gives 2x."""
    x = np.array([1e-9, 3e-10])
    numeric, symbolic = engines("((1 + x)**2 - 1 - 2*x).sum()", x=x)
    got = symbolic.derivative("x", 0, np.ones(()))
    assert_allclose(got, 2 * x, rtol=1e-15, atol=0)
    prep = prepare("((1 + x)**2 - 1 - 2*x).sum()", {"x": x}, CheckOptions())
    central = NumericEngine(prep.program, prep.table, prep.inputs, "central").derivative("x", 0, np.ones(()))
    assert np.all(np.abs(central.value - 2 * x) > 1e-3 * 2 * x)
    autograd = torch_gradient(lambda t: ((1 + t)**2 - 1 - 2 * t).sum(), x=x)["x"]
    assert np.all(np.abs(autograd - 2 * x) > 1e-9 * 2 * x)


# ---------------------------------------------------------------- refusals

def test_too_many_elements_gradient():
    size = MAX_SYMBOLIC_ELEMENTS + 1
    _, symbolic = engines("sin(x).sum()", x=f"randn({size})")
    with pytest.raises(InputError) as err:
        symbolic.derivative("x", 0, np.ones(()))
    message = str(err.value)
    assert "\n" not in message and f"{size} elements" in message and str(MAX_SYMBOLIC_ELEMENTS) in message
    assert "--wrt" in message and "smaller inputs" in message


def test_too_many_entries_jacobian():
    """The Jacobian's entries count: 10 × 10 is above a limit of 50, the gradient's 10 is not."""
    numeric, _ = engines("sin(x)", x="randn(10)")
    symbolic = SymbolicEngine(numeric, max_elements=50)
    with pytest.raises(InputError, match=r"Jacobian .* 100 entries.*limit of 50.*--grad-output"):
        symbolic.derivative("x", 0, None)
    assert_allclose(symbolic.derivative("x", 0, np.ones(10)), np.cos(numeric.envs[0]["x"][0]), rtol=1e-15)
    assert SymbolicEngine(numeric, max_elements=100).derivative("x", 0, None).shape == (10, 10)


def test_too_much_work():
    """A dense op over many elements costs elements² evaluations: refused before it starts."""
    _, symbolic = engines("softmax(x).sum()", x="randn(1000)")
    started = time.perf_counter()
    with pytest.raises(InputError, match=f"too much work.*{MAX_SYMBOLIC_WORK}.*--wrt"):
        symbolic.derivative("x", 0, np.ones(()))
    assert time.perf_counter() - started < 5.0


@pytest.mark.parametrize("expr", ["good_cube(x).sum()", "(good_softplus(x) * x).sum()", "good_mat(x).sum()"])
def test_plugin_op_on_the_path_is_refused(expr):
    """Plugin ops (custom, or declared elementwise) have no sympy form: refused, with a caret."""
    x = [[0.5, -1.0], [2.0, 0.25]]
    _, symbolic = engines(expr, plugins=(CORPUS,), x=x)
    with pytest.raises(InputError) as err:
        symbolic.derivative("x", 0, np.ones(()))
    op = expr.split("(")[1] if expr.startswith("(") else expr.split("(")[0]
    assert str(err.value) == f"--symbolic: op '{op}' has no sympy form"
    assert err.value.caret_lines()  # placed at the call


def test_plugin_op_on_constants_is_evaluated():
    """A plugin op that x does not reach (a constant input, or under detach) is a number."""
    c, x = np.array([0.5, -1.5]), np.array([2.0, 0.25])
    _, symbolic = engines("(good_cube(c) * sin(x)).sum() + good_cube(detach(x)).sum() + "
                          "(detach(good_cube(x)) * x).sum()", plugins=(CORPUS,), c=c, x=x)
    assert_allclose(symbolic.derivative("x", 0, np.ones(())), c**3 * np.cos(x) + x**3, rtol=1e-15)


@pytest.mark.parametrize("a_shape, b_shape", [((2, 3), (3,)), ((3,), (3, 2)), ((3,), (3,)),
                                              ((2, 2, 3), (3, 2)), ((3,), (2, 3, 2)), ((2, 1, 3), (2, 3, 2))])
def test_matmul_shapes(a_shape, b_shape):
    """matmul's 1-D, 2-D and batched (broadcast) forms, both arguments, against torch."""
    rng = np.random.default_rng(5)
    a, b = rng.uniform(-1, 1, a_shape), rng.uniform(-1, 1, b_shape)
    numeric, symbolic = engines("sin(a @ b)", a=a, b=b)
    weights = rng.uniform(-1, 1, numeric.output.shape)
    for name, jac in oracle_jacobians(lambda s, t: torch.sin(s @ t), {"a": a, "b": b}).items():
        assert_allclose(symbolic.derivative(name, 0, None), jac, **TORCH_TOL)
        assert_allclose(symbolic.derivative(name, 0, weights), vjp(weights, jac), **TORCH_TOL)


def test_sympy_missing(monkeypatch):
    numeric, _ = engines("sin(x).sum()", x=[1.0])
    monkeypatch.setitem(sys.modules, "sympy", None)  # import sympy now raises ImportError
    with pytest.raises(InputError, match=r"^--symbolic needs sympy: pip install sympy$"):
        SymbolicEngine(numeric)


def test_importing_the_package_does_not_import_sympy():
    result = run_python("import sys, gradcheck_cli, gradcheck_cli.cli, gradcheck_cli.symbolic, gradcheck_cli.ops; "
                        "print('sympy' in sys.modules, 'mpmath' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------- no side effects, reasonable speed

def test_elementwise_hundred_elements():
    """100 elements of an elementwise expression agree with the numeric engine (its speed is bench/'s job:
    a timed unit test fails on a loaded machine)."""
    numeric, symbolic = engines("(tanh(x) * x + exp(x) * sin(x) + x**3).sum()", x="randn(100)")
    got = symbolic.derivative("x", 0, np.ones(()))
    assert_allclose(got, numeric.derivative("x", 0, np.ones(())).value, **NUMERIC_TOL)
