"""The custom-op checks that read what the op and torch did (no numeric check): what forward received,
whether it changed its inputs, whether a numpy forward agrees, and the layout of backward's result."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import numpy as np

from .plugins import takes_ctx

# a plugin's numpy forward and its torch forward (both float64) must agree this closely
FORWARD_RTOL = 1e-10
FORWARD_ATOL = 1e-12


@dataclasses.dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    message: str = ""
    unreliable: bool = False  # not wrong, but the numeric side cannot judge it here (ok stays True)

    @property
    def verdict(self) -> str:
        return "fail" if not self.ok else "unreliable" if self.unreliable else "pass"


def first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


@dataclasses.dataclass
class Run:
    """One forward of the op on fresh copies: what it received, what forward received, what it gave."""

    leaves: list[Any]          # one leaf per input that requires grad
    args: list[Any]            # the op's arguments (copies; the differentiable ones are non-leaf clones)
    outputs: tuple[Any, ...]   # every output (one, or several)
    several: bool              # the op returned a tuple (indexed in an expression: f(x)[k])
    forward_args: tuple | None = None  # what the Function's forward itself received (past any wrapper), or None


@contextlib.contextmanager
def recording(cls: type | None) -> Iterator[list]:
    """While active, every call of cls.forward appends the arguments it received (without ctx)."""
    seen: list = []
    if cls is None:
        yield seen
        return
    own = cls.__dict__.get("forward")
    forward = cls.forward
    skip = 1 if takes_ctx(cls) else 0

    def record(*args: Any, **kwargs: Any) -> Any:
        seen.append(args[skip:])
        return forward(*args, **kwargs)
    cls.forward = staticmethod(record)
    try:
        yield seen
    finally:
        if own is not None:
            cls.forward = own
        else:
            del cls.forward


def inplace_finding(site: Any, run: Run) -> Finding:
    """An input the forward changed: declared with ctx.mark_dirty (then returned as an output), or not."""
    import torch
    changed = [i for i, (a, b) in enumerate(zip(site.originals, run.args))
               if isinstance(a, torch.Tensor) and not torch.equal(a, b.detach())]
    if not changed:
        return Finding("inputs unchanged", True)
    declared = [i for i in changed if any(o is run.args[i] for o in run.outputs)]
    if declared == changed:
        site.in_place = True
        return Finding("in place (ctx.mark_dirty)", True,
                       f"modifies input {changed[0]} in place and declares it with ctx.mark_dirty")
    first = next(i for i in changed if i not in declared)
    return Finding("inputs unchanged", False, f"forward modifies input {first} in place; work on a copy "
                   "(x = x.clone()), or declare it with ctx.mark_dirty and return it")


def numpy_forward_finding(site: Any) -> Finding | None:
    """A plugin's NUMPY_OPS forward against its torch forward, both in float64, at these inputs."""
    import torch
    if not getattr(site.spec.numpy, "user_numpy", False):
        return None
    as64 = [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else
            a.clone() if isinstance(a, torch.Tensor) else a for a in site.originals]
    try:
        with torch.no_grad():
            reference = site.spec.torch(*as64)
    except Exception:  # the torch forward does not run in float64: nothing to compare against
        return None
    batched = [a.cpu().numpy()[None] if isinstance(a, torch.Tensor) else a for a in as64]
    name = f"NUMPY_OPS['{site.spec.name}']"
    try:
        with np.errstate(all="ignore"):
            ours = site.spec.numpy(*batched)
    except Exception as err:  # the plugin's numpy forward failed
        return Finding("numpy forward", False, f"{name} raised {type(err).__name__}: {first_line(err)}")
    reference = reference if isinstance(reference, (tuple, list)) else (reference,)
    ours = ours if isinstance(ours, tuple) else (ours,)
    if len(ours) != len(reference):
        return Finding("numpy forward", False, f"{name} returns {len(ours)} outputs; the torch op {len(reference)}")
    for k, (mine, theirs) in enumerate(zip(ours, reference)):
        theirs = theirs.detach().cpu().double().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
        mine = np.asarray(mine)[0] if np.ndim(mine) else np.asarray(mine)
        if mine.shape != theirs.shape:
            return Finding("numpy forward", False, f"{name} gives shape {list(mine.shape)}; the torch forward "
                           f"{list(theirs.shape)}: the numpy forward is wrong")
        scale = float(np.max(np.abs(theirs), initial=1.0))
        gap = np.abs(mine - theirs)
        bad = ~(gap <= FORWARD_ATOL * scale + FORWARD_RTOL * np.abs(theirs))
        if bad.any():
            where = np.unravel_index(int(np.argmax(np.where(bad, gap, -1.0))), bad.shape) if bad.ndim else ()
            out = f"output {k} " if len(ours) > 1 else ""
            return Finding("numpy forward", False, f"the numpy forward is wrong: {name} gives {float(mine[where]):.10g} "
                           f"where the torch forward gives {float(theirs[where]):.10g} ({out}element "
                           f"{[int(i) for i in where]}); the numeric gradient is then of another function, so the backward "
                           "is not judged until they agree")
    return Finding("numpy forward", True)


