"""Structured Jacobians: compare only the entries a known structure allows, after verifying the structure.

When the expression says where d out / d x can be nonzero (an elementwise output: out[o] depends on
x[bcast(o)] alone; a sum or mean along dims of such a value), the Jacobian has one entry per output
element (or per input element) instead of out.size × x.size. The analytic side then

1. extracts the entries on the pattern with one VJP per colour: output rows of one colour share no input
   column, so the VJP with that colour's indicator as weights holds, in each column, the one entry of
   that colour (Curtis, Powell & Reid 1974, the row form of Jacobian compression);
2. verifies the pattern with K VJPs of random ±1 weights s, each of which must equal the prediction
   Σ_o s_o·J[o, k] over the pattern's entries alone. An entry e off the pattern in column k moves that
   column by (s_o − s_r)·e, where r is the pattern's row of the same colour in that column (whose
   extracted entry absorbed e): 0 or ±2e, each with chance 1/2. With several such entries the column's
   discrepancy is a signed sum that a given sign draw zeroes with chance at most 1/2 (Littlewood–Offord),
   so an entry off the pattern by more than half the tolerance escapes all K with chance ≤ 2^-K.

The numeric side differentiates the same entries (all at once; numeric.aligned_entries) and each entry
on the pattern is compared by the usual rule. A pattern that fails verification is not trusted: that
target's Jacobian is built in full and compared entry by entry, as `--full` does.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from .compare import GradientResult
from .diagnose import diagnose
from .numeric import Derivative
from .verdict import SAFETY, Decision, Verdict
from .ops import OpSpec
from .parse import Program
from .structure import Plan, plan

VJPS = 16  # random ±1 VJPs that verify a pattern: an entry off it escapes with chance ≤ 2^-16


@dataclasses.dataclass(frozen=True)
class Pattern:
    """Where d out / d x may be nonzero, entry by entry, with a colouring of the output rows.

    Every input column has exactly one entry of each colour, so the VJP with colour c's indicator
    reads, in column k, the entry of colour c there.
    """

    kind: str                    # "elementwise" | "reduction"
    out_shape: tuple[int, ...]
    in_shape: tuple[int, ...]
    rows: np.ndarray             # flat output index of each entry
    cols: np.ndarray             # flat input index of each entry
    colour: np.ndarray           # colour of each output row, shape (out.size,)
    colours: int
    plan: Plan
    inverse: np.ndarray | None = None  # reduction: entry of each inner element (numeric side)
    scale: float = 1.0                 # reduction: 1 for sum, 1/count for mean

    @property
    def entries(self) -> np.ndarray:
        """Flat indices of the pattern's entries in an array of shape out_shape + in_shape."""
        return self.rows * max(int(np.prod(self.in_shape)), 1) + self.cols

    @property
    def full_size(self) -> int:
        return int(np.prod(self.out_shape)) * int(np.prod(self.in_shape))


@dataclasses.dataclass(frozen=True)
class Structure:
    """What a structured Jacobian check covers, for the table and JSON."""

    kind: str
    entries: int          # entries on the pattern, each compared
    elements: int         # entries of the full Jacobian
    vjps: int             # random ±1 VJPs that verified it
    caught_above: float   # an entry off the pattern by more than this is caught with chance ≥ 1 − 2^-vjps
    verified: bool
    columns_off: tuple[int, ...] = ()  # input elements whose column disagreed (when not verified)

    @property
    def slip_chance(self) -> float:
        return 0.5 ** self.vjps

    def statement(self) -> str:
        what = "elementwise" if self.kind == "elementwise" else "a reduction of elementwise values"
        if self.verified:
            return (f"structure verified by {self.vjps} random VJPs: autograd's Jacobian is {what} as the "
                    f"expression says, so only {self.entries:,} of its {self.elements:,} entries can be nonzero "
                    f"and each of those is compared; an entry off the structure by more than "
                    f"{self.caught_above:.1e} escapes with chance ≤ {self.slip_chance:.1e} (--full builds all)")
        shown = ", ".join(f"[{k}]" for k in self.columns_off[:4])
        more = f" and {len(self.columns_off) - 4} more" if len(self.columns_off) > 4 else ""
        return (f"structure NOT verified: {self.vjps} random VJPs show autograd's Jacobian is not {what} as the "
                f"expression says (columns of input elements {shown}{more} have entries off it); "
                "every entry was built and compared")


