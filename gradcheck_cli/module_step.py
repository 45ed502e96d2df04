"""`gradcheck module ... --optim "Adam(lr=1e-3)" --steps K`: optimizer steps on a module's parameters,
verified as `gradcheck step` verifies them (stepping.py).

torch trains a copy of the module the way a loop does (zero_grad, forward, loss, backward, step), every
forward from the same buffers and RNG seed. Beside it the numpy reference steps its own copy of the
parameters with the numeric gradient at its own point (a module check of a copy holding the reference's
values). Each step shows, per checked parameter, the gradient check at torch's point (a module check of
torch's copy) and torch's new value beside the reference's.
"""
from __future__ import annotations

import copy
import dataclasses
import shlex
from typing import Any, Mapping

import numpy as np

from .api import CheckOptions
from .compare import versions
from .errors import InputError
from .module import ModuleRequest, run_module_check
from .module_target import ModuleRunner, copy_module, to_numpy
from .options import kind_replay
from .stepping import MAX_STEPS, StepRecord, StepResult, _param_step


def _with_values(module: Any, values: Mapping[str, np.ndarray]) -> Any:
    """A copy of `module` (float64) holding `values` for the named parameters."""
    import torch
    twin = copy.deepcopy(module).double()
    with torch.no_grad():
        for name, p in twin.named_parameters():
            if name in values:
                p.copy_(torch.from_numpy(values[name]))
    return twin


def run_module_step(module: Any, values: Mapping[str, Any], options: CheckOptions, request: ModuleRequest,
                    optim: str, steps: int = 1) -> StepResult:
    """K optimizer steps over the module's checked parameters, torch against the numpy reference.

    Raises:
        InputError: bad input (as run_module_check, and the optimizer's text or settings).
    """
    import torch
    from .optim import resolve_optimizer
    if not 1 <= steps <= MAX_STEPS:
        raise InputError(f"--steps must be between 1 and {MAX_STEPS}, not {steps}")
    if options.grad_output is not None or options.fast:
        raise InputError("--optim steps on a scalar loss, every element compared: --grad-output and --fast do not apply")
    if request.wrt_inputs:
        raise InputError("--optim steps the module's parameters; --wrt-inputs does not apply")
    optimizer = resolve_optimizer(optim, options.plugins)
    options = dataclasses.replace(options, fast=False)
    rng = torch.get_rng_state()
    try:
        first = run_module_check(module, values, options, request)
        if first.mode != "gradient":
            raise InputError(f"--optim needs a scalar loss; the output has shape {list(first.output_shape)} "
                             "(give --loss, e.g. \"out.pow(2).mean()\")")
        stepped = list(first.parameters)
        if not stepped:
            raise InputError("no parameter gets a gradient, so there is nothing to step")
        twin = copy_module(module, getattr(torch, options.dtype), request.train, first.module)
        params = dict(twin.named_parameters())
        torch_opt = optimizer.build([params[n] for n in stepped])
        reference = {n: first.parameters[n].value.copy() for n in stepped}
        state: dict = {}
        records = []
        at_torch = first
        for step in range(1, steps + 1):
            before = {n: to_numpy(params[n]).copy() for n in stepped}
            if step > 1:
                at_torch = run_module_check(twin, values, options, request)
            same = all(np.array_equal(before[n], reference[n]) for n in stepped)
            at_reference = at_torch if same else run_module_check(_with_values(twin, reference), values,
                                                                  dataclasses.replace(options, dtype="float64"), request)
            fed = {n: at_reference.parameters[n].numeric if n in at_reference.parameters else np.zeros_like(reference[n])
                   for n in stepped}
            _torch_step(twin, torch_opt, at_torch, values, options, request)
            new_reference = optimizer.reference(reference, fed, state, step)
            after = {n: to_numpy(params[n]) for n in stepped}
            records.append(StepRecord(step, float(at_torch.output_value), {
                n: _param_step(n, before[n], at_torch.parameters[n], fed[n], after[n], new_reference[n],
                               first.atol, first.rtol, reused=False)
                for n in stepped if n in at_torch.parameters}))
            reference = new_reference
    finally:
        torch.set_rng_state(rng)
    replay = shlex.join([*shlex.split(first.replay), *kind_replay({"optim": optim, "steps": steps})])
    return StepResult(first.expression, optimizer.used, tuple(records), True, options.dtype, first.method,
                      first.atol, first.rtol, first.constants, replay, versions(),
                      request.label or type(module).__name__)


def _torch_step(twin: Any, optimizer: Any, result: Any, values: Mapping[str, Any], options: CheckOptions,
                request: ModuleRequest) -> None:
    """zero_grad, forward from the start state, the loss, backward, step: one iteration of a training loop."""
    import torch
    from .module import forward_inputs
    args, loss = forward_inputs(twin, values, options, request)
    optimizer.zero_grad()
    runner = ModuleRunner(twin, args, options.seed, result.module)
    with torch.enable_grad():
        out = loss(runner.forward())
    out.backward()
    runner.restore()  # the step changes parameters only: buffers stay as every check starts them
    optimizer.step()
