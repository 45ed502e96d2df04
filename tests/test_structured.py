"""Structured Jacobians: checked on the pattern the expression gives, the pattern verified by random VJPs.

Oracles: the full build (`--full`, every entry by the analytic and numeric sides) and
torch.autograd.functional.jacobian.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from numpy.testing import assert_allclose

from gradcheck_cli import check, structured
from gradcheck_cli.cli import main
from gradcheck_cli.structured import StructuredResult
from helpers import op_cases, oracle_jacobians

LEAKY = str(Path(__file__).parent / "plugins" / "leaky_ops.py")
CASES = op_cases()


def _x(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape)


def _same(a, b, numbers=True):
    """Two checks agree: verdicts per input and entry, and (to rounding) the numbers."""
    assert a.ok == b.ok
    assert list(a.inputs) == list(b.inputs)
    for name in a.inputs:
        ra, rb = a.inputs[name], b.inputs[name]
        assert ra.ok == rb.ok, name
        assert ra.analytic.shape == rb.analytic.shape
        assert np.array_equal(ra.passed, rb.passed), name
        if numbers:
            assert_allclose(ra.analytic, rb.analytic, rtol=1e-12, atol=1e-15)
            assert_allclose(ra.numeric, rb.numeric, rtol=1e-9, atol=1e-12)
            assert ra.max_abs_error == pytest.approx(rb.max_abs_error, rel=1e-6, abs=1e-14)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_structured_and_full_builds_agree_on_the_op_table(case, monkeypatch):
    """Every row in Jacobian mode, with the structured build forced even where a full build is cheaper."""
    monkeypatch.setattr(structured, "worthwhile", lambda pattern: True)
    fast = check(case.expr, **case.values)
    full = check(case.expr, fast=False, **case.values)
    assert fast.mode == full.mode == "jacobian"
    assert not any(isinstance(r, StructuredResult) for r in full.inputs.values())
    _same(fast, full)
    for name, jac in oracle_jacobians(case.torch_fn, case.inputs).items():
        assert_allclose(fast.inputs[name].analytic, jac, rtol=1e-10, atol=1e-12)


def test_elementwise_rows_take_the_structured_path(monkeypatch):
    """The parametrized test above would pass vacuously if nothing were structured."""
    monkeypatch.setattr(structured, "worthwhile", lambda pattern: True)
    from gradcheck_cli.ops import OPS, Group
    # where(c > 0.3, a, b): c reaches the output only through a held mask, which the plan leaves to the full build
    elementwise = [c for c in CASES if OPS[c.op].group is Group.ELEMENTWISE and ">" not in c.expr]
    assert len(elementwise) > 10
    for case in elementwise:
        result = check(case.expr, **case.values)
        assert all(isinstance(r, StructuredResult) for r in result.inputs.values()), case.id


@pytest.mark.parametrize("expr, shapes, kind, colours", [
    ("sin(3*x**3)*exp(-x)", {"x": (40,)}, "elementwise", {"x": 1}),
    ("x * tanh(y)", {"x": (5,), "y": (30, 5)}, "elementwise", {"x": 30, "y": 1}),  # x broadcast
    ("(x * y).sum(dim=1)", {"x": (30, 4), "y": (30, 4)}, "reduction", {"x": 1, "y": 1}),
    ("(exp(x) * y).mean(dim=0)", {"x": (40,), "y": (6, 40)}, "reduction", {"x": 1, "y": 1}),
    ("(x * y).sum(dim=(0, 2), keepdim=True)", {"x": (3, 20, 2), "y": (3, 20, 2)}, "reduction", {"x": 1, "y": 1}),
])
def test_patterns_against_torch_jacobian(expr, shapes, kind, colours):
    values = {name: _x(shape, seed=i) for i, (name, shape) in enumerate(shapes.items())}
    result = check(expr, **values)
    full = check(expr, fast=False, **values)
    _same(result, full)
    tensors = tuple(torch.tensor(v) for v in values.values())
    fn = {"sin(3*x**3)*exp(-x)": lambda x: torch.sin(3 * x**3) * torch.exp(-x),
          "x * tanh(y)": lambda x, y: x * torch.tanh(y),
          "(x * y).sum(dim=1)": lambda x, y: (x * y).sum(dim=1),
          "(exp(x) * y).mean(dim=0)": lambda x, y: (torch.exp(x) * y).mean(dim=0),
          "(x * y).sum(dim=(0, 2), keepdim=True)": lambda x, y: (x * y).sum(dim=(0, 2), keepdim=True)}[expr]
    jac = torch.autograd.functional.jacobian(fn, tensors)
    for (name, r), want in zip(result.inputs.items(), jac):
        assert isinstance(r, StructuredResult), name
        assert r.structure.kind == kind and r.structure.verified
        assert r.structure.elements == want.numel()
        assert r.structure.entries == np.count_nonzero(structured_mask(r))
        assert_allclose(r.analytic, want.numpy(), rtol=1e-12, atol=1e-15)
        assert_allclose(r.numeric, want.numpy(), rtol=1e-8, atol=1e-10)
        assert r.ok
    assert result.ok


def structured_mask(r: StructuredResult) -> np.ndarray:
    mask = np.zeros(int(np.prod(r.full_shape)), dtype=bool)
    mask[r.entries] = True
    return mask


def test_dense_jacobians_keep_the_full_build():
    r = check("softmax(x)", x=_x(40))
    assert not isinstance(r.inputs["x"], StructuredResult) and r.inputs["x"].structure is None


def test_small_jacobians_are_built_in_full_where_that_is_cheaper():
    assert not isinstance(check("sin(x)", x=_x(10)).inputs["x"], StructuredResult)
    assert isinstance(check("sin(x)", x=_x(40)).inputs["x"], StructuredResult)


@pytest.mark.parametrize("op", ["leaky", "leaky_balanced"])
def test_a_leaking_elementwise_plugin_is_caught_in_every_seed(op):
    """Declared ELEMENTWISE, backward leaks 1e-6 of the next element's gradient into each element.
    leaky_balanced keeps every column sum right: only the random-sign VJPs can see it."""
    for seed in range(20):
        r = check(f"{op}(x)", x=_x(40, seed), plugins=[LEAKY], seed=seed)
        res = r.inputs["x"]
        assert not r.ok, seed
        assert res.structure is not None and not res.structure.verified, seed
        # the full build it fell back to names the entries off the structure: J[k + 1, k]
        failing = set(zip(*np.nonzero(~res.passed)))
        assert {(k + 1, k) for k in range(39)} <= failing, seed
        if op == "leaky_balanced":  # the diagonal is off by the leak too, but nothing else
            assert failing <= {(k + 1, k) for k in range(39)} | {(k, k) for k in range(39)}


def test_a_leak_below_the_stated_bound_is_not_claimed(monkeypatch):
    """The statement promises only leaks above caught_above; a leak far below passes both checks."""
    r = check("leaky_balanced(x)", x=_x(40), plugins=[LEAKY])
    assert r.inputs["x"].structure.caught_above > 1e-9
    from gradcheck_cli.plugins import load_module
    monkeypatch.setattr(load_module(LEAKY), "LEAK", 1e-13)
    quiet = check("leaky_balanced(x)", x=_x(40), plugins=[LEAKY])
    assert quiet.ok and quiet.inputs["x"].structure.verified


def test_a_wrong_elementwise_backward_is_caught_on_the_structure():
    r = check("wrong_square(x)", x=_x(40) + 3, plugins=[LEAKY])
    res = r.inputs["x"]
    assert isinstance(res, StructuredResult) and res.structure.verified
    assert not r.ok and res.failures == 40
    assert np.array_equal(np.nonzero(~res.passed), (np.arange(40), np.arange(40)))
    assert "constant factor" in res.diagnosis and "1.0005" in res.diagnosis.replace("(1 + 0.0005)", "1.0005")
    full = check("wrong_square(x)", x=_x(40) + 3, plugins=[LEAKY], fast=False)
    _same(r, full)


def test_full_is_unchanged():
    r = check("sin(x) * y", x=_x(40), y=_x(40, 2), fast=False)
    for res in r.inputs.values():
        assert type(res).__name__ == "GradientResult" and res.structure is None
        assert res.analytic.shape == (40, 40)
    out = CliRunner().invoke(main, ["check", "sin(x) * y", "-v", "x=randn(40)", "-v", "y=randn(40)", "--full"])
    assert out.exit_code == 0 and "structure verified" not in out.output


def test_intermediates_are_structured_too():
    r = check("y = sin(x); z = y * y; z * 2", x=_x(40))
    assert isinstance(r.inputs["x"], StructuredResult) and isinstance(r.intermediates["y"], StructuredResult)
    assert_allclose(np.diag(r.intermediates["y"].analytic), 4 * np.sin(_x(40)), rtol=1e-14)
    assert r.ok


def test_a_kink_on_the_structure_is_explained():
    x = _x(40)
    x[3] = 0.0
    r = check("relu(x) * 2", x=x, method="richardson")
    res = r.inputs["x"]
    assert isinstance(res, StructuredResult) and r.ok
    assert res.reasons[3, 3] == check("relu(x) * 2", x=x, method="richardson", fast=False).inputs["x"].reasons[3, 3]
    assert res.reasons[3, 3].startswith("not differentiable here: left 0, right 2")


def test_cli_states_the_coverage():
    runner = CliRunner()
    args = ["check", "sin(x)", "-v", "x=randn(40)"]
    data = json.loads(runner.invoke(main, [*args, "--json"]).output)
    s = data["inputs"]["x"]["structure"]
    assert s["verified"] and s["vjps"] == structured.VJPS and s["entries"] == 40 and s["elements"] == 1600
    assert s["slip_chance"] == 0.5 ** structured.VJPS
    assert np.array(data["inputs"]["x"]["analytic"]).shape == (40, 40)  # the SPEC's shape, all entries
    for width in (80, 200):
        table = runner.invoke(main, args, env={"COLUMNS": str(width), "NO_COLOR": "1"})
        assert table.exit_code == 0
        assert "structure verified by 16 random VJPs" in " ".join(table.output.split())
    leak = runner.invoke(main, ["check", "leaky(x)", "-v", "x=randn(40)", "--plugin", LEAKY])
    assert leak.exit_code == 1 and "structure NOT verified" in " ".join(leak.output.split())


def test_a_structured_result_never_builds_full_arrays_for_its_verdict():
    r = check("sin(x)", x=_x(3000))
    res = r.inputs["x"]
    assert r.ok and res.max_abs_error < 1e-12 and res.failures == 0
    assert "analytic" not in vars(res) and "tolerance" not in vars(res)  # still unbuilt


def _synthetic_extract(jac: np.ndarray, seed: int, vjps: int):
    """Run the verification on an explicit Jacobian (rows: outputs) claimed elementwise."""
    n = jac.shape[1]
    pattern = structured.Pattern("elementwise", (n,), (n,), np.arange(n), np.arange(n), np.zeros(n, dtype=np.int64),
                                 1, None)
    signs = structured.sign_rows(seed, vjps, (n,))
    weights, owned = structured.weight_rows({"x": pattern}, signs)
    return structured.extract(pattern, weights @ jac, owned["x"], signs, 1e-8, 1e-8)


def test_one_entry_off_the_structure_is_seen_by_half_the_sign_vjps():
    """The guarantee's arithmetic: each ±1 VJP moves the column by 0 or ±2e, each with chance 1/2."""
    jac = np.diag(np.linspace(1.0, 2.0, 12))
    jac[5, 2] = 1e-6
    seen = sum(not _synthetic_extract(jac, seed, 1).verified for seed in range(400))
    assert 150 < seen < 250  # binomial(400, 1/2): ±5 standard deviations
    assert all(not _synthetic_extract(jac, seed, structured.VJPS).verified for seed in range(50))
    found = _synthetic_extract(jac, 0, structured.VJPS)
    assert list(found.columns_off) == [2]
    assert _synthetic_extract(np.diag(np.linspace(1.0, 2.0, 12)), 0, structured.VJPS).verified


def test_float32_structured_matches_full():
    x = _x(40)
    _same(check("tanh(x) * x", x=x, dtype="float32"), check("tanh(x) * x", x=x, dtype="float32", fast=False))
    assert isinstance(check("tanh(x) * x", x=x, dtype="float32").inputs["x"], StructuredResult)
