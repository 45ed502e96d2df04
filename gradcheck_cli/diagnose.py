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


def _constant_ratio(analytic: np.ndarray, numeric: np.ndarray, atol: float, bound: np.ndarray,
                    failing: np.ndarray) -> float | None:
    """analytic / numeric when it is one constant, within each ratio's own spread, over the elements where
    numeric stands clear of zero, and that constant explains every failing element (none of which may sit
    against a numeric zero: no factor turns 0 into something). None otherwise."""
    with np.errstate(all="ignore"):
        big = np.abs(numeric) > 10 * (max(atol, 1e-300) + bound)
    if not big.any() or (failing & ~big).any():
        return None
    a, n, b = analytic[big], numeric[big], bound[big]
    ratio = a / n
    center = float(np.median(ratio))
    # a ratio's spread: the numeric side's bound and a few roundings of each side, relative to |numeric|
    spread = float(np.max((b + 1e-15 * (np.abs(a) + np.abs(n))) / np.abs(n) * (1 + np.abs(ratio))))
    deviation = float(np.max(np.abs(ratio - center)))
    departure = abs(center - 1)
    if departure <= 10 * spread:  # indistinguishable from 1: the failures are not a factor
        return None
    if deviation <= max(spread, 1e-3 * departure) and deviation <= 0.1 * departure:
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
             atol: float, bound: np.ndarray | float = 0.0) -> str:
    """One line on the shape of the disagreement, or "" when every element passed.

    `bound` is the numeric side's error bound per element: a factor is claimed only when the ratios agree
    within it."""
    if passed.all():
        return ""
    failing = ~passed
    bound = np.broadcast_to(np.nan_to_num(np.asarray(bound, dtype=np.float64), nan=np.inf), np.shape(analytic))
    finite = np.isfinite(analytic) & np.isfinite(numeric)
    if not finite[failing].all():
        return f"non-finite gradient at {_indices(failing & ~finite)}"
    where = f"wrong at {_indices(failing)} ({int(failing.sum())} of {failing.size} elements)"
    overall = _ratio_phrase(_constant_ratio(analytic, numeric, atol, bound, failing))
    if overall:
        return f"{overall}; {where}"
    value = np.asarray(value)
    if analytic.shape == value.shape and value.size > 1:
        for label, mask in (("negative", value < 0), ("positive", value > 0), ("zero", value == 0)):
            if mask.any() and (~mask).any() and np.array_equal(failing, mask):
                there = _ratio_phrase(_constant_ratio(analytic[mask], numeric[mask], atol, bound[mask], failing[mask]))
                return f"wrong only where the input is {label}" + (f" (there {there})" if there else "")
    if analytic.ndim == 2 and analytic.shape[0] == analytic.shape[1] > 1:
        if np.allclose(analytic, numeric.T, rtol=1e-6, atol=atol) and not np.allclose(analytic, numeric):
            return "transposed: analytic = numeric.T"
    return where
