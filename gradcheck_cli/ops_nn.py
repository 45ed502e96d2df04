"""Numpy and torch forms of the ops the notebooks need beyond v1: shapes (clone, unsqueeze, squeeze,
flatten, cat, stack), where, comparisons, linear and the two losses, and the in-place statements.

The rows themselves are in `ops.py` (the one table); this module only holds their implementations, on
the same batched arrays (axis 0 is a batch of perturbations, see ops.py). Every form here is written
with operators, indexing and the reductions passed in, so it serves the complex-step walk (complex
arrays) and the symbolic walk (object arrays of sympy expressions) alike.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np


def _torch() -> Any:
    import torch
    return torch


def _nd(x: np.ndarray) -> int:
    return x.ndim - 1


def _dims(dim: Any) -> tuple[int, ...]:
    return (dim,) if isinstance(dim, int) else tuple(dim)


def _batch(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The arrays broadcast to one batch size (a perturbed value beside constants of batch 1)."""
    size = max(a.shape[0] for a in arrays)
    return [a if a.shape[0] == size else np.broadcast_to(a, (size,) + a.shape[1:]) for a in arrays]


def np_index(index: tuple) -> tuple:
    """An index tuple for a batched array: tensor items (masks, integer tensors) are constants, so
    their batch row 0; the symbolic walk holds masks as 0/1 objects."""
    items = []
    for item in index:
        if isinstance(item, np.ndarray):
            item = item[0]
            if item.dtype == object or item.dtype == bool:
                item = as_mask(item)
        items.append(item)
    return (slice(None), *items)


def as_mask(cond: Any) -> np.ndarray:
    """A condition as bool: masks are bool already; the symbolic walk holds them as 0/1 objects."""
    cond = np.asarray(cond)
    if cond.dtype == object:
        return np.vectorize(lambda v: bool(v != 0), otypes=[bool])(cond)
    return cond.astype(bool)


# ---- shapes

def np_clone(x):
    return np.array(x, copy=True)


def np_unsqueeze(x, dim):
    nd = _nd(x)
    if not -(nd + 1) <= dim <= nd:
        raise IndexError(f"dim {dim} is out of range for a tensor of {nd} dims")
    return np.expand_dims(x, dim % (nd + 1) + 1)


def t_squeeze(x, dim):
    return x.squeeze() if dim is None else x.squeeze(dim)


def np_squeeze(x, dim):
    nd = _nd(x)
    if nd == 0:
        return x
    if dim is None:
        axes = tuple(a for a in range(1, x.ndim) if x.shape[a] == 1)
    else:
        axes = tuple(d % nd + 1 for d in _dims(dim) if x.shape[d % nd + 1] == 1)
    return np.squeeze(x, axis=axes) if axes else x


def t_flatten(x, start_dim, end_dim):
    return x.flatten(start_dim, end_dim)


def np_flatten(x, start_dim, end_dim):
    nd = _nd(x)
    if nd == 0:
        return x.reshape(x.shape[0], 1)
    lo, hi = start_dim % nd, end_dim % nd
    if lo > hi:
        raise ValueError("flatten() has invalid args: start_dim cannot come after end_dim")
    shape = x.shape[1:]
    return x.reshape((x.shape[0],) + shape[:lo] + (math.prod(shape[lo:hi + 1]),) + shape[hi + 1:])


def t_cat(tensors, dim):
    return _torch().cat(tuple(tensors), dim=dim)


def np_cat(tensors, dim):
    arrays = _batch(list(tensors))
    nd = _nd(arrays[0])
    if nd == 0:
        raise ValueError("zero-dimensional tensor cannot be concatenated")
    return np.concatenate(arrays, axis=dim % nd + 1)


def t_stack(tensors, dim):
    return _torch().stack(tuple(tensors), dim=dim)


def np_stack(tensors, dim):
    arrays = _batch(list(tensors))
    return np.stack(arrays, axis=dim % (_nd(arrays[0]) + 1) + 1)


# ---- where and comparisons (masks are constants: the walker holds them at the point)

