"""One memory budget for a whole case (issue 11), refused before anything large is allocated.

Every refusal here is of a case that would need gigabytes: the budget is checked from shapes alone
(the SPEC's generator arguments, and a walk on torch's meta device), so these tests allocate nothing big.
"""
from __future__ import annotations

import resource

import numpy as np
import pytest
from numpy.testing import assert_allclose

from gradcheck_cli import InputError, check
from gradcheck_cli.parse import DEFAULT_LIMITS, Limits


def first_line(stderr: str) -> str:
    assert stderr.startswith("error: "), stderr
    return stderr.splitlines()[0][len("error: "):]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_forty_large_inputs_are_refused_before_any_is_made(gradcheck):
    expr = " + ".join(f"x{i}.sum()" for i in range(40))
    values = [a for i in range(40) for a in ("-v", f"x{i}=randn(10000000)")]
    before = peak_rss_mb()
    message = first_line(gradcheck.error("check", expr, *values))
    assert message.startswith("the inputs alone would need 12.8 GB (all of them together: 400,000,000 elements")
    assert "--max-memory" in message and f"{DEFAULT_LIMITS.max_memory:,} MB" in message
    assert peak_rss_mb() - before < 500  # not one of the 80 MB inputs was made


def test_outer_product_is_refused_from_its_shapes(gradcheck):
    before = peak_rss_mb()
    message = first_line(gradcheck.error("check", "(x.reshape(-1,1) * y.reshape(1,-1)).sum()",
                                         "-v", "x=randn(30000)", "-v", "y=randn(30000)"))
    assert message.startswith("this check would need about ") and "autograd 14.4 GB" in message  # 9e8 float64, twice
    assert "--max-memory" in message
    assert peak_rss_mb() - before < 500


def test_the_largest_intermediate_is_named(gradcheck):
    message = first_line(gradcheck.error("check", "z = x.reshape(-1,1) * y.reshape(1,-1); z.sum()",
                                         "-v", "x=randn(30000)", "-v", "y=randn(30000)"))
    assert "the largest value is 'z' (7.2 GB)" in message


def test_a_jacobian_dominated_case_names_fast(gradcheck):
    args = ("check", "x*2", "-v", "x=randn(3000)", "--max-memory", "100")
    message = first_line(gradcheck.error(*args))
    assert "Jacobian 216.0 MB" in message  # 3000 x 3000 float64, three copies
    assert "use --fast (a projected check), pass --grad-output, or raise it with --max-memory" in message
    data = gradcheck.json(*args, "--fast")
    assert data["ok"]
    data = gradcheck.json(*args[:-2], "--max-memory", "400")
    assert_allclose(np.diagonal(np.asarray(data["inputs"]["x"]["analytic"])), 2.0)


def test_max_memory_can_be_raised_and_lowered(gradcheck):
    args = ("check", "x.sum()", "-v", "x=ones(2000)")
    assert "the memory limit for one case is 1 MB" in first_line(gradcheck.error(*args, "--max-memory", "1"))
    data = gradcheck.json(*args, "--max-memory", "20")
    assert_allclose(data["inputs"]["x"]["analytic"], np.ones(2000), rtol=0, atol=0)


def test_per_input_element_limit_still_speaks_first(gradcheck):
    message = first_line(gradcheck.error("check", "x.sum()", "-v", "x=randn(100000,100000)"))
    assert "--max-elements" in message


def test_python_api_budget():
    with pytest.raises(InputError, match="--max-memory"):
        check("x.sum()", x=np.ones(100_000), limits=Limits(max_memory=1))
    with pytest.raises(InputError, match="autograd"):
        check("(x.reshape(-1,1) * y.reshape(1,-1)).sum()", x="randn(30000)", y="randn(30000)")
    assert check("x.sum()", x=np.ones(1000), limits=Limits(max_memory=8)).ok


def test_help_shows_the_option(gradcheck):
    out = gradcheck("check", "--help").stdout
    assert "--max-memory" in out and str(DEFAULT_LIMITS.max_memory) in out
