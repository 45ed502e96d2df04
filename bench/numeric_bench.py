"""Numeric engine against torch.autograd.gradcheck, measured in the same run.

    .venv/bin/python bench/numeric_bench.py            # all three tables
    .venv/bin/python bench/numeric_bench.py --quick    # smaller sizes

1. Accuracy: our numeric derivative (method auto) and torch's numeric side (central differences with
   its fixed eps=1e-6, as torch.autograd.gradcheck computes them) against sympy's exact derivative,
   over function/point cases at ordinary, large (1e3..1e8) and small (1e-6..1e-9) magnitudes.
   Hard points (tiny, huge, next to a pole) with the verdicts on those correct ops, both sides.
2. Detection: a custom backward wrong by a relative 1e-1 .. 1e-8; false alarms on the correct op at
   20 random points and on correct ops at hard points, both sides.
3. Speed and memory: full per-element checks, ours vs torch's slow mode.
"""
from __future__ import annotations

import argparse
import math
import time
import tracemalloc
import warnings

import numpy as np
import sympy as sp
import torch

from gradcheck_cli import check
from gradcheck_cli.numeric import MEMORY_BUDGET, NumericEngine, choose_method
from gradcheck_cli.ops import OPS
from gradcheck_cli.parse import parse

warnings.filterwarnings("ignore")
X = sp.Symbol("x")

# name → (sympy expression, torch function, points)
ORDINARY = [0.3, 0.7, 1.3, 2.1, -0.9, -1.7]
LARGE = [1e3, 3e4, 1e5, 1e6, 1e8]
SMALL = [1e-6, 1e-7, 1e-8, 1e-9]
CORPUS = {
    "sin": (sp.sin(X), torch.sin, ORDINARY + LARGE + SMALL),
    "cos": (sp.cos(X), torch.cos, ORDINARY + LARGE + SMALL),
    "exp": (sp.exp(X), torch.exp, ORDINARY + [10.0, 30.0, 300.0] + SMALL),
    "log": (sp.log(X), torch.log, [0.3, 0.7, 1.3, 2.1] + LARGE + SMALL),
    "sqrt": (sp.sqrt(X), torch.sqrt, [0.3, 0.7, 1.3, 2.1] + LARGE + SMALL),
    "tanh": (sp.tanh(X), torch.tanh, ORDINARY + [5.0, 10.0] + SMALL),
    "x**3": (X**3, lambda t: t**3, ORDINARY + LARGE + SMALL),
    "log1p": (sp.log(1 + X), torch.log1p, [0.3, 0.7, 1.3, 2.1] + LARGE + SMALL),
    "sigmoid": (1 / (1 + sp.exp(-X)), torch.sigmoid, ORDINARY + [20.0, -20.0] + SMALL),
    "sin(3x^3)exp(-x)": (sp.sin(3 * X**3) * sp.exp(-X), lambda t: torch.sin(3 * t**3) * torch.exp(-t),
                         ORDINARY + [10.0] + SMALL),
}
EXPR = {"x**3": "x**3", "sin(3x^3)exp(-x)": "sin(3*x**3)*exp(-x)"}


def exact(f: sp.Expr, x: float) -> float:
    return float(sp.diff(f, X).subs(X, sp.Float(repr(x), 60)).evalf(40))


def torch_numeric(fn, x: float, eps: float = 1e-6) -> float:
    t = torch.tensor(x, dtype=torch.float64)
    return float((fn(t + eps) - fn(t - eps)) / (2 * eps))


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300) if math.isfinite(a) else math.inf


# points nearer a domain edge than any default step: only Richardson's edge handling (one-sided
# differences, ladders restarted inside the domain) copes; torch's eps=1e-6 crosses the edge (nan)
EDGE = {
    "log": (sp.log(X), torch.log, [1e-9, 1e-11, 1e-13, 1e-15]),
    "sqrt": (sp.sqrt(X), torch.sqrt, [1e-9, 1e-12, 1e-15]),
    "log1p": (sp.log(1 + X), torch.log1p, [-1 + 2.0**-30, -1 + 2.0**-40]),
    "x*sqrt(x)": (X * sp.sqrt(X), lambda t: t * torch.sqrt(t), [1e-10, 1e-14]),
}
EXPR["x*sqrt(x)"] = "x*sqrt(x)"