def pattern_for(program: Program, table: Mapping[str, OpSpec], name: str, start: int,
                out_shape: tuple[int, ...], in_shape: tuple[int, ...],
                inner_shape: Callable[[Any], tuple[int, ...]]) -> Pattern | None:
    """The pattern of d out / d name when the expression's structure gives one worth using, else None.

    `inner_shape(node)` is the shape of a node of the last statement (a reduction's argument).
    """
    how = plan(program, table, name, start)
    out_size, in_size = int(np.prod(out_shape)), int(np.prod(in_shape))
    if out_size == 0 or in_size == 0:
        return None
    if how.kind == "aligned":
        owner = np.broadcast_to(np.arange(in_size).reshape(in_shape), out_shape).reshape(-1)
        colours = out_size // in_size  # broadcasting copies every element the same number of times
        colour = np.empty(out_size, dtype=np.int64)
        colour[np.argsort(owner, kind="stable")] = np.arange(out_size) % colours
        found = Pattern("elementwise", out_shape, in_shape, np.arange(out_size), owner, colour, colours, how)
    elif how.kind == "reduced" and how.dim is not None:
        found = _reduction(how, out_shape, in_shape, inner_shape(how.inner))
    else:
        return None
    return found if found is not None and worthwhile(found) else None


def _reduction(how: Plan, out_shape: tuple[int, ...], in_shape: tuple[int, ...],
               inner: tuple[int, ...]) -> Pattern | None:
    """out = inner.sum(dim) or .mean(dim), inner ALIGNED with x: J[o, k] sums d inner[p] / d x[k] over
    the inner elements p that reduce into o and are owned by k. One colour when each input element
    reaches one output (x not broadcast along the reduced dims); otherwise None (the full build)."""
    nd = len(inner)
    dims = (how.dim,) if isinstance(how.dim, int) else tuple(how.dim)
    axes = {d % max(nd, 1) for d in dims}
    keep = tuple(1 if i in axes else inner[i] for i in range(nd))
    out_size, in_size = int(np.prod(out_shape)), int(np.prod(in_shape))
    if int(np.prod(keep)) != out_size:
        return None
    if len(in_shape) > nd:
        return None
    reduced_into = np.broadcast_to(np.arange(out_size).reshape(keep), inner).reshape(-1)
    owner = np.broadcast_to(np.arange(in_size).reshape(in_shape), inner).reshape(-1)
    keys, inverse = np.unique(reduced_into * in_size + owner, return_inverse=True)
    rows, cols = keys // in_size, keys % in_size
    if np.unique(cols).size != cols.size or cols.size != in_size:
        return None
    count = int(np.prod([inner[a] for a in axes])) if axes else 1
    return Pattern("reduction", out_shape, in_shape, rows, cols, np.zeros(out_size, dtype=np.int64), 1, how,
                   inverse.reshape(-1), 1.0 / count if how.reduce_op == "mean" else 1.0)


def worthwhile(pattern: Pattern) -> bool:
    """Cheaper than building every row, and leaving entries out (a pattern that fills the Jacobian is
    no structure)."""
    out_size = int(np.prod(pattern.out_shape))
    return pattern.rows.size < pattern.full_size and pattern.colours + VJPS < out_size


def sign_rows(seed: int, count: int, out_shape: tuple[int, ...]) -> np.ndarray:
    """`count` random ±1 arrays of out_shape (float64), the same for the same seed."""
    rng = np.random.default_rng([seed, 0x5157, 0xC0DE])
    return rng.integers(0, 2, size=(count, *out_shape)).astype(np.float64) * 2 - 1


@dataclasses.dataclass(frozen=True)
class Extracted:
    """The analytic side's entries on a pattern and how verification went."""

    pattern: Pattern
    values: np.ndarray              # one per entry
    caught_above: float
    columns_off: np.ndarray         # flat input indices whose column disagreed with the prediction

    @property
    def verified(self) -> bool:
        return self.columns_off.size == 0


