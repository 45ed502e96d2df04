"""Trust: plugin code named by a batch file runs only when the user says so; what it prints never reaches
the report's stdout; code that exits or kills its process costs only its own case, with any -j."""
from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
from click.testing import CliRunner

from gradcheck_cli.cli import main
from helpers import strict_json

pytest_plugins = ["pytester"]

MARKER_PLUGIN = """
import pathlib
pathlib.Path(__file__).with_name("RAN").write_text("plugin code ran")
import torch
OPS = {"twice": lambda x: x * 2}
"""

NOISY_PLUGIN = """
import os, sys
print("hello from plugin load")
sys.stderr.write("a warning at load\\n")

def noisy(x):
    print("noisy op ran")
    os.write(1, b"raw fd write\\n")
    return x * 2

def die(x):
    os._exit(9)

def leave(x):
    sys.exit(3)

OPS = {"noisy": noisy, "die": die, "leave": leave}
NUMPY_OPS = {"noisy": lambda x: x * 2}
"""


def write(path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def batch(*args: str, cwd: str | None = None):
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, ["batch", *args])
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(main, ["batch", *args])
    finally:
        os.chdir(old)


def refusal(ref: str) -> str:
    return f"this batch file asks to run plugin code from {ref}; pass --trust-plugins if you trust it"


@pytest.fixture
def marker_tree(tmp_path):
    """cases/ holds the batch files; the plugin lies beside them, above them and elsewhere."""
    write(tmp_path / "cases" / "ops.py", MARKER_PLUGIN)
    write(tmp_path / "shared" / "ops.py", MARKER_PLUGIN)
    return tmp_path


@pytest.mark.parametrize("where", ["relative", "parent", "absolute", "module", "txt"])
def test_untrusted_plugin_is_an_error_case_and_nothing_of_it_runs(marker_tree, where):
    folder = marker_tree / "cases"
    ref = {"relative": "ops.py", "parent": "../shared/ops.py", "absolute": str(marker_tree / "shared" / "ops.py"),
           "module": "this", "txt": "ops.py"}[where]
    shown = ref if where in ("absolute", "module") else str(folder / ref)
    if where == "txt":
        path = write(folder / "c.txt", f'"twice(x).sum()" -v x=1,2 --plugin {ref} --name plug\n"sin(x).sum()" -v x=1\n')
    else:
        path = write(folder / "c.toml", f"""
            [[case]]
            name = "plug"
            expr = "twice(x).sum()"
            vars = {{ x = [1.0, 2.0] }}
            plugins = ["{ref}"]
            [[case]]
            name = "plain"
            expr = "sin(x).sum()"
            vars = {{ x = 1.0 }}
        """)
    before = set(sys.modules)
    result = batch(path, "--json")
    assert result.exit_code == 2, result.output
    report = strict_json(result.stdout)
    assert [c["status"] for c in report["cases"]] == ["error", "pass"]
    assert report["cases"][0]["message"] == refusal(shown)
    assert not (folder / "RAN").exists() and not (marker_tree / "shared" / "RAN").exists()
    assert "this" not in set(sys.modules) - before  # the Zen of Python was not imported (nor printed)
    assert "Beautiful is better" not in result.output


