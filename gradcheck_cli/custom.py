"""Custom ops under the microscope: each plugin call site checked on its own, at the values it saw.

Beyond gradient values (with a diagnosis of the disagreement's shape), this checks what
torch.autograd.gradcheck checks and users forget: backward returns one gradient per forward argument
(None for the non-tensor ones; trailing extra Nones are accepted, as torch does), each with its
argument's dtype and shape; two runs agree (determinism, on copies of the results); a zero
grad_output gives zero gradients; the forward leaves its inputs unmodified unless it declares the
change with ctx.mark_dirty; a plugin's numpy forward agrees with its torch forward.

Only the inputs that require grad are checked: torch ignores what backward returns for the others
(literals, variables left out by --wrt, integer tensors).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from .call_site import CallSite, call_text  # noqa: F401 - call_text: labels, part of this module's API
from .custom_checks import Finding, Run, first_line, inplace_finding, numpy_forward_finding, raw_findings, recording
from .errors import InputError
from .ops import OpSpec
from .parse import Call
from .plugins import function_class


@dataclasses.dataclass(frozen=True)
class OpReport:
    """The checks of one custom-op call site."""

    op: str
    line: int
    col: int
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)


class _Inspection:
    """The state one call site's checks share."""

    def __init__(self, spec: OpSpec, args: list[Any]):
        import torch
        self.spec = spec
        self.originals = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args]
        self.wants = [isinstance(a, torch.Tensor) and a.requires_grad and (a.is_floating_point() or a.is_complex())
                      for a in args]
        self.cls = function_class(spec.torch)
        self.in_place = False  # the forward writes into an input and declares it (ctx.mark_dirty)

    def run(self, record: bool = False) -> Run:
        import torch
        leaves, call_args = [], []
        for a, want in zip(self.originals, self.wants):
            if want:  # a non-leaf copy, as in user code: an in-place (mark_dirty) op may write into it
                leaf = a.clone().requires_grad_(True)
                leaves.append(leaf)
                call_args.append(leaf.clone())
            else:
                call_args.append(a.clone() if isinstance(a, torch.Tensor) else a)
        with recording(self.cls if record else None) as seen:
            out = self.spec.torch(*call_args)
        outputs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        return Run(leaves, call_args, outputs, isinstance(out, (tuple, list)), seen[-1] if seen else None)