# hard points: tiny |x| (where a fixed step is no small step), huge |x|, next to a pole
HALF_PI = float(sp.pi / 2)
HARD = {
    "1/x": (1 / X, lambda t: 1 / t, [1e-12, 1e-15, 1e-18, -3e-17, 1e-100]),
    "log": (sp.log(X), torch.log, [1e-16, 1e-18, 1e-20, 1e-200]),
    "sqrt": (sp.sqrt(X), torch.sqrt, [1e-16, 1e-19, 1e-250]),
    "tan": (sp.tan(X), torch.tan, [HALF_PI - 1e-6, HALF_PI - 1e-9, -HALF_PI + 1e-7]),
    "1/(x-1)": (1 / (X - 1), lambda t: 1 / (t - 1), [1 + 1e-7, 1 - 1e-9]),
    "exp": (sp.exp(X), torch.exp, [500.0, 700.0, -700.0]),
    "x**3": (X**3, lambda t: t**3, [1e10, 1e50, -1e30]),
    "sin": (sp.sin(X), torch.sin, [1e10, 1e12, 1e15]),
}
EXPR.update({"1/x": "1/x", "1/(x-1)": "1/(x-1)"})


def ours(name: str, x: float, method: str = "auto") -> float:
    program = parse(EXPR.get(name, f"{name}(x)"))
    engine = NumericEngine(program, OPS, {"x": np.array(x)}, choose_method(method, program, OPS))
    return float(engine.derivative("x", 0, np.array(1.0)).value)


def _summary(label: str, arr: np.ndarray) -> None:
    finite = np.where(np.isfinite(arr), arr, 1e300)
    print(f"{label:30}{np.median(finite):12.1e}{np.percentile(finite, 90):12.1e}{finite.max():12.1e}"
          f"{int((finite > 1e-4).sum()):8d}")


def accuracy() -> None:
    mine, theirs, rows = [], [], 0
    for name, (f, fn, points) in CORPUS.items():
        for x in points:
            truth = exact(f, x)
            mine.append(rel(ours(name, x), truth))
            theirs.append(rel(torch_numeric(fn, x), truth))
            rows += 1
    print(f"\n1. Accuracy over {rows} function/point cases (relative error of the numeric derivative vs sympy)")
    print(f"{'':30}{'median':>12}{'p90':>12}{'max':>12}{'> 1e-4':>8}")
    _summary("gradcheck (auto)", np.array(mine))
    _summary("torch numeric eps=1e-6", np.array(theirs))
    edge_ours, edge_central, edge_torch = [], [], []
    for name, (f, fn, points) in EDGE.items():
        for x in points:
            truth = exact(f, x)
            edge_ours.append(rel(ours(name, x, "richardson"), truth))
            edge_central.append(rel(ours(name, x, "central"), truth))
            edge_torch.append(rel(torch_numeric(fn, x), truth))
    print(f"near a domain edge ({len(edge_ours)} cases: log, sqrt at 1e-9..1e-15, log1p at -1 + 2^-30..2^-40; "
          "non-finite counts as 1e300)")
    _summary("gradcheck --method richardson", np.array(edge_ours))
    _summary("gradcheck --method central", np.array(edge_central))
    _summary("torch numeric eps=1e-6", np.array(edge_torch))
    hard_ours, hard_torch, verdicts = [], [], {"pass": 0, "unreliable": 0, "fail": 0}
    torch_alarms = 0
    for name, (f, fn, points) in HARD.items():
        for x in points:
            truth = exact(f, x)
            hard_ours.append(rel(ours(name, x), truth))
            hard_torch.append(rel(torch_numeric(fn, x), truth))
            r = check(EXPR.get(name, f"{name}(x)"), x=x).inputs["x"]
            verdicts["pass" if r.passed.all() else "fail" if r.wrong.any() else "unreliable"] += 1
            t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
            torch_alarms += not torch.autograd.gradcheck(fn, (t,), raise_exception=False)
    print(f"hard points ({len(hard_ours)} cases: 1/x, log, sqrt at 1e-12..1e-250; tan and 1/(x-1) within 1e-6..1e-9 "
          "of a pole; exp at ±500..700; x^3 at 1e10..1e50; sin at 1e10..1e15)")
    _summary("gradcheck (auto)", np.array(hard_ours))
    _summary("torch numeric eps=1e-6", np.array(hard_torch))
    print(f"verdicts on these correct ops: gradcheck {verdicts['pass']} pass, {verdicts['unreliable']} unreliable, "
          f"{verdicts['fail']} false alarms; torch.autograd.gradcheck {len(hard_ours) - torch_alarms} pass, "
          f"{torch_alarms} false alarms")


