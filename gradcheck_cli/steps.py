"""`gradcheck steps`: the error of each finite-difference method against the step size h, for one
element: the V of truncation error (falls with h) against rounding error (grows as eps/h).

The differences are the numeric engine's own methods (central, richardson, complex step) called at a
fixed step, on the scalar s = Σ w·output as a function of one input element; forward differences,
which the engine does not use, are the one formula added here. The error of each estimate is taken
against the exact derivative (sympy, where every op has a sympy form), else against the most
accurate estimate (complex step at h = 1e-20 where it applies, else the engine's Richardson).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import numpy as np

from .analytic import Mode
from .api import CheckOptions, prepare, run_check
from .errors import InputError
from .methods import (_COMPLEX_STEP, _EPS, _RATIO, _RICHARDSON_LEVELS, METHODS, _exact_steps, choose_method,
                      complex_step)
from .numeric import NumericEngine, _make_probe
from .values import resolve

H_MIN, H_MAX, PER_DECADE = 1e-16, 1e-1, 4
METHOD_ORDER = ("central", "forward", "richardson", "complex")
_ELEMENT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[\s*([0-9,\s]*)\])?\s*$")


def forward(probe, x: np.ndarray, eps: float, to_out, to_in) -> tuple[np.ndarray, np.ndarray]:
    """(f(x+h) − f(x)) / h: first-order, truncation error ∝ h (the method the others improve on)."""
    step = _exact_steps(x, np.full_like(x, eps))
    plus, base = probe([step, np.zeros_like(x)])
    return (plus - base) / to_out(step), np.zeros_like(plus)


@dataclasses.dataclass(frozen=True)
class StepCurves:
    """Error against h for each method at one element; `reference` is what errors are taken against."""

    element: str
    value: float                              # the element's value
    steps: np.ndarray                         # the h grid
    curves: dict[str, np.ndarray]             # method → |estimate − reference| per h (nan: left the domain)
    exact: float | None                       # sympy's derivative, when known
    reference: float
    reference_kind: str                       # "exact (sympy)" | "complex step at h=1e-20" | "richardson"
    chosen_method: str
    chosen_h: float
    chosen_note: str
    analytic: float                           # autograd's value, for the reader


def element_text(name: str, index: tuple[int, ...]) -> str:
    return name + ("[" + ", ".join(map(str, index)) + "]" if index else "")


def parse_element(text: str, shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, tuple[int, ...]]:
    """`x[1]`, `w[0, 2]`, `a` (a scalar) → (name, index). Raises InputError."""
    match = _ELEMENT.match(text)
    if not match:
        raise InputError(f"--element expects NAME[INDEX] such as x[1] or w[0, 2], got {text!r}")
    name, raw = match.group(1), match.group(2)
    if name not in shapes:
        raise InputError(f"--element names '{name}', which is not a variable being differentiated; "
                         f"choose one of: {', '.join(shapes)}")
    index = tuple(int(p) for p in raw.split(",") if p.strip()) if raw is not None else ()
    shape = shapes[name]
    if len(index) != len(shape) or any(not 0 <= i < n for i, n in zip(index, shape)):
        raise InputError(f"--element {text}: {name} has shape {list(shape)}; give "
                         f"{len(shape)} index{'es' if len(shape) != 1 else ''} inside it"
                         + (f", e.g. {element_text(name, (0,) * len(shape))}" if shape else f", i.e. just {name}"))
    return name, index


def step_curves(expression: str, values: Mapping[str, Any], options: CheckOptions,
                element: str | None = None) -> StepCurves:
    """Run the check (for the default element and the chosen step), then every method at every h.

    Raises:
        InputError: bad input, a non-scalar output without --grad-output, or a bad --element.
    """
    result = run_check(expression, values, dataclasses.replace(options, fast=False, symbolic=False,
                                                               inspect_ops=False))
    if result.mode == Mode.JACOBIAN.value:
        raise InputError("steps follows one derivative: give a scalar output (e.g. .sum()) or --grad-output")
    prep = prepare(expression, values, options)
    shapes = {name: tuple(np.shape(prep.inputs[name])) for name in prep.wrt}
    if element is None:
        name, flat = max(((n, int(np.argmax(r.rel_error.reshape(-1))), float(np.max(r.rel_error, initial=-1)))
                          for n, r in result.inputs.items() if r.rel_error.size), key=lambda t: t[2])[:2]
        index = tuple(int(i) for i in np.unravel_index(flat, shapes[name])) if shapes[name] else ()
    else:
        name, index = parse_element(element, shapes)
        flat = int(np.ravel_multi_index(index, shapes[name])) if index else 0
    method = choose_method(options.method, prep.program, prep.table)
    method = "richardson" if method == "taylor" else method
    engine = NumericEngine(prep.program, prep.table, prep.inputs, method)
    grad_output = None if options.grad_output is None else resolve(
        options.grad_output, "--grad-output", options.seed, options.limits)
    weights = np.ones(engine.output.shape) if grad_output is None else grad_output.reshape(engine.output.shape)
    s = engine._contracted(name, 0, weights)
    base = engine.envs[0][name][0]
    cols = np.array([flat])
    probe = _make_probe(lambda batch: s(batch)[:, None], base, cols)
    x = base.reshape(-1)[cols]

    def per_row(steps: np.ndarray) -> np.ndarray:
        return steps.reshape(-1, 1)

    def from_rows(v: np.ndarray) -> np.ndarray:
        return v.reshape(v.shape[0], -1).min(axis=1)

    def estimate(fn, h: float | None) -> float:
        with np.errstate(all="ignore"):
            value, _ = fn(probe, x, h, per_row, from_rows)
        return float(np.real(np.asarray(value).reshape(-1)[0]))

    complex_ok = all(prep.table[op].complex_ok for op in prep.program.ops)
    steps = np.logspace(np.log10(H_MIN), np.log10(H_MAX), int(round(np.log10(H_MAX / H_MIN))) * PER_DECADE + 1)
    methods = {"central": METHODS["central"], "forward": forward, "richardson": METHODS["richardson"]}
    if complex_ok:
        methods["complex"] = complex_step
    estimates = {m: np.array([estimate(fn, float(h)) for h in steps]) for m, fn in methods.items()}
    exact = _exact(engine, name, weights, flat)
    if exact is not None:
        reference, kind = exact, "exact (sympy)"
    elif complex_ok:
        reference, kind = estimate(complex_step, _COMPLEX_STEP), f"complex step at h={_COMPLEX_STEP:g}"
    else:
        reference, kind = estimate(METHODS["richardson"], None), "richardson (the engine's adaptive ladder)"
    curves = {m: np.abs(e - reference) for m, e in estimates.items()}
    scale = max(abs(float(x[0])), 1.0)
    if options.eps:
        chosen_h, note = float(options.eps), "--eps"
    elif method == "central":
        chosen_h, note = float(np.cbrt(_EPS) * scale), "eps^(1/3)·max(|x|, 1)"
    elif method == "complex":
        chosen_h, note = _COMPLEX_STEP, "complex step needs no subtraction: any tiny h is exact to rounding"
    else:
        chosen_h = 1e-1 * scale
        note = (f"a ladder from 0.1·max(|x|, 1) down by 4^k to {chosen_h / _RATIO ** (_RICHARDSON_LEVELS - 1):.1e}, "
                "extrapolated; each element keeps the rung with the smallest error estimate")
    analytic = float(result.inputs[name].analytic.reshape(-1)[flat])
    return StepCurves(element_text(name, index), float(x[0]), steps, curves, exact, reference, kind,
                      method, chosen_h, note, analytic)


def _exact(engine: NumericEngine, name: str, weights: np.ndarray, flat: int) -> float | None:
    """sympy's derivative of Σ w·output in one element, or None where it is not known."""
    try:
        from .symbolic import SymbolicEngine
        value = SymbolicEngine(engine).derivative(name, 0, weights)
    except InputError:  # no sympy, an op without a sympy form, or too large to do exactly
        return None
    return float(np.asarray(value).reshape(-1)[flat])


def curves_dict(c: StepCurves) -> dict[str, Any]:
    """SPEC's `steps --json`: element, chosen, exact, curves of {h, error}; plus what errors are against."""
    def number(v: float) -> Any:
        return v if np.isfinite(v) else ("nan" if np.isnan(v) else ("inf" if v > 0 else "-inf"))

    return {
        "element": c.element,
        "value": c.value,
        "chosen": {"method": c.chosen_method, "h": c.chosen_h, "rule": c.chosen_note},
        "exact": c.exact,
        "against": c.reference_kind,
        "reference": c.reference,
        "analytic": c.analytic,
        "curves": {m: [{"h": float(h), "error": number(float(e))} for h, e in zip(c.steps, c.curves[m])]
                   for m in METHOD_ORDER if m in c.curves},
    }
