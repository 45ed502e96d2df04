"""Batch throughput: cases per second in one process and with -j 2, and per-case overhead against a
single check's own work.

    .venv/bin/python bench/batch_bench.py [--cases 2000] [--size 4]

--size sets the length of the random inputs: small cases measure per-case overhead, larger ones
show what -j buys once a case's own work outweighs starting a worker (spawn + importing torch).
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4)
    args = parser.parse_args()
    check("x*2", x=1.0)  # warm up torch
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, args.cases, args.size)
        own = 0.0
        print(f"{args.cases} cases, inputs of size {args.size}")
        for jobs in (1, 2):
            start = time.perf_counter()
            batch = run_batch([path], jobs=jobs)
            seconds = time.perf_counter() - start
            assert batch.ok, [c for c in batch.cases if c.status != "pass"][:3]
            own = sum(c.seconds for c in batch.cases)
            print(f"-j {jobs}: {seconds:6.2f} s, {args.cases / seconds:7.0f} cases/s"
                  f"  (time inside checks: {own:.2f} s; overhead per case {(seconds - own / jobs) / args.cases * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
