"""Faster numpy forms for what complex step evaluates: a batch whose rows share the point's real parts and
whose imaginary parts are zero but at each row's perturbed element (ops.py's `_np_exp` is the first).

A dense op (softmax) evaluated that way would do complex arithmetic on every element of every row; with
the rows known to be the point plus a few imaginary offsets, it is one row's real work, an outer product,
and complex arithmetic at the perturbed elements only. Every form returns None where its input is not
such a batch, so the caller falls back to its plain form; where it applies, it gives the same numbers
(an ulp or two apart: the order of a sum, a reciprocal instead of a division).

sin, cos and exp have a second form, for any batch whose imaginary parts are all tiny (a complex step
moves every element by 1e-20·|x|; each element of a gradient-mode batch is perturbed): below 1e-9,
cosh b and cos b round to 1 and sinh b and sin b to b in float64, so the complex formulas
sin(a + ib) = sin a·cosh b + i·cos a·sinh b (and the like) are real functions of a times b, without
the complex library's hyperbolic functions: the same numbers for a third to half the time.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

_MIN_SIZE = 4096  # smaller batches: the plain form is as fast
_SPARSE = 8       # at most one element in this many perturbed


def softmax(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray | None:
    """exp(x − max) / Σ exp(x − max) over `axes` of a complex-step batch, or None where `x` is not one.

    Each row r sums to S_r = S + Σ_p (exp(z_p) − e_p) over its perturbed elements p, where e = exp(x₀ − max)
    is the point's row (real) and S its sum; every unperturbed element is e_o / S_r, the real row times one
    complex number a row, and each perturbed one exp(z_p) / S_r.
    """
    if (not isinstance(x, np.ndarray) or x.dtype != np.complex128 or x.ndim < 2 or x.size < _MIN_SIZE
            or not axes or 0 in axes):
        return None
    moved = _moved(x)
    if moved is None or moved.size * _SPARSE > x.size:
        return None
    real = x.real
    row = real[:1]
    with np.errstate(all="ignore"):
        shifted = row - np.max(row, axis=axes, keepdims=True)   # (1, *shape), real
        e = np.exp(shifted)
        total = np.sum(e, axis=axes, keepdims=True)            # (1, *kept)
    if not np.all(np.isfinite(total)):
        return None  # inf or nan at the point: the plain form says what it gives
    at = np.unravel_index(moved, x.shape)
    in_row = np.ravel_multi_index((np.zeros_like(at[0]),) + at[1:], e.shape)
    sums = np.repeat(total.astype(np.complex128), x.shape[0], axis=0)  # (B, *kept)
    summed = np.ravel_multi_index(tuple(np.zeros_like(i) if a in axes else i for a, i in enumerate(at)),
                                  sums.shape)
    with np.errstate(all="ignore"):
        ez = np.exp(shifted.reshape(-1)[in_row] + 1j * x.imag.reshape(-1)[moved])
        np.add.at(sums.reshape(-1), summed, ez - e.reshape(-1)[in_row])
        inverse = 1 / sums
        out = np.empty(x.shape, dtype=np.complex128)
        np.multiply(e, inverse.real, out=out.real)
        np.multiply(e, inverse.imag, out=out.imag)
        out.reshape(-1)[moved] = ez / sums.reshape(-1)[summed]
    return out


SMALL_IMAG = 1e-9  # |b| below this: cosh b, cos b == 1 and sinh b, sin b == b in float64 (b²/2 < 2^-53)


def _small_imag(x, top: float = np.inf) -> bool:
    """A large complex128 array with every imaginary part below SMALL_IMAG and real parts finite and < top."""
    if not isinstance(x, np.ndarray) or x.dtype != np.complex128 or x.size < _MIN_SIZE:
        return False
    b, a = x.imag, x.real
    with np.errstate(all="ignore"):
        return bool(-SMALL_IMAG < b.min() and b.max() < SMALL_IMAG and -np.inf < a.min() and a.max() < top)


def sin(x: np.ndarray) -> np.ndarray | None:
    """sin(a + ib) = sin a·cosh b + i·cos a·sinh b = sin a + i·b·cos a where |b| < SMALL_IMAG; else None."""
    return _small_step(x, np.sin, np.cos)


def cos(x: np.ndarray) -> np.ndarray | None:
    """cos(a + ib) = cos a·cosh b − i·sin a·sinh b = cos a − i·b·sin a where |b| < SMALL_IMAG; else None."""
    return _small_step(x, np.cos, _minus_sin)


def exp(x: np.ndarray) -> np.ndarray | None:
    """exp(a + ib) = e^a·(cos b + i·sin b) = e^a + i·b·e^a where |b| < SMALL_IMAG and e^a is finite (an
    infinite e^a times b = 0 would be nan, where numpy gives 0); else None."""
    return _small_step(x, np.exp, None, top=709.0)


def _minus_sin(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.sin(a, out=out)
    return np.negative(out, out=out)


def _small_step(x: np.ndarray, value: Callable, slope: Callable | None, top: float = np.inf) -> np.ndarray | None:
    """value(a) + i·b·slope(a) (slope None: value itself) for a batch whose imaginary parts are all tiny."""
    if not _small_imag(x, top):
        return None
    out = np.empty(x.shape, dtype=np.complex128)
    value(x.real, out=out.real)
    if slope is None:
        np.multiply(out.real, x.imag, out=out.imag)
    else:
        slope(x.real, out=out.imag)
        out.imag *= x.imag
    return out


def _moved(x: np.ndarray) -> np.ndarray | None:
    """The flat indices of x's nonzero imaginary parts, where every row's real parts are bit for bit row 0's
    (None where they are not). One pass over x, as 64-bit words against row 0: a real part that differs
    is a word at an even place, an imaginary one at an odd place; row 0's own are added to every row."""
    if not x.flags.c_contiguous:
        return None
    rows, size = x.shape[0], x.size // x.shape[0]
    words = x.reshape(rows, size).view(np.int64)  # (rows, 2·size): real, imag, real, imag, ...
    differ = np.flatnonzero(words[1:] != words[:1])
    if np.any(differ % 2 == 0):
        return None
    imag = x.imag.reshape(-1)
    first = np.flatnonzero(imag[:size] != 0)
    candidates = np.concatenate([differ // 2 + size, (np.arange(rows)[:, None] * size + first).reshape(-1)])
    candidates.sort()  # each once (np.union1d would do, but its np.unique imports numpy.ma: 0.1 s cold)
    once = np.ones(candidates.size, dtype=bool)
    np.not_equal(candidates[1:], candidates[:-1], out=once[1:])
    candidates = candidates[once]
    return candidates[imag[candidates] != 0]
