"""-j N: the same report for any N (verdicts, messages and every number), on a batch that mixes passes,
failures, errors, expected failures, plugin cases and a timeout; small batches never wait for a worker."""
from __future__ import annotations

import json
import textwrap
import time

import pytest
from click.testing import CliRunner

from gradcheck_cli import run_batch
from gradcheck_cli.cases import Status
from gradcheck_cli.cli import main

PLUGIN = """
import torch

class Scaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k=1.0):
        ctx.save_for_backward(x)
        ctx.k = k
        return x.sin() * k

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x.cos() * ctx.k, None

class Off(torch.autograd.Function):  # backward off by a relative 1e-4
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.exp()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x.exp() * (1 + 1e-4)

OPS = {"scaled": Scaled.apply, "off": Off.apply}
"""

HEAD = """
[[case]]
name = "cubic"
expr = "3*a**3 - b**2"
vars = { a = [2.0, 3.0], b = [6.0, 4.0] }
grad_output = [1.0, 1.0]
expect = { a = [36.0, 81.0], b = [-12.0, -8.0] }

[[case]]
name = "wrong expect"
expr = "3*a**3 - b**2"
vars = { a = [2.0, 3.0], b = [6.0, 4.0] }
grad_output = [1.0, 1.0]
expect = { a = [36.0, 80.0] }

[[case]]
name = "syntax"
expr = "sin(x"

[[case]]
name = "plugin right"
expr = "scaled(x, 2.5).sum()"
vars = { x = "randn(5)" }
plugins = ["ops.py"]

[[case]]
name = "plugin wrong, marked"
expr = "off(x).sum()"
vars = { x = [0.5, -1.0] }
plugins = ["ops.py"]
xfail = "backward is off by 1e-4"

[[case]]
name = "plugin wrong"
expr = "off(x)"
vars = { x = [0.5, -1.0, 2.0] }
plugins = ["ops.py"]

[[case]]
name = "slow"
expr = "(x @ x.T @ x @ x.T).sum()"
vars = { x = "randn(600, 600)" }
method = "richardson"
"""

SMALL = ["softmax(x, dim=-1)", "(sin(x) * exp(-x)).sum()", "tanh(x @ W).sum()", "y = x + 2; z = y*y*3; z.mean()"]
VARS = ['{ x = "randn(2,3)" }', '{ x = "randn(4)" }', '{ x = "randn(3)", W = "randn(3,2)" }', '{ x = "ones(2,3)" }']