def inspect_call(spec: OpSpec, node: Call, args: list[Any], check_values: Callable[..., Any],
                 seed: int) -> OpReport | None:
    """Check one call of a custom op at the arguments it received.

    Args:
        spec: the op's row.
        node: the call site (for its position).
        args: every argument it received, in parameter order (tensors, literals, omitted ones).
        check_values: `check_values(program, values, grad_output, wrt)` runs gradcheck's own check of a
            Program (call_site.py builds it from IR nodes; no text) without custom-op inspection and
            returns its CheckResult.
        seed: for the random grad_output.

    Returns:
        The report, or None when no input of this call requires grad (nothing to check).
    """
    import torch

    site = _Inspection(spec, args)
    if not any(site.wants):
        return None

    def report(findings: list[Finding]) -> OpReport:
        return OpReport(spec.name, node.span.line, node.span.col, tuple(findings))

    findings: list[Finding] = []
    try:
        first_run = site.run()
        if site.cls is None:  # a wrapper: the Function is known from what it returned
            site.cls = next((o.grad_fn._forward_cls for o in first_run.outputs
                             if getattr(getattr(o, "grad_fn", None), "_forward_cls", None) is not None), None)
        run = site.run(record=True)
    except InputError as err:
        return report([Finding("forward runs", False, err.message)])
    except Exception as err:  # the plugin's own forward failed
        return report([Finding("forward runs", False, f"forward raised {type(err).__name__}: {first_line(err)}")])
    findings.append(inplace_finding(site, run))
    diff = [k for k, o in enumerate(run.outputs) if isinstance(o, torch.Tensor) and o.requires_grad]
    if not diff:
        findings.append(Finding("differentiable", False, "the output does not require grad: call the Function "
                                "through .apply, and do not detach inside forward"))
        return report(findings)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    grads = [torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o.dtype).to(o.device)
             for o in (run.outputs[k] for k in diff)]
    numpy_finding = numpy_forward_finding(site)
    if numpy_finding is not None:
        findings.append(numpy_finding)
    outs = [run.outputs[k] for k in diff]
    layout = raw_findings(run, outs, grads)
    try:
        first = _copies(torch.autograd.grad(outs, run.leaves, grads, retain_graph=True, allow_unused=True))
        second = _copies(torch.autograd.grad(outs, run.leaves, grads, retain_graph=True, allow_unused=True))
        zero = torch.autograd.grad(outs, run.leaves, [torch.zeros_like(g) for g in grads], retain_graph=True,
                                   allow_unused=True)
    except Exception as err:  # the plugin's own backward raised, or autograd refused what it returned
        findings.extend(f for f in layout if f.check != "backward runs")
        findings.append(Finding("backward runs", False, f"backward failed: {type(err).__name__}: {first_line(err)}"))
        return report(findings)
    findings.extend(f for f in layout if f.check != "backward runs")  # torch's own run succeeded
    same = all(a is None and b is None or (a is not None and b is not None and torch.equal(a, b))
               for a, b in zip(first, second))
    findings.append(Finding("deterministic", same, "" if same else
                            "two backward passes at the same point disagree (backward is not reentrant: "
                            "it changes saved state, or uses atomics or random numbers)"))
    scaled = all(g is None or not bool(g.abs().max() > 0) for g in zero)
    findings.append(Finding("scales with grad_output", scaled, "" if scaled else
                            "a zero grad_output gives a nonzero gradient: multiply by grad_output in backward"))
    names = _variable_names(site)
    values = {names[i]: _value(a) for i, a in enumerate(site.originals) if i in names}
    wrt = tuple(names[i] for i, want in enumerate(site.wants) if want)
    none = [names[i] for i, g in zip([i for i, w in enumerate(site.wants) if w], first) if g is None]
    if numpy_finding is not None and not numpy_finding.ok:
        return report(findings)  # the numeric side computes another function: values cannot be judged
    if not run.several and _defines_jvp(site.cls) and site.cls is function_class(spec.torch):
        findings.append(_jvp_finding(site, names, values, wrt, check_values, generator))
    findings.extend(_value_findings(site, names, values, wrt, diff if run.several else None, grads, none,
                                    check_values))
    return report(findings)


def _copies(grads: tuple) -> list:
    """Copies of backward's results: a backward that returns (and later changes) its own saved
    tensor would otherwise compare a tensor with itself."""
    return [None if g is None else g.detach().clone() for g in grads]


def _value(a: Any) -> Any:
    import torch
    if isinstance(a, torch.Tensor) and (a.is_floating_point() or a.is_complex()):
        return a.detach().cpu().double().numpy()
    return a.detach().cpu() if isinstance(a, torch.Tensor) else a


def _variable_names(site: _Inspection) -> dict[int, str]:
    """Argument position → variable name in the sub-check, for every tensor argument."""
    import torch
    return {i: f"x{i}" for i, a in enumerate(site.originals) if isinstance(a, torch.Tensor)}


def _call_site(site: _Inspection, names: dict[int, str]) -> CallSite:
    return CallSite(site.spec, tuple(site.originals), names, site.in_place)


