"""gradcheck module / check_module: the implementation's own tests (the module corpus against
torch.autograd.gradcheck lives in the other test_module_* files)."""
from __future__ import annotations

import copy
import json
import os
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from gradcheck_cli import InputError, assert_module_gradients, check_module
from gradcheck_cli.cli import main

MODELS = textwrap.dedent('''
    import torch
    from torch import nn

    class Model(torch.nn.Module):
        def __init__(self, in_feature=1, out_feature=3):
            super().__init__()
            self.line_layer = nn.Linear(in_features=in_feature, out_features=out_feature)

        def forward(self, x):
            return self.line_layer(x)

    class WrongMul(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return x * w

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            return g * w, g * x * 1.01

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return WrongMul.apply(self.lin(x), self.scale)

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x):
            y = self.lin(x)
            return y, y.sum()

    def make():
        return nn.Sequential(nn.Linear(2, 2), nn.Tanh())

    def not_a_module():
        return 3

    NUMBER = 4
    BUILT = Model()
''')


class Parts(nn.Module):
    """A buffer, a frozen, an unused and a cut-off (detached) parameter around a Linear."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.unused = nn.Parameter(torch.ones(2))
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)
        self.cut = nn.Parameter(torch.full((2,), 0.5))
        self.register_buffer("offset", torch.tensor([0.25, -0.5]))

    def forward(self, x):
        return (self.lin(x) + self.offset + self.cut.detach() * self.frozen).pow(2).sum()


class Noisy(nn.Module):
    """Dropout and batch norm: train mode draws masks and updates running statistics."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 5)
        self.bn = nn.BatchNorm1d(5)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.bn(self.lin(x)))


