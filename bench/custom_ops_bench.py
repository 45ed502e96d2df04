"""Custom-op corpus: gradcheck against torch.autograd.gradcheck on the same Functions and points.

    .venv/bin/python bench/custom_ops_bench.py

Prints one row a case (expected verdict, ours, torch's) and a caught / missed / false-alarm summary,
for two corpora the test suite uses too: tests/plugins/corpus_ops.py (small ops, wrong in known
shapes) and tests/plugins/realworld_ops.py (real-world-style Functions with non-tensor and optional
arguments, several outputs, in-place ops, wrappers; estimators are counted apart: both tools must
report them as failing, since they are deliberately not the derivative). A check that ends in bad
input (torch refusing a backward's count or shape) counts as caught, for both tools.
"""
from __future__ import annotations

import os
import warnings

import torch

from gradcheck_cli import InputError, check
from gradcheck_cli.custom import defines_jvp
from gradcheck_cli.plugins import load_module

warnings.filterwarnings("ignore")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "plugins", "corpus_ops.py")
REALWORLD = os.path.join(ROOT, "tests", "plugins", "realworld_ops.py")
X = [-1.5, -0.3, 0.4, 2.0]

# (label, expression, op, inputs, dtype, order, expected right?)
CASES = [
    ("softplus, right", "good_softplus(x).sum()", "good_softplus", {"x": X}, "float64", 1, True),
    ("softplus, right, float32", "good_softplus(x).sum()", "good_softplus", {"x": X}, "float32", 1, True),
    ("x³ near 1e4, right", "good_cube(x).sum()", "good_cube", {"x": [1e4, -2e4, 3.5e4]}, "float64", 1, True),
    ("x³, right, float32", "good_cube(x).sum()", "good_cube", {"x": [0.5, -1.25, 2.0]}, "float32", 1, True),
    ("A @ M, right", "good_mat(A)", "good_mat", {"A": [[0.3, -1.2], [0.8, 2.0]]}, "float64", 1, True),
    ("x² with jvp, right", "square_jvp(x).sum()", "square_jvp", {"x": X}, "float64", 1, True),
    ("softplus, backward × 2", "double_softplus(x).sum()", "double_softplus", {"x": X}, "float64", 1, False),
    ("softplus, sign flipped", "flipped_softplus(x).sum()", "flipped_softplus", {"x": X}, "float64", 1, False),
    ("softplus, wrong where x < 0", "negbranch_softplus(x).sum()", "negbranch_softplus", {"x": X}, "float64", 1, False),
    ("softplus, backward × (1 + 1e-6)", "tiny_softplus(x).sum()", "tiny_softplus", {"x": X}, "float64", 1, False),
    ("A @ M, gradient transposed", "transposed_mat(A)", "transposed_mat", {"A": [[0.3, -1.2], [0.8, 2.0]]}, "float64", 1, False),
    ("x², jvp missing a factor 2", "square_wrong_jvp(x).sum()", "square_wrong_jvp", {"x": X}, "float64", 1, False),
    ("x³, backward not differentiable (order 2)", "cube_flat(x).sum()", "cube_flat", {"x": X}, "float64", 2, False),
]


def torch_verdict(fn, inputs: dict, dtype: str, order: int) -> bool:
    tensors = tuple(torch.tensor(v, dtype=getattr(torch, dtype), requires_grad=True) for v in inputs.values())
    kwargs = dict(raise_exception=False, check_forward_ad=defines_jvp(fn))
    try:
        ok = torch.autograd.gradcheck(fn, tensors, **kwargs)
        if ok and order == 2:
            ok = torch.autograd.gradgradcheck(fn, tensors, raise_exception=False)
        return ok
    except Exception:  # torch refuses some inputs (e.g. float32 without fast_mode tweaks): count as a failure
        return False


def _tally(tally: dict, name: str, right: bool, verdict: bool) -> None:
    if not right and not verdict:
        tally[name][0] += 1
    elif not right:
        tally[name][1] += 1
    elif not verdict:
        tally[name][2] += 1


def _print(title: str, rows: list, tally: dict) -> None:
    word = {True: "pass", False: "FAIL"}
    print(f"{title:44}{'op is':>10}{'gradcheck':>11}{'torch gradcheck':>17}")
    for label, truth, ours, theirs in rows:
        print(f"{label[:43]:44}{truth:>10}{word[ours]:>11}{word[theirs]:>17}")
    print(f"\n{'':20}{'caught':>8}{'missed':>8}{'false alarm':>13}")
    for name, (caught, missed, false) in tally.items():
        print(f"{name:20}{caught:8}{missed:8}{false:13}")
    print()


def small_corpus() -> None:
    ops = load_module(CORPUS).OPS
    rows, tally = [], {"gradcheck": [0, 0, 0], "torch": [0, 0, 0]}  # caught, missed, false alarm
    for label, expr, op, inputs, dtype, order, right in CASES:
        ours = check(expr, plugins=[CORPUS], dtype=dtype, order=order, **inputs).ok
        theirs = torch_verdict(ops[op], inputs, dtype, order)
        for name, verdict in (("gradcheck", ours), ("torch", theirs)):
            _tally(tally, name, right, verdict)
        rows.append((label, "right" if right else "wrong", ours, theirs))
    _print("small corpus (corpus_ops.py)", rows, tally)


def realworld_corpus() -> None:
    module = load_module(REALWORLD)
    rows, tally = [], {"gradcheck": [0, 0, 0], "torch": [0, 0, 0]}
    estimators = {"gradcheck": 0, "torch": 0}  # reported as failing, as they must be
    for label, expr, values, wrt, kind, call in module.CASES:
        try:
            ours = check(expr, plugins=[REALWORLD], wrt=wrt, **values).ok
        except InputError:
            ours = False
        names = list(values) if wrt is None else wrt.split(",")
        env = {n: torch.tensor(v, dtype=torch.float64, requires_grad=n in names) for n, v in values.items()}
        try:
            theirs = torch.autograd.gradcheck(lambda *ts: call(module.OPS, {**env, **dict(zip(names, ts))}),
                                              tuple(env[n] for n in names), raise_exception=False)
        except Exception:  # torch refuses the backward (count, shape): a failure
            theirs = False
        if kind == "estimator":
            estimators["gradcheck"] += not ours
            estimators["torch"] += not theirs
        else:
            for name, verdict in (("gradcheck", ours), ("torch", theirs)):
                _tally(tally, name, kind == "right", verdict)
        rows.append((label, kind, ours, theirs))
    right = sum(kind == "right" for *_, kind, _ in module.CASES)
    wrong = sum(kind == "wrong" for *_, kind, _ in module.CASES)
    count = sum(kind == "estimator" for *_, kind, _ in module.CASES)
    _print(f"real-world corpus: {right} right, {wrong} wrong", rows, tally)
    print(f"estimators (straight-through, gradient reversal) reported as failing: gradcheck "
          f"{estimators['gradcheck']} of {count}, torch {estimators['torch']} of {count}")


def main() -> None:
    small_corpus()
    realworld_corpus()


if __name__ == "__main__":
    main()
