"""Say what a disagreement looks like when it has a simple shape.

A wrong backward usually goes wrong in a recognisable way: a constant factor (a forgotten 1/2, a
doubled term), a sign flip, a branch (wrong only where the input is negative), a transpose, or
nothing at all (zeros: a detached input, a backward that ignores grad_output). Anything else is
reported plainly with the failing indices.
"""
from __future__ import annotations

import numpy as np

_SAME = 1e-3  # relative spread under which ratios count as one constant


def _indices(mask: np.ndarray, limit: int = 4) -> str:
    flat = np.flatnonzero(mask.reshape(-1))
    shown = ", ".join(str(list(map(int, np.unravel_index(k, mask.shape)))) for k in flat[:limit])
    more = f" and {flat.size - limit} more" if flat.size > limit else ""
    return f"{shown}{more}" if mask.shape else "[]"


def _constant_ratio(analytic: np.ndarray, numeric: np.ndarray, atol: float) -> float | None:
    """analytic / numeric when it is one constant over the elements where numeric is not ~0."""
    big = np.abs(numeric) > max(atol, 1e-300) * 10
    if not big.any():
        return None
    ratio = analytic[big] / numeric[big]
    center = float(np.median(ratio))
    if np.all(np.abs(ratio - center) <= _SAME * max(abs(center), 1e-12)):
        return center
    return None


def _ratio_phrase(ratio: float | None) -> str:
    if ratio is None:
        return ""
    if abs(ratio + 1) < _SAME:
        return "sign flipped: analytic = −numeric"
    if abs(ratio) < _SAME:
        return "analytic is zero where numeric is not: is the input detached, or is grad_output ignored?"
    if abs(ratio - 1) < _SAME:  # near 1, print the excess: 1.000001 would read as "1"
        return f"a constant factor: analytic = (1 {'+' if ratio > 1 else '−'} {abs(ratio - 1):.2g}) × numeric"
    return f"a constant factor: analytic = {ratio:.6g} × numeric"


def diagnose(analytic: np.ndarray, numeric: np.ndarray, value: np.ndarray, passed: np.ndarray,
             atol: float) -> str:
    """One line on the shape of the disagreement, or "" when every element passed."""
    if passed.all():
        return ""
    failing = ~passed
    finite = np.isfinite(analytic) & np.isfinite(numeric)
    if not finite[failing].all():
        return f"non-finite gradient at {_indices(failing & ~finite)}"
    where = f"wrong at {_indices(failing)} ({int(failing.sum())} of {failing.size} elements)"
    overall = _ratio_phrase(_constant_ratio(analytic, numeric, atol))
    if overall:
        return f"{overall}; {where}"
    value = np.asarray(value)
    if analytic.shape == value.shape and value.size > 1:
        for label, mask in (("negative", value < 0), ("positive", value > 0), ("zero", value == 0)):
            if mask.any() and (~mask).any() and np.array_equal(failing, mask):
                there = _ratio_phrase(_constant_ratio(analytic[mask], numeric[mask], atol))
                return f"wrong only where the input is {label}" + (f" (there {there})" if there else "")
    if analytic.ndim == 2 and analytic.shape[0] == analytic.shape[1] > 1:
        if np.allclose(analytic, numeric.T, rtol=1e-6, atol=atol) and not np.allclose(analytic, numeric):
            return "transposed: analytic = numeric.T"
    return where
