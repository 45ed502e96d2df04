"""The five notebooks' gradient cells (../shared/seeds/), pasted in as their lines are written (after
dropping the `torch.` / `t.` prefix where it names a function), with the values they create given by -v:
each one checks, with the notebook's own numbers (recomputed here by torch), or explains itself.

The accumulation and optimizer lessons (`.grad` adding up until zeroed, opti.step()) are about state,
not expressions: `gradcheck step` and `check --accumulate` cover them.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from gradcheck_cli import InputError, check

F64 = torch.float64


def leaf(value) -> torch.Tensor:
    return torch.tensor(value, dtype=F64, requires_grad=True)


def agrees(result, name: str, expected) -> None:
    assert result.ok
    assert_allclose(result.inputs[name].analytic, expected, rtol=1e-12, atol=1e-14)
    assert_allclose(result.inputs[name].numeric, expected, rtol=1e-9, atol=1e-12)


# ---- seed 000

def test_000_power_and_mean_backward_with_a_gradient():
    """y = x**2; out = y.mean(); out.backward(torch.tensor(2.)) → x.grad is 1 everywhere."""
    x = leaf(np.ones((2, 2)))
    y = x**2
    out = y.mean()
    out.backward(torch.tensor(2., dtype=F64))
    result = check("y = x**2\nout = y.mean()", x="ones(2,2)", grad_output=2)
    agrees(result, "x", x.grad.numpy())
    assert_allclose(x.grad.numpy(), np.ones((2, 2)))  # the notebook's printout
    assert [result.graph.name, result.graph.next[0].name] == ["MeanBackward0", "PowBackward0"]


def test_000_backward_with_ones_like():
    x = leaf(np.ones((2, 2)))
    y = x**2
    y.backward(torch.ones_like(y))
    agrees(check("y = x**2", x="ones(2,2)", grad_output="ones(2,2)"), "x", x.grad.numpy())


# ---- seed 001

def test_001_add_and_mul_record_their_nodes():
    cell = "y  = x+2 \ny1 = x*2\ny2 = x*x*2\n"
    for last, node in (("y", "AddBackward0"), ("y1", "MulBackward0"), ("y2", "MulBackward0")):
        result = check(cell + last, x="randn(3)")
        assert result.ok and result.graph.name == node


def test_001_mean_and_a_weighted_backward():
    x = leaf([-2.2168, 0.1898, 1.4724])
    y2 = x * x * 2
    y4 = torch.tensor([0.1, 1.0, 0.001], dtype=F64)
    y2.backward(y4)
    result = check("y2 = x*x*2", x="-2.2168, 0.1898, 1.4724", grad_output="0.1,1.0,0.001")
    agrees(result, "x", x.grad.numpy())
    agrees(check("y3 = x.mean()", x="randn(3)"), "x", np.full(3, 1 / 3))


def test_001_no_grad_cell_with_print_explains_itself():
    with pytest.raises(InputError, match="leave print out"):
        check("with torch.no_grad():\n    y = x+2\n    print(y)", x="randn(3)")
    with pytest.raises(InputError, match="every variable gets requires_grad"):
        check("x.requires_grad_(False)\nx", x="randn(3)")


# ---- seed 002

def test_002_y_z_out_gives_four_and_a_half():
    x = leaf(np.ones((2, 2)))
    out = ((x + 2) * (x + 2) * 3).mean()
    out.backward()
    result = check("y=x+2\nz = y * y * 3\nout = z.mean()", x="ones(2,2)")
    agrees(result, "x", x.grad.numpy())
    assert_allclose(x.grad.numpy(), np.full((2, 2), 4.5))
    assert set(result.intermediates) == {"y", "z"}  # t.autograd.grad(z, y), as the last cell says


def test_002_view_backward_with_weights():
    x = leaf([1.0, 2.0, 3.0, 4.0])
    z = (2 * x).view(2, 2)
    z.backward(torch.tensor([[1.0, 0.1], [0.01, 0.001]], dtype=F64))
    result = check("y = 2 * x\nz = y.view(2, 2)", x="1.0, 2.0, 3.0, 4.0", grad_output="[[1.0, 0.1], [0.01, 0.001]]")
    agrees(result, "x", x.grad.numpy())
    assert result.graph.name == "ViewBackward0"


def test_002_no_grad_cell_verbatim():
    cell = "y1 = x ** 2 \nwith t.no_grad():\n    y2 = x ** 3\ny3 = y1 + y2\n".replace("t.no_grad", "no_grad")
    x = leaf(1.0)
    y1 = x ** 2
    with torch.no_grad():
        y2 = x ** 3
    (y1 + y2).backward()
    agrees(check(cell, x=1.0), "x", x.grad.numpy())
    agrees(check(cell.replace("no_grad", "torch.no_grad"), x=1.0), "x", 2.0)


def test_002_data_cell_verbatim():
    cell = "y = 2 * x\nx.data *= 100 # 只改变了值，不会记录在计算图，所以不会影响梯度传播\ny"
    x = leaf([1.0])
    y = 2 * x
    x.data *= 100
    y.backward()
    agrees(check(cell, x="[1.0]"), "x", x.grad.numpy())


def test_002_tensor_creation_line_explains_itself():
    with pytest.raises(InputError, match=r'-v x="\[1.0, 2.0, 3.0, 4.0\]"'):
        check("x = t.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)\ny = 2 * x")


# ---- seed 003

def test_003_loss_and_its_clone_form():
    for cell, start in (("loss = w[0]**2+2*w[1]**2", [0.5, 0.5]),
                        ("loss=w[0].clone()**2+2*w[1].clone()**2", [0.49, 0.48])):
        w = leaf(start)
        (w[0].clone() ** 2 + 2 * w[1].clone() ** 2).backward()
        agrees(check(cell, w=start), "w", w.grad.numpy())
    assert_allclose(check("loss=w[0].clone()**2+2*w[1].clone()**2", w=[0.49, 0.48]).inputs["w"].analytic,
                    [0.98, 1.92], rtol=1e-14)  # the notebook's second printout


# ---- seed 004

def test_004_cos_backward():
    a = leaf([1.0, 2.0, 3.0])
    a.cos().sum().backward()
    agrees(check("out = a.cos()\nout.sum()", a="1., 2., 3."), "a", a.grad.numpy())


def test_004_leaf_changed_in_place_explains_itself():
    with pytest.raises(InputError, match="leaf that requires grad") as info:
        check("a[2]=1", a="1., 2., 3.")
    assert (info.value.line, info.value.col) == (1, 0)


def test_004_softmax_loop_explains_itself_and_its_fix_checks():
    x = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]])
    with pytest.raises(InputError, match="new name"):  # x = torch.exp(x-x.max()) rebinding the input
        check("x = torch.exp(x-x.max())", x=x)
    with pytest.raises(InputError, match="saved it for its gradient") as info:  # the loop body, i = 0
        check("ex = torch.exp(x-x.max())\nex[0]=ex[0]/ex[0].sum()\nex.sum()", x=x)
    assert info.value.line == 2
    # the notebook's final code, its loop unrolled for batch_size = 2 (a name is assigned once)
    fixed = ("ex = torch.exp(x-x.max())\nout =  (ex[0]/ex[0].sum()).unsqueeze(dim=0)\n"
             "row =  (ex[1]/ex[1].sum()).unsqueeze(dim=0)\nout2 = torch.cat((out, row), dim=0)\n(out2 * w).sum()")
    w = np.array([[1.0, -2.0, 0.5], [2.0, 1.0, -1.0]])
    xt = leaf(x)
    (torch.softmax(xt, dim=1) * torch.tensor(w)).sum().backward()
    agrees(check(fixed, x=x, w=w, wrt="x"), "x", xt.grad.numpy())


def test_004_linear_model_with_long_labels():
    """nn.Linear(1, 3) on x of shape (2, 1), loss (model_out - label).mean() with a long label."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(1, 3).double()
    x = torch.randn(2, 1, dtype=F64)
    label = torch.tensor([0, 0]).unsqueeze(dim=1).long()
    (layer(x) - label).mean().backward()
    result = check("_mean = (linear(x, weight, bias) - label).mean()".replace("_mean", "mean_"),
                   x=x.numpy(), weight=layer.weight.detach().numpy(), bias=layer.bias.detach().numpy(),
                   label="long([[0], [0]])", wrt="weight,bias")
    agrees(result, "weight", layer.weight.grad.numpy())
    agrees(result, "bias", layer.bias.grad.numpy())
    assert result.graph.next[0].next[0].name == "AddmmBackward0"
