"""Speed of Jacobian-mode and gradient-mode checks beside torch.autograd.gradcheck, measured in the same run.

    .venv/bin/python bench/jacobian_bench.py            # N = 3,000 and 10^6, as issue 16 states them
    .venv/bin/python bench/jacobian_bench.py --quick    # smaller sizes
    .venv/bin/python bench/jacobian_bench.py --only softmax   # one row (repeatable)

Every row: best of 3 in this process (warm), and cold (the first check in a fresh process, imports
excluded), for gradcheck and for torch.autograd.gradcheck in slow mode (every entry) and fast mode (one
random projection). float64, one torch thread. Rows:
1. elementwise Jacobian `sin(3*x**3)*exp(-x)`: gradcheck's default checks it on its verified structure
   (and `--full` builds every entry, shown too);
2. softmax full Jacobian (dense: every entry), beside the floor: one batched VJP of the identity, the
   numeric columns, and one comparison |a − n| ≤ atol + rtol·|n|, each timed alone;
3. gradient mode `(sin(3*x**3)*exp(-x)).sum()` at N = 10^6, beside one forward+backward.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import tracemalloc
import warnings

import numpy as np
import torch

from gradcheck_cli import check
from gradcheck_cli.numeric import MEMORY_BUDGET, NumericEngine, choose_method
from gradcheck_cli.ops import OPS
from gradcheck_cli.parse import parse

warnings.filterwarnings("ignore")
ELEMENTWISE = "sin(3*x**3)*exp(-x)"


def f_elementwise(t):
    return torch.sin(3 * t**3) * torch.exp(-t)


def f_softmax(t):
    return torch.softmax(t, 0)


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_mb(fn) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return peak


def _x(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


COLD = """
import time, warnings, torch
warnings.filterwarnings("ignore")
torch.set_num_threads(1)
from gradcheck_cli import check
x = torch.randn({n}, dtype=torch.float64, generator=torch.Generator().manual_seed({seed}))
f = {{"elementwise": lambda t: torch.sin(3 * t**3) * torch.exp(-t), "softmax": lambda t: torch.softmax(t, 0),
     "sum": lambda t: (torch.sin(3 * t**3) * torch.exp(-t)).sum()}}["{fn}"]
start = time.perf_counter()
{body}
print(time.perf_counter() - start)
"""


def cold(body: str, n: int, seed: int, fn: str) -> float:
    """The statement `body` timed as the first work in a fresh process (imports excluded)."""
    code = COLD.format(n=n, seed=seed, fn=fn, body=body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return float(out.stdout.strip().splitlines()[-1])


def bound_mb(entries: int) -> float:
    """The README's stated bound: one batched evaluation (MEMORY_BUDGET) + 64 bytes a Jacobian entry."""
    return MEMORY_BUDGET / 2**20 + 64 * entries / 2**20


def row(label: str, warm: float, cold_s: float, slow: float | None, slow_cold: float | None, fast: float,
        fast_cold: float, extra: str = "") -> None:
    def ratio(theirs: float | None, ours: float) -> str:
        return f"{theirs / ours:7.1f}x" if theirs is not None else f"{'-':>8}"
    slow_text = f"{slow:10.3f}s" if slow is not None else f"{'(cannot)':>11}"
    print(f"{label:40}{warm:9.3f}s{cold_s:9.3f}s{slow_text}{ratio(slow, warm)}{ratio(slow_cold, cold_s)}"
          f"{fast:10.3f}s{ratio(fast, warm)}{ratio(fast_cold, cold_s)}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("elementwise", "softmax", "gradient"), action="append",
                        help="run only this row (repeatable); every row by default")
    args = parser.parse_args()
    torch.set_num_threads(1)
    check("x*2", x=1.0)  # imports and first-call set-up, for the warm figures
    n = 1000 if args.quick else 3000
    big = 10**5 if args.quick else 10**6
    print(f"torch {torch.__version__}, numpy {np.__version__}, float64, 1 torch thread, "
          f"{os.cpu_count()} CPUs; warm = best of 3 in one process, cold = first check in a fresh process")
    print(f"{'case':40}{'ours':>10}{'cold':>10}{'torch slow':>11}{'ratio':>8}{'cold':>8}"
          f"{'torch fast':>11}{'ratio':>8}{'cold':>8}")
    torch_slow = "torch.autograd.gradcheck(f, (x.requires_grad_(),), fast_mode=False)"
    torch_fast = "torch.autograd.gradcheck(f, (x.requires_grad_(),), fast_mode=True)"

    rows = set(args.only or ("elementwise", "softmax", "gradient"))

    if "elementwise" in rows:
        _elementwise_rows(n, args.quick, torch_slow, torch_fast)
    if "softmax" in rows:
        _softmax_row(n, args.quick, torch_slow, torch_fast)
    if "gradient" in rows:
        _gradient_row(big, torch_fast)


