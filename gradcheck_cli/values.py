"""--var / --grad-output SPEC strings (and Python values) → float64 numpy arrays.

A SPEC is a number `2` (a 0-d tensor), a comma list `2,3` (1-D), a nested list `[[1,2],[3,4]]`, or a
generator `randn(3,4)`, `rand(2)`, `ones(2,2)`, `zeros(3)`, `full(2,3, value=0.5)`, `arange(4)`,
`linspace(0,1,5)`; `long(SPEC)` makes an int64 tensor (class labels, indices) that is never differentiated.
Random values come from a Generator seeded by (seed, variable name), so a variable's
value depends only on the seed, its name and its SPEC, never on the other variables.
"""
from __future__ import annotations

import ast
import math
import zlib
from typing import Any

import numpy as np

from .errors import InputError
from .parse import DEFAULT_LIMITS, MAX_DIMS, Limits, quiet_parse

_GENERATORS = ("randn", "rand", "ones", "zeros", "full", "arange", "linspace")

# A variable used in an expression with no --var gets a scalar drawn from this interval: positive, so
# log/sqrt are defined, and away from 0 where abs/relu have kinks.
DEFAULT_SCALAR_RANGE = (0.5, 1.5)


def rng_for(seed: int, name: str) -> np.random.Generator:
    """The random stream of one variable: fixed by the seed and the name alone."""
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def default_value(name: str, seed: int) -> np.ndarray:
    """The random scalar a variable gets when no value is given."""
    low, high = DEFAULT_SCALAR_RANGE
    return np.asarray(rng_for(seed, name).uniform(low, high), dtype=np.float64)


def parse_spec(text: str, name: str, seed: int = 0, limits: Limits = DEFAULT_LIMITS, used: int = 0) -> np.ndarray:
    """One SPEC string → a float64 array. Raises InputError naming the variable.

    `used`: bytes the case's other inputs already take; the array is refused before it is made when
    it would take them past --max-memory.
    """
    text = text.strip()
    if not text:
        raise InputError(f"the value of '{name}' is empty; give a number, a list or e.g. randn(3)")
    if len(text) > limits.max_length * 50:
        raise InputError(f"the value of '{name}' is too long ({len(text)} characters)")
    try:
        tree = quiet_parse(text, "eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise InputError(f"cannot read the value of '{name}': {_short(text)!r}; expected a number, "
                         "a comma list '2,3', a nested list '[[1,2],[3,4]]' or e.g. 'randn(3,4)'") from None
    if isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "long":
        return _long(tree, text, name, seed, limits, used)
    if isinstance(tree, ast.Call):
        return _generate(tree, text, name, seed, limits, used)
    return to_array(_literal(tree, text, name), name, limits, used)


def _long(node: ast.Call, text: str, name: str, seed: int, limits: Limits, used: int = 0) -> np.ndarray:
    """long(SPEC): the SPEC's values as int64, as torch's .long(); they must be whole numbers."""
    if len(node.args) != 1 or node.keywords:
        raise InputError(f"long() takes one value, as long([0, 2]): '{name}' is {_short(text)!r}")
    inner = node.args[0]
    if isinstance(inner, ast.Call):
        values = _generate(inner, text, name, seed, limits, used)
    else:
        values = to_array(_literal(inner, text, name), name, limits, used)
    _check_finite(values, name)
    if not np.all(values == np.floor(values)) or np.any(np.abs(values) > 2**53):
        raise InputError(f"long() needs whole numbers: '{name}' is {_short(text)!r}")
    return values.astype(np.int64)


def is_integer(value: np.ndarray) -> bool:
    """An integer tensor (from long()): a constant, never differentiated."""
    return np.issubdtype(np.asarray(value).dtype, np.integer)


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _literal(node: ast.AST, text: str, name: str) -> Any:
    """Numbers and (nested) lists or tuples of numbers, checked by the whitelist.

    A run of signs (`---2`) is read in a loop: the parser lets it be thousands long. Lists recurse,
    but Python's parser refuses brackets nested past 200 levels first.
    """
    sign, original = 1.0, node
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -sign if isinstance(node.op, ast.USub) else sign
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return sign * (float(node.value) if abs(node.value) < 1e308 else math.inf)
    if isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return sign * float(node.id)
    if isinstance(node, (ast.List, ast.Tuple)) and node is original:  # no sign before a list
        return [_literal(elt, text, name) for elt in node.elts]
    raise InputError(f"cannot read the value of '{name}': {_short(text)!r}; only numbers and lists of "
                     "numbers, or a generator such as randn(3), are allowed")


