"""The check plan: the method, the tolerances and one strategy, chosen before any work.

`plan_check` reads the options and the prepared case (its inputs and, from memory.py's walk on the meta
device, every statement's size) and decides everything a check will do: the numeric method, the
tolerances, whether every element is checked (full), the entries on a known Jacobian pattern
(structured), random projections (projected), the Taylor remainder test (taylor) or the Hessian too
(order 2), and whether custom-op call sites are inspected. Every conflict between options, and between
the options and the case, is refused here as one InputError, before autograd or the numeric engine
runs (--symbolic on a check that auto would project, --method taylor on a Jacobian, --eps with a method
that chooses its own steps, ...).

Shapes are known without running anything for every built-in op. With plugin ops (whose code is not run
for an estimate, see memory.py) the output's shape is unknown until the forward: the costs are then
estimated from the inputs, and a Jacobian too large to build is still projected when the forward shows
it (the one decision left to the analytic side), with the same conflicts refused by it.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any

import numpy as np

from .analytic import Mode
from .compare import default_tolerances
from .errors import InputError
from .ir import Call, Name, _names
from .memory import size_text
from .methods import ALL_METHODS, TAYLOR, NumericMethod, choose_method
from .ops import Group
from .structure import plan as structure_plan
from .structured import Request

if TYPE_CHECKING:
    from .api import CheckOptions, Prepared

_ROW_FACTOR = 4  # a batched row holds every statement's value several times over (numeric.py's row_bytes)


class Strategy(enum.Enum):
    FULL = "full"               # every element: analytic against numeric
    STRUCTURED = "structured"   # a Jacobian on its known pattern (structured.py), the rest in full
    PROJECTED = "projected"     # random directions: g·v against d/dt f(x + t·v)
    TAYLOR = "taylor"           # the Taylor remainder order of every element
    ORDER2 = "order 2"          # every element, and every Hessian block by double backward


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a check will do, decided up front."""

    strategy: Strategy
    method: str                 # the method actually used (a key of methods.ALL_METHODS)
    atol: float
    rtol: float
    eps: float | None           # --eps, when the method honours it (it is refused otherwise)
    mode: Mode | None           # None: the output's shape is known only after the forward (plugin ops)
    inspect_calls: bool         # check each custom-op call site on its own (custom.py)
    symbolic: bool              # the exact derivative (sympy) as a third opinion on every element
    analytic_fast: bool | None  # run_analytic's `fast`: None lets it project a Jacobian too large to build
    structure: Request | None   # asks run_analytic for Jacobians on their patterns
    why: str = ""               # why projected (or what a full check costs), for messages

    @property
    def described(self) -> NumericMethod:
        return ALL_METHODS[self.method]


@dataclasses.dataclass(frozen=True)
class _Costs:
    """What a full check of this case would take, from shapes alone."""

    mode: Mode | None
    numeric_bytes: float        # bytes through numpy over every probe (numeric.NumericEngine.full_cost)
    jacobian: int | None        # output elements × differentiated elements in Jacobian mode (None: unknown)
    targets: tuple[tuple[str, int, int], ...] = ()  # (name, start, elements) of what gets a gradient
    out_elements: int | None = None


def plan_check(options: "CheckOptions", prep: "Prepared", grad_output: np.ndarray | None,
               full_budget: float) -> Plan:
    """The plan for a check of `prep` under `options`; `full_budget` is the numeric work (bytes) above which
    auto goes projected. Raises InputError for every conflict, before any work."""
    method = choose_method(options.method, prep.program, prep.table)
    described = ALL_METHODS[method]
    default_atol, default_rtol = default_tolerances(options.dtype, method)
    atol = default_atol if options.atol is None else options.atol
    rtol = default_rtol if options.rtol is None else options.rtol
    costs = _costs(prep, grad_output, described, options.eps)
    why = _too_large(costs, full_budget)
    _refuse_conflicts(options, prep, described, costs, why)
    taylor, order2 = method == TAYLOR, options.order == 2
    projected = bool(options.fast) or (options.fast is None and bool(why))
    inspect = options.inspect_ops and any(prep.table[op].origin is not None for op in prep.program.ops)
    common = dict(method=method, atol=atol, rtol=rtol, eps=options.eps, mode=costs.mode, inspect_calls=inspect,
                  symbolic=options.symbolic, why=why)
    if projected:
        return Plan(Strategy.PROJECTED, analytic_fast=True, structure=None, **common)
    if taylor or order2:
        return Plan(Strategy.TAYLOR if taylor else Strategy.ORDER2, analytic_fast=False, structure=None, **common)
    # --full builds every entry, and --symbolic needs them all; auto checks a Jacobian on its pattern
    may_be_jacobian = costs.mode in (Mode.JACOBIAN, None)
    structure = Request(options.seed, atol, rtol) if (
        options.fast is None and not options.symbolic and may_be_jacobian) else None
    strategy = Strategy.STRUCTURED if structure is not None and costs.mode is Mode.JACOBIAN else Strategy.FULL
    # shapes known: the plan has decided; unknown (plugin ops): a Jacobian too large to build is projected
    fast = None if costs.mode is None and options.fast is None and not options.symbolic else False
    return Plan(strategy, analytic_fast=fast, structure=structure, **common)


