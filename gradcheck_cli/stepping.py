"""`gradcheck step`: K optimizer steps in torch beside a numpy reference trajectory, step by step.

torch runs the training loop as people write it (zero_grad, recompute the loss, backward, step; or, with
recompute off, step() again on the same .grad). The reference starts from the same point and runs its own
trajectory: at each step the numeric gradient (the finite-difference engine) at the reference's own
parameters goes into the numpy implementation of the optimizer's documented rule (optim.py). Each step
compares the gradients (analytic against numeric, both at torch's point, so a wrong backward is told apart
from a wrong step) and the new parameter values, with the same rule as `check`:
|torch − reference| ≤ atol + rtol·|reference|.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from .analytic import non_finite_error
from .api import CheckOptions, Prepared, prepare, replay_command
from .compare import GradientResult, default_tolerances, element_result, versions
from .errors import ExitStatus, InputError
from .evaluate import TorchBackend, Walker
from .numeric import TAYLOR, NumericEngine, choose_method
from .optim import PLUGIN_ERRORS, Optimizer, OptimizerUsed, resolve_optimizer
from .options import MAX_STEPS, api_options, kind_replay, split_options
from .verdict import SAFETY, Evidence, Policy



@dataclasses.dataclass(frozen=True)
class StepOptions:
    """What `gradcheck step` takes beyond the shared check options."""

    optim: str
    steps: int = 1
    recompute: bool = True      # False: step() again on the first .grad (no zero_grad, no new backward)
    check: CheckOptions = CheckOptions()


@dataclasses.dataclass(frozen=True)
class ParamStep:
    """One parameter in one step: its gradient, and its new value from torch and from the reference."""

    name: str
    before: np.ndarray          # torch's value going into the step
    gradient: GradientResult    # analytic (torch's .grad) against the numeric gradient, both at torch's point
    fed: np.ndarray             # the numeric gradient the reference stepped on (at the reference's point)
    torch: np.ndarray           # after the step
    reference: np.ndarray
    abs_error: np.ndarray
    tolerance: np.ndarray
    passed: np.ndarray
    reused: bool = False        # the gradient of step 1, stepped on again (--no-recompute)

    @property
    def ok(self) -> bool:
        return self.gradient.ok and bool(self.passed.all())

    @property
    def max_abs_error(self) -> float:
        return float(np.max(self.abs_error, initial=0.0)) if np.all(np.isfinite(self.abs_error)) else float("inf")

    def first_failure(self) -> tuple[int, str] | None:
        """(flat index, reason) of the first element that does not agree, or None."""
        grad_bad = ~self.gradient.passed.reshape(-1) if not self.gradient.ok else np.zeros(self.passed.size, bool)
        bad = np.flatnonzero(grad_bad | ~self.passed.reshape(-1))
        if bad.size == 0:
            return None
        k = int(bad[0])
        if grad_bad[k]:
            g = self.gradient
            why = g.reasons.reshape(-1)[k] or "outside tolerance"
            return k, (f"gradient: analytic {g.analytic.reshape(-1)[k]:.10g} vs numeric {g.numeric.reshape(-1)[k]:.10g}"
                       f" ({why})")
        t, r = self.torch.reshape(-1)[k], self.reference.reshape(-1)[k]
        return k, (f"new value: torch {t:.10g} vs reference {r:.10g} (|diff| {abs(t - r):.2e} > "
                   f"tolerance {self.tolerance.reshape(-1)[k]:.1e})")


@dataclasses.dataclass(frozen=True)
class StepRecord:
    step: int                   # from 1
    loss: float                 # the loss before this step (at torch's parameters)
    params: dict[str, ParamStep]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.params.values())


@dataclasses.dataclass(frozen=True)
class StepResult:
    """A whole `gradcheck step` run: one record a step, and the tolerances and settings used."""

    expression: str
    optimizer: OptimizerUsed
    steps: tuple[StepRecord, ...]
    recompute: bool
    dtype: str
    method: str
    atol: float
    rtol: float
    constants: dict[str, np.ndarray]
    replay: str
    versions: dict[str, str]
    module: str | None = None  # `gradcheck module --optim`: the FILE:NAME stepped (expression is its loss)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus.OK if self.ok else ExitStatus.MISMATCH

    def results(self) -> list[ParamStep]:
        """Every parameter of every step (each has max_abs_error, as a check's GradientResults do)."""
        return [p for record in self.steps for p in record.params.values()]

    def first_failure(self) -> str | None:
        """'step 2, w[1]: new value: torch … vs reference …', or None when every step agrees."""
        for record in self.steps:
            for param in record.params.values():
                found = param.first_failure()
                if found is not None:
                    index, reason = found
                    where = list(np.unravel_index(index, param.passed.shape)) if param.passed.shape else []
                    return f"step {record.step}, {param.name}{[int(i) for i in where]}: {reason}"
        return None


def run_step(expression: str, values: Mapping[str, Any], options: StepOptions) -> StepResult:
    """Run `options.steps` optimizer steps in torch and in the numpy reference, and compare each.

    Args:
        expression: the loss, a scalar expression.
        values: variable name → SPEC string, number, list or array (the starting point).
        options: the optimizer text, the number of steps, recompute, and the check options
            (wrt picks what is stepped; seed, dtype, method, eps, atol, rtol, plugins).

    Returns:
        A StepResult; `.ok` is the verdict and `.first_failure()` names where the trajectories part.

    Raises:
        InputError: bad input (the expression, the values, the optimizer or its keywords).
    """
    check = options.check
    if check.grad_output is not None:
        raise InputError("gradcheck step needs a scalar loss; --grad-output does not apply (reduce the output "
                         "with .sum() or .mean())")
    if not 1 <= options.steps <= MAX_STEPS:
        raise InputError(f"--steps must be between 1 and {MAX_STEPS}, not {options.steps}")
    if check.method == TAYLOR:
        raise InputError("--method taylor tests one gradient, not a trajectory; use auto, central, richardson "
                         "or complex")
    for refused, flag in ((check.order != 1, "--order 2"), (bool(check.fast), "--fast"),
                          (check.symbolic, "--symbolic")):
        if refused:
            raise InputError(f"{flag} does not apply to gradcheck step: every element of every step is compared")
    prep = prepare(expression, values, check)
    optimizer = resolve_optimizer(options.optim, check.plugins)
    method = choose_method(check.method, prep.program, prep.table)
    default_atol, default_rtol = default_tolerances(check.dtype, method)
    atol = default_atol if check.atol is None else check.atol
    rtol = default_rtol if check.rtol is None else check.rtol
    torch_side = _TorchLoop(prep, check, optimizer)
    reference = {name: prep.inputs[name].copy() for name in prep.wrt}
    constants = {name: v for name, v in prep.inputs.items() if name not in prep.wrt}
    state: dict = {}
    records = []
    gradients = at_torch = analytic = None
    for step in range(1, options.steps + 1):
        before = torch_side.values()
        fresh = options.recompute or step == 1
        if fresh:
            loss, analytic = torch_side.backward()
            gradients = _numeric_gradients(prep, {**constants, **reference}, method, check.eps, step == 1)
            # autograd is judged at torch's own point; the reference's gradient serves where the points are one
            same = all(np.array_equal(before[n], reference[n]) for n in prep.wrt)
            at_torch = gradients if same else _numeric_gradients(prep, {**constants, **before}, method, check.eps,
                                                                 False)
        else:
            loss = torch_side.loss()
        if not np.isfinite(loss):
            shown = ", ".join(f"{n} = {np.round(v, 6).tolist()}" for n, v in before.items())
            raise InputError(f"the loss is {loss} before step {step} ({shown}): the trajectory left the loss's "
                             "domain or diverged; lower lr or take fewer --steps")
        torch_side.step(step)
        after = torch_side.values()
        new_reference = optimizer.reference(reference, {n: g.value for n, g in gradients.items()}, state, step)
        params = {}
        for name in prep.wrt:
            g = at_torch[name]
            judged = judge(name, before[name], analytic[name], g.value, g.error, atol, rtol, check.allow_unreliable)
            params[name] = _param_step(name, before[name], judged, gradients[name].value, after[name],
                                       new_reference[name], atol, rtol, reused=not fresh)
        records.append(StepRecord(step, loss, params))
        reference = new_reference
    return StepResult(prep.program.source, optimizer.used, tuple(records), options.recompute, check.dtype, method,
                      atol, rtol, constants, _replay(prep, options, method), versions())


def judge(name: str, value: np.ndarray, analytic: np.ndarray, numeric: np.ndarray, error: np.ndarray,
          atol: float, rtol: float, allow_unreliable: bool) -> GradientResult:
    """analytic against numeric (± SAFETY × its error estimate), element by element, by check's verdict core."""
    evidence = Evidence(analytic, numeric, SAFETY * np.asarray(error))
    return element_result(name, value, evidence, atol, rtol, Policy(allow_unreliable), np.asarray(error))


def _param_step(name: str, before: np.ndarray, gradient: GradientResult, fed: np.ndarray, new: np.ndarray,
                expected: np.ndarray, atol: float, rtol: float, reused: bool) -> ParamStep:
    with np.errstate(all="ignore"):
        abs_error = np.abs(new - expected)
        tolerance = atol + rtol * np.abs(expected)
        passed = np.isfinite(abs_error) & (abs_error <= tolerance)
    return ParamStep(name, before, gradient, fed, new, expected, abs_error, tolerance, passed, reused)


class _TorchLoop:
    """The torch side: leaves that persist across steps, the optimizer over those in --wrt."""

    def __init__(self, prep: Prepared, check: CheckOptions, optimizer: Optimizer):
        import torch
        self.prep = prep
        dtype = getattr(torch, check.dtype)
        self.leaves = {name: torch.tensor(value, dtype=dtype, device=check.device, requires_grad=name in prep.wrt)
                       for name, value in prep.inputs.items()}
        self.walker = Walker(prep.program, prep.table, TorchBackend(dtype, check.device))
        self.optimizer = optimizer.build([self.leaves[name] for name in prep.wrt])
        self.name, self.origin = optimizer.name, optimizer.origin

    def loss(self) -> float:
        import torch
        with torch.no_grad():
            return float(self._forward())

    def _forward(self) -> Any:
        import torch
        out = self.walker.run(dict(self.leaves))
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            shape = list(out.shape) if isinstance(out, torch.Tensor) else []
            raise InputError(f"the loss must be a scalar, but the expression's output has shape {shape}; "
                             "reduce it, e.g. with .sum() or .mean()", self.prep.program.source)
        return out

    def backward(self) -> tuple[float, dict[str, np.ndarray]]:
        """zero_grad, forward, backward: (the loss, each stepped parameter's .grad)."""
        self.optimizer.zero_grad()
        out = self._forward()
        if not out.requires_grad:
            raise InputError(f"the loss does not depend on any parameter being stepped ({', '.join(self.prep.wrt)})")
        out.backward()
        grads = {}
        for name in self.prep.wrt:
            grad = self.leaves[name].grad
            if grad is None:
                raise InputError(f"'{name}' gets no gradient from the loss, so torch's optimizer would skip it; "
                                 "leave it out of --wrt")
            grads[name] = _numpy(grad)
        return float(out.detach()), grads

    def step(self, number: int) -> None:
        try:
            self.optimizer.step()
        except PLUGIN_ERRORS as err:  # a hand-written optimizer's own code failed
            if self.origin is None:
                raise
            raise InputError(f"optimizer {self.name}'s step() failed at step {number}: "
                             f"{type(err).__name__}: {err}") from None

    def values(self) -> dict[str, np.ndarray]:
        return {name: _numpy(self.leaves[name]) for name in self.prep.wrt}


def _numpy(t: Any) -> np.ndarray:
    import torch
    return t.detach().to("cpu", dtype=torch.float64).numpy().copy()


def _numeric_gradients(prep: Prepared, point: dict[str, np.ndarray], method: str, eps: float | None,
                       first: bool) -> dict[str, Any]:
    """The numeric gradient of the loss at `point`, for every stepped parameter."""
    engine = NumericEngine(prep.program, prep.table, point, method, eps)
    if first:
        for index, value in engine.values.items():
            if not np.all(np.isfinite(value)):
                raise non_finite_error(prep.program, index, value, "float64")
    weights = np.ones(engine.output.shape)
    return {name: engine.derivative(name, 0, weights) for name in prep.wrt}


def _replay(prep: Prepared, options: StepOptions, method: str) -> str:
    """The command that reproduces this run."""
    extra = kind_replay({"optim": options.optim, "steps": options.steps, "recompute": options.recompute})
    return replay_command(prep, options.check, method, command="step", extra=extra)


def step(expression: str, *, optim: str, steps: int = 1, recompute: bool = True,
         vars: Mapping[str, Any] | None = None, **keywords: Any) -> StepResult:
    """Optimizer steps on a loss, verified step by step, as `gradcheck step` does.

    Args:
        expression: the loss, e.g. "w[0]**2 + 2*w[1]**2".
        optim: the optimizer as torch.optim is called, e.g. "SGD(lr=0.01, momentum=0.1)".
        steps: how many steps. recompute: False repeats step() on the first gradient.
        vars, wrt, seed, dtype, method, eps, atol, rtol, plugins, device, ...: as for `check`.
        **variables: the starting values.

    Returns:
        StepResult: `.ok`, `.first_failure()`, `.steps[k].params["w"].torch / .reference`.

    Raises:
        InputError: bad input.
    """
    given, variables = split_options(keywords)
    return run_step(expression, {**variables, **(vars or {})},
                    StepOptions(optim, steps, recompute, api_options(given)))