def _generate(node: ast.Call, text: str, name: str, seed: int, limits: Limits, used: int) -> np.ndarray:
    func = node.func.id if isinstance(node.func, ast.Name) else None
    if func not in _GENERATORS:
        raise InputError(f"unknown generator in the value of '{name}': {_short(text)!r}; "
                         f"use one of {', '.join(_GENERATORS)}")
    args = [_literal(a, text, name) for a in node.args]
    kwargs = {kw.arg: _literal(kw.value, text, name) for kw in node.keywords}
    if not all(isinstance(v, float) for v in [*args, *kwargs.values()]):
        raise InputError(f"{func}() takes numbers, not lists: '{name}' is {_short(text)!r}")
    if func == "linspace":
        return _linspace(args, kwargs, text, name, limits, used)
    if func == "arange":
        if len(args) != 1 or kwargs or not float(args[0]).is_integer() or args[0] < 0:
            raise InputError(f"arange takes one non-negative integer, as arange(4): '{name}' is {_short(text)!r}")
        _check_size(int(args[0]), name, limits, used)
        return np.arange(int(args[0]), dtype=np.float64)
    allowed = {"full": {"value"}, "rand": {"low", "high"}, "randn": {"mean", "std"}}.get(func, set())
    unknown = set(kwargs) - allowed
    if unknown or not all(isinstance(a, float) and a.is_integer() and a >= 0 for a in args):
        raise InputError(f"{func}() takes a shape of non-negative integers"
                         f"{' and ' + ', '.join(sorted(allowed)) + '=' if allowed else ''}: "
                         f"'{name}' is {_short(text)!r}")
    if not all(math.isfinite(v) for v in kwargs.values()) or kwargs.get("std", 0.0) < 0:
        raise InputError(f"{func}() needs finite {', '.join(sorted(kwargs))}"
                         f"{' and std >= 0' if func == 'randn' else ''}: '{name}' is {_short(text)!r}")
    shape = tuple(int(a) for a in args)
    _check_rank(len(shape), name)
    _check_size(math.prod(shape), name, limits, used)
    if math.prod(max(n, 1) for n in shape) > limits.max_elements:  # empty, but numpy still sizes the rest
        raise InputError(f"'{name}' has a shape of {list(shape)}: its non-empty dims alone exceed the limit of "
                         f"{limits.max_elements:,} elements (raise it with --max-elements)")
    rng = rng_for(seed, name)
    if func == "randn":
        return rng.normal(kwargs.get("mean", 0.0), kwargs.get("std", 1.0), size=shape)
    if func == "rand":
        if kwargs.get("low", 0.0) > kwargs.get("high", 1.0):
            raise InputError(f"rand() needs low <= high: '{name}' is {_short(text)!r}")
        return rng.uniform(kwargs.get("low", 0.0), kwargs.get("high", 1.0), size=shape)
    if func == "full":
        if "value" not in kwargs:
            raise InputError(f"full() needs value=, as full(2,3, value=0.5): '{name}' is {_short(text)!r}")
        return np.full(shape, kwargs["value"], dtype=np.float64)
    return (np.ones if func == "ones" else np.zeros)(shape, dtype=np.float64)


def _linspace(args: list, kwargs: dict, text: str, name: str, limits: Limits, used: int) -> np.ndarray:
    if len(args) != 3 or kwargs or not float(args[2]).is_integer() or args[2] < 0 or \
            not all(math.isfinite(a) for a in args[:2]):
        raise InputError(f"linspace takes start, stop and a count, as linspace(0, 1, 5): "
                         f"'{name}' is {_short(text)!r}")
    _check_size(int(args[2]), name, limits, used)
    return np.linspace(args[0], args[1], int(args[2]), dtype=np.float64)


def _check_size(count: int, name: str, limits: Limits, used: int = 0) -> None:
    if count > limits.max_elements:
        raise InputError(f"'{name}' would have {count:,} elements; the limit is {limits.max_elements:,} "
                         "(raise it with --max-elements)")
    from .memory import check_inputs
    check_inputs(used, f"with '{name}'", count, limits.max_memory)


def spec_elements(value: Any) -> int:
    """How many elements a value will have, without making it: exact for a generator SPEC and for
    arrays, 0 where only reading it tells (a literal list, bounded by the SPEC length limit)."""
    if not isinstance(value, str):
        shape = getattr(value, "shape", None)  # numpy arrays and torch tensors: made already, only counted
        return math.prod(int(n) for n in shape) if isinstance(shape, tuple) else 0
    try:
        tree = quiet_parse(value.strip(), "eval").body
        func = tree.func.id if isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) else None
        if func not in _GENERATORS:
            return 0
        args = [a.value for a in tree.args if isinstance(a, ast.Constant) and isinstance(a.value, (int, float))]
        if len(args) != len(tree.args) or not all(float(a).is_integer() and a >= 0 for a in args):
            return 0
        count = int(args[0]) if func == "arange" and args else int(args[2]) if func == "linspace" and len(args) == 3 \
            else math.prod(int(a) for a in args)
        return count if count <= 2**62 else 2**62
    except (SyntaxError, ValueError, RecursionError, MemoryError, TypeError, OverflowError, IndexError):
        return 0


def _check_rank(ndim: int, name: str) -> None:
    if ndim > MAX_DIMS:
        raise InputError(f"'{name}' would have {ndim} dims; at most {MAX_DIMS} are supported")


def _check_finite(array: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(array)):
        kind = "nan" if np.isnan(array).any() else "inf"
        raise InputError(f"the value of '{name}' contains {kind}; give finite numbers")


def to_array(value: Any, name: str, limits: Limits = DEFAULT_LIMITS, used: int = 0) -> np.ndarray:
    """A Python number, (nested) list, numpy array or torch tensor → a float64 array."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        if str(getattr(value, "dtype", "")) in ("torch.int64", "torch.int32", "torch.int16", "torch.int8",
                                                 "torch.uint8"):
            array = value.detach().cpu().numpy().astype(np.int64)  # labels: kept integer, as torch.long
            _check_rank(array.ndim, name)
            _check_size(array.size, name, limits)
            return array
        value = value.detach().cpu().double().numpy()
    if isinstance(value, bool):
        raise InputError(f"'{name}' is a bool; give a number")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise InputError(f"the value of '{name}' is not a rectangular array of numbers "
                         "(rows of different lengths?)") from None
    _check_rank(array.ndim, name)
    _check_size(array.size, name, limits, used)
    return np.array(array, dtype=np.float64, copy=True)


def resolve(value: Any, name: str, seed: int, limits: Limits = DEFAULT_LIMITS, used: int = 0) -> np.ndarray:
    """Any accepted value (SPEC string or Python/numpy/torch value) → a float64 array."""
    array = parse_spec(value, name, seed, limits, used) if isinstance(value, str) \
        else to_array(value, name, limits, used)
    _check_finite(array, name)  # a nan/inf input is bad input, as a nan/inf statement is
    return array