def _forward_names(cls: type, count: int) -> list[str]:
    """forward's parameter names (without ctx), padded to `count`."""
    import inspect
    try:
        params = [p.name for p in inspect.signature(cls.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    params = params[1:] if takes_ctx(cls) else params
    return (params + [f"argument {i}" for i in range(len(params), count)])[:count]


def raw_findings(run: Run, outs: list[Any], grads: list[Any]) -> list[Finding]:
    """Count, dtype and shape of what backward itself returned, against what forward received."""
    import torch

    node = outs[0].grad_fn
    if node is None or not hasattr(node, "_forward_cls") or any(o.grad_fn is not node for o in outs) \
            or run.forward_args is None:
        return []
    every = [o for o in run.outputs if isinstance(o, torch.Tensor)]
    given = iter(grads)
    upstream = [next(given) if o.requires_grad else torch.zeros_like(o) for o in every]
    try:
        raw = node.apply(*upstream)
    except Exception as err:  # the plugin's own backward failed
        return [Finding("backward runs", False, f"backward raised {type(err).__name__}: {first_line(err)}")]
    raw = raw if isinstance(raw, tuple) else (raw,)
    forward_args = run.forward_args
    needs = tuple(node.needs_input_grad)
    count = len(needs)
    names = _forward_names(node._forward_cls, count)
    extra = [g for g in raw[count:] if g is not None]
    message = ""
    if len(raw) < count:
        nontensor = [n for n, a in zip(names, forward_args) if not isinstance(a, torch.Tensor)]
        hint = f", None for {', '.join(nontensor)}" if nontensor else ""
        message = (f"backward returns {len(raw)} gradients for {count} forward arguments ({', '.join(names)}); "
                   f"return one per argument{hint}")
    elif extra:
        message = f"backward returns {len(raw)} gradients for {count} forward arguments; the extra ones must be None"
    else:
        for i, (g, a) in enumerate(zip(raw, forward_args)):
            if g is not None and not isinstance(a, torch.Tensor):
                message = f"backward returns a gradient for '{names[i]}', which is not a tensor; return None there"
                break
    findings = [Finding("gradient count", not message, message)]
    bad = ""
    for i, (g, a, need) in enumerate(zip(raw, forward_args, needs)):
        if not need or g is None or not isinstance(g, torch.Tensor) or not isinstance(a, torch.Tensor):
            continue  # torch ignores what backward returns for an input that needs no gradient
        shape_ok = g.shape == a.shape or _sums_to(g.shape, a.shape)
        if g.dtype != a.dtype or not shape_ok:
            bad = (f"gradient {i} ('{names[i]}') has dtype {str(g.dtype).replace('torch.', '')} and shape "
                   f"{list(g.shape)}; the argument has {str(a.dtype).replace('torch.', '')} and {list(a.shape)}")
            break
    findings.append(Finding("gradient dtype and shape", not bad, bad))
    return findings


def _sums_to(grad_shape: Any, shape: Any) -> bool:
    """torch sums a gradient of a broadcast shape down to the input's (validate_outputs)."""
    try:
        return tuple(np.broadcast_shapes(tuple(shape), tuple(grad_shape))) == tuple(grad_shape)
    except ValueError:
        return False