class Scaled(torch.autograd.Function):
    """softplus with a backward scaled by (1 + error)."""

    error = 0.0

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x) * (1 + Scaled.error)


def detection(tmpdir: str) -> None:
    import os
    plugin = os.path.join(tmpdir, "scaled_plugin.py")
    with open(plugin, "w") as handle:
        handle.write("import sys\nsys.path.insert(0, %r)\nfrom numeric_bench import Scaled\nOPS = {'scaled': Scaled.apply}\n"
                     % os.path.dirname(os.path.abspath(__file__)))
    print("\n2. Detection: softplus with a backward wrong by a relative error (x = randn(8), float64)")
    print(f"{'relative error':>16}{'gradcheck':>12}{'gradcheck --fast':>18}{'gradcheck --rtol 1e-9':>23}"
          f"{'torch gradcheck':>17}")
    x = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    import numeric_bench as me  # the plugin imports this module by name: patch the same class
    for err in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8):
        me.Scaled.error = err
        r = check("scaled(x).sum()", x=x, plugins=[plugin])
        r_fast = check("scaled(x).sum()", x=x, plugins=[plugin], fast=True)
        r_tight = check("scaled(x).sum()", x=x, plugins=[plugin], rtol=1e-9, atol=1e-12)
        xt = x.clone().requires_grad_()
        caught_torch = not torch.autograd.gradcheck(lambda t: me.Scaled.apply(t).sum(), (xt,), raise_exception=False)
        print(f"{err:16.0e}{'caught' if not r.ok else 'MISSED':>12}{'caught' if not r_fast.ok else 'MISSED':>18}"
              f"{'caught' if not r_tight.ok else 'MISSED':>23}"
              f"{'caught' if caught_torch else 'MISSED':>17}")
    me.Scaled.error = 0.0
    ours_alarms = torch_alarms = 0
    for seed in range(20):  # the correct op at 20 random points: false alarms on both sides
        xs = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(100 + seed)) * 3
        ours_alarms += not check("scaled(x).sum()", x=xs, plugins=[plugin]).ok
        xt = xs.clone().requires_grad_()
        torch_alarms += not torch.autograd.gradcheck(lambda t: me.Scaled.apply(t).sum(), (xt,), raise_exception=False)
    print(f"{'correct (0)':>16}: false alarms over 20 random points: gradcheck {ours_alarms}, torch gradcheck {torch_alarms}")
    print(f"\n{'correct op at a hard point':34}{'gradcheck':>12}{'torch gradcheck':>17}")
    hard = [("sin(x)", torch.sin, 1e8, torch.float64), ("log(x)", torch.log, 1e-7, torch.float64),
            ("x**3", lambda t: t**3, 1e5, torch.float64), ("exp(x)", torch.exp, 30.0, torch.float64),
            ("tanh(x)", torch.tanh, 10.0, torch.float64), ("sigmoid(x)", torch.sigmoid, -20.0, torch.float64),
            ("sin(x)", torch.sin, 0.7, torch.float32), ("tanh(x)", torch.tanh, 0.7, torch.float32)]
    for expr, fn, point, dtype in hard:
        r = check(expr, x=point, dtype=str(dtype).replace("torch.", ""))
        t = torch.tensor(point, dtype=dtype, requires_grad=True)
        torch_ok = torch.autograd.gradcheck(fn, (t,), raise_exception=False, fast_mode=False)
        label = f"{expr} at {point:g} ({str(dtype).replace('torch.', '')})"
        unsure = not r.ok and not any(g.wrong.any() for g in r.results())
        ours_text = "pass" if r.ok else "unreliable" if unsure else "FALSE ALARM"
        print(f"{label:34}{ours_text:>12}{'pass' if torch_ok else 'FALSE ALARM':>17}")


def timed(fn, repeat: int = 1) -> tuple[float, float]:
    """(best wall time of `repeat` runs, tracemalloc peak MB of the first run)."""
    best, peak = math.inf, 0.0
    for i in range(repeat):
        if i == 0:
            tracemalloc.start()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        if i == 0:
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    return best, peak


