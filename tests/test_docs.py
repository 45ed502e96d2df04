"""Every command documents itself: --help with an Example block whose examples actually run.
And the cheap paths (help, a syntax error) never pay for importing torch."""
from __future__ import annotations

import shlex

import pytest
from click.testing import CliRunner

from gradcheck_cli.cli import main
from helpers import run_python

COMMANDS = sorted(main.commands)


def _examples(help_text: str) -> list[str]:
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Example:")
    examples = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        examples.append(line.strip())
    return examples


def test_the_commands_the_spec_names_exist():
    assert {"check", "batch", "graph", "ops"} <= set(COMMANDS)


@pytest.mark.parametrize("args", [[], *([name] for name in COMMANDS)], ids=["gradcheck", *COMMANDS])
@pytest.mark.parametrize("flag", ["--help", pytest.param("-h", id="-h")])
def test_help_has_an_example(gradcheck, args, flag):
    text = gradcheck(*args, flag).stdout
    assert text.startswith("Usage: ")
    examples = _examples(text)
    assert examples, text
    assert all(example.startswith("gradcheck ") for example in examples)
    if args:
        assert all(example.split()[1] == args[0] for example in examples)


@pytest.mark.parametrize("command", ["check", "graph", "ops", "steps", "step"])
def test_help_examples_run(command, tmp_path, monkeypatch):
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})
    help_text = runner.invoke(main, [command, "--help"]).stdout
    monkeypatch.chdir(tmp_path)  # examples may write files (graph --dot graph.dot)
    for example in _examples(help_text):
        words = shlex.split(example)
        result = runner.invoke(main, words[1:], catch_exceptions=False)
        assert result.exit_code == 0, f"{example}\n{result.stdout}{result.stderr}"
        assert result.stdout


def test_check_help_documents_the_options(gradcheck):
    text = gradcheck("check", "--help").stdout
    for option in ("--var", "--seed", "--wrt", "--grad-output", "--dtype", "--method", "--eps", "--atol",
                   "--rtol", "--format", "--json", "--plugin"):
        assert option in text
    assert "Exit status: 0 all gradients agree, 1 some disagree, 2 bad input." in " ".join(text.split())


def test_version(gradcheck):
    from importlib.metadata import version
    assert version("gradcheck-cli") in gradcheck("--version").stdout


def test_python_dash_m_is_the_same_program():
    done = run_python("import runpy, sys; sys.argv = ['gradcheck', 'check', '--json', '3*a**3 - b**2', "
                      "'-v', 'a=2,3', '-v', 'b=6,4', '--grad-output', '1,1']; "
                      "runpy.run_module('gradcheck_cli', run_name='__main__')")
    assert done.returncode == 0, done.stderr
    assert '"analytic": [\n        36.0,\n        81.0\n      ]' in done.stdout


NO_TORCH = """
import sys
import click
from gradcheck_cli.cli import main
codes = []
for args in {cases!r}:
    try:
        main(args, standalone_mode=False)
        codes.append(0)
    except click.ClickException as err:
        codes.append(int(err.exit_code))
    except SystemExit as err:
        codes.append(int(err.code))
print(codes)
print('torch' in sys.modules)
"""


def test_help_and_syntax_errors_do_not_import_torch():
    cases = [["--help"], ["check", "--help"], ["graph", "--help"], ["ops", "--help"],
             ["check", "sin(x"], ["check", "foo(x) + 1"], ["check", "x.__class__"]]
    done = run_python(NO_TORCH.format(cases=cases))
    assert done.returncode == 0, done.stderr
    codes, imported = done.stdout.strip().splitlines()[-2:]
    assert codes == str([0, 0, 0, 0, 2, 2, 2])
    assert imported == "False"


def test_a_real_check_does_import_torch():
    """The control for the test above: the probe can see torch being imported."""
    done = run_python(NO_TORCH.format(cases=[["check", "x*2", "-v", "x=1"]]))
    codes, imported = done.stdout.strip().splitlines()[-2:]
    assert codes == "[0]" and imported == "True"


def test_importing_the_package_is_cheap():
    done = run_python("import sys, gradcheck_cli.cli, gradcheck_cli.parse, gradcheck_cli.ops; "
                      "print('torch' in sys.modules)")
    assert done.stdout.strip() == "False", done.stderr
