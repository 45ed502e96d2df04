"""Custom ops under the microscope: each plugin call site checked on its own, at the values it saw.

Beyond gradient values (with a diagnosis of the disagreement's shape), this checks what
torch.autograd.gradcheck checks and users forget: backward returns one gradient per input, none of them
None, with the input's dtype and shape; two runs agree (determinism); a zero grad_output gives zero
gradients (the backward really multiplies by grad_output); the forward leaves its inputs unmodified.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from .errors import InputError
from .ops import OpSpec
from .parse import Call


@dataclasses.dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    message: str = ""


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


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _raw_backward(out: Any, grad: Any) -> tuple | None:
    """What a torch.autograd.Function's backward itself returned (before autograd checks it)."""
    node = out.grad_fn
    if node is None or not hasattr(node, "_forward_cls"):
        return None
    raw = node.apply(grad)
    return raw if isinstance(raw, tuple) else (raw,)


def inspect_call(spec: OpSpec, node: Call, args: list[Any], check_values: Callable[[dict, Any], Any],
                 seed: int) -> OpReport:
    """Check one call of a custom op at the arguments it received.

    Args:
        spec: the op's row.
        node: the call site (for its position).
        args: the torch tensors it received.
        check_values: runs a value check of `name(x0, ...)` at given inputs and grad_output
            (gradcheck's own check, without custom-op inspection), returning a CheckResult.
        seed: for the random grad_output.
    """
    import torch

    findings: list[Finding] = []
    tensors = [a.detach().clone() for a in args]
    probe = [t.clone() for t in tensors]
    with torch.no_grad():
        try:
            spec.torch(*probe)
        except Exception as err:  # the plugin's own forward failed
            return OpReport(spec.name, node.span.line, node.span.col,
                            (Finding("forward runs", False, f"forward raised {type(err).__name__}: {_first_line(err)}"),))
    changed = [i for i, (a, b) in enumerate(zip(tensors, probe)) if not torch.equal(a, b)]
    findings.append(Finding("inputs unchanged", not changed,
                            f"forward modifies input {changed[0]} in place; work on a copy (x = x.clone())" if changed else ""))
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    out = spec.torch(*leaves)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        findings.append(Finding("differentiable", False, "the output does not require grad: call the Function "
                                "through .apply, and do not detach inside forward"))
        return OpReport(spec.name, node.span.line, node.span.col, tuple(findings))
    generator = torch.Generator(device="cpu").manual_seed(seed)
    grad = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out.dtype).to(out.device)
    findings.extend(_raw_findings(out, grad, leaves))
    try:
        first = torch.autograd.grad(out, leaves, grad, retain_graph=True, allow_unused=True)
        second = torch.autograd.grad(out, leaves, grad, retain_graph=True, allow_unused=True)
        zero = torch.autograd.grad(out, leaves, torch.zeros_like(grad), retain_graph=True, allow_unused=True)
    except RuntimeError as err:
        findings.append(Finding("backward runs", False, f"backward failed: {_first_line(err)}"))
        return OpReport(spec.name, node.span.line, node.span.col, tuple(findings))
    none = [i for i, g in enumerate(first) if g is None]
    findings.append(Finding("no None gradient", not none,
                            f"backward returns None for input {none[0]}, which requires a gradient; return its "
                            "gradient (or zeros)" if none else ""))
    same = all(a is None and b is None or (a is not None and b is not None and torch.equal(a, b))
               for a, b in zip(first, second))
    findings.append(Finding("deterministic", same, "" if same else
                            "two backward passes at the same point disagree; avoid atomics or random state in backward"))
    scaled = all(g is None or not bool(g.abs().max() > 0) for g in zero)
    findings.append(Finding("scales with grad_output", scaled, "" if scaled else
                            "a zero grad_output gives a nonzero gradient: multiply by grad_output in backward"))
    values = {f"x{i}": t.detach().cpu().double().numpy() for i, t in enumerate(tensors)}
    if defines_jvp(spec.torch):
        findings.append(_jvp_finding(spec, tensors, values, check_values, generator))
    try:
        result = check_values(values, grad.detach().cpu().double().numpy())
        wrong = [r for r in result.inputs.values() if not r.ok]
        message = "; ".join(f"input {r.name[1:]}: {r.diagnosis or 'disagrees'}" for r in wrong)
        findings.append(Finding("gradient values", not wrong,
                                f"backward wrong: {message}" if wrong else ""))
    except InputError as err:
        findings.append(Finding("gradient values", False, f"could not check values: {err.message}"))
    return OpReport(spec.name, node.span.line, node.span.col, tuple(findings))


