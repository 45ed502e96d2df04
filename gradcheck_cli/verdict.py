"""One decision per element, made once, from all the evidence gathered for it.

Evidence for an element: the analytic value; the numeric estimate with an honest bound on its error
(|numeric − true| ≤ bound); where probed, the one-sided derivatives with their own bounds; with
--symbolic, the exact value. The rule (tolerance = atol + rtol·|numeric|, torch.allclose's):

- PASS        |analytic − numeric| ≤ tolerance, or ≤ tolerance + bound with a bound no larger than
              the tolerance (the estimate is good enough to vouch for it);
- FAIL        |analytic − numeric| > tolerance + bound: the disagreement is proven;
- UNRELIABLE  inside tolerance + bound, but the bound is larger than the tolerance: the numeric side
              cannot tell.

A kink is claimed only where both one-sided estimates have converged (bounds far below the jump);
there autograd passes when its value lies between them (a one-sided derivative or a subgradient) and
fails when it does not. An element whose one-sided estimates have not converged keeps the rule above:
a kink never waives an unproven disagreement. The exact value, where given, decides elements the
numeric side alone did not pass. Policy (--allow-unreliable) is not applied here: see `Policy`.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
from typing import Callable

import numpy as np

SAFETY = 2.0           # an error estimate times this is the bound the rule uses
KINK_CONVERGED = 1e-2  # one-sided bounds below this fraction of the jump: the jump is real
BLOCK = 1 << 16        # elements compared at a time (a few cache-sized temporaries)


class Verdict(enum.IntEnum):
    PASS = 0
    UNRELIABLE = 1
    FAIL = 2


@dataclasses.dataclass(frozen=True)
class Policy:
    """How verdicts are read: UNRELIABLE elements fail a check unless `allow_unreliable`."""

    allow_unreliable: bool = False

    def ok(self, verdict: np.ndarray) -> bool:
        worst = Verdict.UNRELIABLE if self.allow_unreliable else Verdict.PASS
        return bool(np.all(verdict <= worst))


@dataclasses.dataclass(frozen=True)
class OneSided:
    """Left and right derivatives (with bounds) at some flat elements of a result."""

    flat: np.ndarray
    left: np.ndarray
    left_bound: np.ndarray
    right: np.ndarray
    right_bound: np.ndarray


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What is known about each element before anything is decided (arrays of one shape)."""

    analytic: np.ndarray
    numeric: np.ndarray
    bound: np.ndarray
    exact: np.ndarray | None = None
    one_sided: OneSided | None = None
    hint: str = "try --method richardson or another --eps"  # what to do about an unreliable element


@dataclasses.dataclass(frozen=True)
class Decision:
    """The verdict of every element, the numbers it was read from, and a reason where one is due."""

    verdict: np.ndarray        # Verdict values, int8
    abs_error: np.ndarray
    given_rel_error: np.ndarray | None   # None: worked out from `basis` when first read (`rel_error`)
    given_tolerance: np.ndarray | None   # nan where the rule was not a tolerance (the Taylor test)
    atol_decides: np.ndarray   # True where atol > rtol·|numeric|
    reasons: np.ndarray        # object array of str ("" for none)
    kink: np.ndarray | None = None  # True where a kink was proven
    basis: tuple[np.ndarray, float, float] | None = dataclasses.field(default=None, repr=False, compare=False)
    # (numeric, atol, rtol) the tolerance and relative error come from where not given: a 9M-entry Jacobian
    # need not pay for two more arrays of its size unless something reads them (a table's worst rows do not)

    @functools.cached_property
    def tolerance(self) -> np.ndarray:
        if self.given_tolerance is not None:
            return self.given_tolerance
        numeric, atol, rtol = self.basis
        return _tolerance(numeric, atol, rtol)

    @functools.cached_property
    def rel_error(self) -> np.ndarray:
        if self.given_rel_error is not None:
            return self.given_rel_error
        out = np.abs(self.basis[0], out=np.empty(np.shape(self.abs_error)))
        with np.errstate(all="ignore"):
            np.divide(self.abs_error, out, out=out)
        _no_error_at_zero(out, self.abs_error)
        return out