def bound_mb(entries: int) -> float:
    """The stated peak-memory bound: one batched evaluation (MEMORY_BUDGET) plus 64 bytes a compared entry
    (analytic, numeric, error estimate, abs/rel error, tolerance, verdicts)."""
    return MEMORY_BUDGET / 2**20 + 64 * entries / 2**20


def _row(label: str, ours_s: float, theirs: float | str, peak: float, entries: int, extra: str = "") -> None:
    ratio = f"{theirs / ours_s:8.1f}x" if isinstance(theirs, float) else f"{'':9}"
    theirs_text = f"{theirs:11.3f}s" if isinstance(theirs, float) else f"{theirs:>12}"
    bound = bound_mb(entries)
    print(f"{label:44}{ours_s:10.3f}s{theirs_text}{ratio}{peak:9.1f}{bound:9.0f}{'yes' if peak <= bound else 'NO':>7}{extra}")


def speed(quick: bool) -> None:
    print("\n3. Speed and memory (float64; best of 3 runs for both sides; peak = tracemalloc peak of our check,")
    print("   bound = 256 MB per batched evaluation + 64 bytes a compared entry)")
    print(f"{'case':44}{'gradcheck':>11}{'torch slow':>12}{'ratio':>9}{'peak MB':>9}{'bound':>9}{'within':>7}")
    f = lambda t: torch.sin(3 * t**3) * torch.exp(-t)  # noqa: E731
    for n in (1000, 3000):
        x = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        ours_s, peak = timed(lambda: check("sin(3*x**3)*exp(-x)", x=x, grad_output=torch.ones(n)), 3)
        xt = x.clone().requires_grad_()
        theirs, _ = timed(lambda: torch.autograd.gradcheck(f, (xt,), fast_mode=False), 1 if quick else 3)
        _row(f"sin(3x^3)exp(-x), N={n}", ours_s, theirs, peak, n)
    for n in (1000,) if quick else (1000, 3000):
        x = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        ours_s, peak = timed(lambda: check("softmax(x)", x=x, fast=False), 3)  # every entry, as torch's slow mode
        xt = x.clone().requires_grad_()
        theirs, _ = timed(lambda: torch.autograd.gradcheck(lambda t: torch.softmax(t, 0), (xt,), fast_mode=False),
                          1 if quick else 3)
        _row(f"softmax, full Jacobian, N={n}", ours_s, theirs, peak, n * n)
    n = 10**5 if quick else 10**6
    x = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ours_s, peak = timed(lambda: check("(sin(3*x**3)*exp(-x)).sum()", x=x))
    xt = x.clone().requires_grad_()
    once, _ = timed(lambda: f(xt).sum().backward(), 3)
    _row(f"sin(3x^3)exp(-x).sum(), N={n}", ours_s, "(cannot)", peak, n,
         f"   = {ours_s / once:.0f}x one forward+backward ({once * 1000:.1f} ms)")
    # projected checks (--fast): 16 directions; torch's fast_mode (1 direction, eps=1e-6) beside
    side = 1000 if quick else 2000
    x = torch.randn(side, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    w = torch.randn(side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) / side**0.5
    ours_s, peak = timed(lambda: check("(x @ W).tanh().sum()", x=x, W=w, fast=True))
    xt, wt = x.clone().requires_grad_(), w.clone().requires_grad_()
    theirs, _ = timed(lambda: torch.autograd.gradcheck(lambda a, b: (a @ b).tanh().sum(), (xt, wt), fast_mode=True))
    _row(f"(x@W).tanh().sum(), W {side}x{side}, --fast", ours_s, f"fast {theirs:.3f}s", peak, 16)
    n = 10**5 if quick else 10**6
    x = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    ours_s, peak = timed(lambda: check("softmax(x)", x=x))  # auto: a Jacobian of 1e12 entries is projected
    xt = x.clone().requires_grad_()
    theirs, _ = timed(lambda: torch.autograd.gradcheck(lambda t: torch.softmax(t, 0), (xt,), fast_mode=True))
    _row(f"softmax, Jacobian N={n}, auto (projected)", ours_s, f"fast {theirs:.3f}s", peak, 16)


def main() -> None:
    import sys
    import tempfile
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
    torch.set_num_threads(1)
    check("x*2", x=1.0)  # warm up imports
    print(f"torch {torch.__version__}, numpy {np.__version__}")
    accuracy()
    with tempfile.TemporaryDirectory() as tmp:
        detection(tmp)
    speed(args.quick)


if __name__ == "__main__":
    main()
