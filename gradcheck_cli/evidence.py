"""Evidence gathered before any verdict: one-sided probes where the numeric estimate alone does not
settle an element, the hint an unreliable element carries, and what is refused outright."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .compare import GradientResult, element_result
from .errors import InputError
from .numeric import NumericEngine
from .verdict import SAFETY, Evidence, OneSided, Policy

MAX_KINK_PROBES = 1_000  # unsettled elements examined for kinks (one-sided differences)
MAX_NOTED_ELEMENTS = 64  # up to this many input elements, every one is examined (SPEC: kinks are reported)


def one_sided(engine: NumericEngine, name: str, start: int, weights: np.ndarray | None,
              unsure: np.ndarray, entries: np.ndarray | None = None) -> OneSided | None:
    """Left and right derivatives, with bounds, at the elements the numeric estimate alone did not settle.

    `entries`: for a structured Jacobian (1-D elements), each element's flat index in the full Jacobian.
    """
    flat = np.flatnonzero(np.asarray(unsure).reshape(-1))[:MAX_KINK_PROBES]
    if flat.size == 0:
        return None
    size = int(np.size(engine.envs[start][name][0]))
    at = flat if entries is None else entries[flat]
    cols = at % max(size, 1)  # in Jacobian mode the input element is the trailing index
    unique, where = np.unique(cols, return_inverse=True)
    left, left_error, right, right_error = engine.one_sided(name, start, weights, unique)
    picked = []
    for arr in (left, left_error, right, right_error):
        if weights is None:  # pick each (output, input) element from its column's outputs
            arr = arr.reshape(unique.size, -1)[where, at // max(size, 1)]
        else:
            arr = arr[where]
        picked.append(arr)
    return OneSided(flat, picked[0], SAFETY * picked[1], picked[2], SAFETY * picked[3])


def element_check(engine: NumericEngine, name: str, start: int, value: np.ndarray, gradient: np.ndarray,
                  numeric: Any, weights: np.ndarray | None, exact: np.ndarray | None, atol: float, rtol: float,
                  policy: Policy, hint: str, entries: np.ndarray | None = None) -> GradientResult:
    """Evidence for every element (one-sided probes where the estimate alone does not settle it), then
    one decision each. `entries`: a structured Jacobian's flat index of each (1-D) element."""
    # small, with an op that may kink: every element is looked at from both sides, so kinks are reported
    # even where the numeric side agrees; otherwise the elements decide's pass leaves unsettled
    every = engine.can_kink and np.size(value) <= MAX_NOTED_ELEMENTS and np.size(gradient) <= MAX_KINK_PROBES

    def probe(unsure: np.ndarray) -> OneSided | None:
        return one_sided(engine, name, start, weights, np.ones_like(unsure) if every else unsure, entries)
    evidence = Evidence(gradient, numeric.value, SAFETY * numeric.error, exact, None, hint)
    return element_result(name, value, evidence, atol, rtol, policy, numeric.error, probe)


def unreliable_hint(method: str, eps: float | None) -> str:
    """What to try where the numeric side cannot tell (never the method already in use)."""
    if eps is not None:
        return "try a smaller --eps, or none (a step chosen per element)"
    from .methods import ALL_METHODS
    return ALL_METHODS[method].unsure_hint if method in ALL_METHODS else "try --method richardson or another --eps"


def refuse_complex(values: Mapping[str, Any], grad_output: Any) -> None:
    """Complex inputs are not checked (yet): refuse them rather than drop the imaginary part."""
    for name, value in [*values.items(), ("--grad-output", grad_output)]:
        is_complex = _has_complex(value)
        if is_complex:
            raise InputError(f"'{name}' is complex; gradcheck checks real inputs only (complex gradients follow "
                             "torch's conjugate Wirtinger convention, which it does not verify yet): pass the "
                             "real and imaginary parts as two real variables")


def _has_complex(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_has_complex(v) for v in value)
    return isinstance(value, complex) or (isinstance(value, np.ndarray) and np.iscomplexobj(value)) or \
        (hasattr(value, "is_complex") and callable(value.is_complex) and value.is_complex())
