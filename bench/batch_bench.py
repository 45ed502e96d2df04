"""Batch throughput: cases per second with -j 1 (one process) and -j 2 (this process beside one warm
worker), and per-case overhead against a single check's own work.

    .venv/bin/python bench/batch_bench.py [--cases 2000] [--size 4] [--repeat 3]

The two settings are run interleaved (-j 1, -j 2, -j 1, ...) and the best of --repeat runs of each is
kept, so load from other processes on a shared machine hits both alike; the load average is printed
beside every figure. Beside them runs the machine's own ceiling for -j 2: two independent processes,
each running half of the cases with -j 1, started together once both are warm (no pool, nothing sent
between them). On a virtual machine two busy vCPUs may slow each other (shared physical cores, a busy
host): that ceiling says how much of a shortfall from 2x is the machine's, and -j 2 against it is the
pool's own efficiency. Every run checks the same 2,000 cases, and the results of -j 1 and -j 2 must be
identical (status, message and numbers), or the bench fails.
--size sets the length of the random inputs: small cases measure per-case overhead, larger ones
show what -j buys once a case's own work outweighs a round trip.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
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


HALF = """
import sys, time
import torch
from gradcheck_cli import run_batch
torch.set_num_threads(1)  # as each runner of -j 2 (two processes on two cores, each on torch's default
                          # of two threads, spin against each other in OpenMP: twice as slow)
run_batch([sys.argv[1]], jobs=1)  # warm: torch's first-use imports, this process's first cases
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
assert run_batch([sys.argv[1]], jobs=1).ok
print(time.perf_counter() - start, flush=True)
"""


def two_processes(halves: list[str]) -> float:
    """Seconds from 'go' until both of two warm -j 1 processes, one per half, are done."""
    children = [subprocess.Popen([sys.executable, "-c", HALF, half], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True) for half in halves]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    start = time.perf_counter()
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        float(child.stdout.readline())
    seconds = time.perf_counter() - start
    for child in children:
        child.stdin.close()
        child.wait()
    return seconds


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
    ceiling = []
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, args.cases, args.size)
        halves = []
        for k in range(2):
            os.makedirs(os.path.join(tmp, f"half{k}"))
            halves.append(write(os.path.join(tmp, f"half{k}"), args.cases // 2, args.size))
        for attempt in range(args.repeat):
            ceiling.append(two_processes(halves))
            print(f"  run {attempt + 1}, two -j 1 processes on half each: {ceiling[-1]:6.2f} s", flush=True)
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
    print(f"two -j 1 processes on half each: {min(ceiling):.2f} s, {best[1][0] / min(ceiling):.2f}x -j 1 (the machine's "
          "ceiling for -j 2)")
    print(f"-j 2 against -j 1: {best[1][0] / best[2][0]:.2f}x; against the ceiling: {min(ceiling) / best[2][0]:.0%} of it")


if __name__ == "__main__":
    main()