def weight_rows(patterns: Mapping[str, Pattern], signs: np.ndarray) -> tuple[np.ndarray, dict[str, list[int]]]:
    """The VJP weights every pattern needs: its colour indicators (shared where equal), then the signs.

    Returns (weights of shape (R, *out_shape), name → the rows of its colours, in colour order).
    """
    out_shape = signs.shape[1:]
    rows: list[np.ndarray] = []
    seen: dict[bytes, int] = {}
    owned: dict[str, list[int]] = {}
    for name, p in patterns.items():
        owned[name] = []
        for c in range(p.colours):
            indicator = (p.colour == c).astype(np.float64)
            key = indicator.tobytes()
            if key not in seen:
                seen[key] = len(rows)
                rows.append(indicator.reshape(out_shape))
            owned[name].append(seen[key])
    return np.concatenate([np.stack(rows), signs]) if rows else signs, owned


def extract(pattern: Pattern, grads: np.ndarray, colour_rows: list[int], signs: np.ndarray,
            atol: float, rtol: float) -> Extracted:
    """Read the entries off the colour VJPs and check the sign VJPs against their prediction.

    Args:
        grads: the batched VJPs for this target, shape (R, *in_shape), rows as `weight_rows` made them.
        signs: the sign weights, shape (K, *out_shape); their VJPs are the last K rows of grads.
    """
    in_size = int(np.prod(pattern.in_shape))
    flat = grads.reshape(grads.shape[0], in_size)
    k = signs.shape[0]
    by_colour = flat[colour_rows]                          # (colours, in_size)
    values = by_colour[pattern.colour[pattern.rows], pattern.cols]
    with np.errstate(all="ignore"):
        scale = np.bincount(pattern.cols, weights=np.abs(values), minlength=in_size)
        tol = atol + rtol * scale
        off = np.zeros(in_size, dtype=bool)
        s = signs.reshape(k, -1)
        for j in range(k):
            predicted = np.bincount(pattern.cols, weights=s[j, pattern.rows] * values, minlength=in_size)
            actual = flat[flat.shape[0] - k + j]
            off |= np.abs(actual - predicted) > tol
            off |= np.isfinite(actual) != np.isfinite(predicted)
    return Extracted(pattern, values, float(np.max(tol, initial=0.0)) / 2, np.flatnonzero(off))


def numeric_entries(engine: Any, pattern: Pattern, name: str, start: int) -> Derivative:
    """The numeric side's value and error estimate of each entry on the pattern (1-D)."""
    if pattern.kind == "elementwise":
        d = engine.aligned_entries(name, start)
        return Derivative(np.asarray(d.value, dtype=np.float64).reshape(-1),
                          np.asarray(d.error, dtype=np.float64).reshape(-1))
    d = engine.aligned_entries(name, start, pattern.plan.inner)
    n = pattern.rows.size
    value = np.bincount(pattern.inverse, weights=np.asarray(d.value).reshape(-1), minlength=n) * pattern.scale
    error = np.bincount(pattern.inverse, weights=np.abs(np.asarray(d.error)).reshape(-1), minlength=n) * pattern.scale
    return Derivative(value, error)


def structure_of(extracted: Extracted, vjps: int = VJPS) -> Structure:
    p = extracted.pattern
    return Structure(p.kind, int(p.rows.size), p.full_size, vjps, extracted.caught_above, extracted.verified,
                     tuple(int(k) for k in extracted.columns_off))


