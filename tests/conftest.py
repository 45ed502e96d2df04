"""Shared fixtures: a CliRunner over the real `gradcheck` command, and JSON that must be strict."""
from __future__ import annotations

import os
import sys

import pytest
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))  # so test modules can `import helpers`

from gradcheck_cli.cli import main  # noqa: E402
from helpers import strict_json  # noqa: E402


class Invoker:
    """Runs `gradcheck ARGS...` in-process; colourless, 200 columns wide so tables do not wrap."""

    def __init__(self) -> None:
        self.runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"})

    def __call__(self, *args: str, exit_code: int | None = 0):
        """Invoke; on a success path exceptions propagate, and exit_code (unless None) is asserted."""
        result = self.runner.invoke(main, list(args), catch_exceptions=exit_code not in (0, 1))
        if exit_code is not None:
            assert result.exit_code == exit_code, (
                f"gradcheck {' '.join(args)!r}: exit {result.exit_code}, expected {exit_code}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def json(self, *args: str, exit_code: int = 0):
        """Invoke with --json (right after the command name) and parse stdout strictly."""
        result = self(args[0], "--json", *args[1:], exit_code=exit_code)
        return strict_json(result.stdout)

    def error(self, *args: str) -> str:
        """Invoke a bad-input path: exit 2, nothing on stdout, no traceback; return stderr."""
        result = self(*args, exit_code=2)
        assert "Traceback" not in result.stderr + result.stdout
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert result.stdout == ""
        return result.stderr


@pytest.fixture
def gradcheck() -> Invoker:
    return Invoker()
