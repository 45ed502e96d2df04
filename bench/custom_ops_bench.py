"""Custom-op corpus: gradcheck against torch.autograd.gradcheck on the same Functions and points.

    .venv/bin/python bench/custom_ops_bench.py

Prints one row a case (expected verdict, ours, torch's) and a caught / missed / false-alarm summary.
The corpus is tests/plugins/corpus_ops.py, the same one the test suite uses.
"""
from __future__ import annotations

import os
import warnings

import torch

from gradcheck_cli import check
from gradcheck_cli.custom import defines_jvp
from gradcheck_cli.plugins import load_module

warnings.filterwarnings("ignore")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "plugins", "corpus_ops.py")
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


def main() -> None:
    ops = load_module(CORPUS).OPS
    rows, tally = [], {"gradcheck": [0, 0, 0], "torch": [0, 0, 0]}  # caught, missed, false alarm
    for label, expr, op, inputs, dtype, order, right in CASES:
        ours = check(expr, plugins=[CORPUS], dtype=dtype, order=order, **inputs).ok
        theirs = torch_verdict(ops[op], inputs, dtype, order)
        for name, verdict in (("gradcheck", ours), ("torch", theirs)):
            if not right and not verdict:
                tally[name][0] += 1
            elif not right:
                tally[name][1] += 1
            elif not verdict:
                tally[name][2] += 1
        rows.append((label, "right" if right else "wrong", ours, theirs))
    word = {True: "pass", False: "FAIL"}
    print(f"{'case':44}{'op is':>7}{'gradcheck':>11}{'torch gradcheck':>17}")
    for label, truth, ours, theirs in rows:
        print(f"{label:44}{truth:>7}{word[ours]:>11}{word[theirs]:>17}")
    print(f"\n{'':20}{'caught':>8}{'missed':>8}{'false alarm':>13}")
    for name, (caught, missed, false) in tally.items():
        print(f"{name:20}{caught:8}{missed:8}{false:13}")


if __name__ == "__main__":
    main()