def write_batch(tmp_path, small: int = 40) -> str:
    (tmp_path / "ops.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    body = [HEAD]
    for i in range(small):
        body.append(f'[[case]]\nname = "small {i}"\nexpr = "{SMALL[i % 4]}"\nvars = {VARS[i % 4]}\nseed = {i}\n')
    body.append('[[case]]\nname = "last"\nexpr = "x * 2"\nvars = { x = 1.0 }\n')
    path = tmp_path / "mixed.toml"
    path.write_text("\n".join(body), encoding="utf-8")
    return str(path)


def report(path: str, jobs: int) -> dict:
    result = CliRunner().invoke(main, ["batch", path, "--json", "--trust-plugins", "--timeout", "3",
                                       "-j", str(jobs)])
    assert result.exit_code == 2, result.output  # the syntax error and the timeout
    data = json.loads(result.stdout)
    for case in data["cases"]:
        case.pop("seconds")
    return data


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[str, dict]:
    path = write_batch(tmp_path_factory.mktemp("mixed"))
    return path, report(path, 1)


@pytest.mark.parametrize("jobs", [2, 3])
def test_every_jobs_value_gives_the_same_report(mixed, jobs):
    path, one = mixed
    many = report(path, jobs)
    statuses = [c["status"] for c in one["cases"]]
    assert statuses[:7] == [Status.PASS, Status.FAIL, Status.ERROR, Status.PASS, Status.XFAIL, Status.FAIL,
                            Status.ERROR]
    assert "timed out" in one["cases"][6]["message"]
    assert statuses[7:] == [Status.PASS] * 41
    assert [c["name"] for c in many["cases"]] == [c["name"] for c in one["cases"]]
    assert many == one  # every verdict, message and number, in file order


def test_results_hold_the_same_arrays_for_any_jobs(tmp_path):
    path = write_batch(tmp_path, small=24)
    one = run_batch([path], jobs=1, timeout=3, trust_plugins=True)
    two = run_batch([path], jobs=2, timeout=3, trust_plugins=True)
    assert len(one.cases) == len(two.cases) == 32
    for a, b in zip(one.cases, two.cases):
        assert (a.name, a.status, a.message, a.summary) == (b.name, b.status, b.message, b.summary)
        assert (a.result is None) == (b.result is None)
        if a.result is not None:
            for ra, rb in zip(a.result.results(), b.result.results()):
                assert ra.name == rb.name
                assert ra.analytic.tobytes() == rb.analytic.tobytes()
                assert ra.numeric.tobytes() == rb.numeric.tobytes()


def test_a_small_batch_does_not_wait_for_a_worker_to_start(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text('[[case]]\nname = "a"\nexpr = "x * 2"\nvars = { x = 1.0 }\n'
                    '[[case]]\nname = "b"\nexpr = "sin(x)"\nvars = { x = 0.5 }\n', encoding="utf-8")
    run_batch([str(path)], jobs=1)  # this process's first-use imports, outside the timing
    start = time.perf_counter()
    one = run_batch([str(path)], jobs=1)
    alone = time.perf_counter() - start
    start = time.perf_counter()
    two = run_batch([str(path)], jobs=2)
    pooled = time.perf_counter() - start
    assert [c.status for c in two.cases] == [c.status for c in one.cases] == [Status.PASS, Status.PASS]
    # a worker takes seconds to start (spawn, import torch); both cases are done long before that
    assert pooled < alone + 1.5, (pooled, alone)


def _built_in_batch(tmp_path) -> str:
    """HEAD's cases without the plugin ones (a pass, a failure, a syntax error, the timeout), then small ones."""
    head = [c for c in HEAD.split("[[case]]") if c.strip() and "plugins" not in c]
    body = ["[[case]]" + c for c in head]
    for i in range(40):
        body.append(f'[[case]]\nname = "small {i}"\nexpr = "{SMALL[i % 4]}"\nvars = {VARS[i % 4]}\nseed = {i}\n')
    path = tmp_path / "built_in.toml"
    path.write_text("\n".join(body), encoding="utf-8")
    return str(path)


def test_a_built_in_batch_is_shared_with_a_forked_worker_and_reports_the_same(tmp_path, monkeypatch):
    """No plugin code: the worker is forked (it inherits this process's patched run_case, which a spawned
    one would not), it runs part of the batch, its timeout still fires, and the report equals -j 1's."""
    import os
    import sys
    from gradcheck_cli import pool
    if not sys.platform.startswith("linux"):
        pytest.skip("workers are forked on Linux only")
    path = _built_in_batch(tmp_path)
    one = report(path, 1)
    pids = tmp_path / "pids"
    original = pool.run_case

    def noting(case, *args):
        with open(pids, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return original(case, *args)
    monkeypatch.setattr(pool, "run_case", noting)
    two = report(path, 2)
    assert len(set(pids.read_text().split())) == 2  # this process and one forked worker, both busy
    assert [c["status"] for c in one["cases"]][:4] == [Status.PASS, Status.FAIL, Status.ERROR, Status.ERROR]
    assert "timed out" in one["cases"][3]["message"]
    assert two == one


def test_plugin_code_or_threads_get_spawned_workers():
    """A fork shares torch's OpenMP state (plugin code raising the thread count there hangs) and would copy
    a lock another thread holds: those get spawned interpreters."""
    import sys
    import threading
    from gradcheck_cli import pool
    assert pool._context(True).get_start_method() == "spawn"
    alone = "fork" if sys.platform.startswith("linux") and threading.active_count() == 1 else "spawn"
    assert pool._context(False).get_start_method() == alone
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert pool._context(False).get_start_method() == "spawn"
    finally:
        stop.set()
        thread.join()


DYING = """
import os
import torch


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


def die(x):
    os._exit(3)


OPS = {"square": Square.apply, "die": die}
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_worker_that_dies_costs_only_the_case_it_was_running(tmp_path, jobs):
    """Fast cases finish just before one kills its worker, in the same chunk: each keeps its own result
    (none is blamed for the death, none is lost), and the cases after it run on a fresh worker."""
    (tmp_path / "dying.py").write_text(DYING, encoding="utf-8")
    body = []
    for i in range(24):
        expr = "die(x).sum()" if i == 9 else "square(x).sum()"
        body.append(f'[[case]]\nname = "c{i}"\nexpr = "{expr}"\nvars = {{ x = [{i}.0, 1.0] }}\nplugins = ["dying.py"]\n')
    path = tmp_path / "dying.toml"
    path.write_text("\n".join(body), encoding="utf-8")
    batch = run_batch([str(path)], jobs=jobs, trust_plugins=True)
    statuses = [c.status for c in batch.cases]
    assert statuses == [Status.PASS] * 9 + [Status.ERROR] + [Status.PASS] * 14, [c.message for c in batch.cases]
    assert "ended with exit code 3" in batch.cases[9].message
    for i, case in enumerate(batch.cases):
        if i != 9:
            assert case.result.inputs["x"].analytic.tolist() == [2.0 * i, 2.0]  # d/dx sum(x²) = 2x


def test_chunks_shrink_as_the_work_runs_out():
    """Guided scheduling: full chunks while much is left, single cases at the end, so no runner is left
    waiting on the last chunk another took."""
    from gradcheck_cli.pool import MAX_CHUNK, chunk_size
    assert chunk_size(2000, 2) == MAX_CHUNK
    assert chunk_size(100, 2) == 100 // 8
    assert chunk_size(7, 2) == chunk_size(0, 2) == 1
    remaining, taken = 2000, []
    while remaining:
        size = min(chunk_size(remaining, 2), remaining)
        taken.append(size)
        remaining -= size
    assert sum(taken) == 2000 and max(taken) == MAX_CHUNK
    assert taken[-8:] == [1] * 8  # the last cases go one at a time
    assert taken == sorted(taken, reverse=True)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_batch_freezes_the_heap_while_it_runs_and_never_after(tmp_path, jobs):
    """The collector's full passes skip what was in memory before the batch (frozen_heap), during the run
    only: afterwards nothing is left exempt, also when the run was cut short."""
    import gc
    path = _built_in_batch(tmp_path)
    seen = []
    run_batch([path], jobs=jobs, timeout=3, progress=lambda r: seen.append(gc.get_freeze_count()))
    assert len(seen) == 44 and min(seen) > 10_000
    assert gc.get_freeze_count() == 0

    def stop(result):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_batch([path], jobs=jobs, timeout=3, progress=stop)
    assert gc.get_freeze_count() == 0
