"""`check_module` on the module corpus (tests/modules/) against torch's own answer on the SAME module.

For every case the oracle (tests/module_cases.py) builds the module under the same seed, in float64,
and differentiates the loss through torch.func.functional_call: torch.autograd.grad gives the values
gradcheck's analytic side must reproduce (and, for a wrong module, its right twin's values are what
the numeric side must find); torch.autograd.gradcheck on the same function gives torch's verdict,
counted beside gradcheck's.
"""
from __future__ import annotations

import copy
import fnmatch

import numpy as np
import pytest
import torch

import module_cases as M
from gradcheck_cli import InputError, assert_module_gradients, check_module

RIGHT = [c for c in M.CASES if c.kind == "right"]
WRONG = [c for c in M.CASES if c.kind != "right"]


_DEFAULT_RESULTS: dict[str, object] = {}


def _check(case, module=None, **options):
    if module is None and not options and case.id in _DEFAULT_RESULTS:   # the same check: run once per session
        return _DEFAULT_RESULTS[case.id]
    built = case.build() if module is None else module
    result = check_module(built, loss=case.loss, train=case.train, **case.api_values(), **options)
    if module is None and not options:
        _DEFAULT_RESULTS[case.id] = result
    return result


def _failing(result) -> set[str]:
    return {name for name, p in result.parameters.items() if not p.ok}


def _close(actual, expected, rtol, atol, what):
    actual = np.asarray(actual, dtype=np.float64)
    np.testing.assert_allclose(actual.reshape(expected.shape), expected, rtol=rtol, atol=atol, err_msg=what)


def test_the_corpus_has_what_the_issue_lists():
    ids = " ".join(M.BY_ID)
    for word in ("Conv1d", "LayerNorm", "BatchNorm1d train", "Dropout train", "Embedding", "buffers", "frozen",
                 "unused", "nested", "factory", "--init", "tuple output", "custom Function, right"):
        assert word in ids, word
    assert {c.kind for c in WRONG} == {"wrong", "no gradient"} and len(WRONG) >= 8


@pytest.mark.parametrize("case", RIGHT, ids=[c.id for c in RIGHT])
def test_a_right_module_passes_with_torch_values(case):
    oracle = M.oracle(case)
    assert oracle.torch_gradcheck(), "torch.autograd.gradcheck must agree this module is right"
    r = _check(case)
    assert r.ok, {n: (p.ok, getattr(p, "reason", None)) for n, p in r.parameters.items()}
    assert list(r.parameters) == oracle.names   # dotted names, named_parameters() order, no frozen/unused
    for name, expected in oracle.gradients().items():
        _close(r.parameters[name].analytic, expected, 1e-10, 1e-12, f"{case.id}: analytic {name}")
        _close(r.parameters[name].numeric, expected, 1e-6, 1e-9, f"{case.id}: numeric {name}")


@pytest.mark.parametrize("case", WRONG, ids=[c.id for c in WRONG])
def test_a_wrong_module_fails_and_blames_its_parameter(case):
    r = _check(case)
    assert not r.ok
    assert _failing(r) == set(case.blamed), {n: p.ok for n, p in r.parameters.items()}
    truth = M.oracle(case, case.twin).gradients()       # the right twin has the same parameters
    autograd = M.oracle(case).gradients()               # what the wrong backward says
    for name, expected in truth.items():
        _close(r.parameters[name].numeric, expected, 1e-6, 1e-9, f"{case.id}: numeric {name}")
        if case.kind == "wrong" or name not in case.blamed:
            _close(r.parameters[name].analytic, autograd[name], 1e-10, 1e-12, f"{case.id}: analytic {name}")
    for name in case.blamed:
        assert not np.allclose(truth[name], autograd[name], rtol=1e-6, atol=0), "the case must be wrong"
        if case.kind == "no gradient":
            assert r.reasons[name] == "gets no gradient"


@pytest.mark.parametrize("case", WRONG, ids=[c.id for c in WRONG])
def test_torch_gradcheck_on_the_same_module(case):
    """torch's verdict on each wrong module, recorded: it misses the relative 1e-4 errors (rtol 1e-3)."""
    assert M.oracle(case).torch_gradcheck() is case.torch_passes


def test_gradcheck_catches_every_wrong_module_torch_catches_and_more():
    ours = sum(not _check(c).ok for c in WRONG)
    torch_caught = sum(not M.oracle(c).torch_gradcheck() for c in WRONG)
    false_alarms = sum(not _check(c).ok for c in RIGHT)
    torch_false_alarms = sum(not M.oracle(c).torch_gradcheck() for c in RIGHT)
    print(f"wrong modules caught: gradcheck {ours}/{len(WRONG)}, torch.autograd.gradcheck "
          f"{torch_caught}/{len(WRONG)}; false alarms on right ones: {false_alarms} vs {torch_false_alarms}")
    assert ours == len(WRONG) and false_alarms == 0 == torch_false_alarms
    assert torch_caught == sum(c.torch_passes is False for c in WRONG) < ours


