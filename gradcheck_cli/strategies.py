"""A check plan carried out: the analytic and numeric sides, then the plan's strategy, one short runner each.

plan.py decides; this module only does. Each runner takes the shared work (autograd's answer, the numeric
engine, the names to check) and gives one result per input and intermediate.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from .analytic import Analytic, Mode, non_finite_error, run_analytic
from .compare import ORDER2_FACTOR, CheckResult, GradientResult, failed_with, projected_result, taylor_result, versions
from .custom import blame_line, inspect_call
from .errors import InputError
from .evidence import element_check, one_sided, unreliable_hint
from .methods import TAYLOR
from .numeric import NumericEngine
from .ops import OpSpec
from .plan import Plan, Strategy
from .structured import check_structured, expanded
from .verdict import SAFETY, Evidence, Policy

if TYPE_CHECKING:
    from .api import CheckOptions, Prepared


def random_directions(seed: int, name: str, count: int, shape: tuple[int, ...]) -> np.ndarray:
    """`count` random ±1 arrays of `shape` (int8, to stay small), the same for the same seed and name."""
    rng = np.random.default_rng([seed % 2**64, zlib.crc32(name.encode()), 0x9E3779B9])  # numpy: no negatives
    signs = rng.integers(0, 2, size=(count, *shape), dtype=np.int8)
    return np.subtract(np.multiply(signs, 2, out=signs), 1, out=signs)


@dataclasses.dataclass
class Work:
    """What every strategy's runner shares."""

    prep: "Prepared"
    plan: Plan
    options: "CheckOptions"
    analytic: Analytic
    engine: NumericEngine
    starts: dict[str, int]      # each input and intermediate checked → the first statement to re-run
    policy: Policy
    hint: str

    def value(self, name: str) -> np.ndarray:
        start = self.starts[name]
        return self.prep.inputs[name] if start == 0 else self.engine.values[start - 1]


def carry_out(prep: "Prepared", plan: Plan, options: "CheckOptions", grad_output: np.ndarray | None,
              replay: str) -> CheckResult:
    """Run a plan: autograd, the numeric engine, the strategy, second order and call sites."""
    work = _start(prep, plan, options, grad_output)
    strategy = Strategy.PROJECTED if work.analytic.projection_weights is not None else plan.strategy
    results = RUNNERS[strategy](work)
    hessians = _second_order(work) if plan.strategy is Strategy.ORDER2 and not work.analytic.backward_error else {}
    analytic = work.analytic
    if analytic.backward_error:  # every gradient is nan: say why on each element
        results = {n: failed_with(r, analytic.backward_error) for n, r in results.items()}
    reports = inspect_custom_ops(analytic.calls, prep.table, options) if plan.inspect_calls else ()
    return CheckResult(
        expression=prep.program.source, dtype=options.dtype, method=plan.method, atol=plan.atol, rtol=plan.rtol,
        eps=plan.eps, seed=options.seed, mode=analytic.mode.value,
        output_shape=tuple(analytic.output.shape), output_value=analytic.output,
        grad_output=analytic.weights if analytic.mode is Mode.VJP else None,
        inputs={n: results[n] for n in prep.wrt},
        intermediates={n: results[n] for n in analytic.intermediates},
        constants={n: v for n, v in prep.inputs.items() if n not in prep.wrt},
        graph=analytic.graph, replay=replay, versions=versions(),
        custom_ops=reports, blame=blame_line(reports), hessians=hessians,
    )


def _start(prep: "Prepared", plan: Plan, options: "CheckOptions", grad_output: np.ndarray | None) -> Work:
    import torch

    analytic = run_analytic(prep.program, prep.table, prep.inputs, prep.wrt, getattr(torch, options.dtype),
                            options.device, grad_output, options.order, fast=plan.analytic_fast,
                            output_directions=lambda shape: random_directions(options.seed, "", options.directions,
                                                                              shape),
                            structure=plan.structure)
    if plan.method == TAYLOR and analytic.weights is None:  # known only now where plugin ops hid the shape
        raise InputError("--method taylor needs a scalar output or --grad-output (it tests g·out)")
    engine = NumericEngine(prep.program, prep.table, prep.inputs, plan.method, plan.eps, prep.numeric_budget)
    for index, value in engine.values.items():
        if not np.all(np.isfinite(value)):
            raise non_finite_error(prep.program, index, value, "float64")
    starts = {name: 0 for name in prep.wrt}
    starts.update({stmt.target: i + 1 for i, stmt in enumerate(prep.program.statements)
                   if stmt.target in analytic.intermediates})
    return Work(prep, plan, options, analytic, engine, starts, Policy(options.allow_unreliable),
                unreliable_hint(plan.method, plan.eps))


