"""`--order 2`: a check of the VJP function, as torch.autograd.gradgradcheck composes it.

The function checked is G(x₁, …, xₙ) = the gradients of Σ weights·output with respect to every input,
as torch's backward computes them. Its Jacobian, every block dG_a/dx_b (mixed partials included), comes
analytically from double backward (create_graph=True, then backward through the backward) and
numerically from central differences of G itself, Richardson-extrapolated. A backward that autograd
cannot differentiate through correctly (it uses `y.detach()`, or returns a tensor built outside the
graph) fails in the block it breaks, though every first derivative is right.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .compare import ProjectedResult, SecondOrderResult, failed_with, projected_result, second_order_result
from .errors import InputError
from .evaluate import TorchBackend, Walker
from .numeric import _EPS, _exact_steps, _extrapolate
from .ops import OpSpec
from .parse import Program
from .verdict import SAFETY, Evidence, Policy

MAX_HESSIAN_ELEMENTS = 200  # elements of the inputs together in a second-order check
_LEVELS = 5                 # outer steps 1e-2·max(|x|, 1)·4^-k


def check_second_order(program: Program, table: Mapping[str, OpSpec], inputs: Mapping[str, np.ndarray],
                       wrt: tuple[str, ...], dtype: Any, device: str, weights: np.ndarray, atol: float,
                       rtol: float, policy: Policy, directions: np.ndarray | None = None,
                       eps: float | None = None) -> dict[str, Any]:
    """Every block d(gradient of a)/d b for a, b in `wrt`: "a" for a diagonal block, "a,b" for a mixed one.
    The numeric ladder's steps are 1e-2·max(|x|, 1)·4^-k, or --eps·4^-k with `eps` (its largest step, as
    for Richardson's first-order ladder).
    Above MAX_HESSIAN_ELEMENTS input elements together, a projected check instead ("projected"): for random
    ±1 vectors u, v (`directions`, shape (k, 2, total)), u·(dG/dx)·v by double backward against the numeric
    d/dt u·G(x + t·v), as torch's gradgradcheck does in fast mode, with a coverage statement.

    Raises:
        InputError: inputs with more than MAX_HESSIAN_ELEMENTS elements together and no directions.
    """
    total = sum(int(np.size(inputs[name])) for name in wrt)
    if total > MAX_HESSIAN_ELEMENTS:
        if directions is None:
            raise InputError(f"--order 2 checks inputs of up to {MAX_HESSIAN_ELEMENTS} elements together in full; "
                             f"these have {total}; use --wrt to pick fewer")
        return {"projected": _projected(program, table, inputs, wrt, dtype, device, weights, atol, rtol, policy,
                                        directions, eps)}
    failure = ""
    try:
        analytic = _double_backward(program, table, inputs, wrt, dtype, device, weights)
    except InputError:
        raise
    except Exception as err:  # a plugin's backward is not differentiable again: a failed check, not a crash
        if all(table[op].origin is None for op in program.ops):
            raise  # a built-in op's double backward failing is gradcheck's bug: show it
        lines = str(err).strip().splitlines()
        failure = f"double backward raised {type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
        analytic = {(a, b): np.full(np.shape(inputs[a]) + np.shape(inputs[b]), np.nan) for a in wrt for b in wrt}
    numeric, error = _differenced(program, table, inputs, wrt, device, weights, eps)
    results = {}
    for a in wrt:
        for b in wrt:
            evidence = Evidence(analytic[a, b], numeric[a, b], SAFETY * error[a, b])
            result = second_order_result(a, b, inputs[b], evidence, atol, rtol, policy)
            results[result.name] = failed_with(result, failure) if failure else result
    return results


def _run(program: Program, table: Mapping[str, OpSpec], inputs: Mapping[str, np.ndarray], wrt: tuple[str, ...],
         dtype: Any, device: str) -> tuple[Any, dict[str, Any]]:
    import torch

    leaves = {name: torch.tensor(value, dtype=dtype, device=device, requires_grad=name in wrt)
              for name, value in inputs.items()}
    out = Walker(program, table, TorchBackend(dtype, device)).run(dict(leaves))
    return out, leaves


def _double_backward(program: Program, table: Mapping[str, OpSpec], inputs: Mapping[str, np.ndarray],
                     wrt: tuple[str, ...], dtype: Any, device: str,
                     weights: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    """d(gradient of a)/d b by backward through the backward: shape a.shape + b.shape."""
    import torch

    out, leaves = _run(program, table, inputs, wrt, dtype, device)
    targets = [leaves[n] for n in wrt]
    w = torch.tensor(np.reshape(weights, tuple(out.shape)), dtype=dtype, device=device)
    grads = torch.autograd.grad(out, targets, w, create_graph=True, allow_unused=True)
    blocks = {}
    for a, g in zip(wrt, grads):
        shape_a = tuple(np.shape(inputs[a]))
        rows: dict[str, list[np.ndarray]] = {b: [] for b in wrt}
        flat = None if g is None else g.reshape(-1)
        for j in range(int(np.prod(shape_a, dtype=int))):
            second = [None] * len(wrt)
            if flat is not None and flat.requires_grad:  # else the gradient does not depend on the inputs
                second = torch.autograd.grad(flat[j], targets, retain_graph=True, allow_unused=True)
            for b, t, row in zip(wrt, targets, second):
                rows[b].append(np.zeros(tuple(t.shape)) if row is None else
                               row.detach().to("cpu", dtype=torch.float64).numpy())
        for b in wrt:
            shape = shape_a + tuple(np.shape(inputs[b]))
            blocks[a, b] = np.stack(rows[b]).reshape(shape) if rows[b] else np.zeros(shape)
    return blocks


def _flat_gradient(program: Program, table: Mapping[str, OpSpec], inputs: Mapping[str, np.ndarray],
                   wrt: tuple[str, ...], device: str, weights: np.ndarray,
                   point: Mapping[str, np.ndarray]) -> np.ndarray:
    """G at a point: torch's float64 gradient of every input, flattened into one vector (nan outside the
    domain); what the second-order checks difference numerically, as gradgradcheck does."""
    import torch

    with np.errstate(all="ignore"):
        out, leaves = _run(program, table, point, wrt, torch.float64, device)
        w = torch.tensor(np.reshape(weights, tuple(out.shape)), dtype=torch.float64, device=device)
        grads = torch.autograd.grad(out, [leaves[n] for n in wrt], w, allow_unused=True)
    return np.concatenate([np.zeros(np.size(inputs[n])) if g is None else
                           g.detach().cpu().numpy().reshape(-1) for n, g in zip(wrt, grads)])


def _differenced(program: Program, table: Mapping[str, OpSpec], inputs: Mapping[str, np.ndarray],
                 wrt: tuple[str, ...], device: str, weights: np.ndarray, eps: float | None = None):
    """dG_a/d b by central differences of torch's float64 gradient function G (gradgradcheck's numeric side),
    on a ladder of steps Richardson-extrapolated; (values, error estimates) keyed by (a, b)."""

    def gradient(point: Mapping[str, np.ndarray]) -> np.ndarray:
        return _flat_gradient(program, table, inputs, wrt, device, weights, point)

    sizes = [int(np.size(inputs[n])) for n in wrt]
    offsets = np.cumsum([0] + sizes)
    total = int(offsets[-1])
    value, error = np.zeros((total, total)), np.zeros((total, total))
    for i, b in enumerate(wrt):
        flat = np.asarray(inputs[b], dtype=np.float64).reshape(-1)
        for k in range(flat.size):
            diffs, noise = [], []
            for level in range(_LEVELS):
                largest = eps if eps else 1e-2 * max(abs(flat[k]), 1.0)
                delta = float(_exact_steps(flat[k], largest / 4**level))
                sides = []
                for sign in (1, -1):
                    moved = flat.copy()
                    moved[k] += sign * delta
                    point = {**inputs, b: moved.reshape(np.shape(inputs[b]))}
                    sides.append(gradient(point))
                diffs.append((sides[0] - sides[1]) / (2 * delta))
                noise.append(_EPS * np.maximum(np.abs(sides[0]), np.abs(sides[1])) / delta)
            with np.errstate(all="ignore"):
                column, estimate = _extrapolate(diffs, noise, (2, 4))
            value[:, offsets[i] + k], error[:, offsets[i] + k] = column, estimate
    blocks, errors = {}, {}
    for i, a in enumerate(wrt):
        for j, b in enumerate(wrt):
            shape = tuple(np.shape(inputs[a])) + tuple(np.shape(inputs[b]))
            rows, cols = slice(offsets[i], offsets[i + 1]), slice(offsets[j], offsets[j + 1])
            blocks[a, b] = value[rows, cols].reshape(shape)
            errors[a, b] = error[rows, cols].reshape(shape)
    return blocks, errors


def _split(vector: np.ndarray, inputs: Mapping[str, np.ndarray], wrt: tuple[str, ...]) -> dict[str, np.ndarray]:
    sizes = np.cumsum([0] + [int(np.size(inputs[n])) for n in wrt])
    return {n: vector[sizes[i]:sizes[i + 1]].reshape(np.shape(inputs[n])) for i, n in enumerate(wrt)}


def _projected(program: Program, table: Mapping[str, OpSpec], inputs: Mapping[str, np.ndarray],
               wrt: tuple[str, ...], dtype: Any, device: str, weights: np.ndarray, atol: float, rtol: float,
               policy: Policy, directions: np.ndarray, eps: float | None = None) -> ProjectedResult:
    """u·(dG/dx)·v per direction: double backward against central differences of u·G along v."""
    import torch

    k, total = directions.shape[0], directions.shape[-1]
    analytic = np.zeros(k)
    for i in range(k):
        out, leaves = _run(program, table, inputs, wrt, dtype, device)
        targets = [leaves[n] for n in wrt]
        w = torch.tensor(np.reshape(weights, tuple(out.shape)), dtype=dtype, device=device)
        grads = torch.autograd.grad(out, targets, w, create_graph=True, allow_unused=True)
        u = _split(directions[i, 0].astype(np.float64), inputs, wrt)
        s = sum((g * torch.tensor(u[n], dtype=dtype, device=device)).sum()
                for n, g in zip(wrt, grads) if g is not None and g.requires_grad)
        if isinstance(s, torch.Tensor) and s.requires_grad:
            hv = torch.autograd.grad(s, targets, allow_unused=True)
            v = _split(directions[i, 1].astype(np.float64), inputs, wrt)
            analytic[i] = sum(float((h.detach().cpu().double().numpy() * v[n]).sum())
                              for n, h in zip(wrt, hv) if h is not None)

    def gradient(point: Mapping[str, np.ndarray]) -> np.ndarray:
        return _flat_gradient(program, table, inputs, wrt, device, weights, point)

    scale = max(max(float(np.max(np.abs(inputs[n]), initial=0.0)) for n in wrt), 1.0)
    numeric, error = np.zeros(k), np.zeros(k)
    for i in range(k):
        u, v = directions[i, 0].astype(np.float64), _split(directions[i, 1].astype(np.float64), inputs, wrt)
        diffs, noise = [], []
        for level in range(_LEVELS):
            t = (eps if eps else 1e-2 * scale) / 4**level
            sides = [gradient({**inputs, **{n: inputs[n] + sign * t * v[n] for n in wrt}}) @ u for sign in (1, -1)]
            diffs.append(np.array([(sides[0] - sides[1]) / (2 * t)]))
            noise.append(np.array([_EPS * max(abs(sides[0]), abs(sides[1]), 1.0) * total / t]))
        with np.errstate(all="ignore"):
            value, estimate = _extrapolate(diffs, noise, (2, 4))
        numeric[i], error[i] = value[0], estimate[0]
    evidence = Evidence(analytic, numeric, SAFETY * error)
    return projected_result("second order", np.zeros(k), evidence, atol, rtol, total * total, True, policy)