def test_trust_plugins_loads_them_relative_to_the_batch_file(marker_tree, tmp_path):
    folder = marker_tree / "cases"
    write(folder / "c.txt", '"twice(x).sum()" -v x=1,2 --plugin ops.py\n')
    write(folder / "c.toml", '[[case]]\nexpr = "twice(x).sum()"\nvars = { x = [1.0, 2.0] }\nplugins = ["../shared/ops.py"]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = batch(str(folder), "--json", "--trust-plugins", cwd=str(elsewhere))  # paths are not from the cwd
    assert result.exit_code == 0, result.output
    report = strict_json(result.stdout)
    assert [c["status"] for c in report["cases"]] == ["pass", "pass"]
    assert [c["result"]["inputs"]["x"]["analytic"] for c in report["cases"]] == [[2.0, 2.0], [2.0, 2.0]]
    assert (folder / "RAN").exists() and (marker_tree / "shared" / "RAN").exists()


def test_the_same_file_given_with_plugin_is_trusted_only_for_that_file(marker_tree):
    folder = marker_tree / "cases"
    path = write(folder / "c.toml", """
        [[case]]
        name = "chosen"
        expr = "twice(x).sum()"
        vars = { x = 1.0 }
        plugins = ["ops.py"]
        [[case]]
        name = "other"
        expr = "twice(x).sum()"
        vars = { x = 1.0 }
        plugins = ["../shared/ops.py"]
    """)
    result = batch(path, "--json", "--plugin", str(folder / "ops.py"))
    report = strict_json(result.stdout)
    assert [c["status"] for c in report["cases"]] == ["pass", "error"]
    assert report["cases"][1]["message"] == refusal(str(folder / "../shared/ops.py"))
    assert (folder / "RAN").exists() and not (marker_tree / "shared" / "RAN").exists()
    assert result.exit_code == 2


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_plugin_output_is_captured_and_exits_cost_one_case(tmp_path, jobs):
    write(tmp_path / "noisy.py", NOISY_PLUGIN)
    path = write(tmp_path / "c.toml", """
        [defaults]
        plugins = ["noisy.py"]
        [[case]]
        name = "noisy"
        expr = "noisy(x).sum()"
        vars = { x = [1.0, 2.0] }
        [[case]]
        name = "os._exit"
        expr = "die(x).sum()"
        vars = { x = 1.0 }
        [[case]]
        name = "sys.exit"
        expr = "leave(x).sum()"
        vars = { x = 1.0 }
        [[case]]
        name = "after"
        expr = "noisy(x).sum()"
        vars = { x = [1.0, 2.0] }
        [[case]]
        name = "no plugin"
        expr = "exp(x)"
        vars = { x = 0.5 }
        plugins = []
    """)
    result = batch(path, "--json", "--trust-plugins", "-j", jobs, "--timeout", "120")
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)  # one JSON document: nothing the plugin printed is on stdout
    assert result.stdout.startswith("{") and result.stdout.endswith("}\n")
    cases = report["cases"]
    assert [c["name"] for c in cases] == ["noisy", "os._exit", "sys.exit", "after", "no plugin"]
    assert [c["status"] for c in cases] == ["pass", "error", "error", "pass", "pass"]
    assert cases[0]["message"].startswith("output of the case's plugin code:\nhello from plugin load\n"
                                          "a warning at load\nnoisy op ran\nraw fd write")
    assert cases[3]["message"] == cases[0]["message"]  # the same, whichever worker ran it
    assert cases[1]["message"].startswith("the worker process running this case ended with exit code 9")
    assert cases[2]["message"].startswith("plugin code called sys.exit(3)")
    assert cases[3]["result"]["inputs"]["x"]["analytic"] == [2.0, 2.0]
    assert cases[4]["result"]["inputs"]["x"]["analytic"] == pytest.approx(1.6487212707001282, rel=1e-15)


def test_check_with_a_printing_plugin_keeps_json_whole(tmp_path):
    plugin = write(tmp_path / "noisy.py", NOISY_PLUGIN)
    result = CliRunner().invoke(main, ["check", "noisy(x).sum()", "-v", "x=1,2", "--plugin", plugin, "--json"])
    assert result.exit_code == 0, result.output
    assert strict_json(result.stdout)["inputs"]["x"]["analytic"] == [2.0, 2.0]
    assert "hello from plugin load" in result.stderr and "noisy op ran" in result.stderr


def test_pytest_plugin_trusts_batch_plugins(pytester):
    pytester.makepyfile(ops=MARKER_PLUGIN)
    pytester.makefile(".toml", gradcheck_ops='[[case]]\nname = "t"\nexpr = "twice(x).sum()"\nvars = { x = 1.0 }\n'
                                             'plugins = ["ops.py"]\n')
    outcome = pytester.runpytest("-p", "no:cacheprovider", "-q")
    outcome.assert_outcomes(passed=1)


def test_a_case_that_ignores_the_alarm_is_stopped_by_its_worker_deadline(tmp_path):
    write(tmp_path / "stubborn.py", """
        import signal, time

        def stall(x):
            signal.signal(signal.SIGALRM, signal.SIG_IGN)  # the soft timeout can no longer fire
            while True:
                time.sleep(0.05)

        OPS = {"stall": stall}
    """)
    path = write(tmp_path / "c.toml", """
        [defaults]
        plugins = ["stubborn.py"]
        [[case]]
        name = "stalls"
        expr = "stall(x).sum()"
        vars = { x = 1.0 }
        [[case]]
        name = "next"
        expr = "sin(x)"
        vars = { x = 1.0 }
    """)
    result = batch(path, "--json", "--trust-plugins", "--timeout", "1")
    assert result.exit_code == 2, result.output
    cases = json.loads(result.stdout)["cases"]
    assert [c["status"] for c in cases] == ["error", "pass"]
    assert cases[0]["message"] == "timed out after 1 s (its worker did not answer; it was stopped)"
