"""One memory budget for a whole case (issue 11), refused before anything large is allocated.

Every refusal here is of a case that would need gigabytes: the budget is checked from shapes alone
(the SPEC's generator arguments, and a size walk: small ops on CPU zeros, large ones on torch's meta device), so these tests allocate nothing big.
"""
from __future__ import annotations

import resource

import numpy as np
import pytest
from numpy.testing import assert_allclose

from gradcheck_cli import InputError, check, memory
from gradcheck_cli.ops import OPS
from gradcheck_cli.parse import parse
from helpers import op_cases, run_python
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


WALKS = [(c.expr, {k: np.shape(v) for k, v in c.values.items()}) for c in op_cases()] + [
    ("y = x + 2; z = y*y*3; z.mean()", {"x": (2, 2)}),
    ("(a.unsqueeze(1) * b.unsqueeze(0)).sum()", {"a": (300,), "b": (400,)}),   # 120,000: past SMALL_OP
    ("(a @ b).sum()", {"a": (500, 1), "b": (1, 500)}),
    ("w = x * 2; w.mul_(3); cat([w, x]).sum()", {"x": (3,)}),
    ("where(x > 0, x, -x).sum() + softmax(x, dim=0)[0]", {"x": (70_000,)}),  # the input alone is on meta
]


@pytest.mark.parametrize("expr,shapes", WALKS, ids=[w[0] for w in WALKS])
def test_the_size_walk_gives_the_meta_walks_sizes(expr, shapes, monkeypatch):
    """Small ops on CPU zeros, and large elementwise ones by the broadcast rule, are optimisations only:
    every size equals the all-meta walk's."""
    program = parse(expr, OPS)
    inputs = {name: np.zeros(shape) for name, shape in shapes.items()}
    mixed = memory._meta_sizes(program, OPS, inputs)
    monkeypatch.setattr(memory, "SMALL_OP", -1)
    by_rule = memory._meta_sizes(program, OPS, inputs)  # every elementwise op by its rule, the rest on meta
    monkeypatch.setattr(memory, "_ELEMENTWISE", ())
    assert mixed == by_rule == memory._meta_sizes(program, OPS, inputs)


def test_the_size_walk_sizes_nearly_every_op():
    """The test above would pass vacuously if the walk gave up (None) everywhere."""
    sized = [memory._meta_sizes(parse(expr, OPS), OPS, {n: np.zeros(s) for n, s in shapes.items()}) is not None
             for expr, shapes in WALKS]
    assert sum(sized) >= 0.9 * len(WALKS)


def test_a_large_elementwise_check_does_not_import_dynamo():
    """Large elementwise ops are sized by rule, not by meta kernels (whose first use imports torch._dynamo)."""
    out = run_python("import sys\nimport numpy as np\nfrom gradcheck_cli import check\n"
                     "assert check('(sin(3*x**3)*exp(-x) + (x > 0)).sum()', x=np.linspace(-1, 1, 10**5)).ok\n"
                     "print('torch._dynamo' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"]


def test_a_small_check_never_uses_the_meta_device():
    """Meta kernels' first use imports torch._dynamo (seconds): a small cold check must not pay for it."""
    out = run_python("import sys\nfrom gradcheck_cli import check\n"
                     "assert check('(softmax(x, dim=0) * (x @ W).sum()).sum() + 3*x.max()', "
                     "x=[1.0, 2.0, 3.0], W=[[1.0], [2.0], [0.5]]).ok\n"
                     "print('torch._dynamo' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"]


def test_an_op_too_big_for_cpu_is_sized_on_meta(monkeypatch):
    """The bound (product of argument sizes plus their sum) sends an outer product to meta, unallocated."""
    seen = []
    original = memory._to_meta
    monkeypatch.setattr(memory, "_to_meta", lambda v: seen.append(v) or original(v))
    program = parse("(a.unsqueeze(1) * b.unsqueeze(0)).sum()", OPS)
    elements, statements = memory._meta_sizes(program, OPS, {"a": np.zeros(10**5), "b": np.zeros(10**5)})
    assert statements == [("the output", 1)]
    assert elements == 10**10 + 2 * 10**5 + 1  # two unsqueezes, the product, the sum
    assert seen  # the unsqueezes ran on meta


@pytest.mark.parametrize("expr", ["(x @ W).tanh().sum()", "cat([W, W * 2]).sum()"])
def test_a_numeric_walk_leaves_no_cycle_holding_its_batch(expr):
    """Each batched evaluation's arrays die with it, without waiting for the garbage collector: a
    reference cycle in the walker kept ~10 complex batches of a projected check alive at once (a 4M-element
    W peaked at 1.1 GB, four times the stated budget)."""
    import gc
    import weakref
    from gradcheck_cli.numeric import NumericEngine
    rng = np.random.default_rng(0)
    values = {"x": rng.normal(size=(1, 30)), "W": rng.normal(size=(30, 30))}
    g = NumericEngine(parse(expr, OPS), OPS, values, "complex")._function("W", 0)
    gc.disable()
    try:
        batch = values["W"][None] + 1e-20j
        alive = weakref.ref(batch)
        g(batch)
        del batch
        assert alive() is None
    finally:
        gc.enable()
