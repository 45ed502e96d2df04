"""Hand-written optimizers for `gradcheck step` tests: each a torch.optim.Optimizer beside its numpy update.

HeavyBall (SGD with momentum and weight decay) and BiasAdam (Adam) are right. Forgetful forgets the
weight decay in its torch step; LateBias uses the bias correction of step t-1 from step 2 on
(step 1 is right, so the trajectories part at step 2). No OPS: an optimizer plugin needs none.
"""
import numpy as np
import torch


class HeavyBall(torch.optim.Optimizer):
    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0, forget_decay=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.forget_decay = forget_decay

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.clone()
                if not self.forget_decay:
                    d = d + group["weight_decay"] * p
                state = self.state[p]
                buf = state.get("buf")
                buf = d if buf is None else group["momentum"] * buf + d
                state["buf"] = buf
                p.add_(buf, alpha=-group["lr"])


class Forgetful(HeavyBall):
    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr, momentum, weight_decay, forget_decay=True)


def heavy_ball(params, grads, state, step, lr=0.01, momentum=0.0, weight_decay=0.0):
    out = {}
    for name, p in params.items():
        d = grads[name] + weight_decay * p
        buf = d if step == 1 else momentum * state[name] + d
        state[name] = buf
        out[name] = p - lr * buf
    return out


class BiasAdam(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, late=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.late = late

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                t = max(state["t"] - 1, 1) if self.late else state["t"]
                state["m"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                m_hat = state["m"] / (1 - beta1 ** t)
                v_hat = state["v"] / (1 - beta2 ** t)
                p.sub_(group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))


class LateBias(BiasAdam):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr, betas, eps, late=True)


def bias_adam(params, grads, state, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    beta1, beta2 = betas
    out = {}
    for name, p in params.items():
        g = grads[name]
        m = beta1 * state.get(("m", name), 0.0) + (1 - beta1) * g
        v = beta2 * state.get(("v", name), 0.0) + (1 - beta2) * g * g
        state[("m", name)], state[("v", name)] = m, v
        out[name] = p - lr * (m / (1 - beta1 ** step)) / (np.sqrt(v / (1 - beta2 ** step)) + eps)
    return out


OPTIMIZERS = {
    "HeavyBall": (HeavyBall, heavy_ball),
    "Forgetful": (Forgetful, heavy_ball),
    "BiasAdam": (BiasAdam, bias_adam),
    "LateBias": (LateBias, bias_adam),
}