def _tolerance(numeric: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    """atol + rtol·|numeric|, computed as _Errors.block does (the same numbers)."""
    t = np.abs(numeric, out=np.empty(np.shape(numeric)))
    np.multiply(t, rtol, out=t)
    t += atol
    return t


def _no_error_at_zero(rel: np.ndarray, abs_error: np.ndarray) -> None:
    """0/0: no error where numeric is 0 (0/r is already 0 for any other r)."""
    unset = np.isnan(rel)
    if unset.any():
        rel[unset & (abs_error == 0)] = 0.0


def _blocks(shape: tuple[int, ...]):
    """Slices along the first axis of about BLOCK elements each: a 9M-entry Jacobian is compared a few
    cache-sized blocks at a time, so each temporary is reused from cache instead of written to memory."""
    if len(shape) == 0 or int(np.prod(shape)) <= BLOCK:
        yield (...,)
        return
    rows = max(1, BLOCK // max(1, int(np.prod(shape[1:]))))
    for lo in range(0, shape[0], rows):
        yield (slice(lo, lo + rows),)


def _common(analytic: np.ndarray, numeric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as arrays of one shape (broadcast where they differ; numpy's broadcast_shapes stops at 32 dims)."""
    analytic, numeric = np.asarray(analytic), np.asarray(numeric)
    if analytic.shape != numeric.shape:
        analytic, numeric = np.broadcast_arrays(analytic, numeric)
    return analytic, numeric


def errors(analytic: np.ndarray, numeric: np.ndarray, atol: float,
           rtol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """abs error, rel error, tolerance and where atol decides; in place (a Jacobian may be 9M entries)."""
    found = _Errors(analytic, numeric)
    with np.errstate(all="ignore"):
        for at in _blocks(found.shape):
            found.block(at, atol, rtol)
    return found.abs_error, found.rel_error, found.tolerance, found.atol_decides


class _Errors:
    """The arrays errors() returns, filled a block at a time; with `keep` False, the tolerance and relative
    error of each block are only worked (and given back) block by block, never kept whole."""

    def __init__(self, analytic: np.ndarray, numeric: np.ndarray, keep: bool = True) -> None:
        self.analytic, self.numeric = _common(analytic, numeric)
        self.shape = shape = self.analytic.shape
        self.keep = keep
        self.abs_error = np.empty(shape)
        self.rel_error = np.empty(shape) if keep else None
        self.tolerance = np.empty(shape) if keep else None
        self.atol_decides = np.ones(shape, dtype=bool)

    def block(self, at: tuple, atol: float, rtol: float) -> np.ndarray:
        """Fill one block; its tolerance."""
        n = self.numeric[at]
        e = self.abs_error[at]
        if self.keep:
            r, t = self.rel_error[at], self.tolerance[at]
        else:
            r, t = np.empty(e.shape), np.empty(e.shape)  # block-sized: reused from cache
        np.subtract(self.analytic[at], n, out=e)
        np.abs(e, out=e)
        np.abs(n, out=r)  # |numeric| until divided below
        np.multiply(r, rtol, out=t)
        t += atol
        if rtol > 0:
            np.less_equal(t, 2 * atol, out=self.atol_decides[at])
        if self.keep:
            np.divide(e, r, out=r)
            _no_error_at_zero(r, e)
        return t


def decide(evidence: Evidence, atol: float, rtol: float,
           probe: Callable[[np.ndarray], OneSided | None] | None = None) -> Decision:
    """Every element's verdict from its evidence, once.

    `probe(unsure)` gathers one-sided evidence at the elements the numeric estimate alone does not pass
    (the mask it is given, from this pass over the errors), before any verdict is read: the pass that
    finds those elements is the one that judges the rest."""
    analytic, numeric = evidence.analytic, evidence.numeric
    found = _Errors(analytic, numeric, keep=False)
    abs_error, atol_decides = found.abs_error, found.atol_decides
    basis = (found.numeric, atol, rtol)
    bound = np.broadcast_to(evidence.bound, abs_error.shape)
    finite = np.empty(abs_error.shape, dtype=bool)
    verdict = np.empty(abs_error.shape, dtype=np.int8)
    with np.errstate(all="ignore"):  # a block at a time, errors and verdicts: a Jacobian may be 9M entries
        for at in _blocks(abs_error.shape):
            t = found.block(at, atol, rtol)
            e, b, v = abs_error[at], bound[at], verdict[at]
            fin = np.isfinite(e, out=finite[at])
            within = np.less_equal(e, np.add(t, b))
            within &= fin  # a non-finite error fails
            np.subtract(np.int8(Verdict.FAIL), within, out=v, casting="unsafe")  # FAIL, or UNRELIABLE within
            settled = np.less_equal(b, t)
            settled &= within
            settled |= np.less_equal(e, t)
            settled &= fin
            np.copyto(v, np.int8(Verdict.PASS), where=settled)
    if probe is not None:
        evidence = dataclasses.replace(evidence, one_sided=probe(verdict != Verdict.PASS))
    plain = finite.all() and not (verdict == Verdict.UNRELIABLE).any() and evidence.one_sided is None
    if plain and (evidence.exact is None or (verdict == Verdict.PASS).all()):
        reasons = np.broadcast_to(np.array("", dtype=object), abs_error.shape)  # no 9M-object array
        return Decision(verdict, abs_error, None, None, atol_decides, reasons, basis=basis)
    reasons = np.full(abs_error.shape, "", dtype=object)  # filled by mask: cheap when few need one
    unsure = verdict == Verdict.UNRELIABLE
    if unsure.any():
        reasons[unsure] = [f"numeric estimate unreliable here (±{b:.1e}); {evidence.hint}" for b in bound[unsure]]
    for side, arr in (("analytic", analytic), ("numeric", numeric)):
        reasons[np.isinf(arr)] = f"{side} gradient is inf"
        reasons[np.isnan(arr)] = f"{side} gradient is nan"
    kink = None
    if evidence.one_sided is not None:
        kink = _kinks(evidence, _tolerance(found.numeric, atol, rtol), verdict, reasons)
    if evidence.exact is not None:
        _exact(evidence, atol, rtol, bound, verdict, reasons, finite & (kink is None or ~kink))
    return Decision(verdict, abs_error, None, None, atol_decides, reasons, kink, basis=basis)


def _kinks(evidence: Evidence, tolerance: np.ndarray, verdict: np.ndarray, reasons: np.ndarray) -> np.ndarray:
    """Proven kinks decide their elements (written into verdict and reasons); returns where they are."""
    sided = evidence.one_sided
    kink = np.zeros(verdict.shape, dtype=bool)
    flat_verdict, flat_reasons, flat_kink = verdict.reshape(-1), reasons.reshape(-1), kink.reshape(-1)
    analytic, tol = evidence.analytic.reshape(-1), tolerance.reshape(-1)
    for k, lo, lo_b, hi, hi_b in zip(sided.flat, sided.left, sided.left_bound, sided.right, sided.right_bound):
        jump = abs(hi - lo)
        if not (np.isfinite(jump) and np.isfinite(lo_b) and np.isfinite(hi_b)):
            continue
        if jump <= tol[k] or max(lo_b, hi_b) > KINK_CONVERGED * jump:
            continue  # no jump, or one the estimates cannot vouch for: no kink is claimed
        a = analytic[k]
        inside = min(lo, hi) - tol[k] - (lo_b if lo < hi else hi_b) <= a <= \
            max(lo, hi) + tol[k] + (hi_b if lo < hi else lo_b)
        flat_kink[k] = True
        flat_verdict[k] = Verdict.PASS if inside else Verdict.FAIL
        flat_reasons[k] = f"not differentiable here: left {lo:.6g}, right {hi:.6g}, autograd chose {a:.6g}"
    return kink


def _exact(evidence: Evidence, atol: float, rtol: float, bound: np.ndarray, verdict: np.ndarray,
           reasons: np.ndarray, open_: np.ndarray) -> None:
    """The exact value decides the (finite, non-kink) elements the numeric side did not pass."""
    exact = np.asarray(evidence.exact, dtype=np.float64)
    with np.errstate(all="ignore"):
        tol = atol + rtol * np.abs(exact)
        analytic_right = np.abs(evidence.analytic - exact) <= tol
        numeric_right = np.abs(evidence.numeric - exact) <= tol + bound
    undecided = open_ & (verdict != Verdict.PASS)
    for mask, value, text in (
            (analytic_right, Verdict.UNRELIABLE, "symbolic agrees with analytic: the numeric estimate is off here"),
            (~analytic_right & numeric_right, Verdict.FAIL, "symbolic agrees with numeric: the analytic gradient is off"),
            (~analytic_right & ~numeric_right, Verdict.FAIL, "symbolic disagrees with both")):
        where = undecided & mask
        verdict[where] = value
        reasons[where] = text


TAYLOR_RIGHT, TAYLOR_WRONG = 1.7, 1.3  # fitted remainder orders: ≈2 when right, ≈1 when wrong


def decide_taylor(evidence: Evidence, orders: np.ndarray) -> Decision:
    """The Taylor test's verdict: remainder order ≈2 passes, ≈1 fails, in between is unreliable; a
    remainder at rounding level (nan order) is linear there and passes. Proven kinks decide as above."""
    analytic, forward = evidence.analytic, evidence.numeric
    with np.errstate(all="ignore"):
        abs_error = np.abs(analytic - forward)
        rel_error = np.where(abs_error == 0, 0.0, abs_error / np.abs(forward))
    flat_ok = np.isnan(orders)
    finite = np.isfinite(analytic)
    verdict = np.where(finite & (flat_ok | (orders >= TAYLOR_RIGHT)), Verdict.PASS,
                       np.where(finite & (orders > TAYLOR_WRONG), Verdict.UNRELIABLE, Verdict.FAIL)).astype(np.int8)
    fitted = np.char.mod("Taylor remainder order %.2f", np.nan_to_num(orders).reshape(-1))  # flat: np.char stops at 32 dims
    reasons = np.where(flat_ok.reshape(-1), "remainder at rounding level (linear here)", fitted)
    reasons = np.array(reasons, dtype=object).reshape(np.shape(orders))
    tolerance = np.full(np.shape(analytic), np.nan)
    kink = None
    if evidence.one_sided is not None:
        kink = _kinks(evidence, np.zeros(np.shape(analytic)), verdict, reasons)
    return Decision(verdict, abs_error, rel_error, tolerance, np.zeros(np.shape(analytic), dtype=bool),
                    reasons, kink)
