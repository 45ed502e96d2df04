"""Batch throughput: cases per second with -j 1 (one process) and -j 2 (this process beside one warm
worker), and per-case overhead against a single check's own work.

    .venv/bin/python bench/batch_bench.py [--cases 2000] [--size 4] [--repeat 3]

The two settings are run interleaved (-j 1, -j 2, -j 1, ...) and the best of --repeat runs of each is
kept, so load from other processes on a shared machine hits both alike; the load average is printed
beside every figure. Every run checks the same 2,000 cases, and the results of -j 1 and -j 2 must be
identical (status, message and numbers), or the bench fails.
--size sets the length of the random inputs: small cases measure per-case overhead, larger ones
show what -j buys once a case's own work outweighs a round trip.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from gradcheck_cli import check, run_batch

CASES = ["3*a**3 - b**2", "(sin(x) * exp(-x)).sum()", "softmax(x, dim=-1)", "y = x + 2; z = y*y*3; z.mean()",
         "w[0]**2 + 2*w[1]**2", "tanh(x @ W).sum()"]
VARS = ['{ a = [2.0, 3.0], b = [6.0, 4.0] }', '{ x = "randn(SIZE)" }', '{ x = "randn(2,SIZE)" }',
        '{ x = "ones(2,SIZE)" }', '{ w = [0.5, 0.5] }', '{ x = "randn(SIZE)", W = "randn(SIZE,2)" }']


def write(folder: str, count: int, size: int) -> str:
    path = os.path.join(folder, "many.toml")
    with open(path, "w") as handle:
        for i in range(count):
            k = i % len(CASES)
            extra = 'grad_output = [1.0, 1.0]\n' if k == 0 else ""
            values = VARS[k].replace("SIZE", str(size))
            handle.write(f'[[case]]\nname = "c{i}"\nexpr = "{CASES[k]}"\nvars = {values}\nseed = {i}\n{extra}\n')
    return path


def fingerprint(batch) -> list:
    """What must not depend on -j: each case's verdict, message and compared numbers."""
    rows = []
    for c in batch.cases:
        numbers = ()
        if c.result is not None:
            numbers = tuple((r.name, r.analytic.tobytes(), r.numeric.tobytes()) for r in c.result.results())
        rows.append((c.file, c.line, c.name, c.status, c.message, c.summary, numbers))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    check("x*2", x=1.0)  # warm up torch
    print(f"{args.cases} cases, inputs of size {args.size}, {os.cpu_count()} cores; best of {args.repeat}, "
          "-j 1 and -j 2 interleaved")
    best: dict[int, tuple[float, float, tuple[float, ...]]] = {}
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, args.cases, args.size)
        for attempt in range(args.repeat):
            for jobs in (1, 2):
                load = os.getloadavg()
                start = time.perf_counter()
                batch = run_batch([path], jobs=jobs)
                seconds = time.perf_counter() - start
                assert batch.ok, [c for c in batch.cases if c.status != "pass"][:3]
                own = sum(c.seconds for c in batch.cases)
                print(f"  run {attempt + 1}, -j {jobs}: {seconds:6.2f} s, {args.cases / seconds:6.0f} cases/s  "
                      f"(inside checks {own:.2f} s; load before {load[0]:.2f})", flush=True)
                if jobs == 1 and reference is None:
                    reference = fingerprint(batch)
                elif fingerprint(batch) != reference:
                    raise SystemExit(f"-j {jobs} gave different results from -j 1")
                if jobs not in best or seconds < best[jobs][0]:
                    best[jobs] = (seconds, own, load)
    for jobs, (seconds, own, load) in sorted(best.items()):
        print(f"-j {jobs}: {args.cases / seconds:6.0f} cases/s, {seconds:.2f} s (inside checks {own:.2f} s, overhead "
              f"per case {(seconds - own / jobs) / args.cases * 1e3:.2f} ms; load {load[0]:.2f} {load[1]:.2f} "
              f"{load[2]:.2f})")
    print(f"-j 2 against -j 1: {best[1][0] / best[2][0]:.2f}x")


if __name__ == "__main__":
    main()
