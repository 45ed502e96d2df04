"""The pytest plugin collects gradcheck_*.toml cases; assert_gradients raises with the table."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from gradcheck_cli import assert_gradients

pytest_plugins = ["pytester"]


def test_toml_cases_become_items(pytester):
    pytester.makefile(".toml", gradcheck_cases=textwrap.dedent("""
        [[case]]
        name = "right"
        expr = "sin(x).sum()"
        [[case]]
        name = "wrong expect"
        expr = "x*2"
        vars = { x = 1.0 }
        expect = { x = 3.0 }
        [[case]]
        name = "expected"
        expr = "x*2"
        vars = { x = 1.0 }
        expect = { x = 5.0 }
        xfail = "documented"
    """))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*wrong expect*", "*expected [3.0]*"])


def test_other_toml_files_are_not_collected(pytester):
    pytester.makefile(".toml", pyproject_like='[[case]]\nexpr = "sin("\n')
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_assert_gradients_passes_and_returns_the_result():
    r = assert_gradients("3*a**3 - b**2", a=[2, 3], b=[6, 4], grad_output=[1, 1])
    np.testing.assert_allclose(r.inputs["b"].analytic, [-12.0, -8.0], rtol=1e-14)


def test_assert_gradients_raises_with_the_table(tmp_path):
    plugin = tmp_path / "wrong.py"
    plugin.write_text(textwrap.dedent("""
        import torch
        class Twice(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 3
            @staticmethod
            def backward(ctx, g):
                return g * 2
        OPS = {"triple": Twice.apply}
    """))
    with pytest.raises(AssertionError) as info:
        assert_gradients("triple(x).sum()", x=[1.0, 2.0], plugins=[str(plugin)])
    text = str(info.value)
    assert "gradients disagree" in text and "FAIL" in text and "AccumulateGrad (x)" in text