def _elementwise_rows(n: int, quick: bool, torch_slow: str, torch_fast: str) -> None:
    x = _x(n, 1)
    xt = x.clone().requires_grad_()
    slow = best(lambda: torch.autograd.gradcheck(f_elementwise, (xt,), fast_mode=False), 1 if quick else 3)
    fast = best(lambda: torch.autograd.gradcheck(f_elementwise, (xt,), fast_mode=True))
    slow_c = cold(torch_slow, n, 1, "elementwise")
    fast_c = cold(torch_fast, n, 1, "elementwise")
    result = check(ELEMENTWISE, x=x)
    assert result.ok and result.inputs["x"].structure is not None
    ours = best(lambda: check(ELEMENTWISE, x=x).ok)
    ours_c = cold(f"assert check({ELEMENTWISE!r}, x=x).ok", n, 1, "elementwise")
    peak = peak_mb(lambda: check(ELEMENTWISE, x=x).ok)
    row(f"elementwise Jacobian N={n} (structured)", ours, ours_c, slow, slow_c, fast, fast_c,
        f"   peak {peak:.1f} MB")
    ours = best(lambda: check(ELEMENTWISE, x=x, fast=False).ok)
    ours_c = cold(f"assert check({ELEMENTWISE!r}, x=x, fast=False).ok", n, 1, "elementwise")
    peak = peak_mb(lambda: check(ELEMENTWISE, x=x, fast=False).ok)
    row(f"elementwise Jacobian N={n}, --full", ours, ours_c, slow, slow_c, fast, fast_c,
        f"   peak {peak:.0f} MB (bound {bound_mb(n * n):.0f})")


def _softmax_row(n: int, quick: bool, torch_slow: str, torch_fast: str) -> None:
    """2. softmax, a dense full Jacobian, against its floor."""
    x = _x(n, 2)
    xt = x.clone().requires_grad_()
    slow = best(lambda: torch.autograd.gradcheck(f_softmax, (xt,), fast_mode=False), 1 if quick else 3)
    fast = best(lambda: torch.autograd.gradcheck(f_softmax, (xt,), fast_mode=True))
    slow_c = cold(torch_slow, n, 2, "softmax")
    fast_c = cold(torch_fast, n, 2, "softmax")
    ours = best(lambda: check("softmax(x)", x=x).ok)
    ours_c = cold("assert check('softmax(x)', x=x).ok", n, 2, "softmax")
    peak = peak_mb(lambda: check("softmax(x)", x=x).ok)
    parts, floor_c = _softmax_floor(x)
    floor = sum(parts)
    row(f"softmax full Jacobian N={n}", ours, ours_c, slow, slow_c, fast, fast_c,
        f"   peak {peak:.0f} MB (bound {bound_mb(n * n):.0f})")
    print(f"{'':40}floor {floor:.3f}s (cold {floor_c:.3f}s) = VJP {parts[0]:.3f} + numeric columns {parts[1]:.3f} "
          f"+ comparison {parts[2]:.3f}: ours = {ours / floor:.2f}x the floor warm, {ours_c / floor_c:.2f}x cold")


def _gradient_row(big: int, torch_fast: str) -> None:
    """3. gradient mode at N = 10^6."""
    x = _x(big, 4)
    xt = x.clone().requires_grad_()
    once = best(lambda: f_elementwise(xt).sum().backward())
    fast = best(lambda: torch.autograd.gradcheck(lambda t: f_elementwise(t).sum(), (xt,), fast_mode=True))
    fast_c = cold(torch_fast, big, 4, "sum")
    expr = f"({ELEMENTWISE}).sum()"
    ours = best(lambda: check(expr, x=x).ok)
    ours_c = cold(f"assert check({expr!r}, x=x).ok", big, 4, "sum")
    peak = peak_mb(lambda: check(expr, x=x).ok)
    row(f"gradient mode N={big:.0e}", ours, ours_c, None, None, fast, fast_c,
        f"   = {ours / once:.1f}x one forward+backward ({once * 1000:.1f} ms); peak {peak:.0f} MB "
        f"(bound {bound_mb(big):.0f})")


FLOOR = """
from gradcheck_cli.batched_grad import grads_batched
from gradcheck_cli.numeric import NumericEngine
from gradcheck_cli.ops import OPS
from gradcheck_cli.parse import parse
import numpy as np
xt = x.clone().requires_grad_()
out = torch.softmax(xt, 0)
(jac,) = grads_batched(out, [xt], torch.eye(x.numel(), dtype=torch.float64))
num = NumericEngine(parse("softmax(x)"), OPS, {"x": x.numpy()}, "complex").derivative("x", 0, None).value
a = jac.numpy()
ok = bool((np.abs(a - num) <= 1e-8 + 1e-8 * np.abs(num)).all())
"""


def _softmax_floor(x: torch.Tensor) -> tuple[tuple[float, float, float], float]:
    """One batched VJP of the identity + the numeric columns (gradcheck's own engine: its method and its
    kernels) + one comparison: each warm best of 3, and all three cold. Cold, the VJP is the one gradcheck
    makes (batched_grad.grads_batched: torch.autograd.grad's own calls without its check of grad_outputs,
    which imports sympy, ~0.6 s in a fresh process), so the floor holds no cost that can be avoided."""
    program = parse("softmax(x)")
    method = choose_method("auto", program, OPS)
    xt = x.clone().requires_grad_()
    out = torch.softmax(xt, 0)
    vjp = best(lambda: torch.autograd.grad(out, xt, torch.eye(x.numel(), dtype=torch.float64),
                                           is_grads_batched=True, retain_graph=True))
    (jac,) = torch.autograd.grad(out, xt, torch.eye(x.numel(), dtype=torch.float64), is_grads_batched=True)
    a = jac.numpy()
    numeric = best(lambda: NumericEngine(program, OPS, {"x": x.numpy()}, method).derivative("x", 0, None))
    d = NumericEngine(program, OPS, {"x": x.numpy()}, method).derivative("x", 0, None).value
    compare = best(lambda: (np.abs(a - d) <= 1e-8 + 1e-8 * np.abs(d)).all())
    return (vjp, numeric, compare), cold(FLOOR, x.numel(), 2, "softmax")


if __name__ == "__main__":
    main()
