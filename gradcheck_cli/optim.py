"""Optimizers for `gradcheck step`: `--optim "SGD(lr=0.01)"` → a torch.optim class beside an independent
numpy implementation of its documented update rule.

Every reference below follows the pseudocode of torch 2.13's documentation for that class
(https://pytorch.org/docs/2.13/optim.html), with one reading made explicit: `maximize` negates the
gradient first, for every optimizer that has it (the docs show it for SGD, Adam, AdamW, NAdam, RAdam;
torch's code does the same for the others). A reference has the plugin signature,
`update(params, grads, state, step, **hyper) -> params`, over dicts of float64 arrays keyed by parameter
name; `state` is one dict kept across steps; `step` counts from 1. Its keyword-only parameters are the
keywords `--optim` accepts, with torch's defaults.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .errors import InputError
from .parse import LiteralCall, parse_literal_call

Arrays = dict[str, np.ndarray]
# what a plugin's optimizer code may raise that is reported as bad input, as an op's own errors are
PLUGIN_ERRORS = (RuntimeError, ValueError, IndexError, TypeError, KeyError, ArithmeticError)
Update = Callable[..., Mapping[str, Any]]
_PREFIXES = ("torch.optim.", "optim.")


def _buffer(state: dict, key: tuple, like: np.ndarray, fill: float = 0.0) -> np.ndarray:
    if key not in state:
        state[key] = np.full_like(like, fill)
    return state[key]


def sgd(params: Arrays, grads: Arrays, state: dict, step: int, *, lr: float = 1e-3, momentum: float = 0.0,
        dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
        maximize: bool = False) -> Arrays:
    out = {}
    for name, p in params.items():
        g = -grads[name] if maximize else grads[name]
        if weight_decay != 0:
            g = g + weight_decay * p
        if momentum != 0:
            # b_1 = g_1; b_t = μ b_{t-1} + (1 − τ) g_t
            b = g if step == 1 else momentum * state[("b", name)] + (1 - dampening) * g
            state[("b", name)] = b
            g = g + momentum * b if nesterov else b
        out[name] = p - lr * g
    return out


def _weight_decay(p: np.ndarray, g: np.ndarray, lr: float, weight_decay: float,
                  decoupled: bool) -> tuple[np.ndarray, np.ndarray]:
    """L2 decay into the gradient (g + λθ), or decoupled from it (θ − γλθ), as NAdam/RAdam document."""
    if weight_decay == 0:
        return p, g
    return (p - lr * weight_decay * p, g) if decoupled else (p, g + weight_decay * p)


def _raw_moments(state: dict, name: str, g: np.ndarray, beta1: float, beta2: float) -> tuple[np.ndarray, np.ndarray]:
    """m_t = β1 m_{t-1} + (1 − β1) g_t and v_t = β2 v_{t-1} + (1 − β2) g_t², kept in `state`."""
    m = beta1 * _buffer(state, ("m", name), g) + (1 - beta1) * g
    v = beta2 * _buffer(state, ("v", name), g) + (1 - beta2) * g * g
    state[("m", name)], state[("v", name)] = m, v
    return m, v


def _adam_moments(state: dict, name: str, g: np.ndarray, betas: tuple[float, float], step: int,
                  amsgrad: bool) -> tuple[np.ndarray, np.ndarray]:
    """m̂_t and v̂_t of Adam/AdamW (with amsgrad: v_t^max = max(v_{t-1}^max, v_t), then bias-corrected)."""
    beta1, beta2 = betas
    m, v = _raw_moments(state, name, g, beta1, beta2)
    if amsgrad:
        v = np.maximum(_buffer(state, ("vmax", name), g), v)
        state[("vmax", name)] = v
    return m / (1 - beta1 ** step), v / (1 - beta2 ** step)


def adam(params: Arrays, grads: Arrays, state: dict, step: int, *, lr: float = 1e-3,
         betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
         amsgrad: bool = False, maximize: bool = False, decoupled_weight_decay: bool = False) -> Arrays:
    if decoupled_weight_decay:  # torch: Adam(decoupled_weight_decay=True) is AdamW
        return adamw(params, grads, state, step, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                     amsgrad=amsgrad, maximize=maximize)
    out = {}
    for name, p in params.items():
        g = -grads[name] if maximize else grads[name]
        if weight_decay != 0:
            g = g + weight_decay * p
        m_hat, v_hat = _adam_moments(state, name, g, betas, step, amsgrad)
        out[name] = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return out


def adamw(params: Arrays, grads: Arrays, state: dict, step: int, *, lr: float = 1e-3,
          betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
          amsgrad: bool = False, maximize: bool = False) -> Arrays:
    out = {}
    for name, p in params.items():
        g = -grads[name] if maximize else grads[name]
        p = p - lr * weight_decay * p  # decoupled: θ_t ← θ_{t-1} − γλθ_{t-1}, outside the moments
        m_hat, v_hat = _adam_moments(state, name, g, betas, step, amsgrad)
        out[name] = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return out


def rmsprop(params: Arrays, grads: Arrays, state: dict, step: int, *, lr: float = 1e-2, alpha: float = 0.99,
            eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
            maximize: bool = False) -> Arrays:
    out = {}
    for name, p in params.items():
        g = -grads[name] if maximize else grads[name]
        if weight_decay != 0:
            g = g + weight_decay * p
        v = alpha * _buffer(state, ("v", name), g) + (1 - alpha) * g * g
        state[("v", name)] = v
        v_tilde = v
        if centered:
            g_ave = alpha * _buffer(state, ("g_ave", name), g) + (1 - alpha) * g
            state[("g_ave", name)] = g_ave
            v_tilde = v - g_ave * g_ave
        direction = g / (np.sqrt(v_tilde) + eps)
        if momentum > 0:
            direction = momentum * _buffer(state, ("b", name), g) + direction
            state[("b", name)] = direction
        out[name] = p - lr * direction
    return out


def adagrad(params: Arrays, grads: Arrays, state: dict, step: int, *, lr: float = 1e-2, lr_decay: float = 0.0,
            weight_decay: float = 0.0, initial_accumulator_value: float = 0.0, eps: float = 1e-10,
            maximize: bool = False) -> Arrays:
    out = {}
    rate = lr / (1 + (step - 1) * lr_decay)  # γ̃ = γ / (1 + (t − 1)η)
    for name, p in params.items():
        g = -grads[name] if maximize else grads[name]
        if weight_decay != 0:
            g = g + weight_decay * p
        total = _buffer(state, ("sum", name), g, initial_accumulator_value) + g * g
        state[("sum", name)] = total
        out[name] = p - rate * g / (np.sqrt(total) + eps)
    return out


def adamax(params: Arrays, grads: Arrays, state: dict, step: int, *, lr: float = 2e-3,
           betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
           maximize: bool = False) -> Arrays:
    beta1, beta2 = betas
    out = {}
    for name, p in params.items():
        g = -grads[name] if maximize else grads[name]
        if weight_decay != 0:
            g = g + weight_decay * p
        m = beta1 * _buffer(state, ("m", name), g) + (1 - beta1) * g
        u = np.maximum(beta2 * _buffer(state, ("u", name), g), np.abs(g) + eps)
        state[("m", name)], state[("u", name)] = m, u
        out[name] = p - lr * m / ((1 - beta1 ** step) * u)
    return out


def nadam(params: Arrays, grads: Arrays, state: dict, step: int, *, lr: float = 2e-3,
          betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
          momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False, maximize: bool = False) -> Arrays:
    beta1, beta2 = betas
    mu = beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    product = state.get("mu_product", 1.0) * mu  # ∏_{i=1}^{t} μ_i
    state["mu_product"] = product
    out = {}
    for name, p in params.items():
        g = -grads[name] if maximize else grads[name]
        p, g = _weight_decay(p, g, lr, weight_decay, decoupled_weight_decay)
        m, v = _raw_moments(state, name, g, beta1, beta2)
        m_hat = mu_next * m / (1 - product * mu_next) + (1 - mu) * g / (1 - product)
        v_hat = v / (1 - beta2 ** step)
        out[name] = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return out


def radam(params: Arrays, grads: Arrays, state: dict, step: int, *, lr: float = 1e-3,
          betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
          decoupled_weight_decay: bool = False, maximize: bool = False) -> Arrays:
    beta1, beta2 = betas
    rho_inf = 2 / (1 - beta2) - 1
    rho = rho_inf - 2 * step * beta2 ** step / (1 - beta2 ** step)
    out = {}
    for name, p in params.items():
        g = -grads[name] if maximize else grads[name]
        p, g = _weight_decay(p, g, lr, weight_decay, decoupled_weight_decay)
        m, v = _raw_moments(state, name, g, beta1, beta2)
        m_hat = m / (1 - beta1 ** step)
        if rho > 5:  # the variance is tractable: rectified adaptive step
            adaptive = np.sqrt(1 - beta2 ** step) / (np.sqrt(v) + eps)
            rect = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            out[name] = p - lr * m_hat * rect * adaptive
        else:
            out[name] = p - lr * m_hat
    return out


def adadelta(params: Arrays, grads: Arrays, state: dict, step: int, *, lr: float = 1.0, rho: float = 0.9,
             eps: float = 1e-6, weight_decay: float = 0.0, maximize: bool = False) -> Arrays:
    out = {}
    for name, p in params.items():
        g = -grads[name] if maximize else grads[name]
        if weight_decay != 0:
            g = g + weight_decay * p
        v = rho * _buffer(state, ("v", name), g) + (1 - rho) * g * g
        u = _buffer(state, ("u", name), g)
        delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
        state[("v", name)], state[("u", name)] = v, rho * u + (1 - rho) * delta * delta
        out[name] = p - lr * delta
    return out


def rprop(params: Arrays, grads: Arrays, state: dict, step: int, *, lr: float = 1e-2,
          etas: tuple[float, float] = (0.5, 1.2), step_sizes: tuple[float, float] = (1e-6, 50),
          maximize: bool = False) -> Arrays:
    eta_minus, eta_plus = etas
    smallest, largest = step_sizes
    out = {}
    for name, p in params.items():
        g = -grads[name] if maximize else grads[name]
        prev = _buffer(state, ("prev", name), g)
        eta = _buffer(state, ("eta", name), g, lr)
        agree = prev * g
        eta = np.where(agree > 0, np.minimum(eta * eta_plus, largest),
                       np.where(agree < 0, np.maximum(eta * eta_minus, smallest), eta))
        g = np.where(agree < 0, 0.0, g)  # a sign change: no step this time, and no memory of it
        state[("prev", name)], state[("eta", name)] = g, eta
        out[name] = p - eta * np.sign(g)
    return out


# name → the numpy reference; the torch class is torch.optim.<name>. Not here: ASGD (its docs give no
# update rule), LBFGS (a closure and line search, not a step rule), SparseAdam (sparse gradients only).
BUILT_IN: dict[str, Update] = {
    "SGD": sgd, "Adam": adam, "AdamW": adamw, "RMSprop": rmsprop, "Adagrad": adagrad,
    "Adamax": adamax, "NAdam": nadam, "RAdam": radam, "Adadelta": adadelta, "Rprop": rprop,
}


@dataclasses.dataclass(frozen=True)
class OptimizerUsed:
    """What a result says of its optimizer: data only, since results cross processes and plugin code
    (a plugin's optimizer class) cannot be unpickled where the plugin was never loaded."""

    name: str
    hyper: dict[str, Any]
    origin: str | None = None


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """An optimizer as `--optim` named it: the torch class, its numpy reference and the keywords given."""

    name: str
    torch_class: Any
    update: Update
    hyper: dict[str, Any]
    origin: str | None = None   # the plugin that defined it; None for a built-in

    @property
    def used(self) -> OptimizerUsed:
        return OptimizerUsed(self.name, self.hyper, self.origin)

    def build(self, params: list[Any]) -> Any:
        """The torch optimizer over `params`; torch's own refusal of a value is bad input."""
        try:
            return self.torch_class(params, **self.hyper)
        except (ValueError, TypeError) as err:  # e.g. "Invalid learning rate: -1.0"
            where = f"torch.optim.{self.name}" if self.origin is None else f"{self.name} (from {self.origin})"
            raise InputError(f"{where} refuses these settings: {err}") from None

    def reference(self, params: Arrays, grads: Arrays, state: dict, step: int) -> Arrays:
        """One step of the numpy reference, with what it returns checked."""
        try:
            new = self.update({k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in grads.items()},
                              state, step, **self.hyper)
        except PLUGIN_ERRORS as err:  # the plugin's own code failed: report it as the user's input
            raise InputError(f"optimizer {self.name}'s update failed at step {step}: {type(err).__name__}: {err}") from None
        if not isinstance(new, Mapping) or set(new) != set(params):
            raise InputError(f"optimizer {self.name}'s update must return a dict with the parameters "
                             f"{', '.join(params)}, not {type(new).__name__}"
                             + (f" with {', '.join(map(str, new))}" if isinstance(new, Mapping) else ""))
        out = {}
        for name, value in new.items():
            array = np.asarray(value, dtype=np.float64)
            if array.shape != params[name].shape:
                raise InputError(f"optimizer {self.name}'s update returned shape {list(array.shape)} for "
                                 f"'{name}', which has shape {list(params[name].shape)}")
            out[name] = array
        return out


def keywords(update: Update) -> dict[str, Any] | None:
    """The keywords an update function takes after (params, grads, state, step), with their defaults;
    None when it takes **hyper."""
    params = list(inspect.signature(update).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name: p.default for p in params[4:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _torch_keywords(cls: Any) -> dict[str, Any] | None:
    """The keywords a torch optimizer class takes besides its params; None when it takes **kwargs."""
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name: p.default for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _plugin_keywords(torch_class: Any, update: Update) -> list[str] | None:
    """What both a plugin's torch class and its update take (None: either takes anything)."""
    sides = [set(s) for s in (_torch_keywords(torch_class), keywords(update)) if s is not None]
    return sorted(set.intersection(*sides)) if sides else None


def plugin_optimizers(plugins: Iterable[str]) -> dict[str, tuple[Any, Update, str]]:
    """OPTIMIZERS of every plugin: name → (torch class, update, plugin ref)."""
    from .plugins import load_module
    found: dict[str, tuple[Any, Update, str]] = {}
    for ref in plugins:
        table = getattr(load_module(ref), "OPTIMIZERS", None)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise InputError(f"plugin {ref}: OPTIMIZERS must be a dict of name → (TorchOptimizerClass, update)")
        for name, entry in table.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise InputError(f"plugin {ref}: optimizer name {name!r} must be an identifier")
            if name in BUILT_IN:
                raise InputError(f"plugin {ref}: '{name}' is a built-in optimizer; give yours another name")
            if not (isinstance(entry, tuple) and len(entry) == 2 and callable(entry[0]) and callable(entry[1])):
                raise InputError(f"plugin {ref}: OPTIMIZERS['{name}'] must be (TorchOptimizerClass, update)")
            found[name] = (entry[0], entry[1], ref)
    return found


def resolve_optimizer(text: str, plugins: Iterable[str] = ()) -> Optimizer:
    """`--optim` text → an Optimizer, every keyword checked. Raises InputError."""
    call = parse_literal_call(text, "--optim")
    name = call.name
    for prefix in _PREFIXES:
        name = name[len(prefix):] if name.startswith(prefix) else name
    custom = plugin_optimizers(plugins)
    if name in BUILT_IN:
        import torch
        torch_class, update, origin = getattr(torch.optim, name), BUILT_IN[name], None
    elif name in custom:
        torch_class, update, origin = custom[name]
    else:
        known = sorted(BUILT_IN) + sorted(custom)
        raise call.error(f"unknown optimizer '{call.name}'; use one of: {', '.join(known)}"
                         + ("" if custom else " (or a plugin's OPTIMIZERS)"))
    accepted = keywords(update) if origin is None else _plugin_keywords(torch_class, update)
    for key, value in call.keywords.items():
        if accepted is not None and key not in accepted:
            raise call.error(f"{name} has no keyword '{key}'; its keywords are: {', '.join(accepted)}", key)
        if origin is None:
            _check_type(call, name, key, value, keywords(update)[key])
    return Optimizer(name, torch_class, update, dict(call.keywords), origin)


def _check_type(call: LiteralCall, name: str, key: str, value: Any, default: Any) -> None:
    """A built-in's keyword has the kind of its default: a flag, a number, or a pair of numbers."""
    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "True or False"
    elif isinstance(default, tuple):
        ok = isinstance(value, tuple) and len(value) == len(default) and all(number(v) for v in value)
        kind = f"a pair of numbers such as {default}"
    else:
        ok, kind = number(value), "a finite number"
    if not ok:
        raise call.error(f"{name}: '{key}' must be {kind}, not {value!r}", key)
