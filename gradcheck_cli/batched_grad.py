"""VJPs (batched or one) without torch's one-time import of sympy."""
from __future__ import annotations

from typing import Any


def grads_batched(out: Any, targets: list[Any], weights: Any) -> tuple[Any, ...]:
    """torch.autograd.grad(out, targets, weights, retain_graph=True, allow_unused=True, is_grads_batched=True),
    by the two calls it makes itself (its vmap over the engine's backward), without its check of the weights'
    shape: that check imports torch.fx.experimental.symbolic_shapes, and sympy with it, ~0.6 s of the first
    Jacobian built in a fresh process."""
    return _vjp(out, targets, weights, batched=True)


def grads(out: Any, targets: list[Any], weights: Any) -> tuple[Any, ...]:
    """torch.autograd.grad(out, targets, weights, retain_graph=True, allow_unused=True) (one VJP, --grad-output)
    by the engine call it makes, skipping the same sympy-importing check as `grads_batched`."""
    return _vjp(out, targets, weights, batched=False)


def _vjp(out: Any, targets: list[Any], weights: Any, batched: bool) -> tuple[Any, ...]:
    """The engine's backward (under torch's own vmap where batched). The weights are ours, made with the
    output's shape, dtype and device (checked here); where torch lacks these internals, they differ, or
    another torch's private signatures refuse the call, the public torch.autograd.grad."""
    import torch

    def public() -> tuple[Any, ...]:
        return torch.autograd.grad(out, targets, grad_outputs=weights, retain_graph=True, allow_unused=True,
                                   is_grads_batched=batched)
    try:
        from torch.autograd.graph import _engine_run_backward
        from torch._vmap_internals import _vmap
    except ImportError:
        return public()
    shape = tuple(weights.shape[1:] if batched else weights.shape)
    if not (isinstance(out, torch.Tensor) and shape == tuple(out.shape) and weights.dtype == out.dtype
            and weights.device == out.device):
        return public()
    inputs = tuple(targets)

    def one(rows: Any) -> Any:
        return _engine_run_backward((out,), (rows,), True, False, inputs, True, accumulate_grad=False)
    try:
        return _vmap(one, 0, 0, allow_none_pass_through=True)(weights) if batched else one(weights)
    except TypeError:  # another torch's private signatures (or a backward's own TypeError, raised again there)
        return public()
