"""`gradcheck step`: torch.optim trajectories against trajectories written here from the documented formulas.

Every oracle below is the pseudocode of torch 2.13's docs for that optimizer, written again, element by
element, with the loss's exact gradient (never torch, never gradcheck_cli.optim). gradcheck must agree
with torch and with the oracle at every step, and a wrong optimizer must fail naming the step.
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gradcheck_cli.errors import InputError
from gradcheck_cli.optim import BUILT_IN, keywords
from gradcheck_cli.stepping import StepOptions, run_step

OPTIMIZERS_PLUGIN = str(Path(__file__).parent / "plugins" / "optimizers.py")
ONE_WRONG = str(Path(__file__).parent / "plugins" / "one_wrong.py")

SEED_LOSS = "w[0]**2 + 2*w[1]**2"  # seed 003
LOSS = "w[0]**2 + 2*w[1]**2 + sin(w[0]*w[1])"


def seed_grad(w):
    return np.array([2 * w[0], 4 * w[1]])


def loss_grad(w):
    c = math.cos(w[0] * w[1])
    return np.array([2 * w[0] + w[1] * c, 4 * w[1] + w[0] * c])


# ---------------------------------------------------------------- the documented formulas, per element

def oracle_sgd(grad, w, steps, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
               maximize=False, recompute=True):
    w, b, out, g0 = np.array(w, float), None, [], None
    for t in range(1, steps + 1):
        g = grad(w) if recompute or g0 is None else g0
        g0 = g
        g = -g if maximize else g
        g = g + weight_decay * w
        if momentum:
            b = g if t == 1 else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        w = w - lr * g
        out.append(w)
    return out


def oracle_adam(grad, w, steps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                maximize=False, decoupled_weight_decay=False):
    (b1, b2), w = betas, np.array(w, float)
    m = v = vmax = np.zeros_like(w)
    out = []
    for t in range(1, steps + 1):
        g = -grad(w) if maximize else grad(w)
        if decoupled_weight_decay:
            w = w - lr * weight_decay * w
        else:
            g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        mh = m / (1 - b1 ** t)
        if amsgrad:
            vmax = np.maximum(vmax, v)
            vh = vmax / (1 - b2 ** t)
        else:
            vh = v / (1 - b2 ** t)
        w = w - lr * mh / (np.sqrt(vh) + eps)
        out.append(w)
    return out


def oracle_adamw(grad, w, steps, weight_decay=1e-2, **kw):
    return oracle_adam(grad, w, steps, weight_decay=weight_decay, decoupled_weight_decay=True, **kw)


def oracle_rmsprop(grad, w, steps, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                   centered=False, maximize=False):
    w = np.array(w, float)
    v = b = gave = np.zeros_like(w)
    out = []
    for _ in range(steps):
        g = -grad(w) if maximize else grad(w)
        g = g + weight_decay * w
        v = alpha * v + (1 - alpha) * g ** 2
        vt = v
        if centered:
            gave = gave * alpha + (1 - alpha) * g
            vt = vt - gave ** 2
        if momentum > 0:
            b = momentum * b + g / (np.sqrt(vt) + eps)
            w = w - lr * b
        else:
            w = w - lr * g / (np.sqrt(vt) + eps)
        out.append(w)
    return out


def oracle_adagrad(grad, w, steps, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                   eps=1e-10, maximize=False):
    w = np.array(w, float)
    total = np.full_like(w, initial_accumulator_value)
    out = []
    for t in range(1, steps + 1):
        g = -grad(w) if maximize else grad(w)
        rate = lr / (1 + (t - 1) * lr_decay)
        g = g + weight_decay * w
        total = total + g ** 2
        w = w - rate * g / (np.sqrt(total) + eps)
        out.append(w)
    return out


def oracle_adamax(grad, w, steps, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False):
    (b1, b2), w = betas, np.array(w, float)
    m = u = np.zeros_like(w)
    out = []
    for t in range(1, steps + 1):
        g = -grad(w) if maximize else grad(w)
        g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g) + eps)
        w = w - lr * m / ((1 - b1 ** t) * u)
        out.append(w)
    return out


def oracle_nadam(grad, w, steps, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, maximize=False):
    (b1, b2), w = betas, np.array(w, float)
    m = v = np.zeros_like(w)
    mus = [b1 * (1 - 0.5 * 0.96 ** (i * momentum_decay)) for i in range(1, steps + 2)]  # μ_1 … μ_{K+1}
    out = []
    for t in range(1, steps + 1):
        g = -grad(w) if maximize else grad(w)
        if weight_decay and decoupled_weight_decay:
            w = w - lr * weight_decay * w
        elif weight_decay:
            g = g + weight_decay * w
        mu, mu_next = mus[t - 1], mus[t]
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        mh = mu_next * m / (1 - math.prod(mus[:t + 1])) + (1 - mu) * g / (1 - math.prod(mus[:t]))
        vh = v / (1 - b2 ** t)
        w = w - lr * mh / (np.sqrt(vh) + eps)
        out.append(w)
    return out


def oracle_radam(grad, w, steps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, maximize=False):
    (b1, b2), w = betas, np.array(w, float)
    m = v = np.zeros_like(w)
    rho_inf = 2 / (1 - b2) - 1
    out = []
    for t in range(1, steps + 1):
        g = -grad(w) if maximize else grad(w)
        if weight_decay and decoupled_weight_decay:
            w = w - lr * weight_decay * w
        elif weight_decay:
            g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        mh = m / (1 - b1 ** t)
        rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        if rho > 5:
            lt = math.sqrt(1 - b2 ** t) / (np.sqrt(v) + eps)
            rt = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            w = w - lr * mh * rt * lt
        else:
            w = w - lr * mh
        out.append(w)
    return out


def oracle_adadelta(grad, w, steps, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
    w = np.array(w, float)
    v = u = np.zeros_like(w)
    out = []
    for _ in range(steps):
        g = -grad(w) if maximize else grad(w)
        g = g + weight_decay * w
        v = v * rho + g ** 2 * (1 - rho)
        dx = np.sqrt(u + eps) / np.sqrt(v + eps) * g
        u = u * rho + dx ** 2 * (1 - rho)
        w = w - lr * dx
        out.append(w)
    return out


def oracle_rprop(grad, w, steps, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False):
    w = np.array(w, float)
    prev, eta = np.zeros_like(w), np.full_like(w, lr)
    out = []
    for _ in range(steps):
        g = -grad(w) if maximize else grad(w)
        for i in range(w.size):
            if prev[i] * g[i] > 0:
                eta[i] = min(eta[i] * etas[1], step_sizes[1])
            elif prev[i] * g[i] < 0:
                eta[i] = max(eta[i] * etas[0], step_sizes[0])
                g[i] = 0.0
        w = w - eta * np.sign(g)
        prev = g
        out.append(w)
    return out


ORACLES = {"SGD": oracle_sgd, "Adam": oracle_adam, "AdamW": oracle_adamw, "RMSprop": oracle_rmsprop,
           "Adagrad": oracle_adagrad, "Adamax": oracle_adamax, "NAdam": oracle_nadam, "RAdam": oracle_radam,
           "Adadelta": oracle_adadelta, "Rprop": oracle_rprop}

SETTINGS = {
    "SGD": [dict(lr=0.05), dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.1),
            dict(lr=0.05, momentum=0.8, nesterov=True), dict(lr=0.05, momentum=0.5, weight_decay=0.2, maximize=True)],
    "Adam": [dict(lr=0.1), dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6), dict(lr=0.1, weight_decay=0.3),
             dict(lr=0.1, amsgrad=True), dict(lr=0.05, maximize=True, weight_decay=0.1),
             # β2 = 0.5 lets v fall as the gradient shrinks, so amsgrad's running max decides
             dict(lr=0.1, betas=(0.9, 0.5), amsgrad=True), dict(lr=0.1, weight_decay=0.2, decoupled_weight_decay=True)],
    "AdamW": [dict(lr=0.1), dict(lr=0.1, weight_decay=0.5, amsgrad=True, betas=(0.8, 0.5)), dict(lr=0.02, betas=(0.5, 0.9), maximize=True)],
    "RMSprop": [dict(lr=0.01), dict(lr=0.01, alpha=0.9, centered=True), dict(lr=0.01, momentum=0.7, weight_decay=0.1),
                dict(lr=0.01, centered=True, momentum=0.5, maximize=True, eps=1e-4)],
    "Adagrad": [dict(lr=0.1), dict(lr=0.1, lr_decay=0.5), dict(lr=0.1, weight_decay=0.2, initial_accumulator_value=0.3),
                dict(lr=0.05, eps=1e-3, maximize=True)],
    "Adamax": [dict(lr=0.1), dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.1, maximize=True)],
    "NAdam": [dict(lr=0.1), dict(lr=0.1, momentum_decay=0.5, weight_decay=0.1),
              dict(lr=0.1, weight_decay=0.2, decoupled_weight_decay=True)],
    "RAdam": [dict(lr=0.1), dict(lr=0.1, betas=(0.9, 0.6), weight_decay=0.1),
              dict(lr=0.1, betas=(0.5, 0.7), weight_decay=0.2, decoupled_weight_decay=True, maximize=True)],
    "Adadelta": [dict(), dict(lr=0.5, rho=0.5, weight_decay=0.1), dict(lr=2.0, eps=1e-3, maximize=True)],
    # lr 0.3 overshoots the minimum, so signs flip and both branches of the rule are taken
    "Rprop": [dict(lr=0.3), dict(lr=0.2, etas=(0.3, 1.5), step_sizes=(0.15, 0.4)), dict(lr=0.1, maximize=True)],
}

STEPS = 6  # RAdam's betas=(0.9, 0.6) reach its rectified branch (ρ_t > 5) by step 6


def optim_text(name, hyper):
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in hyper.items()) + ")"


def trajectory(result, name="w"):
    return [s.params[name].torch for s in result.steps], [s.params[name].reference for s in result.steps]


@pytest.mark.parametrize("name,hyper", [(n, h) for n, hs in SETTINGS.items() for h in hs],
                         ids=[optim_text(n, h) for n, hs in SETTINGS.items() for h in hs])
def test_every_optimizer_follows_its_documented_rule(name, hyper):
    start = [0.6, -0.4]
    result = run_step(LOSS, {"w": start}, StepOptions(optim_text(name, hyper), STEPS))
    assert result.ok, result.first_failure()
    expected = ORACLES[name](loss_grad, start, STEPS, **hyper)
    torch_side, reference = trajectory(result)
    for k in range(STEPS):
        assert np.allclose(torch_side[k], expected[k], rtol=1e-7, atol=1e-9), (k + 1, torch_side[k], expected[k])
        assert np.allclose(reference[k], expected[k], rtol=1e-7, atol=1e-9), (k + 1, reference[k], expected[k])
    assert all(np.allclose(s.params["w"].gradient.analytic, s.params["w"].gradient.numeric) for s in result.steps)


def test_every_optimizer_is_tested_and_the_oracles_take_torchs_keywords():
    assert set(ORACLES) == set(BUILT_IN)
    for name, update in BUILT_IN.items():
        torch_defaults = {k: p.default for k, p in inspect.signature(getattr(torch.optim, name)).parameters.items()}
        for key, default in keywords(update).items():
            assert torch_defaults[key] == default, (name, key)  # the reference's defaults are torch's own
        assert {k for h in SETTINGS[name] for k in h} <= set(keywords(update))


# ---------------------------------------------------------------- the notebook's numbers (seed 003)

def test_sgd_one_step_as_in_the_notebook(gradcheck):
    data = gradcheck.json("step", SEED_LOSS, "-v", "w=0.5,0.5", "--optim", "SGD(lr=0.01)")
    (step,) = data["steps"]
    w = step["params"]["w"]
    assert w["grad_analytic"] == pytest.approx([1.0, 2.0]) and w["grad_numeric"] == pytest.approx([1.0, 2.0])
    expected = oracle_sgd(seed_grad, [0.5, 0.5], 1, lr=0.01)[0]
    assert w["torch"] == pytest.approx(expected.tolist(), abs=1e-15) == [0.49, 0.48]
    assert w["reference"] == pytest.approx(expected.tolist(), abs=1e-15)
    assert step["loss"] == pytest.approx(0.5 ** 2 + 2 * 0.5 ** 2) and step["step"] == 1
    assert data["ok"] and data["optimizer"] == {"name": "SGD", "hyper": {"lr": 0.01}, "origin": None}


@pytest.mark.parametrize("name,hyper,recompute,printed", [
    ("SGD", dict(lr=0.01, weight_decay=1), False, [[0.4850, 0.4750], [0.4702, 0.4502]]),  # two steps, one gradient
    ("SGD", dict(lr=0.01, momentum=0.1), False, [[0.4900, 0.4800], [0.4790, 0.4580]]),
    ("SGD", dict(lr=0.01), False, [[0.4900, 0.4800], [0.4800, 0.4600]]),                  # "多更新一次参数"
    ("SGD", dict(lr=0.01), True, [[0.4900, 0.4800], [0.4802, 0.4608]]),                   # zero_grad, recompute
    ("Adagrad", dict(lr=0.01, lr_decay=0, weight_decay=0, initial_accumulator_value=0), True,
     [[0.4900, 0.4900], [0.4830, 0.4830]]),
])
def test_the_notebook_trajectories(name, hyper, recompute, printed):
    """seed 003 printed these (float32, 4 decimals); the oracle derives them, gradcheck must give both."""
    result = run_step(SEED_LOSS, {"w": [0.5, 0.5]}, StepOptions(optim_text(name, hyper), 2, recompute))
    assert result.ok, result.first_failure()
    oracle = (oracle_sgd(seed_grad, [0.5, 0.5], 2, recompute=recompute, **hyper) if name == "SGD"
              else oracle_adagrad(seed_grad, [0.5, 0.5], 2, **hyper))
    torch_side, reference = trajectory(result)
    for k in range(2):
        assert np.allclose(torch_side[k], oracle[k], atol=1e-15) and np.allclose(reference[k], oracle[k], atol=1e-15)
        assert np.allclose(torch_side[k], printed[k], atol=5e-5)
    if not recompute:
        assert result.steps[1].params["w"].reused and np.allclose(result.steps[1].params["w"].gradient.analytic, [1, 2])
    else:  # the second gradient is taken at the new point, as the notebook's second backward()
        assert np.allclose(result.steps[1].params["w"].gradient.analytic, seed_grad(oracle[0]))


def test_the_spec_numbers_on_the_command_line(gradcheck):
    out = gradcheck("step", SEED_LOSS, "-v", "w=0.5,0.5", "--optim", "SGD(lr=0.01, momentum=0.1)", "--steps", "2",
                    "--no-recompute").stdout
    rows = [line.split("│") for line in out.splitlines() if "│" in line]
    torch_values = [float(r[6]) for r in rows]
    assert torch_values == pytest.approx([0.49, 0.48, 0.479, 0.458], abs=1e-12)
    assert "PASS torch's SGD agrees with the reference at every step" in out
    assert "--no-recompute" in out.splitlines()[-2]  # the replay line


# ---------------------------------------------------------------- hand-written optimizers from a plugin

@pytest.mark.parametrize("name,hyper,oracle", [
    ("HeavyBall", dict(lr=0.05, momentum=0.5, weight_decay=0.1), "heavy"),
    ("BiasAdam", dict(lr=0.1, betas=(0.8, 0.9)), "adam"),
])
def test_a_right_custom_optimizer_passes(name, hyper, oracle):
    result = run_step(LOSS, {"w": [0.6, -0.4]}, StepOptions(optim_text(name, hyper), 5,
                                                            check=_plugin_options()))
    assert result.ok and result.optimizer.origin == OPTIMIZERS_PLUGIN
    if oracle == "adam":
        expected = oracle_adam(loss_grad, [0.6, -0.4], 5, **hyper)
    else:  # heavy ball: b_t = μ b_{t-1} + (g_t + λw), w −= lr·b_t (the plugin's own rule)
        w, b, expected = np.array([0.6, -0.4]), 0.0, []
        for _ in range(5):
            b = hyper["momentum"] * b + loss_grad(w) + hyper["weight_decay"] * w
            w = w - hyper["lr"] * b
            expected.append(w)
    assert np.allclose(trajectory(result)[0], expected, atol=1e-12)


def _plugin_options():
    from gradcheck_cli.api import CheckOptions
    return CheckOptions(plugins=(OPTIMIZERS_PLUGIN,))


def test_an_optimizer_that_forgets_weight_decay_fails_at_step_1(gradcheck):
    data = gradcheck.json("step", SEED_LOSS, "-v", "w=0.5,0.5", "--optim", "Forgetful(lr=0.01, weight_decay=0.1)",
                          "--steps", "3", "--plugin", OPTIMIZERS_PLUGIN, exit_code=1)
    assert not data["ok"] and data["first_failure"].startswith("step 1, w[0]: new value: torch 0.49 vs reference")
    first = data["steps"][0]["params"]["w"]
    assert first["grad_ok"] and not first["ok"]
    # what the reference says: w − lr·(g + λw); torch left the λw out
    assert first["reference"] == pytest.approx((np.array([0.5, 0.5]) - 0.01 * (seed_grad([0.5, 0.5]) + 0.05)).tolist())
    assert first["max_abs_error"] == pytest.approx(0.01 * 0.1 * 0.5)


def test_bias_correction_one_step_late_fails_at_step_2(gradcheck):
    result = gradcheck("step", SEED_LOSS, "-v", "w=0.5,0.5", "--optim", "LateBias(lr=0.1)", "--steps", "4",
                       "--plugin", OPTIMIZERS_PLUGIN, exit_code=1)
    assert "FAIL the trajectories part at step 2, w[0]: new value" in " ".join(result.stdout.split())
    data = gradcheck.json("step", SEED_LOSS, "-v", "w=0.5,0.5", "--optim", "LateBias(lr=0.1)", "--steps", "4",
                          "--plugin", OPTIMIZERS_PLUGIN, exit_code=1)
    assert [s["ok"] for s in data["steps"]] == [True, False, False, False]
    assert all(s["params"]["w"]["grad_ok"] for s in data["steps"])  # autograd is right; the step is not


def test_a_plugin_update_gets_exactly_the_keywords_given(tmp_path):
    plugin = tmp_path / "spy.py"
    plugin.write_text(
        "import torch\nSEEN = []\n"
        "def update(params, grads, state, step, **hyper):\n"
        "    SEEN.append((step, dict(hyper), sorted(state)))\n"
        "    state.setdefault('calls', 0)\n    state['calls'] += 1\n"
        "    return {k: p - hyper['lr'] * grads[k] for k, p in params.items()}\n"
        "OPTIMIZERS = {'Spy': (torch.optim.SGD, update)}\n")
    from gradcheck_cli.api import CheckOptions
    from gradcheck_cli.plugins import load_module
    result = run_step("(w**2).sum() + b", {"w": [1.0, 2.0], "b": 3.0},
                      StepOptions("Spy(lr=0.1)", 3, check=CheckOptions(plugins=(str(plugin),), wrt=("w",))))
    assert result.ok
    assert load_module(str(plugin)).SEEN == [(1, {"lr": 0.1}, []), (2, {"lr": 0.1}, ["calls"]),
                                             (3, {"lr": 0.1}, ["calls"])]
    assert list(result.steps[0].params) == ["w"] and list(result.constants) == ["b"]


def test_a_wrong_backward_fails_as_a_gradient_at_step_1():
    from gradcheck_cli.api import CheckOptions
    result = run_step("onewrong(w).sum()", {"w": "randn(9)"}, StepOptions("SGD(lr=0.1)", 2,
                                                                           check=CheckOptions(plugins=(ONE_WRONG,))))
    assert not result.ok
    assert result.first_failure().startswith("step 1, w[7]: gradient: analytic")


# ---------------------------------------------------------------- options and bad input

def test_wrt_steps_only_those_and_float32_passes(gradcheck):
    data = gradcheck.json("step", "(a*w**2).sum()", "-v", "w=1,2", "-v", "a=3", "--wrt", "w", "--dtype", "float32",
                          "--optim", "Adam(lr=0.1)", "--steps", "3")
    assert data["ok"] and list(data["steps"][0]["params"]) == ["w"] and data["constants"]["a"]["value"] == 3.0
    expected = oracle_adam(lambda w: 6 * w, [1.0, 2.0], 3, lr=0.1)
    assert np.allclose([s["params"]["w"]["torch"] for s in data["steps"]], expected, rtol=1e-6)
    assert data["dtype"] == "float32" and data["atol"] > 1e-8  # float32's tolerances, echoed


def test_json_has_the_spec_fields(gradcheck):
    data = gradcheck.json("step", SEED_LOSS, "-v", "w=0.5,0.5", "--optim", "Adam(betas=(0.8, 0.9), amsgrad=True)",
                          "--steps", "2")
    assert {"ok", "optimizer", "steps", "atol", "rtol", "method", "replay"} <= set(data)
    assert data["optimizer"]["hyper"] == {"betas": [0.8, 0.9], "amsgrad": True}
    for k, step in enumerate(data["steps"], 1):
        assert step["step"] == k and isinstance(step["loss"], float)
        assert {"grad_analytic", "grad_numeric", "torch", "reference", "max_abs_error", "ok"} <= set(step["params"]["w"])
    second = data["steps"][1]
    assert second["loss"] == pytest.approx(sum(c * v ** 2 for c, v in zip((1, 2), data["steps"][0]["params"]["w"]["torch"])))


@pytest.mark.parametrize("optim,message,caret", [
    ("Foo(lr=0.1)", "unknown optimizer 'Foo'; use one of: Adadelta, Adagrad, Adam, AdamW, Adamax, NAdam, RAdam, "
                    "RMSprop, Rprop, SGD", "^^^"),
    ("SGD(lr=0.1, mom=0.9)", "SGD has no keyword 'mom'; its keywords are: lr, momentum, dampening, weight_decay, "
                             "nesterov, maximize", "            ^^^^^^^"),
    ("Adam(betas=0.9)", "Adam: 'betas' must be a pair of numbers such as (0.9, 0.999), not 0.9", "     ^^^^^^^^^"),
    ("SGD(nesterov=1)", "SGD: 'nesterov' must be True or False, not 1", "    ^^^^^^^^^^"),
    ("SGD(0.1)", "--optim takes keyword arguments only", "    ^^^"),
    ("SGD(lr=__import__('os'))", "expected a literal here", None),
    ("torch.optim.SGD(lr=-1.0)", "torch.optim.SGD refuses these settings: Invalid learning rate: -1.0", None),
    ("SGD(lr=0.1, momentum=0, nesterov=True)", "torch.optim.SGD refuses these settings: Nesterov momentum", None),
    ("lambda: 0", "--optim must be one call with keyword arguments", None),
])
def test_bad_optimizers_are_refused_with_the_valid_ones(gradcheck, optim, message, caret):
    err = gradcheck.error("step", SEED_LOSS, "-v", "w=0.5,0.5", "--optim", optim)
    assert err.startswith(f"error: {message}"), err
    if caret:
        assert err.splitlines()[2] == "  " + caret


@pytest.mark.parametrize("args,message", [
    (["w*2", "-v", "w=1,2"], "the loss must be a scalar, but the expression's output has shape [2]"),
    (["(w*2).sum()", "-v", "w=1,2", "--grad-output", "1"], "gradcheck step needs a scalar loss"),
    (["(w*2).sum()", "-v", "w=1,2", "--method", "taylor"], "--method taylor tests one gradient, not a trajectory"),
    (["(w*2).sum()", "-v", "w=1,2", "--order", "2"], "--order 2 does not apply to gradcheck step"),
    (["(w*2).sum()", "-v", "w=1,2", "--fast"], "--fast does not apply to gradcheck step"),
    (["(w*2).sum()", "-v", "w=1,2", "--symbolic"], "--symbolic does not apply to gradcheck step"),
    (["(w*2).sum()", "-v", "w=1,2", "--dtype", "float64,float32"], "gradcheck step runs one dtype"),
    (["(w*2).sum() + b", "-v", "w=1,2", "-v", "b=1", "--wrt", "b,w"], None),
    (["log(w).sum()", "-v", "w=1,2", "--steps", "3", "--optim", "SGD(lr=10)"],
     "the loss is nan before step 2 (w = [-9.0, -3.0]): the trajectory left the loss's domain or diverged"),
    (["(w**4).sum()", "-v", "w=1,2", "--steps", "4", "--optim", "SGD(lr=1e100)"], "the loss is inf before step 2"),
    (["(w*2).sum()", "-v", "w=1,2", "--steps", "0"], "Invalid value for '--steps'"),
])
def test_bad_step_input(gradcheck, args, message):
    optim = [] if "--optim" in args else ["--optim", "SGD(lr=0.1)"]
    if message is None:  # b's gradient is 1 everywhere: a fine parameter
        gradcheck("step", *args, *optim)
        return
    err = gradcheck.error("step", *args, *optim)
    assert message in err, err


def test_the_api_refuses_a_grad_output_and_too_many_steps():
    from gradcheck_cli.api import CheckOptions
    with pytest.raises(InputError, match="gradcheck step needs a scalar loss"):
        run_step("(w*2).sum()", {"w": [1, 2]}, StepOptions("SGD()", check=CheckOptions(grad_output=[1.0])))
    with pytest.raises(InputError, match="--steps must be between 1 and 10000, not 10001"):
        run_step("(w*2).sum()", {"w": [1, 2]}, StepOptions("SGD()", 10_001))


def test_a_malformed_optimizers_table_is_bad_input(gradcheck, tmp_path):
    plugin = tmp_path / "bad.py"
    plugin.write_text("OPTIMIZERS = {'Mine': 3}\n")
    err = gradcheck.error("step", SEED_LOSS, "-v", "w=0.5,0.5", "--optim", "Mine()", "--plugin", str(plugin))
    assert "OPTIMIZERS['Mine'] must be (TorchOptimizerClass, update)" in err
    plugin = tmp_path / "clash.py"  # a new file: a loaded plugin is cached by its path
    plugin.write_text("import torch\nOPTIMIZERS = {'SGD': (torch.optim.SGD, lambda *a, **k: a[0])}\n")
    err = gradcheck.error("step", SEED_LOSS, "-v", "w=0.5,0.5", "--optim", "SGD()", "--plugin", str(plugin))
    assert "'SGD' is a built-in optimizer" in err


def test_an_update_returning_the_wrong_shape_is_bad_input(gradcheck, tmp_path):
    plugin = tmp_path / "shape.py"
    plugin.write_text("import numpy as np, torch\ndef update(params, grads, state, step, lr=0.1):\n"
                      "    return {k: np.zeros(5) for k in params}\nOPTIMIZERS = {'Odd': (torch.optim.SGD, update)}\n")
    err = gradcheck.error("step", SEED_LOSS, "-v", "w=0.5,0.5", "--optim", "Odd(lr=0.1)", "--plugin", str(plugin))
    assert "optimizer Odd's update returned shape [5] for 'w', which has shape [2]" in err


def test_an_optimizer_only_plugin_is_fine_for_check_too(gradcheck):
    gradcheck("check", "sin(x)", "-v", "x=1", "--plugin", OPTIMIZERS_PLUGIN)


@pytest.mark.parametrize("columns", ["80", "200"])
def test_the_table_keeps_step_param_and_verdict(columns):
    from click.testing import CliRunner
    from gradcheck_cli.cli import main
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": columns})
    out = runner.invoke(main, ["step", LOSS, "-v", "w=0.6,-0.4", "--optim", "LateBias(lr=0.1)", "--steps", "2",
                               "--plugin", OPTIMIZERS_PLUGIN]).stdout
    header = next(line for line in out.splitlines() if "verdict" in line)
    assert header.split("┃")[0].strip() == "step" and header.split("┃")[-1].strip() == "verdict"
    assert "FAIL value" in out and "PASS" in out
    table = [line for line in out.splitlines() if "│" in line or "┃" in line]
    assert all(len(line) <= int(columns) for line in table)


def test_the_python_api():
    from gradcheck_cli import InputError as PublicInputError
    from gradcheck_cli import step
    r = step(SEED_LOSS, optim="SGD(lr=0.01, momentum=0.1)", steps=2, recompute=False, w=[0.5, 0.5])
    assert r.ok and r.first_failure() is None
    assert np.allclose([p.torch for p in r.results()], oracle_sgd(seed_grad, [0.5, 0.5], 2, lr=0.01, momentum=0.1,
                                                                  recompute=False), atol=1e-15)
    with pytest.raises(PublicInputError, match="unknown optimizer"):
        step(SEED_LOSS, optim="Sgd(lr=0.01)", w=[0.5, 0.5])


def test_a_plugin_optimizer_that_raises_is_bad_input_naming_the_step(gradcheck, tmp_path):
    plugin = tmp_path / "raises.py"
    plugin.write_text(
        "import torch\n"
        "class Boom(torch.optim.SGD):\n"
        "    def step(self, closure=None):\n"
        "        self.calls = getattr(self, 'calls', 0) + 1\n"
        "        if self.calls == 2:\n            raise RuntimeError('boom')\n"
        "        return super().step(closure)\n"
        "def update(params, grads, state, step, lr=0.1):\n"
        "    if step == 3:\n        raise KeyError('momentum_buffer')\n"
        "    return {k: p - lr * grads[k] for k, p in params.items()}\n"
        "OPTIMIZERS = {'Boom': (Boom, update), 'Fine': (torch.optim.SGD, update)}\n")
    err = gradcheck.error("step", SEED_LOSS, "-v", "w=0.5,0.5", "--optim", "Boom(lr=0.1)", "--steps", "3",
                          "--plugin", str(plugin))
    assert err.startswith("error: optimizer Boom's step() failed at step 2: RuntimeError: boom"), err
    err = gradcheck.error("step", SEED_LOSS, "-v", "w=0.5,0.5", "--optim", "Fine(lr=0.1)", "--steps", "3",
                          "--plugin", str(plugin))
    assert err.startswith("error: optimizer Fine's update failed at step 3: KeyError: 'momentum_buffer'"), err


# ---------------------------------------------------------------- hostile --optim text

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_OPTIM_TEXT = st.one_of(
    st.text(max_size=60),
    st.builds(lambda name, body: f"{name}({body})", st.sampled_from([*BUILT_IN, "torch.optim.SGD", "x.y", "Foo"]),
              st.text(alphabet="lrbetasmo_=,.()[]-+*/ 0123456789eTrueFalseNone'\"", max_size=40)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OPTIM_TEXT)
def test_any_optim_text_resolves_or_is_bad_input(text):
    from gradcheck_cli.optim import resolve_optimizer
    try:
        optimizer = resolve_optimizer(text)
    except InputError as err:
        assert err.message and "\n" not in err.message
        return
    assert optimizer.name in BUILT_IN and set(optimizer.hyper) <= set(keywords(optimizer.update))


def test_step_without_optim_says_the_option_is_missing(gradcheck):
    """--optim is required on `gradcheck step` (its schema row says so), optional on `gradcheck module`."""
    assert "Missing option '--optim'" in gradcheck.error("step", "w**2", "-v", "w=1")
    from gradcheck_cli.cli import main
    required = {c: {p.name for p in main.commands[c].params if getattr(p, "required", False)} for c in ("step", "module")}
    assert "optim" in required["step"] and "optim" not in required["module"]