def _refuse_conflicts(options: "CheckOptions", prep: "Prepared", method: NumericMethod, costs: _Costs,
                      why: str) -> None:
    """Every conflict between the options, and between them and the case, as one InputError."""
    taylor, order2 = method.name == TAYLOR, options.order == 2
    if options.eps is not None and not method.honours_eps:
        raise InputError(f"--eps sets the step of a difference method; --method {method.name} chooses its own "
                         "ladder of steps (1e-2·max(|x|, 1)·4^-k), so --eps would be ignored: drop --eps")
    if costs.mode is Mode.JACOBIAN and taylor:
        raise InputError("--method taylor needs a scalar output or --grad-output (it tests g·out)")
    if costs.mode is Mode.JACOBIAN and order2:
        raise InputError("--order 2 needs a scalar output or --grad-output (it checks d²(g·out)/dx²)")
    if options.symbolic and taylor:
        raise InputError("--symbolic compares every element; this check is a Taylor test")
    if options.symbolic:
        _refuse_symbolic(prep, costs)
    every_element = "--symbolic" if options.symbolic else "--method taylor" if taylor else \
        "--order 2" if order2 else ""
    if options.fast is None and why and every_element:
        raise InputError(f"{every_element} checks every element, but this check is too large for that ({why}), "
                         "so auto would project it: pass --full to check every element anyway, or check "
                         "fewer elements (--wrt, smaller inputs)")


def _refuse_symbolic(prep: "Prepared", costs: _Costs) -> None:
    """--symbolic: sympy installed, and no derivative with more entries than it is given."""
    from .symbolic import _sympy, too_many_entries, too_much_work, work_estimate
    _sympy()
    program, sizes = prep.program, prep.sizes
    if sizes is not None and len(sizes) != len(program.statements):
        sizes = None
    jacobian = costs.mode is Mode.JACOBIAN
    for name, start, elements in costs.targets:
        refusal = too_many_entries(name, elements, costs.out_elements or 1, jacobian)
        kind = structure_plan(program, prep.table, name, start).kind
        if refusal is None and sizes is not None and kind != "zero":
            bound = {n: int(np.size(v)) for n, v in prep.inputs.items()}
            bound.update({s.target: sizes[i] for i, s in enumerate(program.statements[:start]) if s.target})
            work = work_estimate(program, start, elements, sizes[-1], jacobian, kind, dict(enumerate(sizes)), bound)
            refusal = too_much_work(name, work)
        if refusal is not None:
            raise refusal


def _too_large(costs: _Costs, full_budget: float) -> str:
    """Why a full check is too large for auto ('' when it is not)."""
    from . import analytic  # read at call time: tests lower the limit
    if costs.mode is Mode.JACOBIAN and costs.jacobian is not None and costs.jacobian > analytic.MAX_JACOBIAN_ELEMENTS:
        return f"its Jacobian would have {costs.jacobian:,} elements, above {analytic.MAX_JACOBIAN_ELEMENTS:,}"
    if costs.numeric_bytes > full_budget:
        return (f"the numeric side would push about {size_text(costs.numeric_bytes)} through numpy, above "
                f"{size_text(full_budget)}")
    return ""


def _costs(prep: "Prepared", grad_output: np.ndarray | None, method: NumericMethod, eps: float | None) -> _Costs:
    """The mode and what a full check would cost, from the inputs' and statements' sizes."""
    program, sizes = prep.program, prep.sizes
    if sizes is not None and len(sizes) != len(program.statements):
        sizes = None
    input_elements = sum(int(np.size(v)) for v in prep.inputs.values())
    if sizes is None:
        mode = Mode.VJP if grad_output is not None else None
        row = 8 * _ROW_FACTOR * max(input_elements, 1)
        targets = [(name, 0, int(np.size(prep.inputs[name]))) for name in prep.wrt]
    else:
        out = sizes[-1]
        mode = Mode.VJP if grad_output is not None else Mode.GRADIENT if out == 1 else Mode.JACOBIAN
        row = 8 * _ROW_FACTOR * max(input_elements + sum(sizes), 1)
        targets = [(name, 0, int(np.size(prep.inputs[name]))) for name in prep.wrt]
        targets += [(name, start, sizes[start - 1]) for name, start in differentiated_intermediates(prep)]
    row *= 2 if method.complex_arithmetic else 1
    probes = method.probes_per_column(eps)  # taylor: its ladder, every column (no structure shortcut)
    work = 0.0
    for name, start, elements in targets:
        how = "dense" if method.name == TAYLOR else structure_plan(program, prep.table, name, start).kind
        columns = 0 if how == "zero" else 1 if how in ("aligned", "reduced") else elements
        work += float(columns) * row * probes
    jacobian = None if sizes is None or mode is not Mode.JACOBIAN else sizes[-1] * sum(n for _, _, n in targets)
    return _Costs(mode, work, jacobian, tuple(targets), None if sizes is None else sizes[-1])


def differentiated_intermediates(prep: "Prepared") -> list[tuple[str, int]]:
    """(name, first statement to re-run) of the assigned names autograd will differentiate, as far as the
    program's text says: computed from a checked input outside no_grad, not aliases, not changed in place,
    not the output (analytic._distinct_intermediates decides exactly, on the tensors)."""
    program = prep.program
    live = set(prep.wrt)
    found = []
    last = len(program.statements) - 1
    for index, statement in enumerate(program.statements):
        depends = not statement.untracked and any(n.id in live for n in _names(statement.value))
        if statement.target is None or not depends:
            continue
        live.add(statement.target)
        if statement.inplace or isinstance(statement.value, Name) or index == last:
            continue
        if isinstance(statement.value, Call) and prep.table[statement.value.op].group is Group.STOP_GRADIENT:
            continue  # detach(x): a constant, no gradient of its own
        if statement.target in program.modified or statement.target in dict(found):
            continue
        found.append((statement.target, index + 1))
    return found


def describe(plan: Plan) -> dict[str, Any]:
    """The plan as plain data (for tests and debugging)."""
    return {"strategy": plan.strategy.value, "method": plan.method, "atol": plan.atol, "rtol": plan.rtol,
            "eps": plan.eps, "mode": None if plan.mode is None else plan.mode.value,
            "inspect_calls": plan.inspect_calls, "why": plan.why}