def defines_jvp(fn: Any) -> bool:
    """True for a torch.autograd.Function's apply whose class overrides jvp (forward mode)."""
    import torch
    owner = getattr(fn, "__self__", None)
    return isinstance(owner, type) and issubclass(owner, torch.autograd.Function) and \
        getattr(owner, "jvp", None) is not getattr(torch.autograd.Function, "jvp", None)


def _jvp_finding(spec: OpSpec, tensors: list[Any], values: dict, check_values: Callable,
                 generator: Any) -> Finding:
    """Forward mode: the tangent of out for random input tangents v against numeric J·v."""
    import torch
    import torch.autograd.forward_ad as fwAD

    tangents = [torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t.dtype).to(t.device)
                for t in tensors]
    try:
        with fwAD.dual_level():
            out = spec.torch(*(fwAD.make_dual(t, v) for t, v in zip(tensors, tangents)))
            tangent = fwAD.unpack_dual(out).tangent
    except Exception as err:  # the plugin's own jvp failed
        return Finding("forward mode (jvp)", False, f"jvp raised {type(err).__name__}: {_first_line(err)}")
    if tangent is None:
        return Finding("forward mode (jvp)", False, "jvp returned no tangent for the output")
    result = check_values(values, None)  # the numeric Jacobian, one block per input
    expected = 0.0
    for i, v in enumerate(tangents):
        jac = result.inputs[f"x{i}"].numeric
        v_np = v.detach().cpu().double().numpy()
        expected = expected + np.tensordot(jac, v_np, axes=v_np.ndim) if v_np.ndim else expected + jac * v_np
    got = tangent.detach().cpu().double().numpy()
    ok = bool(np.allclose(got, expected, atol=result.atol, rtol=result.rtol))
    worst = float(np.max(np.abs(got - expected), initial=0.0))
    return Finding("forward mode (jvp)", ok, "" if ok else
                   f"jvp disagrees with the numeric J·v (max abs error {worst:.2e}); fix the Function's jvp")


def _raw_findings(out: Any, grad: Any, leaves: list[Any]) -> list[Finding]:
    """Count, dtype and shape of what backward returned, before autograd casts or complains."""
    try:
        raw = _raw_backward(out, grad)
    except Exception as err:  # the plugin's own backward failed
        return [Finding("backward runs", False, f"backward raised {type(err).__name__}: {_first_line(err)}")]
    if raw is None:
        return []
    findings = [Finding("gradient count", len(raw) == len(leaves), "" if len(raw) == len(leaves) else
                        f"backward returns {len(raw)} gradients for {len(leaves)} inputs; return one per forward input")]
    bad = [(i, g, t) for i, (g, t) in enumerate(zip(raw, leaves))
           if g is not None and (g.dtype != t.dtype or g.shape != t.shape)]
    message = ""
    if bad:
        i, g, t = bad[0]
        message = (f"gradient {i} has dtype {str(g.dtype).replace('torch.', '')} and shape {list(g.shape)}; "
                   f"the input has {str(t.dtype).replace('torch.', '')} and {list(t.shape)}")
    findings.append(Finding("gradient dtype and shape", not bad, message))
    return findings


def blame_line(reports: tuple[OpReport, ...]) -> str:
    """Which op to blame, in one line."""
    wrong = [r for r in reports if not r.ok]
    if not reports:
        return ""
    if not wrong:
        return "every custom op passes its own checks at the values it saw"
    names = ", ".join(f"{r.op} (line {r.line}, column {r.col + 1})" for r in wrong)
    rest = "; built-in ops are taken as right" if len(wrong) == len(reports) else "; the other custom ops are right"
    return f"blame: {names}{rest}"