def _value_findings(site: _Inspection, names: dict[int, str], values: dict, wrt: tuple, diff: list[int] | None,
                    grads: list, none: list[str], check_values: Callable) -> list[Finding]:
    """Gradient values by gradcheck's own check (same evidence, same rule as the main table).

    `diff` lists the differentiable outputs of an op with several (None: one output)."""
    call = _call_site(site, names)
    if diff is None:
        program, grad_output = call.program(), grads[0].detach().cpu().double().numpy()
    else:  # one VJP over every differentiable output, each weighted by its own grad_output
        program = call.program(diff)
        values = {**values, **{f"g{k}": g.detach().cpu().double().numpy() for k, g in zip(diff, grads)}}
        grad_output = None
    try:
        result = check_values(program, values, grad_output, wrt)
    except InputError as err:
        return [Finding("gradient values", False, f"could not check values: {err.message}")]
    wrong = [r for r in (result.inputs[n] for n in wrt) if r.wrong.any()]
    unsure = [r for r in (result.inputs[n] for n in wrt) if not r.wrong.any() and not bool(r.passed.all())]
    findings = []
    bad = [n for n in none if result.inputs[n].wrong.any()]
    # a None gradient is torch's zero: wrong only where the true gradient is not zero
    findings.append(Finding("no None gradient", not bad, "" if not bad else
                            f"backward returns None for input {bad[0][1:]}, which requires a gradient and "
                            "has a nonzero one; return its gradient"))
    if wrong:
        message = "; ".join(f"input {r.name[1:]}: {r.diagnosis or 'disagrees'}" for r in wrong)
        findings.append(Finding("gradient values", False, f"backward wrong: {message}"))
    elif unsure:
        count = sum(int((~r.passed).sum()) for r in unsure)
        findings.append(Finding("gradient values", True, f"the numeric estimate cannot judge {count} element(s) "
                                "here; nothing proves the backward wrong", unreliable=True))
    else:
        findings.append(Finding("gradient values", True))
    return findings


def _defines_jvp(cls: type | None) -> bool:
    import torch
    return cls is not None and issubclass(cls, torch.autograd.Function) and \
        getattr(cls, "jvp", None) is not getattr(torch.autograd.Function, "jvp", None)


def defines_jvp(fn: Any) -> bool:
    """True for a torch.autograd.Function's apply whose class overrides jvp (forward mode)."""
    return _defines_jvp(function_class(fn))


def _jvp_finding(site: _Inspection, names: dict[int, str], values: dict, wrt: tuple, check_values: Callable,
                 generator: Any) -> Finding:
    """Forward mode: the tangent of out for random input tangents v against numeric J·v."""
    import torch
    import torch.autograd.forward_ad as fwAD

    tangents = {i: torch.randn(a.shape, generator=generator, dtype=torch.float64).to(a.dtype)
                for i, a in enumerate(site.originals) if site.wants[i]}
    try:
        with fwAD.dual_level():
            duals = [fwAD.make_dual(a.clone(), tangents[i]) if i in tangents else a
                     for i, a in enumerate(site.originals)]
            out = site.spec.torch(*duals)
            tangent = fwAD.unpack_dual(out).tangent
    except Exception as err:  # the plugin's own jvp failed
        return Finding("forward mode (jvp)", False, f"jvp raised {type(err).__name__}: {first_line(err)}")
    if tangent is None:
        return Finding("forward mode (jvp)", False, "jvp returned no tangent for the output")
    try:
        result = check_values(_call_site(site, names).program(), values, None, wrt)  # the Jacobian
    except InputError as err:
        return Finding("forward mode (jvp)", False, f"could not check forward mode: {err.message}")
    expected = 0.0
    for i, v in tangents.items():
        jac = result.inputs[names[i]].numeric
        v_np = v.detach().cpu().double().numpy()
        expected = expected + np.tensordot(jac, v_np, axes=v_np.ndim) if v_np.ndim else expected + jac * v_np
    got = tangent.detach().cpu().double().numpy()
    ok = bool(np.allclose(got, expected, atol=result.atol, rtol=result.rtol))
    worst = float(np.max(np.abs(got - expected), initial=0.0))
    return Finding("forward mode (jvp)", ok, "" if ok else
                   f"jvp disagrees with the numeric J·v (max abs error {worst:.2e}); fix the Function's jvp")


def blame_line(reports: tuple[OpReport, ...]) -> str:
    """Which op to blame, in one line."""
    wrong = [r for r in reports if not r.ok]
    if not reports:
        return ""
    if not wrong:
        return "every custom op passes its own checks at the values it saw"
    names = ", ".join(f"{r.op} (line {r.line}, column {r.col + 1})" + _which(r) for r in wrong)
    rest = "; built-in ops are taken as right" if len(wrong) == len(reports) else "; the other custom ops are right"
    return f"blame: {names}{rest}"


def _which(report: OpReport) -> str:
    failing = [f.check for f in report.findings if not f.ok]
    return f": its numpy forward (NUMPY_OPS['{report.op}'])" if failing == ["numpy forward"] else ""
