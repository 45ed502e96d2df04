"""`gradcheck module FILE.py:NAME` as a user runs it: the SPEC's seed-004 example, JSON's keys, every
option, and the bad-input paths (exit 2, one clear line, no traceback), at 80 columns and wide."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import module_cases as M
from gradcheck_cli.cli import main
from helpers import strict_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "expressions", "model.py")
SEED_004 = [f"{MODEL}:Model", "--init", "in_feature=1, out_feature=3", "-v", "x=randn(2,1)",
            "--loss", "(out - label).mean()", "-v", "label=[[0],[0]]"]


def run(*args: str, columns: int = 200, exit_code: int | None = 0):
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": str(columns), "TERM": "dumb"})
    result = runner.invoke(main, ["module", *args], catch_exceptions=exit_code not in (0, 1))
    if exit_code is not None:
        assert result.exit_code == exit_code, (result.exit_code, result.stdout, result.stderr)
    return result


def run_json(*args: str, exit_code: int = 0):
    return strict_json(run("--json", *args, exit_code=exit_code).stdout)


def error(*args: str) -> str:
    """A bad-input path: exit 2, nothing on stdout, no traceback; stderr returned."""
    result = run(*args, exit_code=2)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == ""
    return result.stderr


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def corpus(file: str, name: str) -> str:
    return f"{M.corpus_file(file)}:{name}"


# ---------------------------------------------------------------- the SPEC's example

@pytest.mark.parametrize("columns", [80, 200])
def test_the_seed_004_example_passes_in_a_shell(columns):
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-m", "gradcheck_cli", "module", *SEED_004], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "line_layer.weight" in done.stdout and "line_layer.bias" in done.stdout
    assert "Traceback" not in done.stdout
    for line in done.stdout.splitlines():
        assert len(line) <= columns or line.startswith("replay: "), line
    replay = [line for line in done.stdout.splitlines() if line.startswith("replay: ")]
    assert len(replay) == 1 and "module" in replay[0]


def test_the_seed_004_example_values_are_torchs():
    """d mean(W x + b - label) / dW = mean over batch and outputs of x; / db = 1/3 each."""
    data = run_json(*SEED_004)
    assert data["ok"] is True
    from gradcheck_cli.values import resolve
    x = resolve("randn(2,1)", "x", 0)
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 3).double()
    out = model(torch.as_tensor(x))
    out.mean().backward()
    params = data["parameters"]
    assert list(params) == ["line_layer.weight", "line_layer.bias"]
    np.testing.assert_allclose(params["line_layer.weight"]["analytic"], model.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(params["line_layer.bias"]["analytic"], [1 / 3] * 3, rtol=1e-12)
    np.testing.assert_allclose(params["line_layer.weight"]["numeric"], model.weight.grad.numpy(), rtol=1e-8)
    assert params["line_layer.weight"]["shape"] == [3, 1]
    np.testing.assert_allclose(params["line_layer.weight"]["value"], model.weight.detach().numpy(), rtol=1e-12)


def test_the_same_seed_builds_the_same_parameters():
    first, second = run_json(*SEED_004), run_json(*SEED_004)
    assert first["parameters"]["line_layer.weight"]["value"] == second["parameters"]["line_layer.weight"]["value"]
    other = run_json(*SEED_004, "--seed", "1")
    assert other["parameters"]["line_layer.weight"]["value"] != first["parameters"]["line_layer.weight"]["value"]


# ---------------------------------------------------------------- JSON's keys

def test_json_keys_are_always_present():
    data = run_json(*SEED_004)
    for key in ("ok", "parameters", "inputs", "buffers", "frozen", "unused", "graph"):
        assert key in data, key
    assert data["buffers"] == {} and data["frozen"] == [] and data["unused"] == [] and data["inputs"] == {}


FROZEN_FILE = """import torch
from torch import nn


class Frozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)
        self.fc.requires_grad_(False)

    def forward(self, x):
        return torch.tanh(self.fc(x))


class Scale(nn.Module):
    def forward(self, x):
        return 2 * x
