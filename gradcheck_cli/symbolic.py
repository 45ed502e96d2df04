"""The symbolic side: exact derivatives with sympy, a third opinion beside autograd and differences.

The same walk as the numeric engine (`Walker`), over object arrays of sympy expressions instead of
float64 (`SympyBackend`). Every value is a `sympy.Float` of SYMPY_DIGITS digits built exactly from
its float64, except the perturbed elements, which are `x_j + s_j` for a symbol s_j: an offset from
the point. Differentiating an output element in s_j and setting every symbol to 0 gives the
derivative at the point, evaluated at 50 digits and only then rounded to float64. Because symbols
are offsets, the value of any expression at the point is the expression with its symbols at 0, which
is how the op table's non-analytic sympy forms choose a branch (torch's convention at a kink).

Expressions stay small: when the output depends on `name` element by element (structure.plan says
"aligned", or "reduced" for a sum/mean of such) every element gets its own symbol in one walk, as
the numeric engine perturbs them all at once; otherwise one element is symbolic per walk, the rest
are numbers that sympy evaluates as it goes.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .errors import InputError
from .evaluate import Backend, Walker
from .numeric import NumericEngine
from .ops import SYMPY_DIGITS, Group, OpSpec, _sy_real
from .parse import Call, Name, _walk
from .structure import plan, reduction_weights

MAX_SYMBOLIC_ELEMENTS = 2_000       # derivative entries one call may compute (elements × outputs)
MAX_SYMBOLIC_WORK = 250_000         # element evaluations one call may make (about 30 s of sympy)
_DIFF_COST = 30                     # one sympy.diff costs about as much as this many evaluations


def _sympy() -> Any:
    try:
        import sympy
    except ImportError:
        raise InputError("--symbolic needs sympy: pip install sympy") from None
    return sympy


class SympyBackend(Backend):
    """Batched object arrays of sympy expressions (axis 0 as in NumpyBackend, of size 1 here).

    `held` maps each detach() node to its float64 value at the point, as recorded by the numeric
    engine: a stop-gradient is the constant it held there. Ops take their `sympy` form; a built-in
    row without one takes its numpy form, which works on object arrays. A plugin op without one is
    evaluated in float64 when no argument depends on the perturbed elements, and refused otherwise.
    """

    name = "sympy"

    def __init__(self, held: dict[int, np.ndarray]):
        self.sympy = _sympy()
        self.held = held
        self._held_exact: dict[int, np.ndarray] = {}

    def exact(self, value: Any) -> np.ndarray:
        """float64 values → an object array of Floats with the same values exactly (integer tensors
        stay integers: labels and indices; masks become exact 0/1)."""
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.integer):
            return array
        if array.dtype == bool:
            return np.vectorize(lambda v: self.sympy.Integer(int(v)), otypes=[object])(array)
        float_ = self.sympy.Float
        out = np.empty(np.shape(value), dtype=object)
        flat = out.reshape(-1)
        for k, v in enumerate(np.real(np.asarray(value, dtype=np.complex128)).reshape(-1)):
            flat[k] = float_(float(v), SYMPY_DIGITS)
        return out

    def lift(self, number: float) -> np.ndarray:
        return self.exact(np.full((1,), number))

    def apply(self, spec: OpSpec, args: list[Any]) -> Any:
        fn = spec.sympy
        if fn is None:
            if spec.origin is not None or spec.group is Group.CUSTOM:
                return self._constant(spec, args)
            fn = spec.numpy
        if spec.group is Group.ELEMENTWISE:
            arrays = [a for a in args if isinstance(a, np.ndarray)]
            if len(arrays) > 1:
                rank = max(a.ndim for a in arrays)
                args = [_grow(a, rank) if isinstance(a, np.ndarray) else a for a in args]
        return fn(*args)

    def hold(self, key: Any, compute: Any) -> Any:
        index = id(key)
        if index not in self._held_exact:
            self._held_exact[index] = self.exact(self.held[index])
        return self._held_exact[index]

    def shift(self, key: Any, current: Any, compute: Any) -> Any:
        return current + self.hold(key, compute)

    def has_held(self, key: Any) -> bool:
        return True

    def _constant(self, spec: OpSpec, args: list[Any]) -> np.ndarray:
        """A plugin op on constants: its numpy form in float64, the result made exact again."""
        tensors = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
        if any(_depends(args[i]) for i in tensors):
            raise InputError(f"--symbolic: op '{spec.name}' has no sympy form")
        floats = [_float_array(a) if i in tensors else a for i, a in enumerate(args)]
        with np.errstate(all="ignore"):
            return self.exact(spec.numpy(*floats))


def _grow(x: np.ndarray, rank: int) -> np.ndarray:
    """Unit axes after the batch axis up to `rank`, so numpy broadcasts as torch does."""
    return x.reshape(x.shape[:1] + (1,) * (rank - x.ndim) + x.shape[1:])


def _depends(value: Any) -> bool:
    """Whether any element holds a perturbation symbol."""
    items = value.reshape(-1) if isinstance(value, np.ndarray) else (value,)
    return any(getattr(e, "free_symbols", None) for e in items)


def _float_array(value: Any) -> Any:
    return _sy_real(value) if isinstance(value, np.ndarray) else float(value)


class _LazyEnv(dict):
    """Bindings made exact on first use: a walk reads only the names its statements mention."""

    def __init__(self, source: dict[str, Any], cache: dict[str, Any], backend: SympyBackend):
        super().__init__()
        self.source, self.cache, self.backend = source, cache, backend

    def __missing__(self, key: str) -> Any:
        if key not in self.cache:
            value = self.source[key]  # a KeyError here is the walker's own, as with a plain dict
            self.cache[key] = self.backend.exact(value) if isinstance(value, np.ndarray) else value
        self[key] = self.cache[key]
        return self[key]


def too_many_entries(name: str, size: int, out_size: int, jacobian: bool,
                     max_elements: int = MAX_SYMBOLIC_ELEMENTS) -> InputError | None:
    """The refusal of a derivative with more entries than sympy is given (plan.py asks before any work)."""
    entries = size * out_size if jacobian else size
    if entries <= max_elements:
        return None
    what = (f"the Jacobian d output / d '{name}' has {out_size} × {size} = {entries} entries"
            if jacobian else f"'{name}' has {size} elements")
    hint = f"give --grad-output (then '{name}' needs {size}), " if jacobian and size <= max_elements else ""
    return InputError(f"--symbolic: {what}, above the symbolic engine's limit of {max_elements} "
                      f"derivative entries; {hint}leave '{name}' out with --wrt, or use smaller inputs")


class SymbolicEngine:
    """Exact derivatives of a numeric engine's program at its point, by sympy.

    Args:
        numeric: the numeric engine: its program, table, statement bindings (`envs`), detach values
            (`held`) and output are reused, so both engines differentiate the same function.
        max_elements: the most derivative entries one `derivative` call may compute.

    Raises:
        InputError: sympy is not installed.
    """

    def __init__(self, numeric: NumericEngine, max_elements: int = MAX_SYMBOLIC_ELEMENTS):
        self.sympy = _sympy()
        self.numeric = numeric
        self.program = numeric.program
        self.table = numeric.table
        self.max_elements = max_elements
        self.backend = SympyBackend(numeric.held)
        self._exact: dict[int, dict[str, Any]] = {}  # per start: bindings made exact so far

    def derivative(self, name: str, start: int, weights: np.ndarray | None) -> np.ndarray:
        """Exact d output / d name at the point, float64, as NumericEngine.derivative(...).value.

        Args:
            name: an input (start 0), or an intermediate assigned by statement `start - 1`.
            start: the first statement re-run with `name` symbolic; the rest is held at
                numeric.envs[start].
            weights: the upstream gradient (a VJP; weights 1 for a scalar output): the result has
                name's shape. None: the full Jacobian, of shape output.shape + name.shape.

        Raises:
            InputError: too many entries, or an op on the path with no sympy form.
        """
        base = self._base(name, start)
        out_shape = self.numeric.output.shape
        how = plan(self.program, self.table, name, start)
        self._check_size(name, start, base.size, out_shape, weights is None, how.kind)
        if how.kind == "zero":
            return np.zeros(base.shape if weights is not None else out_shape + base.shape)
        if how.kind == "aligned":
            return self._aligned(name, start, weights, None, out_shape)
        if how.kind == "reduced" and weights is not None:
            inner_shape = self.numeric.node_shape(how.inner)
            inner = reduction_weights(weights, inner_shape, how.reduce_op, how.dim, how.keepdim)
            return self._aligned(name, start, inner, how.inner, inner_shape)
        return self._columns(name, start, weights)

    # ---- the two ways to place symbols

    def _aligned(self, name: str, start: int, weights: np.ndarray | None, node: Call | None,
                 out_shape: tuple[int, ...]) -> np.ndarray:
        """Every element of `name` symbolic at once: valid (and small) when out[o] depends only on
        name[bcast(o)]. Each output element is differentiated in each symbol it holds."""
        sp = self.sympy
        base = self._base(name, start)
        symbols = sp.symbols(f"d0:{base.size}", real=True, finite=True) if base.size else ()
        column = {s: k for k, s in enumerate(symbols)}
        batch = self.backend.exact(base).reshape(-1)
        for k, s in enumerate(symbols):
            batch[k] = batch[k] + s
        out = self._outputs(name, start, batch.reshape((1,) + base.shape), node, out_shape)
        if weights is None:
            jacobian = np.zeros((out.size, base.size))
            for o, expr in enumerate(out):
                for s in _free(expr):
                    jacobian[o, column[s]] = self._float(self._at_point(sp.diff(expr, s)))
            return jacobian.reshape(out_shape + base.shape)
        # each output holds one symbol (the element it is aligned with): differentiate it alone,
        # then weight the number, summing at SYMPY_DIGITS where broadcasting gives an element several
        w = np.broadcast_to(np.asarray(weights, dtype=np.float64), out_shape).reshape(-1).tolist()
        sums: list[Any] = [sp.S.Zero] * base.size
        for o, expr in enumerate(out):
            for s in _free(expr):
                sums[column[s]] += sp.Float(w[o], SYMPY_DIGITS) * self._at_point(sp.diff(expr, s))
        return np.array([self._float(v) for v in sums], dtype=np.float64).reshape(base.shape)

    def _columns(self, name: str, start: int, weights: np.ndarray | None) -> np.ndarray:
        """One element of `name` symbolic per walk, the others numbers: column j of the Jacobian
        (each output element differentiated), or its contraction with the weights (one diff)."""
        sp = self.sympy
        base = self._base(name, start)
        out_shape = self.numeric.output.shape
        s = sp.Symbol("d", real=True, finite=True)
        exact = self.backend.exact(base).reshape(-1)
        w = None if weights is None else \
            self.backend.exact(np.broadcast_to(np.asarray(weights, dtype=np.float64), out_shape)).reshape(-1)
        out_size = int(np.prod(out_shape, dtype=np.int64))
        result = np.zeros((out_size, base.size) if weights is None else base.size)
        for j in range(base.size):
            batch = exact.copy()
            batch[j] = batch[j] + s
            out = self._outputs(name, start, batch.reshape((1,) + base.shape), None, out_shape)
            if weights is None:
                for o, expr in enumerate(out):
                    if s in _free(expr):
                        result[o, j] = self._float(self._at_point(sp.diff(expr, s)))
            else:  # the weighted sum first: sympy collects its common factors (a softmax's
                # denominator), so one diff of a few terms replaces one per output element
                total = sp.Add(*(w[o] * expr for o, expr in enumerate(out) if s in _free(expr)))
                result[j] = self._float(self._at_point(sp.diff(total, s)))
        return result.reshape(out_shape + base.shape if weights is None else base.shape)

    # ---- pieces

    def _base(self, name: str, start: int) -> np.ndarray:
        value = self.numeric.envs[start][name]
        return np.asarray(value[0] if isinstance(value, np.ndarray) else value, dtype=np.float64)

    def _outputs(self, name: str, start: int, batch: np.ndarray, node: Call | None,
                 out_shape: tuple[int, ...]) -> np.ndarray:
        """The program (or `node` of its last statement) with `name` bound to `batch`: the flat
        object array of output elements."""
        env = _LazyEnv(self.numeric.envs[start], self._exact.setdefault(start, {}), self.backend)
        env[name] = batch
        walker = Walker(self.program, self.table, self.backend)
        out = np.asarray(walker.rerun(env, start, node, fallback=batch), dtype=object)
        return np.broadcast_to(out, (1,) + out_shape).reshape(-1)  # the batch axis has size 1

    def _at_point(self, expr: Any) -> Any:
        """An expression's value with every symbol at 0, at SYMPY_DIGITS digits."""
        free = expr.free_symbols
        if free:
            expr = expr.xreplace({s: 0 for s in free})
        return expr.evalf(SYMPY_DIGITS)

    def _float(self, value: Any) -> float:
        """A sympy number as float64; nan where it is complex or complex infinity (zoo)."""
        try:
            return float(value)
        except TypeError:
            return float("nan")

    def _check_size(self, name: str, start: int, size: int, out_shape: tuple[int, ...], jacobian: bool,
                    kind: str) -> None:
        """Refuse work that sympy would take minutes over, before starting it."""
        out_size = int(np.prod(out_shape, dtype=np.int64))
        too_many = too_many_entries(name, size, out_size, jacobian, self.max_elements)
        if too_many is not None:
            raise too_many
        if kind == "zero":
            return
        env = self.numeric.envs[start]
        values = self.numeric.values
        work = work_estimate(self.program, start, size, out_size, jacobian, kind,
                             {i: int(np.size(v)) for i, v in values.items()},
                             {n: int(np.size(v)) for n, v in env.items()})
        refusal = too_much_work(name, work)
        if refusal is not None:
            raise refusal


