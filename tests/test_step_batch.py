"""Batch cases for `gradcheck step` (optim, steps, recompute, expect) and `check --accumulate` (accumulate)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gradcheck_cli.batch import run_batch
from helpers import strict_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _batch(tmp_path, text):
    path = tmp_path / "cases.toml"
    path.write_text(text)
    return run_batch([str(path)])


def test_the_repository_optimizer_lessons_pass(gradcheck):
    data = strict_json(gradcheck("batch", os.path.join(ROOT, "expressions", "optimizers.toml"), "--json").stdout)
    assert data["ok"] and data["passed"] == len(data["cases"]) >= 8
    by_name = {c["name"]: c["result"] for c in data["cases"]}
    momentum = next(r for n, r in by_name.items() if n.startswith("SGD momentum=0.1"))
    got = [v for s in momentum["steps"] for v in s["params"]["w"]["torch"]]
    assert got == pytest.approx([0.49, 0.48, 0.479, 0.458], abs=1e-15)
    accumulate = next(r for n, r in by_name.items() if n.startswith("gradients accumulate"))
    assert [p["grad"]["weights"][0] for p in accumulate["accumulate"]] == [3.0, 6.0, 9.0, 3.0, 3.0, 3.0]


def test_an_expected_trajectory_that_torch_does_not_follow_fails(tmp_path):
    result = _batch(tmp_path, '[[case]]\nexpr = "w[0]**2 + 2*w[1]**2"\nvars = { w = [0.5, 0.5] }\n'
                              'optim = "SGD(lr=0.01)"\nsteps = 2\nexpect = { w = [[0.49, 0.48], [0.48, 0.46]] }\n')
    (case,) = result.cases
    # with zero_grad and a new gradient, step 2 is (0.4802, 0.4608), not the no-recompute (0.48, 0.46)
    assert case.status == "fail" and case.message.startswith("w after step 2: torch [0.4802, 0.4608]")


def test_a_wrong_custom_optimizer_fails_in_a_batch_naming_the_step(tmp_path):
    plugin = os.path.join(ROOT, "tests", "plugins", "optimizers.py")
    result = run_batch([str(_write(tmp_path, '[[case]]\nexpr = "(w**2).sum()"\nvars = { w = [1.0, -2.0] }\n'
                                              'optim = "LateBias(lr=0.1)"\nsteps = 3\n'))], plugins=(plugin,))
    (case,) = result.cases
    assert case.status == "fail" and case.message.startswith("step 2, w[0]: new value")


def test_a_plugin_optimizer_in_a_fresh_batch_process_reports_its_result(tmp_path):
    """The result crosses back from the worker that ran the plugin: it must carry data, not the plugin's
    class (this process never loaded the plugin, so unpickling that class crashed the whole batch)."""
    plugin = os.path.join(ROOT, "tests", "plugins", "optimizers.py")
    path = _write(tmp_path, '[[case]]\nexpr = "(w**2).sum()"\nvars = { w = [1.0, -2.0] }\n'
                            'optim = "LateBias(lr=0.1)"\nsteps = 3\n')
    out = subprocess.run([sys.executable, "-m", "gradcheck_cli", "batch", str(path), "--plugin", plugin, "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    (case,) = strict_json(out.stdout)["cases"]
    assert case["status"] == "fail" and case["message"].startswith("step 2, w[0]: new value")
    assert case["result"]["optimizer"] == {"name": "LateBias", "hyper": {"lr": 0.1}, "origin": plugin}


def _write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("keys,message", [
    ('optim = 3', "'optim' must be str, not int"),
    ('optim = "SGD()"\nsteps = true', "'steps' must be int, not bool"),
    ('steps = 2', "'steps' and 'recompute' belong to an optimizer case"),
    ('optim = "SGD()"\naccumulate = 2', "either an optimizer run (optim) or an accumulation"),
    ('optim = "Nope()"', "unknown optimizer 'Nope'"),
    ('accumulate = 0', "--accumulate must be between 1 and 1000, not 0"),
])
def test_bad_kind_keys_are_error_cases_and_the_rest_still_run(tmp_path, keys, message):
    result = _batch(tmp_path, f'[[case]]\nexpr = "(w**2).sum()"\nvars = {{ w = [1.0] }}\n{keys}\n'
                              '[[case]]\nexpr = "(w**2).sum()"\nvars = { w = [1.0] }\naccumulate = 2\n')
    bad, good = result.cases
    assert bad.status == "error" and message in bad.message, bad.message
    assert good.status == "pass"


def test_a_txt_line_takes_accumulate(tmp_path):
    path = tmp_path / "cases.txt"
    path.write_text('"(weights * 3).sum()" -v weights=ones(4) --accumulate 3 --name seed001\n'
                    '"onewrong(w).sum()" -v w=randn(9) --accumulate 2 --name wrong\n')
    plugin = os.path.join(ROOT, "tests", "plugins", "one_wrong.py")
    right, wrong = run_batch([str(path)], plugins=(plugin,)).cases
    assert right.status == "pass" and [p.grads["weights"].analytic[0] for p in right.result.passes] == [3, 6, 9, 3, 3, 3]
    assert wrong.status == "fail" and "accumulate pass 1 (not zeroed), w: .grad" in wrong.message
