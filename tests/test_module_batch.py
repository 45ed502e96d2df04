"""Module cases in batch files (TOML keys module/init/loss/params/train): a module file is code, so it
runs only with --trust-plugins (SPEC "Trust"); the other cases run either way."""
from __future__ import annotations

import os
import shutil
import textwrap

import pytest
from click.testing import CliRunner

import module_cases as M
from gradcheck_cli.cli import main
from helpers import strict_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MARKER_MODEL = """
import pathlib
import torch
pathlib.Path(__file__).with_name("RAN").write_text("module code ran")

class Model(torch.nn.Module):
    def __init__(self, in_feature=1, out_feature=3):
        super().__init__()
        self.line_layer = torch.nn.Linear(in_feature, out_feature)

    def forward(self, x):
        return self.line_layer(x)
"""

CASES = """
[[case]]
name = "plain expression"
expr = "3*a**3 - b**2"
vars = { a = [2.0, 3.0], b = [6.0, 4.0] }
grad_output = [1.0, 1.0]

[[case]]
name = "seed 004 model"
module = "models/model.py:Model"
init = { in_feature = 1, out_feature = 3 }
vars = { x = "randn(2,1)", label = [[0.0], [0.0]] }
loss = "(out - label).mean()"
"""


def batch(*args: str):
    result = CliRunner().invoke(main, ["batch", *args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.py").write_text(textwrap.dedent(MARKER_MODEL))
    for name in ("layers.py", "custom_layers.py", "structure.py"):
        shutil.copy(M.corpus_file(name), tmp_path / "models" / name)
    (tmp_path / "cases.toml").write_text(textwrap.dedent(CASES))
    return tmp_path


def test_a_module_case_is_refused_without_trust_and_nothing_of_it_runs(folder):
    result = batch(str(folder / "cases.toml"), "--json")
    assert result.exit_code == 2
    data = strict_json(result.stdout)
    statuses = {c["name"]: c["status"] for c in data["cases"]}
    assert statuses == {"plain expression": "pass", "seed 004 model": "error"}
    message = next(c["message"] for c in data["cases"] if c["name"] == "seed 004 model")
    assert "this batch file asks to run plugin code from" in message and "model.py" in message
    assert "pass --trust-plugins if you trust it" in message
    assert not (folder / "models" / "RAN").exists(), "the module file ran without --trust-plugins"


def test_a_module_case_runs_with_trust_plugins(folder):
    result = batch(str(folder / "cases.toml"), "--json", "--trust-plugins")
    assert result.exit_code == 0, result.stdout
    data = strict_json(result.stdout)
    assert [c["status"] for c in data["cases"]] == ["pass", "pass"]
    module_result = data["cases"][1]["result"]
    assert list(module_result["parameters"]) == ["line_layer.weight", "line_layer.bias"]
    for key in ("buffers", "frozen", "unused"):
        assert key in module_result
    assert (folder / "models" / "RAN").exists()


def test_module_keys_params_and_train(folder):
    (folder / "more.toml").write_text(textwrap.dedent("""
        [[case]]
        name = "batchnorm in train mode"
        module = "models/layers.py:BatchNet"
        vars = { x = "randn(4,3)", w = "randn(4,4)" }
        loss = "(out * w).sum()"
        train = true

        [[case]]
        name = "only the norm"
        module = "models/layers.py:NormNet"
        init = { features = 4 }
        vars = { x = "randn(2,4)" }
        loss = "(out**2).sum()"
        params = ["norm.*"]

        [[case]]
        name = "wrong bias inside a model"
        module = "models/custom_layers.py:ClassifierWithMeanBias"
        vars = { x = "randn(4,3)", target = "long([0, 1, 1, 0])" }
        loss = "cross_entropy(out, target)"

        [[case]]
        name = "wrong bias, expected to fail"
        module = "models/custom_layers.py:ClassifierWithMeanBias"
        vars = { x = "randn(4,3)", target = "long([0, 1, 1, 0])" }
        loss = "cross_entropy(out, target)"
        xfail = "the bias gradient is averaged, not summed"

        [[case]]
        name = "a keyword the class does not take"
        module = "models/layers.py:NormNet"
        init = { featurs = 4 }
        vars = { x = "randn(2,4)" }

        [[case]]
        name = "init that is not literal"
        module = "models/layers.py:NormNet"
        init = { features = { nested = 4 } }
        vars = { x = "randn(2,4)" }
    """))
    result = batch(str(folder / "more.toml"), "--json", "--trust-plugins")
    data = strict_json(result.stdout)
    cases = {c["name"]: c for c in data["cases"]}
    assert result.exit_code == 2
    assert cases["batchnorm in train mode"]["status"] == "pass"
    assert "bn.running_mean" in cases["batchnorm in train mode"]["result"]["buffers"]
    assert cases["only the norm"]["status"] == "pass"
    assert list(cases["only the norm"]["result"]["parameters"]) == ["norm.weight", "norm.bias"]
    assert cases["wrong bias inside a model"]["status"] == "fail"
    assert "layers.1.bias" in cases["wrong bias inside a model"]["message"]
    assert cases["wrong bias, expected to fail"]["status"] == "xfail"
    assert cases["a keyword the class does not take"]["status"] == "error"
    assert "featurs" in cases["a keyword the class does not take"]["message"]
    assert cases["init that is not literal"]["status"] == "error"
    assert [c["status"] for c in data["cases"]].count("error") == 2   # and nothing else was lost


def test_the_repository_module_cases():
    """expressions/module.toml: the README's `gradcheck batch expressions/ --trust-plugins` runs them; without
    trust they are the error cases and nothing else is."""
    toml = os.path.join(ROOT, "expressions", "module.toml")
    trusted = batch(toml, "--json", "--trust-plugins")
    data = strict_json(trusted.stdout)
    assert trusted.exit_code == 0 and data["passed"] == len(data["cases"]) >= 4, trusted.stdout
    jacobian = next(c for c in data["cases"] if "Jacobian" in c["name"])["result"]
    assert jacobian["mode"] == "jacobian"
    weight_only = next(c for c in data["cases"] if "weight only" in c["name"])["result"]
    assert list(weight_only["parameters"]) == ["line_layer.weight"]
    untrusted = batch(os.path.join(ROOT, "expressions"), "--json", "--plugin",
                      os.path.join(ROOT, "expressions", "plugins", "softplus_ops.py"))
    report = strict_json(untrusted.stdout)
    errors = [c for c in report["cases"] if c["status"] == "error"]
    assert untrusted.exit_code == 2 and errors and all(c["file"].endswith("module.toml") for c in errors)
    assert report["errors"] == len(data["cases"])


def test_github_and_junit_reports_name_the_dotted_parameter(folder):
    (folder / "wrong.toml").write_text(textwrap.dedent("""
        [[case]]
        name = "wrong bias"
        module = "models/custom_layers.py:ClassifierWithMeanBias"
        vars = { x = "randn(4,3)", target = "long([0, 1, 1, 0])" }
        loss = "cross_entropy(out, target)"
    """))
    junit = folder / "report.xml"
    result = batch(str(folder / "wrong.toml"), "--trust-plugins", "--format", "github", "--junit", str(junit))
    assert result.exit_code == 1
    annotation = next(line for line in result.stdout.splitlines() if line.startswith("::error "))
    assert "line=2" in annotation and "layers.1.bias" in annotation
    import xml.etree.ElementTree as ET
    failure = ET.parse(junit).getroot().find(".//testcase/failure")
    assert failure is not None and "layers.1.bias" in failure.get("message")
