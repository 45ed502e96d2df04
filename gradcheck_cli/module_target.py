"""An nn.Module as a target (target.py): its parameters and forward arguments, two copies of it, and
the state every evaluation starts from.

Two copies of the caller's module are made; the caller's own module is never touched. The analytic
copy is in the check's dtype (float64 unless --dtype float32) and autograd differentiates it; the
numeric copy is float64 and is only ever called through torch.func.functional_call with autograd
off, one parameter tensor replaced by a batch of perturbed values (torch.func.vmap, randomness="same",
where vmap can run the forward; row by row where it cannot, e.g. a forward with data-dependent
Python control flow). Before every evaluation, analytic or numeric, the buffers are restored from
the values they had when the check began and torch's RNG is reseeded: a BatchNorm in train mode
updates its running statistics from the same start each time, and a Dropout draws the same mask.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import numpy as np

from .errors import InputError
from .target import Input, Role, batch_rows

_VMAP_ERRORS = (RuntimeError, NotImplementedError, ValueError, TypeError, IndexError, AttributeError)
# the vmapped unperturbed row must reproduce the plain forward this closely, or the rows are used
_VMAP_AGREEMENT = 1e-10


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def copy_module(module: Any, dtype: Any, train: bool, label: str) -> Any:
    """A deep copy of `module` in `dtype` (floating parameters and buffers), in train or eval mode."""
    try:
        twin = copy.deepcopy(module)
    except Exception as err:  # a module holding something deepcopy refuses (a lock, a file): say which
        raise InputError(f"{label} cannot be copied (copy.deepcopy raised {type(err).__name__}: "
                         f"{_first_line(err)}); gradcheck never changes the module you give it, so it needs a copy") from None
    twin = twin.to(dtype)
    twin.train(train)
    return twin


def reseed(seed: int) -> None:
    """torch.manual_seed(seed) for the CPU generator alone (module checks run on the CPU): the same stream,
    ~300x cheaper, since torch.manual_seed also queues a lazy CUDA seeding that formats the caller's stack
    (about half of a check's time when evaluations run one row at a time)."""
    import torch
    torch.default_generator.manual_seed(seed)


class ModuleRunner:
    """Calls one copy of the module from the same state every time.

    Args:
        module: the copy (never the caller's module).
        args: forward's keyword arguments (tensors or other values), as forward receives them.
        seed: torch.manual_seed before every evaluation.
        label: how messages name the module.
    """

    def __init__(self, module: Any, args: Mapping[str, Any], seed: int, label: str):
        self.module, self.args, self.seed, self.label = module, dict(args), seed, label
        self.buffers = {name: b.detach().clone() for name, b in module.named_buffers()}

    def restore(self) -> None:
        """Buffers back to their values at the start, and the RNG reseeded."""
        import torch
        with torch.no_grad():
            for name, buffer in self.module.named_buffers():
                buffer.copy_(self.buffers[name])
        reseed(self.seed)

    def forward(self, args: Mapping[str, Any] | None = None) -> Any:
        """The module's output from the start state (autograd as the caller has it)."""
        self.restore()
        try:
            return self.module(**(self.args if args is None else args))
        except InputError:
            raise
        except Exception as err:  # the forward refused these inputs (a shape): the user's input
            raise InputError(f"{self.label}.forward raised {type(err).__name__}: {_first_line(err)}") from None

    def functional(self, name: str, args: Mapping[str, Any]) -> Callable[[Any], Any]:
        """value of parameter or forward argument `name` → output, through functional_call."""
        import torch
        from torch.func import functional_call
        params = {n: p.detach() for n, p in self.module.named_parameters()}
        is_param = name in params

        def f(value: Any) -> Any:
            state = {**params, **{n: b.clone() for n, b in self.buffers.items()}}
            call_args = dict(args)
            if is_param:
                state[name] = value
            else:
                call_args[name] = value
            with torch.no_grad():
                return functional_call(self.module, state, (), call_args)
        return f


def to_numpy(value: Any) -> Any:
    """A torch output (a tensor, or a tuple/list of them) as float64 numpy."""
    import torch
    if isinstance(value, (tuple, list)):
        return tuple(to_numpy(v) for v in value)
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy(force=True).copy()  # never a view of the tensor
    return np.asarray(value, dtype=np.float64)


class NumericSide:
    """The float64 copy: batched evaluators of the module's output, one per checked input.

    `reduce(batch_output) → batch of the checked quantity` applies the loss (or nothing).
    """

    def __init__(self, runner: ModuleRunner, reduce: Callable[[Any], np.ndarray]):
        self.runner, self.reduce = runner, reduce
        self.base_output = to_numpy(runner.forward())
        self.output = np.asarray(reduce(_batched(self.base_output)))[0]
        # elements one forward holds (inputs, output, buffers): a rough measure of a batch row's temporaries
        self.activations = sum(int(v.numel()) for v in runner.args.values() if hasattr(v, "numel")) + \
            sum(np.size(v) for v in (self.base_output if isinstance(self.base_output, tuple) else (self.base_output,)))
        self.vmapped: dict[str, bool] = {}

    def evaluator(self, name: str, base: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """A batch (B, *shape) of values of `name` → a batch (B, *output.shape) of the checked quantity."""
        import torch
        f = self.runner.functional(name, self.runner.args)
        seed = self.runner.seed

        def one(row: np.ndarray) -> np.ndarray:
            reseed(seed)
            return self._reduce_one(f(torch.from_numpy(np.ascontiguousarray(row))))

        def rows(batch: np.ndarray) -> np.ndarray:
            return self._call(batch_rows(one), batch)

        vmapped = torch.func.vmap(f, randomness="same")

        def raw(batch: np.ndarray) -> np.ndarray:
            reseed(seed)
            return np.asarray(self.reduce(to_numpy(vmapped(torch.from_numpy(np.ascontiguousarray(batch))))))

        def batched(batch: np.ndarray) -> np.ndarray:
            return self._call(raw, batch)

        if self._vmap_works(raw, base):
            self.vmapped[name] = True
            return batched
        self.vmapped[name] = False
        return rows

    def _reduce_one(self, out: Any) -> np.ndarray:
        return np.asarray(self.reduce(_batched(to_numpy(out))))[0]

    def _vmap_works(self, batched: Callable, base: np.ndarray) -> bool:
        """vmap runs this forward and reproduces the plain one at the unperturbed point."""
        try:
            got = batched(np.stack([base, base]))
        except _VMAP_ERRORS:
            return False
        if got.shape != (2,) + self.output.shape:
            return False
        scale = max(float(np.max(np.abs(self.output), initial=0.0)), 1.0)
        return bool(np.all(np.abs(got - self.output) <= _VMAP_AGREEMENT * scale))

    def _call(self, run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> np.ndarray:
        if np.iscomplexobj(batch):
            raise InputError("a module is checked with --method richardson or central (complex step would "
                             "need every layer to accept complex values)")
        try:
            return run(batch)
        except InputError:
            raise
        except _VMAP_ERRORS as err:
            raise InputError(f"{self.runner.label}.forward raised {type(err).__name__} at a perturbed point: "
                             f"{_first_line(err)}") from None


def _batched(value: Any) -> Any:
    """An unbatched output (array or tuple) with a batch axis of one."""
    if isinstance(value, tuple):
        return tuple(_batched(v) for v in value)
    return np.asarray(value)[None]


def inputs_of(module: Any, selected: tuple[str, ...], arg_values: Mapping[str, np.ndarray],
              wrt_inputs: tuple[str, ...]) -> tuple[Input, ...]:
    """The target's inputs with their roles: checked parameters and forward arguments, the rest constant,
    buffers as buffers."""
    out = []
    for name, p in module.named_parameters():
        role = Role.CHECKED if name in selected else Role.CONSTANT
        out.append(Input(name, to_numpy(p), role))
    for name, b in module.named_buffers():
        out.append(Input(name, np.asarray(b.detach().cpu().numpy()), Role.BUFFER))
    for name, value in arg_values.items():
        out.append(Input(name, value, Role.CHECKED if name in wrt_inputs else Role.CONSTANT))
    return tuple(out)


class ModuleTarget:
    """A module as target.py's Target: named inputs with roles (checked parameters and forward arguments,
    constants, buffers) and a batched float64 evaluator per checked input (NumericSide)."""

    kind = "module"

    def __init__(self, label: str, inputs: tuple[Input, ...], side: NumericSide):
        self.label, self.inputs, self.side = label, inputs, side
        self.output = side.output
        self._values = {i.name: i.value for i in inputs}
        self._evaluators: dict[str, Callable[[np.ndarray], np.ndarray]] = {}

    def evaluator(self, name: str) -> Callable[[np.ndarray], np.ndarray]:
        if name not in self._evaluators:
            self._evaluators[name] = self.side.evaluator(name, self._values[name])
        return self._evaluators[name]