def _elementwise(work: Work) -> dict[str, GradientResult]:
    """full / structured / order 2: every element decided (a verified pattern's entries, where one is)."""
    exact_engine = None
    if work.plan.symbolic:
        from .symbolic import SymbolicEngine
        exact_engine = SymbolicEngine(work.engine)
    plan, analytic, engine = work.plan, work.analytic, work.engine
    results = {}
    for name, start in work.starts.items():  # evidence first, then one decision per element
        gradient = analytic.gradients[name]
        if name in analytic.structured:
            results[name] = check_structured(engine, analytic.structured[name], name, start, work.value(name),
                                             gradient, plan.atol, plan.rtol, work.policy, work.hint)
            continue
        numeric = engine.derivative(name, start, analytic.weights)
        exact = None if exact_engine is None else exact_engine.derivative(name, start, analytic.weights)
        results[name] = element_check(engine, name, start, work.value(name), gradient, numeric, analytic.weights,
                                      exact, plan.atol, plan.rtol, work.policy, work.hint)
    return results


def _taylor(work: Work) -> dict[str, GradientResult]:
    """The Taylor remainder test of every element."""
    results = {}
    weights = work.analytic.weights
    for name, start in work.starts.items():
        forward, orders = work.engine.taylor(name, start, weights, work.analytic.gradients[name])
        evidence = Evidence(work.analytic.gradients[name], forward.value, SAFETY * forward.error, hint=work.hint)
        passing = np.isnan(orders) | (orders >= 1.7)
        evidence = dataclasses.replace(evidence, one_sided=one_sided(work.engine, name, start, weights, ~passing))
        results[name] = taylor_result(name, work.value(name), evidence, orders, work.policy)
    return results


def _projected_all(work: Work) -> dict[str, GradientResult]:
    return {name: _projected(work, name, start) for name, start in work.starts.items()}


def _projected(work: Work, name: str, start: int) -> GradientResult:
    """A projected check of one input or intermediate: g·v against the numeric d/dt f(x + t·v)."""
    analytic, options = work.analytic, work.options
    value = work.value(name)
    gradient = analytic.gradients[name]
    if name in analytic.structured and analytic.structured[name].verified:  # entries on a pattern
        gradient = expanded(analytic.structured[name])
    out_shape = analytic.output.shape
    jacobian = analytic.mode is Mode.JACOBIAN
    k = options.directions
    elements = int(np.size(value)) * (int(np.prod(out_shape)) if jacobian else 1)
    if jacobian:
        weights = analytic.projection_weights
        if weights is None:  # the full Jacobian was built: contract it the same way
            weights = random_directions(options.seed, "", k, out_shape)
            gradient = np.tensordot(weights, gradient, axes=len(out_shape))
        gradient = gradient.reshape(k, -1)
    else:
        weights = analytic.weights
        gradient = np.broadcast_to(gradient.reshape(1, -1), (k, gradient.size))
    v = random_directions(options.seed, name, k, np.shape(value))
    projected = np.array([g @ row.astype(np.float64) for g, row in zip(gradient, v.reshape(k, -1))])
    numeric = work.engine.directional(name, start, weights, v)
    evidence = Evidence(projected, numeric.value, SAFETY * numeric.error, hint=work.hint)
    return projected_result(name, value, evidence, work.plan.atol, work.plan.rtol, elements, jacobian, work.policy)


RUNNERS: dict[Strategy, Callable[[Work], dict[str, GradientResult]]] = {
    Strategy.FULL: _elementwise, Strategy.STRUCTURED: _elementwise, Strategy.ORDER2: _elementwise,
    Strategy.TAYLOR: _taylor, Strategy.PROJECTED: _projected_all,
}


def _second_order(work: Work) -> dict[str, Any]:
    """--order 2: every Hessian block (projected above second_order.MAX_HESSIAN_ELEMENTS)."""
    import torch

    from .second_order import check_second_order
    prep, options, plan = work.prep, work.options, work.plan
    total = sum(int(np.size(prep.inputs[n])) for n in prep.wrt)
    return check_second_order(prep.program, prep.table, prep.inputs, prep.wrt, getattr(torch, options.dtype),
                              options.device, work.analytic.weights, plan.atol * ORDER2_FACTOR,
                              plan.rtol * ORDER2_FACTOR, work.policy,
                              random_directions(options.seed, "order 2", options.directions, (2, total)),
                              eps=plan.eps)


def inspect_custom_ops(calls, table: Mapping[str, OpSpec], options: "CheckOptions") -> tuple:
    """Each plugin call site checked alone, at the arguments it received (see custom.py, call_site.py)."""
    from .api import check_program

    def check_values(program, values: dict, grad_output: Any, wrt: tuple[str, ...]) -> CheckResult:
        sub = dataclasses.replace(options, grad_output=grad_output, wrt=wrt, inspect_ops=False, order=1,
                                  symbolic=False)
        return check_program(program, table, values, sub)

    reports = (inspect_call(table[node.op], node, args, check_values, options.seed) for node, args in calls)
    return tuple(r for r in reports if r is not None)
