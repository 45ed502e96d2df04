"""The projected check (--fast): oracles for the projections, what it catches, when auto uses it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from numpy.testing import assert_allclose

from gradcheck_cli import api, check
from gradcheck_cli.cli import main

PLUGIN = str(Path(__file__).parent / "plugins" / "one_wrong.py")


def _x(n, seed=1):
    return np.random.default_rng(seed).normal(size=n)


def test_gradient_projections_match_torch():
    x, w = _x(50), _x(50, 2)
    r = check("(softmax(x) * w).sum()", x=x, w=w, wrt="x", fast=True, directions=8)
    t = torch.tensor(x, requires_grad=True)
    (torch.softmax(t, 0) * torch.tensor(w)).sum().backward()
    v = api.random_directions(0, "x", 8, (50,)).astype(np.float64)
    res = r.inputs["x"]
    assert r.ok and r.projected and res.projection.directions == 8
    assert_allclose(res.analytic, v @ t.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert_allclose(res.numeric, v @ t.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert res.projection.elements == 50
    assert res.projection.slip_chance == 0.5 ** 8


def test_jacobian_projections_are_u_j_v():
    x = _x(6)
    r = check("softmax(x) * x", x=x, fast=True, directions=5)
    jac = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, 0) * t, torch.tensor(x)).numpy()
    u = api.random_directions(0, "", 5, (6,)).astype(np.float64)
    v = api.random_directions(0, "x", 5, (6,)).astype(np.float64)
    want = np.einsum("ki,ij,kj->k", u, jac, v)
    res = r.inputs["x"]
    assert r.ok and r.mode == "jacobian"
    assert_allclose(res.analytic, want, rtol=1e-12)
    assert_allclose(res.numeric, want, rtol=1e-10)
    assert res.projection.elements == 36
    assert res.projection.slip_chance == pytest.approx(0.75 ** 5)


@pytest.mark.parametrize("delta", [1e-3, 1e-5, 1e-6])
def test_one_wrong_element_is_caught_in_every_direction(delta, monkeypatch):
    monkeypatch.setenv("ONE_WRONG_DELTA", repr(delta))
    r = check("onewrong(x).sum()", x=_x(40) * 0.1, plugins=[PLUGIN], fast=True)
    res = r.inputs["x"]
    assert res.projection.caught_above < delta  # the statement promises this one is caught
    assert not r.ok and res.wrong.all()
    # ±1 directions: the one wrong element shifts every projection by exactly its error
    assert_allclose(np.abs(res.analytic - res.numeric), delta, rtol=1e-6)


def test_an_error_below_the_stated_bound_may_slip(monkeypatch):
    monkeypatch.setenv("ONE_WRONG_DELTA", "1e-10")
    r = check("onewrong(x).sum()", x=_x(40) * 0.1, plugins=[PLUGIN], fast=True)
    assert r.inputs["x"].projection.caught_above > 1e-10
    assert r.ok  # honest: the statement never claimed this one


def test_a_correct_op_passes_projected():
    r = check("(x * x).sum()", x=_x(40), fast=True)
    assert r.ok and r.projected


def test_auto_projects_when_the_full_check_is_too_big(monkeypatch):
    monkeypatch.setattr(api, "FULL_CHECK_BUDGET", 1e5)
    r = check("(softmax(x) * w).sum()", x=_x(300), w=_x(300, 3), wrt="x")
    assert r.projected and r.ok
    monkeypatch.setattr(api, "FULL_CHECK_BUDGET", 1e15)
    assert not check("(softmax(x) * w).sum()", x=_x(300), w=_x(300, 3), wrt="x").projected
    # --full insists on every element
    monkeypatch.setattr(api, "FULL_CHECK_BUDGET", 1e5)
    assert not check("(softmax(x) * w).sum()", x=_x(300), w=_x(300, 3), wrt="x", fast=False).projected


def test_auto_projects_a_jacobian_too_large_to_build(monkeypatch):
    import gradcheck_cli.analytic as analytic
    monkeypatch.setattr(analytic, "MAX_JACOBIAN_ELEMENTS", 100)
    r = check("softmax(x)", x=_x(20))
    assert r.projected and r.ok and r.inputs["x"].projection.elements == 400
    runner = CliRunner()
    out = runner.invoke(main, ["check", "softmax(x)", "-v", "x=randn(20)", "--full"])
    assert out.exit_code == 2 and "--fast" in out.output


def test_same_seed_same_directions_and_different_seed_different():
    a = api.random_directions(3, "x", 4, (10,))
    assert np.array_equal(a, api.random_directions(3, "x", 4, (10,)))
    assert not np.array_equal(a, api.random_directions(4, "x", 4, (10,)))
    assert set(np.unique(a)) <= {-1, 1}


def test_chunking_under_a_small_memory_budget_gives_the_same_projections():
    from gradcheck_cli.numeric import NumericEngine
    prep = api.prepare("(sin(x) @ W).tanh().sum()", {"x": _x(30), "W": _x(30 * 20).reshape(30, 20)},
                       api.CheckOptions())
    v = api.random_directions(0, "W", 6, (30, 20))
    for method in ("complex", "richardson"):
        big = NumericEngine(prep.program, prep.table, prep.inputs, method).directional("W", 0, np.ones(()), v)
        small = NumericEngine(prep.program, prep.table, prep.inputs, method,
                              memory_budget=1).directional("W", 0, np.ones(()), v)
        assert_allclose(small.value, big.value, rtol=1e-12)


def test_intermediates_are_projected_too():
    r = check("y = sin(x); z = y * y; z.sum()", x=_x(10), fast=True, directions=4)
    y = np.sin(_x(10))
    v = api.random_directions(0, "y", 4, (10,)).astype(np.float64)
    assert_allclose(r.intermediates["y"].analytic, v @ (2 * y), rtol=1e-12)
    assert r.ok


def test_cli_json_and_table_state_the_coverage():
    runner = CliRunner()
    out = runner.invoke(main, ["check", "(x*x).sum()", "-v", "x=randn(30)", "--fast", "--directions", "6", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    proj = data["inputs"]["x"]["projection"]
    assert proj["directions"] == 6 and proj["elements"] == 30 and proj["slip_chance"] == 0.5 ** 6
    assert len(data["inputs"]["x"]["analytic"]) == 6
    assert "--fast --directions 6" in data["replay"]
    table = runner.invoke(main, ["check", "(x*x).sum()", "-v", "x=randn(30)", "--fast"])
    assert table.exit_code == 0
    assert "projected check: 16 random ±1 directions instead of 30 elements" in " ".join(table.output.split())
    assert "all 16 projections agree" in table.output


@pytest.mark.parametrize("args, message", [
    (["--fast", "--order", "2"], "--order 2"),
    (["--fast", "--method", "taylor"], "taylor"),
    (["--directions", "0"], "directions"),
])
def test_bad_combinations_are_bad_input(args, message):
    out = CliRunner().invoke(main, ["check", "(x*x).sum()", "-v", "x=randn(3)", *args])
    assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output


def test_batch_files_take_fast_and_directions(tmp_path):
    (tmp_path / "a.toml").write_text('[[case]]\nname = "p"\nexpr = "(x*x).sum()"\nvars = { x = "randn(20)" }\n'
                                     'fast = true\ndirections = 4\n'
                                     '[[case]]\nname = "bad"\nexpr = "(x*x).sum()"\nfast = "yes"\n')
    (tmp_path / "b.txt").write_text('gradcheck check "(x*x).sum()" -v x="randn(9)" --fast --directions 3 --name t\n'
                                    '"(x*x).sum()" -v x="randn(9)" --full --name f\n')
    out = CliRunner().invoke(main, ["batch", str(tmp_path), "--json"])
    cases = {c["name"]: c for c in json.loads(out.output)["cases"]}
    assert out.exit_code == 2  # the bad case is an error; the others still ran
    assert cases["p"]["result"]["inputs"]["x"]["projection"]["directions"] == 4
    assert cases["t"]["result"]["inputs"]["x"]["projection"]["directions"] == 3
    assert "projection" not in cases["f"]["result"]["inputs"]["x"]
    assert cases["bad"]["status"] == "error" and "'fast' must be bool" in cases["bad"]["message"]