# ---------------------------------------------------------------- the caller's module and its state

def _snapshot(module):
    return {"state": {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()},
            "dtypes": {k: v.dtype for k, v in module.state_dict().items()},
            "requires_grad": {k: p.requires_grad for k, p in module.named_parameters()},
            "grads": {k: p.grad for k, p in module.named_parameters()},
            "modes": [m.training for m in module.modules()]}


def _assert_same(before, after):
    assert before["dtypes"] == after["dtypes"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["modes"] == after["modes"]
    assert all(g is None for g in after["grads"].values()), "the check left .grad on the caller's parameters"
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"{k} changed"


STATEFUL = ["BatchNorm1d train", "BatchNorm1d eval", "Dropout train", "buffers", "frozen backbone",
            "custom layer inside a model, bias averaged"]


@pytest.mark.parametrize("case_id", STATEFUL)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_callers_module_is_left_exactly_as_it_was(case_id, mode):
    case = M.BY_ID[case_id]
    module = case.build()
    module.train(mode == "train")
    before = _snapshot(module)
    _check(case, module)
    _check(case, module, dtype="float32")
    _assert_same(before, _snapshot(module))


def test_the_callers_rng_is_left_where_it_was():
    """Reseeding for every evaluation must not reset the caller's own random stream."""
    case = M.BY_ID["Dropout train"]
    module = case.build()
    torch.manual_seed(1234)
    torch.rand(3)
    state = torch.get_rng_state()
    _check(case, module)
    assert torch.equal(torch.get_rng_state(), state)


def test_batchnorm_statistics_are_unchanged_and_the_buffers_restored_for_every_evaluation():
    """In train mode BatchNorm updates running stats in place each forward: had they leaked from one
    evaluation to the next, the check would differ from one fresh forward (torch's values)."""
    case = M.BY_ID["BatchNorm1d train"]
    module = case.build()
    r = _check(case, module)
    assert r.ok
    assert torch.equal(module.bn.running_mean, torch.zeros(4)) and torch.equal(module.bn.running_var, torch.ones(4))
    assert int(module.bn.num_batches_tracked) == 0
    eval_result = _check(M.BY_ID["BatchNorm1d eval"], module)
    train_grad = r.parameters["fc.weight"].analytic
    assert not np.allclose(train_grad, eval_result.parameters["fc.weight"].analytic), \
        "train and eval mode of BatchNorm are different functions"


def test_a_buffer_the_forward_bumps_is_back_where_it_was():
    case = M.BY_ID["buffers"]
    module = case.build()
    _check(case, module)
    assert int(module.calls) == 0


def test_dropout_draws_the_same_mask_every_evaluation():
    case = M.BY_ID["Dropout train"]
    first, second = _check(case, case.build()), _check(case, case.build())
    assert first.ok
    for name, p in first.parameters.items():
        np.testing.assert_array_equal(p.analytic, second.parameters[name].analytic)
    grad = first.parameters["fc2.weight"].analytic        # dropped hidden units give zero columns
    dropped = np.all(grad == 0, axis=0)
    assert 0 < dropped.sum() < dropped.size, "p=0.5 on 5 units: some dropped, some kept"
    others = [_check(case, seed=s) for s in (1, 2, 3)]
    assert all(o.ok for o in others)
    masks = [tuple(np.all(o.parameters["fc2.weight"].analytic == 0, axis=0)) for o in others]
    assert any(m != tuple(dropped) for m in masks), "--seed chooses the mask"


def test_dropout_in_eval_mode_is_the_identity():
    case = M.BY_ID["Dropout train"]
    r = check_module(case.build(), loss=case.loss, **case.api_values())
    oracle = M.oracle(case)
    oracle.module.eval()
    for name, expected in oracle.gradients().items():
        _close(r.parameters[name].analytic, expected, 1e-10, 1e-12, name)


# ---------------------------------------------------------------- options

def test_params_globs_select_dotted_names():
    case = M.BY_ID["nested"]
    r = _check(case, params="block.*")
    assert list(r.parameters) == ["block.0.weight", "block.0.bias", "block.2.weight", "block.2.bias"]
    r = _check(case, params="block.0.*,*.score.bias")
    assert list(r.parameters) == ["block.0.weight", "block.0.bias", "heads.score.bias"]
    r = _check(case, params=["*.weight"])
    names = [n for n, _ in case.build().named_parameters()]
    assert list(r.parameters) == [n for n in names if fnmatch.fnmatch(n, "*.weight")]
    assert r.ok


def test_params_glob_that_matches_nothing_is_bad_input():
    case = M.BY_ID["nested"]
    with pytest.raises(InputError, match="block.9"):
        _check(case, params="block.9.*")


def test_params_keeps_the_blame_on_the_wrong_parameter():
    case = M.BY_ID["custom layer inside a model, bias averaged"]
    assert _check(case, params="layers.0.*,layers.2.*").ok
    r = _check(case, params="layers.1.*")
    assert not r.ok and _failing(r) == {"layers.1.bias"}


def test_wrt_inputs_checks_the_forward_arguments_too():
    case = M.BY_ID["two inputs, tuple output"]
    r = _check(case, wrt_inputs=True)
    assert r.ok and set(r.inputs) == {"q", "k"}
    values = case.tensors()
    q, k = (values[n].clone().requires_grad_(True) for n in ("q", "k"))
    module = case.build().double()
    out = module(q, k)
    gq, gk = torch.autograd.grad(case.torch_loss(out, q, k), (q, k))
    _close(r.inputs["q"].analytic, gq.numpy(), 1e-10, 1e-12, "q")
    _close(r.inputs["k"].numeric, gk.numpy(), 1e-6, 1e-9, "k")
    assert not getattr(_check(case), "inputs", {}), "without wrt_inputs the inputs are constants"


def test_long_inputs_are_never_differentiated():
    case = M.BY_ID["Embedding"]
    assert _check(case).ok
    with pytest.raises(InputError, match="float tensor"):   # --wrt-inputs with only long() arguments
        _check(case, wrt_inputs=True)


def test_float32_analytic_side_against_the_float64_reference():
    for case_id in ("seed 004 Model", "LayerNorm", "BatchNorm1d train", "Dropout train", "nested"):
        case = M.BY_ID[case_id]
        r = _check(case, dtype="float32")
        assert r.ok, case_id
        for name, expected in M.oracle(case).gradients().items():
            _close(r.parameters[name].analytic, expected, 1e-4, 1e-5, f"{case_id} {name}")
    assert not _check(M.BY_ID["custom Function, bias averaged"], dtype="float32").ok


def test_a_module_in_float32_is_checked_in_float64_unless_asked():
    """SPEC: the analytic side runs on a float64 copy unless --dtype float32 (the caller's float32
    module is then not judged by its rounding)."""
    case = M.BY_ID["custom Function, weight off by 1e-4"]
    assert not _check(case).ok


def test_fast_projects_every_parameter_with_a_coverage_statement():
    case = M.BY_ID["nested"]
    r = _check(case, fast=True)
    assert r.ok
    for name, p in r.parameters.items():
        assert p.projection is not None, name
        assert p.projection.elements == case.build().get_parameter(name).numel()
        assert "random ±1 directions" in p.projection.statement()
    wrong = _check(M.BY_ID["custom layer inside a model, bias averaged"], fast=True)
    assert not wrong.ok and _failing(wrong) == {"layers.1.bias"}


def test_assert_module_gradients_names_the_failing_parameters():
    case = M.BY_ID["custom layer inside a model, bias averaged"]
    with pytest.raises(AssertionError, match=r"layers\.1\.bias"):
        assert_module_gradients(case.build(), loss=case.loss, **case.api_values())
    right = M.BY_ID["custom layer inside a model, right"]
    r = assert_module_gradients(right.build(), loss=right.loss, **right.api_values())
    assert r.ok
    nograd = M.BY_ID["torch.no_grad() on the gain"]
    with pytest.raises(AssertionError) as info:
        assert_module_gradients(nograd.build(), loss=nograd.loss, **nograd.api_values())
    first = str(info.value).splitlines()[0]
    assert "gain" in first and "weight" not in first and "bias" not in first


def test_check_module_refuses_what_is_not_a_module():
    with pytest.raises(InputError):
        check_module(torch.nn.Linear, x=np.ones((2, 1)))
    with pytest.raises(InputError):
        check_module(lambda x: x, x=np.ones(2))


def test_a_forward_argument_that_is_missing_is_bad_input():
    case = M.BY_ID["two inputs, tuple output"]
    with pytest.raises(InputError, match="k"):
        check_module(case.build(), loss=case.loss, q=case.values["q"])


def test_a_module_with_every_parameter_frozen_is_refused_unless_its_inputs_are_checked():
    """Nothing to check is bad input (a CI assertion that checked nothing must not pass); with
    wrt_inputs the inputs are checked and the frozen parameters listed."""
    module = copy.deepcopy(M.BY_ID["seed 004 Model"].build()).requires_grad_(False)
    with pytest.raises(InputError, match="nothing to check: every parameter is frozen"):
        check_module(module, loss="out.sum()", x=np.ones((2, 1)))
    r = check_module(module, loss="out.sum()", wrt_inputs=True, x=np.ones((2, 1)))
    assert r.ok and r.parameters == {} and r.frozen == ("line_layer.weight", "line_layer.bias")
    x = torch.ones((2, 1), dtype=torch.float64, requires_grad=True)
    (want,) = torch.autograd.grad(module.double()(x).sum(), x)
    np.testing.assert_allclose(r.inputs["x"].analytic, want.numpy(), rtol=1e-12)