"""


@pytest.mark.parametrize("name, what", [
    ("Frozen", "every parameter is frozen (requires_grad=False: fc.weight, fc.bias)"),
    ("Scale", "the module has no parameters")])
def test_a_module_with_nothing_to_check_is_refused_not_passed(tmp_path, name, what):
    """A CI gradient assertion that checks nothing must not pass; with --wrt-inputs it checks the inputs."""
    path = tmp_path / "frozen.py"
    path.write_text(FROZEN_FILE)
    assert one_line(error(f"{path}:{name}", "-v", "x=randn(2,3)")) == (
        f"error: nothing to check: {what}; pass --wrt-inputs to check the gradients of its inputs")
    data = run_json(f"{path}:{name}", "-v", "x=randn(2,3)", "--wrt-inputs")
    assert data["ok"] and list(data["inputs"]) == ["x"] and data["parameters"] == {}


def test_buffers_frozen_and_unused_are_listed():
    bn = run_json(corpus("layers.py", "BatchNet"), "-v", "x=randn(4,3)", "--loss", "(out**2).sum()", "--train")
    assert bn["ok"] and bn["buffers"] == {"bn.running_mean": [4], "bn.running_var": [4], "bn.num_batches_tracked": []}
    frozen = run_json(corpus("structure.py", "FineTune"), "-v", "x=randn(3,3)", "--loss", "(out**2).mean()")
    assert frozen["ok"] and frozen["frozen"] == ["backbone.weight", "backbone.bias"]
    assert set(frozen["parameters"]) == {"head.weight", "head.bias"}
    aux = run_json(corpus("structure.py", "AuxHead"), "-v", "x=randn(2,3)", "--loss", "out.sum()")
    assert aux["ok"] and aux["unused"] == ["aux.weight", "aux.bias"]
    assert set(aux["parameters"]) == {"temperature", "main.weight", "main.bias"}  # unused only under "unused"


def test_a_parameter_that_gets_no_gradient_fails_with_the_reason():
    result = run("--json", corpus("lost_gradients.py", "NoGradGain"), "-v", "x=randn(3,3)",
                 "--loss", "(out**2).sum()", exit_code=1)
    data = strict_json(result.stdout)
    assert data["ok"] is False and data["parameters"]["gain"]["ok"] is False
    assert data["parameters"]["gain"]["reason"] == "gets no gradient"
    assert data["parameters"]["weight"]["ok"] and "reason" not in data["parameters"]["weight"]
    table = run(corpus("lost_gradients.py", "NoGradGain"), "-v", "x=randn(3,3)", "--loss", "(out**2).sum()",
                exit_code=1, columns=80).stdout
    assert "gain" in table and "gets no gradient" in table


@pytest.mark.parametrize("columns", [80, 200])
def test_a_wrong_custom_layer_is_blamed_by_its_dotted_name(columns):
    args = [corpus("custom_layers.py", "ClassifierWithMeanBias"), "-v", "x=randn(4,3)",
            "-v", "target=long([0, 1, 1, 0])", "--loss", "cross_entropy(out, target)"]
    data = run_json(*args, exit_code=1)
    assert [n for n, p in data["parameters"].items() if not p["ok"]] == ["layers.1.bias"]
    assert "MeanBiasFn" in " ".join(data["parameters"]["layers.1.bias"].get("ops", [])) + data.get("blame", "")
    text = run(*args, exit_code=1, columns=columns).stdout
    assert "layers.1.bias" in text and "FAIL" in text
    assert "MeanBiasFn" in text, "the op is named too (its grad_fn node)"
    for line in text.splitlines():
        assert len(line) <= columns or line.startswith("replay: "), line


# ---------------------------------------------------------------- options

def test_params_globs_on_the_command_line():
    data = run_json(corpus("structure.py", "Encoder"), "-v", "x=randn(2,3)", "--loss", "(out**2).sum()",
                    "--params", "block.*,heads.score.bias")
    assert list(data["parameters"]) == ["block.0.weight", "block.0.bias", "block.2.weight", "block.2.bias",
                                        "heads.score.bias"]


def test_wrt_inputs_on_the_command_line():
    data = run_json(corpus("structure.py", "TwoTower"), "-v", "q=randn(2,3)", "-v", "k=randn(2,2)",
                    "--loss", "out[0].sum() + (out[1]**2).mean()", "--wrt-inputs")
    assert data["ok"] and set(data["inputs"]) == {"q", "k"}
    assert data["inputs"]["q"]["shape"] == [2, 3]


def test_train_and_eval_are_different_functions_of_batchnorm():
    args = [corpus("layers.py", "BatchNet"), "-v", "x=randn(4,3)", "-v", "w=randn(4,4)", "--loss", "(out * w).sum()"]
    train, default, evaluated = run_json(*args, "--train"), run_json(*args), run_json(*args, "--eval")
    assert train["ok"] and default["ok"] and evaluated["ok"]
    assert default["parameters"] == evaluated["parameters"]
    assert train["parameters"]["fc.weight"]["analytic"] != evaluated["parameters"]["fc.weight"]["analytic"]


def test_dtype_float32_and_fast():
    args = [corpus("structure.py", "Encoder"), "-v", "x=randn(2,3)", "--loss", "(out**2).sum()"]
    f32 = run_json(*args, "--dtype", "float32")
    assert f32["ok"] and f32["dtype"] == "float32"
    fast = run_json(*args, "--fast")
    assert fast["ok"]
    for name, p in fast["parameters"].items():
        assert "projection" in p and "random ±1 directions" in p["projection"]["statement"], name
    table = run(*args, "--fast", columns=80).stdout
    assert "projected check" in table


def test_a_factory_with_a_jacobian_output():
    data = run_json(corpus("structure.py", "make_mlp"), "-v", "input=randn(2,2)")   # Sequential.forward(input)
    assert data["ok"] and data["mode"] == "jacobian"
    assert data["parameters"]["0.weight"]["shape"] == [3, 2]
    assert np.asarray(data["parameters"]["0.weight"]["analytic"]).shape == (2, 1, 3, 2)


def test_init_keywords_build_the_module_they_say():
    data = run_json(corpus("structure.py", "MLP"), "--init", "in_features=2, hidden=[4, 3], activation='sigmoid', "
                    "bias=False", "-v", "x=randn(3,2)", "--loss", "out.mean()")
    assert data["ok"]
    assert {n: p["shape"] for n, p in data["parameters"].items()} == {
        "net.0.weight": [4, 2], "net.2.weight": [3, 4], "net.4.weight": [1, 3]}


def test_an_embedding_takes_long_indices():
    data = run_json(corpus("layers.py", "TokenModel"), "-v", "tokens=long([[0, 2, 5], [1, 1, 3]])",
                    "-v", "target=long([1, 0])", "--loss", "cross_entropy(out, target)")
    assert data["ok"] and data["inputs"] == {}
    grad = np.asarray(data["parameters"]["embed.weight"]["analytic"])
    assert np.all(grad[4] == 0) and np.any(grad[0] != 0)   # token 4 is never looked up


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("ref, words", [
    ("expressions/model.py", "FILE.py:NAME"),
    ("model:Model", "FILE.py:NAME"),
    ("expressions/nowhere.py:Model", "nowhere.py"),
    ("expressions/model.py:Modle", "Modle"),
    ("expressions/model.py:", "FILE.py:NAME"),
])
@pytest.mark.parametrize("columns", [80, 200])
def test_bad_file_name(ref, words, columns, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = run(ref, "-v", "x=randn(2,1)", exit_code=2, columns=columns)
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert words in one_line(result.stderr)


def test_a_missing_name_lists_what_the_file_defines():
    line = one_line(error(f"{MODEL}:Modle", "-v", "x=randn(2,1)"))
    assert "Model" in line.replace("Modle", "")


@pytest.mark.parametrize("name, words", [("HIDDEN", "module"), ("Config", "module"), ("make_tensor", "module"),
                                         ("make_with_args", "no arguments")])
def test_a_name_that_is_not_a_module(name, words):
    line = one_line(error(corpus("not_modules.py", name), "-v", "x=randn(2,1)"))
    assert name in line and words in line.lower()


def test_wrt_inputs_with_only_integer_inputs_is_bad_input():
    line = one_line(error(corpus("layers.py", "TokenModel"), "-v", "tokens=long([[0, 2, 5], [1, 1, 3]])",
                          "--wrt-inputs"))
    assert "--wrt-inputs" in line and "float" in line


@pytest.mark.parametrize("init, words", [
    ("in_feature=1, out_feature=", "--init"),          # syntax
    ("in_feature=open('x')", "literal"),               # not a literal: never called
    ("in_feature=__import__('os')", "literal"),
    ("1, 3", "keyword"),                               # positional
    ("in_featuer=1", "in_featuer"),                    # a keyword the class does not take
    ("in_feature=1, in_feature=2", "twice"),
])
def test_bad_init(init, words):
    stderr = error(f"{MODEL}:Model", "--init", init, "-v", "x=randn(2,1)")
    first = stderr.splitlines()[0]
    assert first.startswith("error: ") and words in first, stderr


def test_init_on_a_factory_is_bad_input():
    assert "init" in one_line(error(corpus("structure.py", "make_mlp"), "--init", "width=2", "-v", "x=randn(2,2)"))


def test_a_constructor_that_raises_is_bad_input_naming_it():
    line = one_line(error(corpus("not_modules.py", "Strict"), "--init", "width=0", "-v", "x=randn(2,2)"))
    assert "width must be at least 1" in line


@pytest.mark.parametrize("args, words", [
    (["-v", "y=randn(2,1)"], "x"),                                    # the forward's argument is missing
    (["-v", "x=randn(2,1)", "-v", "lable=1"], "lable"),               # neither forward's nor the loss's
    (["-v", "x=randn(2,5)"], "x"),                                    # torch refuses the shape
    (["-v", "x=randn(2,1)", "--params", "nothing.*"], "nothing.*"),
    (["-v", "x=randn(2,1)", "--dtype", "float16x"], "float16x"),
])
def test_bad_values_and_options(args, words):
    stderr = error(f"{MODEL}:Model", *args)
    assert words in stderr, stderr             # click's own usage errors (--dtype) take three lines


def test_module_has_help_with_an_example():
    result = run("--help")
    assert "FILE.py:NAME" in result.stdout and "--init" in result.stdout and "--loss" in result.stdout


def test_the_help_example_runs_from_the_repository_root(monkeypatch):
    import shlex
    monkeypatch.chdir(ROOT)
    text = run("--help").stdout
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Example:")
    example = lines[start + 1].strip()
    assert example.startswith("gradcheck module expressions/model.py:Model")
    result = run(*shlex.split(example)[2:])
    assert "line_layer.weight" in result.stdout


@pytest.mark.parametrize("source, words", [
    ("import torch\nclass Model(torch.nn.Module)\n    pass\n", "model.py"),             # a syntax error
    ("import torch\nimport a_package_that_is_not_installed\n", "a_package_that_is_not_installed"),
    ("import torch\nraise RuntimeError('CUDA required')\n", "CUDA required"),
])
def test_a_model_file_that_cannot_be_imported(tmp_path, source, words):
    path = tmp_path / "model.py"
    path.write_text(source)
    stderr = error(f"{path}:Model", "-v", "x=randn(2,1)")
    assert stderr.startswith("error: ") and words in stderr.splitlines()[0], stderr


@pytest.mark.parametrize("init", ["in_feature=" + "[" * 400 + "]" * 400, "in_feature='" + "x" * 200_000 + "'",
                                  "in_feature=1e999999", "in_feature=10**10**10", "in_feature=" + "9" * 5000])
def test_hostile_init_is_refused_quickly(init):
    stderr = error(f"{MODEL}:Model", "--init", init, "-v", "x=randn(2,1)")
    assert stderr.startswith("error: ") and len(stderr) < 2000
