"""Hypothesis writes random and broken batch files; every run ends 0, 1 or 2 with no traceback,
and every case it could read is reported."""
from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradcheck_cli.cli import main

EXPRS = st.sampled_from(["sin(x).sum()", "x*2", "3*a**3 - b**2", "sin(", "x.__class__", "log(x)",
                         "softmax(x)", "__import__('os')", "", "x @ x", "y = x; y*2"])
VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10),
                   st.lists(st.floats(-5, 5), max_size=4), st.sampled_from(["randn(3)", "rand(2)", "ones(", "bad"]),
                   st.booleans(), st.text(max_size=5))


def toml_value(v) -> str:
    return json.dumps(v) if not isinstance(v, float) or v == v and abs(v) != float("inf") else "nan"


@st.composite
def toml_files(draw):
    parts = []
    if draw(st.booleans()):
        parts.append("\ufeff")  # a BOM
    for _ in range(draw(st.integers(0, 4))):
        lines = ["[[case]]", f"expr = {json.dumps(draw(EXPRS))}"]
        if draw(st.booleans()):
            lines.append(f"vars = {{ x = {toml_value(draw(VALUES))} }}")
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["atol = 1e-6", "atol = 'x'", "bogus = 1", "xfail = 'why'",
                                               "grad_output = [1.0]", "method = 'nope'", "dtype = 'float32'"])))
        parts.append("\n".join(lines) + "\n")
    text = "".join(parts)
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    if draw(st.booleans()):
        text += draw(st.sampled_from(["# only a comment\n", "[[case]\n", "=\n", "[defaults]\nseed = 'x'\n", ""]))
    return text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=toml_files())
def test_random_toml_never_crashes(tmp_path, text):
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf-8", newline="")
    result = CliRunner().invoke(main, ["batch", str(path), "--json", "--timeout", "20"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 1, 2)
    report = json.loads(result.stdout)
    assert report["passed"] + report["failed"] + report["errors"] + report["xfailed"] == len(report["cases"])
    assert len(report["cases"]) >= text.count("[[case]]\n") + text.count("[[case]]\r\n") or report["errors"] >= 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_garbage_bytes_are_an_error_row(tmp_path, data):
    path = tmp_path / "garbage.toml"
    path.write_bytes(data)
    result = CliRunner().invoke(main, ["batch", str(path), "--json"])
    assert result.exit_code in (0, 2)
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_empty_and_comment_only_files(tmp_path):
    (tmp_path / "empty.toml").write_text("")
    (tmp_path / "comments.txt").write_text("# nothing here\n\n")
    result = CliRunner().invoke(main, ["batch", str(tmp_path), "--json"])
    assert result.exit_code == 2  # a batch that checked nothing must not pass a CI job (SPEC v2)
    assert result.stderr == f"error: {tmp_path}: holds no gradcheck case (its batch files are empty)\n"
    assert [c["status"] for c in json.loads(result.stdout)["cases"]] == ["error"]


def test_no_traceback_from_a_real_process(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"\xff\xfe[[case]]\nexpr = 1\n")
    proc = subprocess.run([sys.executable, "-m", "gradcheck_cli", "batch", str(path)], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "not UTF-8" in proc.stdout
