"""The module corpus (tests/modules/) as cases, and torch's own answer for each.

A case names a model file and class (or factory), its constructor keywords, the forward's values, a
loss in gradcheck's expression language and the same loss written in torch. The oracle builds the
SAME module under the same seed, converts it to float64 and differentiates the loss through
`torch.func.functional_call` over its parameters: `torch.autograd.grad` gives the gradient values (for
a wrong module, of its right twin, which has the same parameters), and `torch.autograd.gradcheck`
gives torch's verdict on the module itself.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = os.path.join(HERE, "modules")
SEED = 0

_loaded: dict[str, Any] = {}


def corpus_file(name: str) -> str:
    return os.path.join(MODULES, name)


def load(file: str):
    """Import one corpus file (once), as `gradcheck module` would find it."""
    if file not in _loaded:
        spec = importlib.util.spec_from_file_location(f"gradcheck_corpus_{file[:-3]}", corpus_file(file))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[file] = module
    return _loaded[file]


def _rand(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@dataclasses.dataclass(frozen=True)
class ModuleCase:
    id: str
    file: str                                   # in tests/modules/
    name: str                                   # class or factory
    init: dict[str, Any]                        # constructor keywords (literals)
    values: dict[str, Any]                      # forward arguments and loss constants: arrays or SPEC strings
    loss: str | None                            # gradcheck's expression language, `out` = the forward's output
    torch_loss: Callable[..., torch.Tensor]     # the same loss in torch: (out, **values)
    forward_args: tuple[str, ...]               # which values the forward takes, in order
    kind: str = "right"                         # "right" | "wrong" | "no gradient"
    blamed: frozenset[str] = frozenset()        # dotted parameters that must fail (the rest must pass)
    twin: str | None = None                     # the right class with the same parameters (wrong kinds)
    train: bool = False
    frozen: frozenset[str] = frozenset()
    unused: frozenset[str] = frozenset()
    buffers: frozenset[str] = frozenset()
    torch_passes: bool | None = None            # torch.autograd.gradcheck's verdict, where it differs from ours

    @property
    def target(self) -> str:
        return f"{corpus_file(self.file)}:{self.name}"

    def build(self, name: str | None = None) -> torch.nn.Module:
        """The module (or its twin) as gradcheck builds it: right after torch.manual_seed(seed)."""
        torch.manual_seed(SEED)
        made = getattr(load(self.file), name or self.name)(**self.init)
        return made

    def tensors(self) -> dict[str, torch.Tensor]:
        """The values as float64 (or int64 for long()) tensors."""
        from gradcheck_cli.values import resolve
        return {k: torch.as_tensor(resolve(v, k, SEED)) for k, v in self.values.items()}

    def api_values(self) -> dict[str, Any]:
        return dict(self.values)


CASES = [
    ModuleCase("seed 004 Model", "layers.py", "Model", {"in_feature": 1, "out_feature": 3},
               {"x": _rand(1, 2, 1), "label": np.zeros((2, 1))}, "(out - label).mean()",
               lambda out, x, label: (out - label).mean(), ("x",)),
    ModuleCase("Conv1d", "layers.py", "ConvNet", {"channels": 2, "kernel_size": 3},
               {"signal": _rand(2, 2, 1, 5)}, "(out**2).sum()", lambda out, signal: (out ** 2).sum(), ("signal",)),
    ModuleCase("LayerNorm", "layers.py", "NormNet", {"features": 4},
               {"x": _rand(3, 2, 4), "w": _rand(4, 2, 4)}, "(out * w).sum()",
               lambda out, x, w: (out * w).sum(), ("x",)),
    ModuleCase("BatchNorm1d train", "layers.py", "BatchNet", {},
               {"x": _rand(5, 4, 3), "w": _rand(6, 4, 4)}, "(out * w).sum()",
               lambda out, x, w: (out * w).sum(), ("x",), train=True,
               buffers=frozenset({"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"})),
    ModuleCase("BatchNorm1d eval", "layers.py", "BatchNet", {},
               {"x": _rand(5, 4, 3), "w": _rand(6, 4, 4)}, "(out * w).sum()",
               lambda out, x, w: (out * w).sum(), ("x",),
               buffers=frozenset({"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"})),
    ModuleCase("Dropout train", "layers.py", "DropoutNet", {"p": 0.5},
               {"x": _rand(7, 4, 3)}, "(out**2).mean()", lambda out, x: (out ** 2).mean(), ("x",), train=True),
    ModuleCase("Embedding", "layers.py", "TokenModel", {},
               {"tokens": "long([[0, 2, 5], [1, 1, 3]])", "target": "long([1, 0])"},
               "cross_entropy(out, target)", lambda out, tokens, target: F.cross_entropy(out, target),
               ("tokens",)),
    ModuleCase("buffers", "structure.py", "Standardize", {},
               {"x": _rand(8, 2, 3)}, "(out**2).sum()", lambda out, x: (out ** 2).sum(), ("x",),
               buffers=frozenset({"mean", "scale", "calls"})),
    ModuleCase("frozen backbone", "structure.py", "FineTune", {},
               {"x": _rand(9, 3, 3)}, "(out**2).mean()", lambda out, x: (out ** 2).mean(), ("x",),
               frozen=frozenset({"backbone.weight", "backbone.bias"})),
    ModuleCase("unused head", "structure.py", "AuxHead", {},
               {"x": _rand(10, 2, 3)}, "out.sum()", lambda out, x: out.sum(), ("x",),
               unused=frozenset({"aux.weight", "aux.bias"})),
    ModuleCase("nested", "structure.py", "Encoder", {},
               {"x": _rand(11, 2, 3)}, "(out**2).sum()", lambda out, x: (out ** 2).sum(), ("x",)),
    ModuleCase("factory, no loss (Jacobian)", "structure.py", "make_mlp", {},
               {"input": _rand(12, 2, 2)}, None, None, ("input",)),
    ModuleCase("--init keywords", "structure.py", "MLP",
               {"in_features": 2, "hidden": [4, 3], "activation": "sigmoid", "bias": False},
               {"x": _rand(13, 3, 2)}, "out.mean()", lambda out, x: out.mean(), ("x",)),
    ModuleCase("two inputs, tuple output", "structure.py", "TwoTower", {},
               {"q": _rand(14, 2, 3), "k": _rand(15, 2, 2)}, "out[0].sum() + (out[1]**2).mean()",
               lambda out, q, k: out[0].sum() + (out[1] ** 2).mean(), ("q", "k")),
    ModuleCase("custom Function, right", "custom_layers.py", "ScaledSoftplus", {},
               {"x": _rand(16, 4, 3), "w": _rand(17, 4, 3)}, "(out * w).sum()",
               lambda out, x, w: (out * w).sum(), ("x",)),
    ModuleCase("custom Function, weight off by 1e-4", "custom_layers.py", "SlightlyOff", {},
               {"x": _rand(16, 4, 3), "w": _rand(17, 4, 3)}, "(out * w).sum()",
               lambda out, x, w: (out * w).sum(), ("x",), kind="wrong", blamed=frozenset({"weight"}),
               twin="ScaledSoftplus", torch_passes=True),
    ModuleCase("custom Function, bias averaged", "custom_layers.py", "MeanBias", {},
               {"x": _rand(16, 4, 3), "w": _rand(17, 4, 3)}, "(out * w).sum()",
               lambda out, x, w: (out * w).sum(), ("x",), kind="wrong", blamed=frozenset({"bias"}),
               twin="ScaledSoftplus", torch_passes=False),
    ModuleCase("custom layer inside a model, right", "custom_layers.py", "Classifier", {},
               {"x": _rand(18, 4, 3), "target": "long([0, 1, 1, 0])"}, "cross_entropy(out, target)",
               lambda out, x, target: F.cross_entropy(out, target), ("x",)),
    ModuleCase("custom layer inside a model, bias averaged", "custom_layers.py", "ClassifierWithMeanBias", {},
               {"x": _rand(18, 4, 3), "target": "long([0, 1, 1, 0])"}, "cross_entropy(out, target)",
               lambda out, x, target: F.cross_entropy(out, target), ("x",), kind="wrong",
               blamed=frozenset({"layers.1.bias"}), twin="Classifier", torch_passes=False),
    ModuleCase("custom layer inside a model, weight off by 1e-4", "custom_layers.py", "ClassifierSlightlyOff", {},
               {"x": _rand(18, 4, 3), "target": "long([0, 1, 1, 0])"}, "cross_entropy(out, target)",
               lambda out, x, target: F.cross_entropy(out, target), ("x",), kind="wrong",
               blamed=frozenset({"layers.1.weight"}), twin="Classifier", torch_passes=True),
    ModuleCase("affine, right", "lost_gradients.py", "Affine", {},
               {"x": _rand(19, 3, 3)}, "(out**2).sum()", lambda out, x: (out ** 2).sum(), ("x",)),
    ModuleCase(".detach() on the weight", "lost_gradients.py", "DetachedWeight", {},
               {"x": _rand(19, 3, 3)}, "(out**2).sum()", lambda out, x: (out ** 2).sum(), ("x",),
               kind="no gradient", blamed=frozenset({"weight"}), twin="Affine", torch_passes=False),
    ModuleCase("torch.no_grad() on the gain", "lost_gradients.py", "NoGradGain", {},
               {"x": _rand(19, 3, 3)}, "(out**2).sum()", lambda out, x: (out ** 2).sum(), ("x",),
               kind="no gradient", blamed=frozenset({"gain"}), twin="Affine", torch_passes=False),
    ModuleCase(".data on the bias", "lost_gradients.py", "DataBias", {},
               {"x": _rand(19, 3, 3)}, "(out**2).sum()", lambda out, x: (out ** 2).sum(), ("x",),
               kind="no gradient", blamed=frozenset({"bias"}), twin="Affine", torch_passes=False),
    ModuleCase("Function returns None for the weight", "lost_gradients.py", "FunctionForgetsWeight", {},
               {"x": _rand(19, 3, 3)}, "(out**2).sum()", lambda out, x: (out ** 2).sum(), ("x",),
               kind="no gradient", blamed=frozenset({"weight"}), twin="Affine", torch_passes=False),
]

BY_ID = {c.id: c for c in CASES}


# ---------------------------------------------------------------- torch's answer, through functional_call

@dataclasses.dataclass
class Oracle:
    """The module in float64 as a function of its checked parameters (a tuple of tensors)."""

    case: ModuleCase
    module: torch.nn.Module
    names: list[str]                            # checked dotted names, in named_parameters() order

    def __call__(self, *params: torch.Tensor) -> torch.Tensor:
        state = {n: p for n, p in self.module.named_parameters()}
        state.update(zip(self.names, params))
        state.update({n: b.clone() for n, b in self.module.named_buffers()})  # BatchNorm updates them in place
        values = self.case.tensors()
        args = tuple(values[a].double() if values[a].is_floating_point() else values[a]
                     for a in self.case.forward_args)
        torch.manual_seed(SEED)                 # dropout: the same mask every evaluation
        out = functional_call(self.module, state, args)
        if self.case.torch_loss is None:
            return out
        return self.case.torch_loss(out, **values)

    def point(self) -> tuple[torch.Tensor, ...]:
        params = dict(self.module.named_parameters())
        return tuple(params[n].detach().clone().requires_grad_(True) for n in self.names)

    def gradients(self) -> dict[str, np.ndarray]:
        """autograd's gradient (scalar loss) or Jacobian (no loss) of every checked parameter."""
        point = self.point()
        if self.case.torch_loss is None:
            jac = torch.autograd.functional.jacobian(self, point)
            return {n: j.detach().numpy() for n, j in zip(self.names, jac)}
        grads = torch.autograd.grad(self(*point), point, allow_unused=True)
        return {n: (np.zeros(p.shape) if g is None else g.detach().numpy())
                for n, p, g in zip(self.names, point, grads)}

    def torch_gradcheck(self, fast_mode: bool = False) -> bool:
        return torch.autograd.gradcheck(self, self.point(), raise_exception=False, fast_mode=fast_mode)


def oracle(case: ModuleCase, name: str | None = None) -> Oracle:
    """torch's view of the case's module (or of its twin `name`), in float64 and in the case's mode."""
    module = copy.deepcopy(case.build(name)).double()
    module.train(case.train)
    names = [n for n, p in module.named_parameters() if p.requires_grad and n not in case.unused]
    return Oracle(case, module, names)