@dataclasses.dataclass(frozen=True)
class StructuredResult:
    """A GradientResult of a Jacobian checked on its pattern: reads like a full one.

    Every entry on the pattern was decided (`compact`, 1-D arrays); everywhere else both sides are zero
    (verified on the analytic side, by construction on the numeric side), so those entries pass. The full
    arrays (shape output.shape + input.shape) are built on first use: a check asked only for its verdict
    never allocates them.
    """

    compact: GradientResult
    entries: np.ndarray
    full_shape: tuple[int, ...]
    atol: float
    structure: Structure
    kind: ClassVar[str] = "elements"

    name = property(lambda self: self.compact.name)
    shape = property(lambda self: self.compact.shape)
    value = property(lambda self: self.compact.value)
    policy = property(lambda self: self.compact.policy)
    allow_unreliable = property(lambda self: self.compact.allow_unreliable)
    projection = None
    symbolic = None

    def _full(self, compact: np.ndarray, fill: Any, dtype: Any = np.float64) -> np.ndarray:
        out = np.full(int(np.prod(self.full_shape)), fill, dtype=dtype)
        out[self.entries] = np.asarray(compact).reshape(-1)
        return out.reshape(self.full_shape)

    analytic = functools.cached_property(lambda self: self._full(self.compact.analytic, 0.0))
    numeric = functools.cached_property(lambda self: self._full(self.compact.numeric, 0.0))
    numeric_error = functools.cached_property(lambda self: self._full(self.compact.numeric_error, 0.0))

    @functools.cached_property
    def decision(self) -> Decision:
        d = self.compact.decision
        reasons = d.reasons
        if reasons.size and any(reasons.reshape(-1)):
            reasons = self._full(np.asarray(reasons, dtype=object), "", object)
        else:
            reasons = np.broadcast_to(np.array("", dtype=object), self.full_shape)
        kink = None if d.kink is None else self._full(d.kink, False, bool)
        return Decision(self._full(d.verdict, Verdict.PASS, np.int8), self._full(d.abs_error, 0.0),
                        self._full(d.rel_error, 0.0), self._full(d.tolerance, self.atol),
                        self._full(d.atol_decides, True, bool), reasons, kink)

    @functools.cached_property
    def diagnosis(self) -> str:
        failing = self.compact.decision.verdict == Verdict.FAIL
        if not failing.any():
            return ""
        return diagnose(self.analytic, self.numeric, self.value, ~(self.verdict == Verdict.FAIL), self.atol,
                        SAFETY * self.numeric_error)

    verdict = GradientResult.verdict
    passed = GradientResult.passed
    unreliable = GradientResult.unreliable
    wrong = GradientResult.wrong
    abs_error = GradientResult.abs_error
    rel_error = GradientResult.rel_error
    tolerance = GradientResult.tolerance
    reasons = GradientResult.reasons
    atol_decides = GradientResult.atol_decides
    decided_by = GradientResult.decided_by

    @property
    def ok(self) -> bool:
        return self.compact.ok and self.structure.verified

    @property
    def max_abs_error(self) -> float:
        return self.compact.max_abs_error

    @property
    def max_rel_error(self) -> float:
        return self.compact.max_rel_error

    @property
    def failures(self) -> int:
        return self.compact.failures


@dataclasses.dataclass(frozen=True)
class RebuiltResult(GradientResult):
    """A Jacobian whose pattern failed verification, built and decided in full; says so."""

    found: Structure | None = None

    @property
    def structure(self) -> Structure | None:
        return self.found


def rebuilt(result: GradientResult, structure: Structure) -> RebuiltResult:
    """`result` (a full element check) with the failed verification attached."""
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    return RebuiltResult(**fields, found=structure)


def check_structured(engine: Any, extracted: Extracted, name: str, start: int, value: np.ndarray,
                     gradient: np.ndarray, atol: float, rtol: float, policy: Any,
                     hint: str) -> "StructuredResult | RebuiltResult":
    """A Jacobian on its verified pattern: each entry on it decided. One that failed verification was
    built in full by the analytic side (`gradient`) and is decided entry by entry, with the finding stated."""
    from .evidence import element_check

    if not extracted.verified:
        full = element_check(engine, name, start, value, gradient, engine.derivative(name, start, None), None,
                             None, atol, rtol, policy, hint)
        return rebuilt(full, structure_of(extracted))
    numeric = numeric_entries(engine, extracted.pattern, name, start)
    compact = element_check(engine, name, start, value, extracted.values, numeric, None, None, atol, rtol,
                            policy, hint, extracted.pattern.entries)
    return StructuredResult(compact, extracted.pattern.entries, extracted.pattern.out_shape + tuple(np.shape(value)),
                            atol, structure_of(extracted))


@dataclasses.dataclass(frozen=True)
class Request:
    """Asks the analytic side for structured Jacobians: the sign seed and the verification tolerance."""

    seed: int
    atol: float
    rtol: float


def expanded(extracted: Extracted) -> np.ndarray:
    """The full Jacobian (output.shape + input.shape) of a verified pattern's entries."""
    p = extracted.pattern
    full = np.zeros(p.full_size)
    full[p.entries] = extracted.values
    return full.reshape(p.out_shape + p.in_shape)
