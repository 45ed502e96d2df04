"""The check plan (plan.py): one strategy chosen up front, every conflict refused before any work;
numeric methods that describe themselves (methods.py); custom-op call sites checked on a Program built
from IR nodes (call_site.py), never on text parsed again.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

import gradcheck_cli.analytic as analytic
import gradcheck_cli.api as api
import gradcheck_cli.numeric as numeric
import gradcheck_cli.strategies as strategies
from gradcheck_cli import check
from gradcheck_cli.call_site import CallSite
from gradcheck_cli.cli import main
from gradcheck_cli.compare import DEFAULT_TOLERANCES
from gradcheck_cli.expression_target import ExpressionTarget
from gradcheck_cli.ir import Call, Name, Num
from gradcheck_cli.methods import ALL_METHODS, METHODS, choose_method
from gradcheck_cli.numeric import NumericEngine, column_derivative
from gradcheck_cli.parse import parse
from gradcheck_cli.plan import Strategy, _costs, differentiated_intermediates, plan_check
from gradcheck_cli.target import Role, checked
from helpers import op_cases

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "plugins", "realworld_ops.py")


def _plan(expression, values, full_budget=api.FULL_CHECK_BUDGET, grad_output=None, **options):
    opts = api.CheckOptions(grad_output=grad_output, **options)
    prep = api.prepare(expression, values, opts)
    go = None if grad_output is None else np.asarray(grad_output, dtype=np.float64)
    return plan_check(opts, prep, go, full_budget)


def _rand(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape)


# ---- the plan chosen for representative cases ----

def test_a_scalar_output_is_checked_in_full():
    plan = _plan("(x * sin(x)).sum()", {"x": _rand(5)})
    assert plan.strategy is Strategy.FULL and plan.mode is analytic.Mode.GRADIENT
    assert plan.method == "complex" and plan.analytic_fast is False and not plan.inspect_calls


def test_an_elementwise_jacobian_is_checked_on_its_pattern():
    plan = _plan("sin(x) * 2", {"x": _rand(6)})
    assert plan.strategy is Strategy.STRUCTURED and plan.mode is analytic.Mode.JACOBIAN
    assert plan.structure is not None
    r = check("sin(x) * 2", x=_rand(6))  # the Jacobian is diagonal: 2·cos(x)
    assert r.ok
    np.testing.assert_allclose(r.inputs["x"].analytic, np.diag(2 * np.cos(_rand(6))), rtol=1e-12, atol=0)


def test_full_builds_every_entry_of_a_jacobian():
    plan = _plan("sin(x) * 2", {"x": _rand(6)}, fast=False)
    assert plan.strategy is Strategy.FULL and plan.structure is None


def test_a_jacobian_too_large_to_build_is_projected(monkeypatch):
    monkeypatch.setattr(analytic, "MAX_JACOBIAN_ELEMENTS", 100)
    plan = _plan("softmax(x)", {"x": _rand(20)})
    assert plan.strategy is Strategy.PROJECTED and plan.analytic_fast is True
    assert "400 elements" in plan.why
    r = check("softmax(x)", x=_rand(20))
    assert r.projected and r.ok and r.inputs["x"].projection.elements == 400


def test_a_full_check_above_the_numeric_budget_is_projected():
    plan = _plan("(softmax(x) * w).sum()", {"x": _rand(300), "w": _rand(300)}, full_budget=1e5, wrt=("x",))
    assert plan.strategy is Strategy.PROJECTED and "through numpy" in plan.why
    assert _plan("(softmax(x) * w).sum()", {"x": _rand(300), "w": _rand(300)}, full_budget=1e5, wrt=("x",),
                 fast=False).strategy is Strategy.FULL


def test_fast_is_projected_and_taylor_and_order_2_are_their_own():
    assert _plan("(x * x).sum()", {"x": _rand(4)}, fast=True).strategy is Strategy.PROJECTED
    taylor = _plan("(x * x).sum()", {"x": _rand(4)}, method="taylor")
    assert taylor.strategy is Strategy.TAYLOR and taylor.method == "taylor"
    order2 = _plan("(x ** 3).sum()", {"x": _rand(4)}, order=2)
    assert order2.strategy is Strategy.ORDER2 and order2.analytic_fast is False


def test_call_sites_are_inspected_only_where_there_are_plugin_ops():
    values = {"x": _rand(2, 3), "w": _rand(3), "b": _rand(3)}
    assert _plan("layer_norm(x, w, b, 1e-5).sum()", values, plugins=(CORPUS,)).inspect_calls
    assert not _plan("layer_norm(x, w, b, 1e-5).sum()", values, plugins=(CORPUS,), inspect_ops=False).inspect_calls
    assert not _plan("(x * w + b).sum()", values).inspect_calls


@pytest.mark.parametrize("expression, values, wrt", [
    ("(softmax(x) * w).sum()", {"x": _rand(30), "w": _rand(30)}, ("x",)),
    ("y = sin(x) @ W; z = y.tanh(); (z * z).sum()", {"x": _rand(7), "W": _rand(7, 5)}, None),
    ("exp(x) + x", {"x": _rand(9)}, None),
    ("(x * 2).sum() + (y ** 2).mean()", {"x": _rand(4), "y": _rand(3, 2)}, None),
])
@pytest.mark.parametrize("method", ["complex", "richardson", "central"])
def test_the_plans_cost_from_shapes_is_the_engines_full_cost(expression, values, wrt, method):
    opts = api.CheckOptions(wrt=wrt, method=method)
    prep = api.prepare(expression, values, opts)
    engine = NumericEngine(prep.program, prep.table, prep.inputs, method)
    starts = [(n, 0) for n in prep.wrt] + differentiated_intermediates(prep)
    expected = sum(engine.full_cost(n, s) for n, s in starts)
    assert _costs(prep, None, METHODS[method], None).numeric_bytes == pytest.approx(expected, rel=1e-12)


def test_the_intermediates_the_plan_counts_are_those_autograd_differentiates():
    prep = api.prepare("y = x * 2; c = k + 1; w = y; z = sin(w) * c; z.sum()",
                       {"x": _rand(3), "k": _rand(3)}, api.CheckOptions(wrt=("x",)))
    r = check("y = x * 2; c = k + 1; w = y; z = sin(w) * c; z.sum()", x=_rand(3), k=_rand(3), wrt="x")
    assert [n for n, _ in differentiated_intermediates(prep)] == list(r.intermediates) == ["y", "z"]


# ---- every conflict refused before any work ----

def _no_work(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("work ran before the conflict was refused")
    monkeypatch.setattr(strategies, "run_analytic", refuse)
    monkeypatch.setattr(strategies, "NumericEngine", refuse)


CONFLICTS = [
    (["sin(x)", "-v", "x=randn(3)", "--method", "taylor"], "--method taylor needs a scalar output or --grad-output"),
    (["sin(x)", "-v", "x=randn(3)", "--order", "2"], "--order 2 needs a scalar output or --grad-output"),
    (["(x * x).sum()", "-v", "x=randn(3)", "--method", "taylor", "--eps", "1e-4"], "--eps would be ignored"),
    (["(x * x).sum()", "-v", "x=randn(3)", "--method", "taylor", "--symbolic"], "this check is a Taylor test"),
    (["softmax(x)", "-v", "x=randn(60)", "--symbolic"], "60 × 60 = 3600 entries, above the symbolic engine's limit"),
]


@pytest.mark.parametrize("argv, words", CONFLICTS, ids=[" ".join(c[0][3:]) for c in CONFLICTS])
def test_a_conflict_is_refused_before_any_work(monkeypatch, argv, words):
    _no_work(monkeypatch)
    out = CliRunner().invoke(main, ["check", *argv])
    assert out.exit_code == 2, out.output
    assert len(out.stderr.strip().splitlines()) == 1 and words in out.stderr
    assert "Traceback" not in out.output


@pytest.mark.parametrize("flag", [["--symbolic"], ["--method", "taylor"], ["--order", "2"]])
def test_every_element_options_on_a_check_auto_would_project_are_refused_up_front(monkeypatch, flag):
    monkeypatch.setattr(api, "FULL_CHECK_BUDGET", 1e4)
    _no_work(monkeypatch)
    argv = ["check", "(softmax(x) * w).sum()", "-v", "x=randn(40)", "-v", "w=randn(40)", "--wrt", "x", *flag]
    out = CliRunner().invoke(main, argv)
    assert out.exit_code == 2, out.output
    line, = out.stderr.strip().splitlines()
    assert f"{flag[0]}" in line and "auto would project it" in line and "--full" in line


def test_symbolic_on_a_jacobian_too_large_to_build_is_refused_up_front(monkeypatch):
    monkeypatch.setattr(analytic, "MAX_JACOBIAN_ELEMENTS", 100)
    _no_work(monkeypatch)
    out = CliRunner().invoke(main, ["check", "softmax(x)", "-v", "x=randn(20)", "--symbolic"])
    assert out.exit_code == 2 and "400 elements" in out.stderr and "--full" in out.stderr


def test_full_runs_every_element_where_auto_would_have_refused(monkeypatch):
    monkeypatch.setattr(api, "FULL_CHECK_BUDGET", 1e4)
    x = _rand(6)
    r = check("(x ** 3).sum()", x=x, method="taylor", fast=False)
    assert r.ok and not r.projected
    np.testing.assert_allclose(r.inputs["x"].analytic, 3 * x ** 2, rtol=1e-12)


# ---- --eps: honoured, or refused; echoed only where honoured ----

@pytest.mark.parametrize("method", ["central", "richardson", "complex"])
def test_eps_is_echoed_where_the_method_honours_it(method):
    out = CliRunner().invoke(main, ["check", "(x ** 3).sum()", "-v", "x=1.5,2", "--method", method,
                                    "--eps", "1e-4", "--json"])
    data = json.loads(out.stdout)
    assert out.exit_code == 0 and data["eps"] == 1e-4 and data["method"] == method
    assert METHODS[method].honours_eps


def test_order_2_honours_eps_as_the_largest_step_of_its_ladder(monkeypatch):
    import gradcheck_cli.second_order as second_order
    steps = []
    real = second_order._exact_steps
    monkeypatch.setattr(second_order, "_exact_steps", lambda x, h: steps.append(float(h)) or real(x, h))
    x = np.array([0.5, -1.25])
    r = check("sin(x).sum()", x=x, order=2, eps=1e-2, method="richardson")
    assert r.ok and r.eps == 1e-2
    assert max(steps) == 1e-2 and min(steps) == pytest.approx(1e-2 / 4 ** (second_order._LEVELS - 1))
    np.testing.assert_allclose(r.hessians["x"].numeric, np.diag(-np.sin(x)), rtol=1e-9, atol=1e-11)
    steps.clear()
    check("sin(x).sum()", x=x, order=2, method="richardson")
    assert max(steps) == pytest.approx(1e-2 * 1.25)  # without --eps: 1e-2·max(|x|, 1)


# ---- numeric methods that describe themselves ----

def _count_probes(method, eps):
    """Evaluations the method asks for per column, counted at its probe."""
    asked = []
    x = np.array([2.0, -3.0, 1.25])

    def probe(offsets):
        asked.append(len(offsets))
        return [np.sin(x + o) for o in offsets]

    value, _ = method(probe, x, eps, lambda s: s, lambda s: s)
    np.testing.assert_allclose(np.real(value), np.cos(x), rtol=1e-5)
    return sum(asked)


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("eps", [None, 1e-3])
def test_a_methods_declared_probes_are_what_it_evaluates(name, eps):
    assert _count_probes(METHODS[name], eps) == METHODS[name].probes_per_column(eps)


@pytest.mark.parametrize("method", ["central", "richardson", "complex", "taylor"])
def test_the_engine_evaluates_the_declared_probes_per_column(monkeypatch, method):
    rows = []
    make = numeric._make_probe

    def counting(f, base, cols):
        probe = make(f, base, cols)

        def counted(offsets):
            rows.append(len(offsets) * cols.size)
            return probe(offsets)
        return counted

    monkeypatch.setattr(numeric, "_make_probe", counting)
    x = np.array([1.5, -2.0, 3.0, 1.0])
    prep = api.prepare("(x[0] * x).sum() + x.prod()", {"x": x}, api.CheckOptions())
    engine = NumericEngine(prep.program, prep.table, prep.inputs, method)
    if method == "taylor":
        engine.taylor("x", 0, np.ones(()), 2 * x)
    else:
        engine.derivative("x", 0, np.ones(()))
    assert sum(rows) == x.size * ALL_METHODS[method].probes_per_column(None)


def test_the_method_table_keeps_working_for_callers():
    assert set(METHODS) == {"central", "richardson", "complex"} and "taylor" in ALL_METHODS
    assert ALL_METHODS["complex"].complex_arithmetic and not ALL_METHODS["taylor"].honours_eps
    assert all(m.error_model for m in ALL_METHODS.values())
    import dataclasses
    program = parse("sin(x) * x")
    assert choose_method("auto", program, api.OPS) == "complex"
    unsafe = {**api.OPS, "sin": dataclasses.replace(api.OPS["sin"], complex_ok=False)}
    assert choose_method("auto", program, unsafe) == "richardson"
    assert choose_method("central", program, api.OPS) == "central"
    with pytest.raises(TypeError):
        ALL_METHODS["taylor"](None, np.zeros(1), None, None, None)


# ---- targets ----

def test_an_expression_target_differentiates_like_the_engine():
    prep = api.prepare("y = sin(x) @ W; y * c", {"x": _rand(3), "W": _rand(3, 4), "c": _rand(4)},
                       api.CheckOptions(wrt=("x", "W")))
    target = ExpressionTarget.of(prep)
    assert target.kind == "expression" and [i.name for i in checked(target)] == ["x", "W"]
    assert [i.role for i in target.inputs] == [Role.CHECKED, Role.CHECKED, Role.CONSTANT]
    engine = NumericEngine(prep.program, prep.table, prep.inputs, "richardson")
    np.testing.assert_allclose(target.output, engine.output, rtol=0)
    for name in ("x", "W"):
        got = column_derivative(target.evaluator(name), prep.inputs[name], target.output.shape, None,
                                METHODS["richardson"], None, 64)
        want = engine.derivative(name, 0, None)
        np.testing.assert_allclose(got.value, want.value, rtol=1e-10, atol=1e-12)
        # and the true Jacobian: d(sin(x) @ W * c)/dx = W * c * cos(x)
    x, W, c = prep.inputs["x"], prep.inputs["W"], prep.inputs["c"]
    np.testing.assert_allclose(column_derivative(target.evaluator("x"), x, (4,), None, METHODS["complex"], None,
                                                 8).value, (W * c).T * np.cos(x), rtol=1e-12)


def _same_tree(a, b):
    if isinstance(a, Call):
        return isinstance(b, Call) and a.op == b.op and len(a.args) == len(b.args) and \
            all(_same_tree(x, y) for x, y in zip(a.args, b.args))
    if isinstance(a, Name):
        return isinstance(b, Name) and a.id == b.id
    if isinstance(a, Num):
        return isinstance(b, Num) and a.value == b.value
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(_same_tree(x, y) for x, y in zip(a, b))
    return type(a).__name__ == type(b).__name__ and repr(a) == repr(b)


def _corpus():
    import importlib.util
    spec = importlib.util.spec_from_file_location("realworld_ops_for_plan_tests", CORPUS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES


@pytest.mark.parametrize("case", _corpus(), ids=[c[0] for c in _corpus()])
def test_call_sites_are_built_from_ir_never_parsed(monkeypatch, case):
    label, expr, values, wrt, kind, _ = case
    parsed, built = [], []
    real_parse, real_program = api.parse, CallSite.program

    def recording_parse(source, *args, **kwargs):
        parsed.append(source)
        return real_parse(source, *args, **kwargs)

    def recording_program(self, outputs=None):
        program = real_program(self, outputs)
        built.append(program)
        return program

    monkeypatch.setattr(api, "parse", recording_parse)
    monkeypatch.setattr(CallSite, "program", recording_program)
    try:
        check(expr, plugins=[CORPUS], wrt=wrt, **values)
    except api.InputError:
        pass  # a wrong backward count is bad input: the call site is still never re-parsed
    assert parsed == [expr]
    table = api.load_table([CORPUS])
    for program in built:  # the IR is exactly the program its label, parsed, would give: same checks
        text = real_parse(program.source, table)
        assert program.inputs == text.inputs and program.ops == text.ops
        assert _same_tree(program.output.value, text.output.value), program.source


def test_a_call_site_target_names_its_tensors_and_roles():
    import torch
    table = api.load_table([CORPUS])
    spec = table["layer_norm"]
    args = [torch.ones(2, 3), torch.ones(3), torch.zeros(3), 1e-5]
    site = CallSite(spec, tuple(args), {0: "x0", 1: "x1", 2: "x2"})
    values = {"x0": _rand(2, 3), "x1": _rand(3), "x2": _rand(3)}
    target = site.target(table, values, ("x0", "x1"))
    assert target.kind == "call site" and target.label == site.label()
    assert [(i.name, i.role) for i in target.inputs] == [("x0", Role.CHECKED), ("x1", Role.CHECKED),
                                                         ("x2", Role.CONSTANT)]
    x, w, b = (torch.tensor(values[n]) for n in ("x0", "x1", "x2"))
    expected = torch.nn.functional.layer_norm(x, (3,), w, b, eps=1e-5).numpy()
    np.testing.assert_allclose(target.output, expected, rtol=1e-10, atol=1e-12)


def test_a_method_declares_its_own_float64_tolerances():
    central = _plan("(x ** 3).sum()", {"x": _rand(3)}, method="central")
    assert (central.atol, central.rtol) == METHODS["central"].float64_tolerances == (1e-8, 1e-7)
    complex_ = _plan("(x ** 3).sum()", {"x": _rand(3)})
    assert (complex_.atol, complex_.rtol) == DEFAULT_TOLERANCES["float64"]
    single = _plan("(x ** 3).sum()", {"x": _rand(3)}, method="central", dtype="float32")
    assert (single.atol, single.rtol) == DEFAULT_TOLERANCES["float32"]


@pytest.mark.parametrize("expression, values, wrt, grad_output", [
    ("(softmax(x) * w).sum()", {"x": _rand(1000), "w": _rand(1000)}, ("x",), None),
    ("y = sin(x) @ W; (y.tanh() * y).sum()", {"x": _rand(40), "W": _rand(40, 30)}, ("W",), None),
    ("softmax(x)", {"x": _rand(60)}, None, None),
    ("log_softmax(x)", {"x": _rand(600)}, None, _rand(600)),
])
def test_symbolic_refusals_up_front_are_the_engines_own(expression, values, wrt, grad_output):
    from gradcheck_cli.symbolic import SymbolicEngine
    opts = api.CheckOptions(wrt=wrt, grad_output=grad_output, symbolic=True)
    prep = api.prepare(expression, values, opts)
    with pytest.raises(api.InputError) as up_front:
        plan_check(opts, prep, grad_output, api.FULL_CHECK_BUDGET)
    engine = NumericEngine(prep.program, prep.table, prep.inputs, "complex")
    symbolic = SymbolicEngine(engine)
    targets = [(n, 0) for n in prep.wrt] + differentiated_intermediates(prep)
    refusals = []
    for name, start in targets:
        try:
            symbolic.derivative(name, start, None if grad_output is None and engine.output.size > 1
                                else np.ones(()) if grad_output is None else grad_output)
        except api.InputError as err:
            refusals.append(err.message)
    assert up_front.value.message == refusals[0]


def _calls(root):
    """Every op call under `root`, root first."""
    stack, out = [root], []
    while stack:
        node = stack.pop()
        if isinstance(node, Call):
            out.append(node)
            stack.extend(a for a in node.args if isinstance(a, Call))
    return out


@pytest.mark.parametrize("case", op_cases(), ids=lambda c: c.expr)
def test_a_nodes_shape_from_the_first_walk_is_its_walked_values_shape(case):
    """node_shape reads what the unperturbed walk saw; node_value walks the node again."""
    prep = api.prepare(f"({case.expr}) * 1.5 + 0", case.values, api.CheckOptions())
    engine = NumericEngine(prep.program, prep.table, prep.inputs, "complex")
    nodes = _calls(prep.program.statements[-1].value)
    assert len(nodes) >= 3
    for node in nodes:
        assert engine.node_shape(node) == engine.node_value(node).shape, node.op
    assert engine.shapes, "the first walk recorded no shape"
