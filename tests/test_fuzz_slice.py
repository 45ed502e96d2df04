"""A fast slice of the fuzz campaign in bench/fuzz.py (the full run's figures are in the README):
the escape corpus, and a few thousand random expressions, SPECs and batch files through the API and
the CLI, with no traceback, escape, hang or corrupted report."""
from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradcheck_cli import InputError, check

_PATH = Path(__file__).resolve().parent.parent / "bench" / "fuzz.py"
_spec = importlib.util.spec_from_file_location("gradcheck_fuzz", _PATH)
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["gradcheck_fuzz"] = fuzz
_spec.loader.exec_module(fuzz)


def test_the_escape_corpus_is_large_and_every_payload_is_refused(tmp_path):
    assert len(fuzz.escape_payloads("c")) + len(fuzz.escape_specs("c")) >= 200
    campaign = fuzz.Campaign(seed=0, limit=20, workdir=tmp_path)
    fuzz.warm_up()
    campaign.escapes()
    summary = campaign.tally.summary()
    assert summary["inputs"] >= 600
    assert campaign.tally.escapes == [] and campaign.tally.kinds == {} and campaign.tally.hangs == []
    assert not (tmp_path / "CANARY").exists()


def test_a_slice_of_the_campaign(tmp_path):
    summary = fuzz.run(count=800, seed=11, minutes=0.5, limit=20, subprocess_count=1, workdir=tmp_path,
                       escapes=False)
    assert summary["inputs"] >= 500
    assert summary["kinds"] == {} and summary["escape_list"] == []
    assert summary["hang_list"] == [] and summary["corrupt_list"] == []


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False))
def test_random_expressions_check_or_are_refused(rng):
    text = fuzz.expression(rng)
    values = {n: v for n, v in fuzz.values_for(rng).items() if n in text}
    try:
        check(text, vars=values, **fuzz.check_options(rng))
    except InputError:
        pass


@settings(max_examples=200, deadline=None)
@given(rng=st.randoms(use_true_random=False))
def test_random_specs_resolve_or_are_refused(rng):
    try:
        result = check("(x * 2).sum()", x=fuzz.spec(rng))
    except InputError:
        return
    assert result.ok