def work_estimate(program: Any, start: int, size: int, out_size: int, jacobian: bool, kind: str,
                  value_sizes: Mapping[int, int], name_sizes: Mapping[str, int]) -> int:
    """A rough cost in element evaluations: walks × ops × the largest value, plus the diffs. `value_sizes`:
    elements of each statement's value by index; `name_sizes`: of each name bound before statement `start`."""
    calls, names = 0, set()
    for statement in program.statements[start:]:
        c, n = _census(statement.value)
        calls, names = calls + c, names | n
    big = max([size, out_size] + [n for i, n in value_sizes.items() if i >= start]
              + [name_sizes[n] for n in names if n in name_sizes])
    one_walk = kind == "aligned" or (kind == "reduced" and not jacobian)
    walks = 1 if one_walk else size
    diffs = big if one_walk else size * out_size if jacobian else size
    return walks * max(calls, 1) * big + _DIFF_COST * diffs


def too_much_work(name: str, work: int) -> InputError | None:
    """The refusal of a derivative that would keep sympy busy for minutes (plan.py asks before any work)."""
    if work <= MAX_SYMBOLIC_WORK:
        return None
    return InputError(f"--symbolic: d output / d '{name}' is too much work for sympy (about {work} "
                      f"element evaluations, above the symbolic engine's limit of {MAX_SYMBOLIC_WORK}); "
                      f"leave '{name}' out with --wrt, or use smaller inputs")


def _census(node: Any) -> tuple[int, set[str]]:
    """The op calls in an expression tree, and the names it reads."""
    nodes = list(_walk(node)) if isinstance(node, (Call, Name)) else []
    return sum(isinstance(n, Call) for n in nodes), {n.id for n in nodes if isinstance(n, Name)}


def _free(expr: Any) -> Any:
    return getattr(expr, "free_symbols", ())
