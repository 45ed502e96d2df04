"""`gradcheck check --accumulate N`: .grad adds up over backward() calls until it is zeroed.

After the check itself, the expression is run forward and backward N times on the same leaves without
zeroing (pass k's .grad must be k × the numeric gradient), then N times on fresh leaves with
`.grad.zero_()` before each backward (1 × every time): seed 001's 3, 6, 9 and 3, 3, 3, verified.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from .api import CheckOptions, prepare, run_check
from .compare import CheckResult, GradientResult
from .errors import ExitStatus, InputError
from .evaluate import TorchBackend, Walker
from .options import MAX_PASSES
from .stepping import judge



@dataclasses.dataclass(frozen=True)
class AccumulatePass:
    number: int                         # 1..N within its group
    zeroed: bool                        # .grad was zeroed before this pass's backward()
    factor: int                         # the expected multiple of the gradient: k, or 1 when zeroed
    grads: dict[str, GradientResult]    # analytic: .grad after the pass; numeric: factor × numeric gradient

    @property
    def ok(self) -> bool:
        return all(g.ok for g in self.grads.values())


@dataclasses.dataclass(frozen=True)
class AccumulateResult:
    check: CheckResult
    passes: tuple[AccumulatePass, ...]  # the unzeroed group first

    @property
    def accumulate_ok(self) -> bool:
        return all(p.ok for p in self.passes)

    @property
    def ok(self) -> bool:
        return self.check.ok and self.accumulate_ok

    def results(self) -> list[GradientResult]:
        """The check's results, then every pass's."""
        return [*self.check.results(), *(g for p in self.passes for g in p.grads.values())]

    def problems(self) -> list[str]:
        """One line a pass that differs."""
        out = []
        for p in self.passes:
            for name, g in p.grads.items():
                if not g.ok:
                    k = int(np.flatnonzero(~g.passed.reshape(-1))[0])
                    out.append(f"accumulate pass {p.number} ({'zeroed' if p.zeroed else 'not zeroed'}), {name}: "
                               f".grad {g.analytic.reshape(-1)[k]:.10g} vs {p.factor} × numeric = "
                               f"{g.numeric.reshape(-1)[k]:.10g}")
        return out

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus.OK if self.ok else ExitStatus.MISMATCH


def run_accumulate(expression: str, values: Mapping[str, Any], options: CheckOptions,
                   passes: int) -> AccumulateResult:
    """The check of `expression`, then `passes` backward() calls without and with zeroing between them.

    Raises:
        InputError: bad input, or an output backward() cannot start from (a non-scalar output without
            --grad-output), or a projected check (whose numeric side is not a whole gradient).
    """
    if not 1 <= passes <= MAX_PASSES:
        raise InputError(f"--accumulate must be between 1 and {MAX_PASSES}, not {passes}")
    check = run_check(expression, values, options)
    if check.mode == "jacobian":
        raise InputError("--accumulate calls backward(), which needs a scalar output or --grad-output "
                         "(as Q.backward(gradient=g)); reduce the output or give --grad-output")
    if check.projected:
        raise InputError("--accumulate compares whole gradients; this check is projected (pass --full)")
    import torch

    prep = prepare(expression, values, options)
    dtype = getattr(torch, options.dtype)
    walker = Walker(prep.program, prep.table, TorchBackend(dtype, options.device))
    weights = None if check.grad_output is None else torch.tensor(check.grad_output, dtype=dtype,
                                                                    device=options.device)
    out: list[AccumulatePass] = []
    for zeroed in (False, True):
        leaves = {name: torch.tensor(value, dtype=dtype, device=options.device, requires_grad=name in prep.wrt)
                  for name, value in prep.inputs.items()}
        for number in range(1, passes + 1):
            if zeroed:
                for name in prep.wrt:
                    if leaves[name].grad is not None:
                        leaves[name].grad.zero_()  # as the notebook does: weights.grad.zero_()
            walker.run(dict(leaves)).backward(weights)
            factor = 1 if zeroed else number
            grads = {}
            for name in prep.wrt:
                given = check.inputs[name]
                grad = leaves[name].grad
                analytic = np.zeros(given.shape) if grad is None else grad.detach().to("cpu", torch.float64).numpy()
                grads[name] = judge(name, given.value, analytic.copy(), factor * given.numeric,
                                    factor * given.numeric_error, check.atol, check.rtol, options.allow_unreliable)
            out.append(AccumulatePass(number, zeroed, factor, grads))
    return AccumulateResult(check, tuple(out))
