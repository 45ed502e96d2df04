"""VJPs (batched or one) without torch's one-time import of sympy."""
from __future__ import annotations

from typing import Any


def grads_batched(out: Any, targets: list[Any], weights: Any) -> tuple[Any, ...]:
    """torch.autograd.grad(out, targets, weights, retain_graph=True, allow_unused=True, is_grads_batched=True),
    by the two calls it makes itself (its vmap over the engine's backward), without its check of the weights'
    shape: that check imports torch.fx.experimental.symbolic_shapes, and sympy with it, ~0.6 s of the first
    Jacobian built in a fresh process. The weights are ours, made with the output's shape, dtype and device
    (checked here); where torch lacks these internals, or they differ, the public call."""
    import torch

    try:
        from torch._vmap_internals import _vmap
        from torch.autograd.graph import _engine_run_backward
    except ImportError:
        _vmap = None
    same = (tuple(weights.shape[1:]) == tuple(out.shape) and weights.dtype == out.dtype
            and weights.device == out.device and isinstance(out, torch.Tensor))
    if _vmap is None or not same:
        return torch.autograd.grad(out, targets, grad_outputs=weights, retain_graph=True, allow_unused=True,
                                   is_grads_batched=True)
    inputs = tuple(targets)

    def vjp(rows: Any) -> Any:
        return _engine_run_backward((out,), (rows,), True, False, inputs, True, accumulate_grad=False)
    try:
        return _vmap(vjp, 0, 0, allow_none_pass_through=True)(weights)
    except TypeError:  # another torch's private signatures (or a backward's own TypeError, raised again below)
        return torch.autograd.grad(out, targets, grad_outputs=weights, retain_graph=True, allow_unused=True,
                                   is_grads_batched=True)


def grads(out: Any, targets: list[Any], weights: Any) -> tuple[Any, ...]:
    """torch.autograd.grad(out, targets, weights, retain_graph=True, allow_unused=True) (one VJP, --grad-output)
    by the engine call it makes, skipping the same sympy-importing check as `grads_batched`."""
    import torch

    try:
        from torch.autograd.graph import _engine_run_backward
    except ImportError:
        _engine_run_backward = None
    same = (isinstance(out, torch.Tensor) and tuple(weights.shape) == tuple(out.shape)
            and weights.dtype == out.dtype and weights.device == out.device)
    if _engine_run_backward is None or not same:
        return torch.autograd.grad(out, targets, grad_outputs=weights, retain_graph=True, allow_unused=True)
    try:
        return _engine_run_backward((out,), (weights,), True, False, tuple(targets), True, accumulate_grad=False)
    except TypeError:  # as in grads_batched
        return torch.autograd.grad(out, targets, grad_outputs=weights, retain_graph=True, allow_unused=True)