@pytest.fixture
def models(tmp_path, monkeypatch):
    (tmp_path / "models.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load():
    """models.py (in the test's folder) as gradcheck loads a module file."""
    from gradcheck_cli.plugins import load_module
    return load_module(os.path.abspath("models.py"))


def run(*args):
    return CliRunner().invoke(main, ["module", *args])


def torch_grads(module, loss, **inputs):
    """torch's own parameter gradients of loss(module(**inputs)) on a float64 copy."""
    twin = copy.deepcopy(module).double()
    out = loss(twin(**{k: torch.as_tensor(v, dtype=torch.float64) for k, v in inputs.items()}))
    names = [n for n, p in twin.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(out, [dict(twin.named_parameters())[n] for n in names], allow_unused=True)
    return {n: None if g is None else g.numpy() for n, g in zip(names, grads)}


def test_the_notebook_model_matches_torch_and_its_mean_rule(models):
    x, label = np.array([[0.3], [-1.2]]), np.zeros((2, 1))
    torch.manual_seed(0)
    reference = load().Model(1, 3)
    r = check_module(reference, loss="(out - label).mean()", x=x, label=label)
    want = torch_grads(reference, lambda out: (out - torch.zeros(2, 1, dtype=torch.float64)).mean(), x=x)
    assert r.ok and set(r.parameters) == {"line_layer.weight", "line_layer.bias"}
    for name, grad in want.items():
        np.testing.assert_allclose(r.parameters[name].analytic, grad, rtol=1e-12)
        np.testing.assert_allclose(r.parameters[name].numeric, grad, rtol=1e-9)
    # d mean(out)/d bias_j = (rows 2)/(elements 6); d/d w_j = mean of x over rows / 3
    np.testing.assert_allclose(r.parameters["line_layer.bias"].analytic, [1 / 3] * 3, rtol=1e-12)
    np.testing.assert_allclose(r.parameters["line_layer.weight"].analytic, [[x.mean() / 3]] * 3, rtol=1e-12)


def test_cli_builds_under_the_seed_and_replays(models):
    args = ["models.py:Model", "--init", "in_feature=1, out_feature=3", "-v", "x=randn(2,1)",
            "--loss", "(out - label).mean()", "-v", "label=[[0],[0]]", "--json"]
    first = run(*args)
    assert first.exit_code == 0, first.output
    data = json.loads(first.output)
    torch.manual_seed(0)
    built = load().Model(in_feature=1, out_feature=3)
    assert data["parameters"]["line_layer.weight"]["value"] == built.line_layer.weight.detach().double().tolist()
    assert data["buffers"] == {} and data["frozen"] == [] and data["unused"] == []
    assert data["replay"].startswith("gradcheck module models.py:Model --init 'in_feature=1, out_feature=3'")
    replayed = CliRunner().invoke(main, [*__import__("shlex").split(data["replay"])[1:], "--json"])
    assert replayed.exit_code == 0
    assert json.loads(replayed.output)["parameters"] == data["parameters"]


def test_buffers_frozen_unused_and_a_parameter_cut_off(models):
    module = Parts()
    r = check_module(module, x=np.array([[1.0, 2.0, 3.0]]))
    assert not r.ok
    assert r.buffers == {"offset": (2,)} and r.frozen == ("frozen",) and r.unused == ("unused",)
    assert "unused" not in r.parameters and "frozen" not in r.parameters
    assert r.parameters["cut"].ok is False and r.reasons == {"cut": "gets no gradient"}
    assert r.parameters["lin.weight"].ok and r.parameters["lin.bias"].ok
    # the loss is Σ (lin(x) + offset + cut)², so d/dcut = 2·(lin(x) + offset + cut) numerically
    with torch.no_grad():
        inner = module.lin(torch.tensor([[1.0, 2.0, 3.0]])) + module.offset + module.cut
    np.testing.assert_allclose(r.parameters["cut"].numeric, 2 * inner.double().numpy()[0], rtol=1e-6)
    out = json.loads(__import__("gradcheck_cli.render.json", fromlist=["x"]).dumps(
        __import__("gradcheck_cli.render.json", fromlist=["x"]).module_dict(r)))
    assert out["parameters"]["cut"]["reason"] == "gets no gradient" and "reason" not in out["parameters"]["lin.bias"]
    assert out["unused"] == ["unused"] and out["frozen"] == ["frozen"] and out["buffers"] == {"offset": [2]}


def test_a_wrong_custom_function_is_blamed_by_parameter_and_op(models):
    result = run("models.py:Scaled", "-v", "x=randn(2,3)", "--loss", "out.sum()", "--json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["parameters"]["scale"]["ok"] is False and data["parameters"]["scale"]["ops"] == ["WrongMul"]
    assert data["parameters"]["lin.weight"]["ok"] is True  # the gradient WrongMul sends to x is right
    assert "WrongMul" in data["blame"] and "scale" in data["blame"]


def test_train_mode_restores_state_and_leaves_the_caller_alone():
    module = Noisy().train(False)
    module.bn.running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    x = np.random.default_rng(1).normal(size=(6, 4))
    for train in (False, True):
        r = check_module(module, loss="(out**2).sum()", train=train, x=x)
        assert r.ok, {n: p.max_rel_error for n, p in r.parameters.items()}
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert module.training is False and module.lin.weight.dtype == torch.float32
    assert all(p.requires_grad for p in module.parameters()) and module.lin.weight.grad is None
    assert torch.equal(torch.get_rng_state(), rng)


def test_train_mode_gradients_are_torchs_with_the_same_mask():
    module = Noisy()
    x = torch.tensor(np.random.default_rng(2).normal(size=(6, 4)))
    r = check_module(module, loss="out.sum()", train=True, seed=5, x=x.numpy())
    twin = copy.deepcopy(module).double().train()
    torch.manual_seed(5)
    twin(x).sum().backward()
    np.testing.assert_allclose(r.parameters["lin.weight"].analytic, twin.lin.weight.grad.numpy(), rtol=1e-12)
    assert r.ok


def test_params_globs_and_wrt_inputs():
    module = Parts()
    x = np.array([[1.0, -2.0, 0.5]])
    r = check_module(module, params="lin.*", wrt_inputs=True, x=x)
    assert list(r.parameters) == ["lin.weight", "lin.bias"] and r.skipped == ("unused", "cut")
    twin = copy.deepcopy(module).double()
    xt = torch.tensor(x, requires_grad=True)
    (g,) = torch.autograd.grad(twin(xt), [xt])
    np.testing.assert_allclose(r.inputs["x"].analytic, g.numpy(), rtol=1e-12)
    assert r.ok
    with pytest.raises(InputError, match="matches no parameter"):
        check_module(module, params="head.*", x=x)


def test_no_loss_full_jacobian_against_torch(models):
    module = load().make()
    x = np.array([[0.2, -0.4], [1.0, 0.3], [-0.7, 0.9]])
    r = check_module(module, input=x)
    assert r.mode == "jacobian" and r.ok
    twin = copy.deepcopy(module).double()
    params = {n: p.detach() for n, p in twin.named_parameters()}

    def f(w):
        return torch.func.functional_call(twin, {**params, "0.weight": w}, (torch.tensor(x),))
    jac = torch.autograd.functional.jacobian(f, params["0.weight"])
    np.testing.assert_allclose(r.parameters["0.weight"].analytic, jac.numpy(), rtol=1e-12, atol=1e-15)


def test_fast_states_coverage_per_parameter(models):
    r = check_module(load().make(), loss="out.sum()", fast=True, directions=8,
                     input=np.ones((3, 2)))
    assert r.ok and r.projected
    for p in r.parameters.values():
        assert p.projection.directions == 8 and "projected check: 8 random" in p.projection.statement()
    assert r.parameters["0.weight"].projection.elements == 4


def test_float32_analytic_against_the_float64_reference(models):
    module = load().Model(3, 2)
    r = check_module(module, loss="out.pow(2).sum()", dtype="float32", x=np.ones((2, 3)))
    assert r.ok and r.dtype == "float32" and r.atol == 1e-5


def test_tuple_outputs(models):
    module = load().Pair()
    assert check_module(module, loss="out[1]", x=np.ones((1, 2))).ok
    with pytest.raises(InputError, match="returns 2 outputs"):
        check_module(module, x=np.ones((1, 2)))


def test_assert_module_gradients_names_the_failing_parameters(models):
    with pytest.raises(AssertionError, match=r"gradients of scale.* disagree"):
        assert_module_gradients(load().Scaled(), loss="out.sum()", x=np.ones((1, 3)))
    assert assert_module_gradients(load().Model(), loss="out.sum()", x=np.ones((2, 1))).ok


@pytest.mark.parametrize("args, message", [
    (["nofile.py:Model"], "module file not found: nofile.py"),
    (["models.py:Nope"], "models.py has no 'Nope'; it defines: Model, Pair, Scaled"),
    (["models.py"], "expected FILE.py:NAME"),
    (["models.py:NUMBER"], "'NUMBER' is not an nn.Module subclass"),
    (["models.py:not_a_module"], "'not_a_module()' returned int, not an nn.Module"),
    (["models.py:BUILT"], "'BUILT' is an nn.Module instance; name its class (Model"),
    (["models.py:Model", "--init", "in_feature=__import__('os')"], "--init values must be literals"),
    (["models.py:Model", "--init", "bogus=1"], "--init names 'bogus', which Model.__init__ does not take"),
    (["models.py:Model", "--init", "1"], "--init takes keyword arguments only"),
    (["models.py:Model"], "forward(x) needs x: give -v x=..."),
    (["models.py:make", "--init", "a=1"], "is a factory function"),
    (["models.py:Model", "-v", "x=randn(2,1)", "--method", "complex"], "gradcheck module takes --method"),
    (["models.py:Model", "-v", "x=randn(2,1)", "-v", "y=2"], "-v y= is neither an argument"),
    (["models.py:Model", "-v", "x=randn(2,2)"], "Model.forward raised RuntimeError: mat1 and mat2"),
    (["models.py:Model", "-v", "x=randn(2,1)", "--loss", "x.sum()"], "--loss must use 'out'"),
])
def test_bad_input_is_one_clear_line(models, args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.stderr.splitlines()[0] and "Traceback" not in result.stderr


def test_the_table_fits_80_columns(models):
    runner = CliRunner()
    result = runner.invoke(main, ["module", "models.py:Scaled", "-v", "x=randn(2,3)", "--loss", "out.sum()"],
                           env={"COLUMNS": "80", "NO_COLOR": "1"}, terminal_width=80)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines if not line.startswith("replay:"))
    assert any(line.startswith("scale  shape [3]") for line in lines)
    assert any("WrongMul" in line for line in lines) and any("FAIL" in line for line in lines)


BATCH = textwrap.dedent('''
    [[case]]
    name = "notebook"
    module = "models.py:Model"
    init = { in_feature = 1, out_feature = 3 }
    vars = { x = "randn(2,1)", label = [[0.0], [0.0]] }
    loss = "(out - label).mean()"
    expect = { "line_layer.bias" = [0.3333333333333333, 0.3333333333333333, 0.3333333333333333] }

    [[case]]
    name = "wrong"
    module = "models.py:Scaled"
    vars = { x = "randn(2,3)" }
    loss = "out.sum()"
    params = ["scale", "lin.*"]

    [[case]]
    name = "bad init"
    module = "models.py:Model"
    init = { in_feature = { a = 1 } }

    [[case]]
    name = "bad type"
    module = 3
''')


@pytest.mark.parametrize("trust", [["--trust-plugins"], ["--plugin", "cases/models.py"]])
def test_batch_module_cases_when_trusted(models, trust):
    (models / "cases").mkdir()
    (models / "cases" / "models.py").write_text(MODELS)
    (models / "cases" / "m.toml").write_text(BATCH)
    result = CliRunner().invoke(main, ["batch", "cases/m.toml", "--json", *trust])
    data = json.loads(result.stdout)
    status = {c["name"]: c["status"] for c in data["cases"]}
    assert status == {"notebook": "pass", "wrong": "fail", "bad init": "error", "bad type": "error"}
    wrong = next(c for c in data["cases"] if c["name"] == "wrong")
    assert wrong["result"]["parameters"]["scale"]["ops"] == ["WrongMul"] and "scale" in wrong["message"]
    assert result.exit_code == 2


def test_batch_module_file_is_code_and_refused_untrusted(models):
    (models / "cases").mkdir()
    (models / "cases" / "models.py").write_text(MODELS)
    (models / "cases" / "m.toml").write_text(BATCH)
    data = json.loads(CliRunner().invoke(main, ["batch", "cases/m.toml", "--json"]).stdout)
    refused = [c for c in data["cases"] if c["name"] in ("notebook", "wrong", "bad init")]
    assert all(c["status"] == "error" and "--trust-plugins" in c["message"] for c in refused)


def test_optim_steps_every_checked_parameter(models):
    args = ["models.py:Model", "-v", "x=[[0.5],[-1.0]]", "--loss", "out.pow(2).mean()", "--optim", "SGD(lr=0.1)",
            "--steps", "2", "--json"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    torch.manual_seed(0)
    twin = load().Model().double()
    x = torch.tensor([[0.5], [-1.0]], dtype=torch.float64)
    for record in data["steps"]:  # the training loop by hand: SGD is p ← p − lr·grad
        twin.zero_grad()
        twin(x).pow(2).mean().backward()
        with torch.no_grad():
            for p in twin.parameters():
                p -= 0.1 * p.grad
        for name, p in twin.named_parameters():
            np.testing.assert_allclose(record["params"][name]["torch"], p.detach().numpy(), rtol=1e-12)
    assert set(data["steps"][0]["params"]) == {"line_layer.weight", "line_layer.bias"}
    assert data["module"] == "models.py:Model" and data["expression"] == "out.pow(2).mean()"
    header = run(*args[:-1]).output.splitlines()[0]  # the table names the module, not a `gradcheck step`
    assert header == "gradcheck module models.py:Model --optim, loss out.pow(2).mean()"


def test_optim_fails_on_a_wrong_custom_backward(models):
    result = run("models.py:Scaled", "-v", "x=randn(2,3)", "--loss", "out.sum()", "--optim", "SGD(lr=0.1)")
    assert result.exit_code == 1
    assert any("scale" in line and "FAIL" in line for line in result.output.splitlines())


def test_grad_output_is_a_vjp_as_torch_computes_it(models):
    module = load().make()
    x = np.array([[0.2, -0.4], [1.0, 0.3]])
    g = np.array([[1.0, -2.0], [0.5, 3.0]])
    r = check_module(module, grad_output=g, input=x)
    twin = copy.deepcopy(module).double()
    out = twin(torch.tensor(x))
    grads = torch.autograd.grad(out, list(twin.parameters()), grad_outputs=torch.tensor(g))
    assert r.mode == "vjp" and r.ok
    for (name, _), want in zip(twin.named_parameters(), grads):
        np.testing.assert_allclose(r.parameters[name].analytic, want.numpy(), rtol=1e-12)
    with pytest.raises(InputError, match="--grad-output has shape"):
        check_module(module, grad_output=[1.0, 2.0], input=x)
