"""gradcheck module beside torch.autograd.gradcheck on the same nn.Module, measured in the same run.

    .venv/bin/python bench/module_bench.py            # 10^6 parameters projected, 10^4 in full
    .venv/bin/python bench/module_bench.py --quick    # smaller models (a smoke test)

torch's gradcheck sees the module as a function of its parameter tensors through
torch.func.functional_call (float64, the same input and loss), which is how it can check a module at all.
Rows, each the best of 3 in this process, float64, one torch thread:
1. an MLP with ~10^6 parameters: `check_module(..., fast=True)` (a projected check of every parameter
   tensor, 16 random ±1 directions each, with a coverage statement), beside one forward+backward and
   beside torch.autograd.gradcheck(fast_mode=True) (one random projection, no coverage statement);
2. an MLP with ~10^4 parameters: the full check (every parameter element) beside torch's slow mode
   (every column of the Jacobian).
"""
from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
from torch import nn
from torch.func import functional_call

from gradcheck_cli import check_module

warnings.filterwarnings("ignore")
LOSS = "(out**2).mean()"


def best(fn, repeat: int = 3) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def mlp(width_in: int, hidden: int, width_out: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(width_in, hidden), nn.Tanh(), nn.Linear(hidden, width_out))  # forward(input)


def torch_side(model: nn.Module, x: torch.Tensor):
    """The module as torch.autograd.gradcheck can take it: loss as a function of the parameter tensors."""
    model64 = copy.deepcopy(model).double()     # the float32 model stays what check_module is given
    names = [n for n, _ in model64.named_parameters()]

    def loss(*params):
        return (functional_call(model64, dict(zip(names, params)), (x,)) ** 2).mean()

    point = tuple(p.detach().clone().requires_grad_(True) for p in model64.parameters())
    return loss, point


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def projected_row(width: int, batch: int) -> None:
    model = mlp(width, width, 1)
    x = torch.randn(batch, width, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss, point = torch_side(model, x)

    def forward_backward():
        params = tuple(p.detach().clone().requires_grad_(True) for p in point)
        torch.autograd.grad(loss(*params), params)

    t_fb, _ = best(forward_backward)
    t_ours, result = best(lambda: check_module(model, loss=LOSS, input=x.numpy(), fast=True))
    t_torch, torch_ok = best(lambda: torch.autograd.gradcheck(loss, point, fast_mode=True, raise_exception=False))
    assert result.ok and torch_ok
    print(f"{count(model):>10,} parameters, projected (--fast), batch {batch}")
    print(f"  one forward+backward                 {t_fb:9.3f} s")
    print(f"  gradcheck module --fast              {t_ours:9.3f} s   {t_ours / t_fb:8.1f}x forward+backward")
    print(f"  torch.autograd.gradcheck fast_mode   {t_torch:9.3f} s   {t_torch / t_fb:8.1f}x forward+backward")
    print(f"  gradcheck / torch fast_mode          {t_ours / t_torch:9.2f}x "
          f"({len(result.parameters)} tensors, each with a coverage statement; torch: one projection, none)")


def full_row(width_in: int, hidden: int, batch: int, repeat: int) -> None:
    model = mlp(width_in, hidden, 1)
    x = torch.randn(batch, width_in, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    loss, point = torch_side(model, x)
    t_ours, result = best(lambda: check_module(model, loss=LOSS, input=x.numpy(), fast=False), repeat)
    t_torch, torch_ok = best(lambda: torch.autograd.gradcheck(loss, point, raise_exception=False), repeat)
    assert result.ok and torch_ok
    print(f"{count(model):>10,} parameters, full (every element), batch {batch}")
    print(f"  gradcheck module --full              {t_ours:9.3f} s")
    print(f"  torch.autograd.gradcheck (slow mode) {t_torch:9.3f} s")
    print(f"  gradcheck / torch slow mode          {t_ours / t_torch:9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller models (a smoke test)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N for the full-check row (default 3)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, float64, one thread; best of 3 unless noted")
    if args.quick:
        projected_row(width=100, batch=4)       # ~10^4 parameters
        full_row(width_in=10, hidden=20, batch=4, repeat=args.repeat)
    else:
        projected_row(width=999, batch=8)       # 999·999 + 999 + 999 + 1 = 1,000,000 parameters
        full_row(width_in=49, hidden=200, batch=8, repeat=args.repeat)   # 49·200 + 200 + 200 + 1 = 10,201


if __name__ == "__main__":
    main()