def t_where(cond, a, b):
    return _torch().where(cond, a, b)


def np_where(cond, a, b):
    return np.where(as_mask(cond), a, b)


def comparison(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """numpy's comparison on real parts (the walker evaluates masks at the unperturbed point)."""
    return lambda a, b: fn(np.real(a), np.real(b))


# ---- linear and losses (matmul, transpose, log_softmax and the reductions passed in)

def t_linear(x, weight, bias):
    return _torch().nn.functional.linear(x, weight, bias)


def linear(matmul: Callable, transpose: Callable, grow: Callable) -> Callable:
    def run(x, weight, bias):
        out = matmul(x, transpose(weight))
        if bias is None:
            return out
        out, bias = grow(out, bias)
        return out + bias
    return run


def t_mse_loss(a, b):
    import warnings
    with warnings.catch_warnings():  # torch warns when the target broadcasts; numpy broadcasts alike
        warnings.simplefilter("ignore", UserWarning)
        return _torch().nn.functional.mse_loss(a, b)


def mse_loss(mean: Callable, grow: Callable) -> Callable:
    def run(a, b):
        a, b = grow(a, b)
        d = a - b
        return mean(d * d, None, False)
    return run


def t_cross_entropy(logits, target):
    return _torch().nn.functional.cross_entropy(logits, target)


def cross_entropy(log_softmax: Callable, mean: Callable, total: Callable) -> Callable:
    """torch's cross_entropy, reduction 'mean': class indices (an integer target, ignore_index -100)
    or class probabilities (a float target of the logits' shape). The class dim is 1 (0 for 1-D)."""
    def run(logits, target):
        nd = _nd(logits)
        class_axis = 2 if nd >= 2 else 1
        logp = log_softmax(logits, 1 if nd >= 2 else 0)
        target = np.asarray(target)
        if np.issubdtype(target.dtype, np.integer):
            labels = target[0]
            keep = labels != -100
            safe = np.where(keep, labels, 0)
            index = np.expand_dims(safe, class_axis - 1)[None]
            index = np.broadcast_to(index, (logp.shape[0],) + index.shape[1:])
            picked = np.squeeze(np.take_along_axis(logp, index, axis=class_axis), axis=class_axis)
            count = int(np.sum(keep))
            if keep.all():
                return -mean(picked, None, False)
            return -total(np.where(keep[None], picked, 0), None, False) / count
        per = -total(target * logp, class_axis - 1, False)
        return mean(per, None, False)
    return run


# ---- in-place statements (functional on the numpy side; the walker rebinds the name)

def t_setitem(x, index, value):
    x[index] = value
    return x


def np_setitem(x, index, value):
    """x with x[index] = value, as a new array (batched like the wider of the two)."""
    value = np.asarray(value)
    size = max(x.shape[0], value.shape[0] if value.ndim else 1)
    dtype = x.dtype if np.issubdtype(x.dtype, np.integer) else np.result_type(x, value)
    out = np.array(np.broadcast_to(x, (size,) + x.shape[1:]), dtype=dtype)
    key = np_index(index)
    rank = out[key].ndim
    if value.ndim:  # the value's batch axis against the target's, its logical dims broadcast
        value = value.reshape(value.shape[:1] + (1,) * (rank - value.ndim) + value.shape[1:])
    out[key] = value
    return out


def t_inplace(method: str) -> Callable:
    def run(x, *args):
        return getattr(x, method)(*args)
    return run


def inplace(fn: Callable) -> Callable:
    """The functional form of an in-place method: fn(x, ...) keeping x's shape (torch refuses growth)."""
    def run(x, *args):
        out = fn(x, *args)
        out = np.asarray(out) if not isinstance(out, np.ndarray) else out
        if out.shape[1:] != x.shape[1:]:
            out = np.broadcast_to(out, out.shape[:1] + x.shape[1:])
        return out
    return run


def np_zero_(x):
    return np.zeros_like(x)


def np_fill_(x, value):
    return np.full_like(x, value)
