"""gradcheck batch: TOML and txt cases, every case reported, exit statuses, JSON/JUnit/GitHub reports."""
from __future__ import annotations

import json
import os
import textwrap
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gradcheck_cli.batch import Status, run_batch
from gradcheck_cli.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(ROOT, "expressions", "plugins", "softplus_ops.py")

MIXED = """
[defaults]
seed = 3

[[case]]
name = "cubic"
expr = "3*a**3 - b**2"
vars = { a = [2.0, 3.0], b = [6.0, 4.0] }
grad_output = [1.0, 1.0]
expect = { a = [36.0, 81.0], b = [-12.0, -8.0] }

[[case]]
name = "wrong expect"
expr = "3*a**3 - b**2"
vars = { a = [2.0, 3.0], b = [6.0, 4.0] }
grad_output = [1.0, 1.0]
expect = { a = [36.0, 80.0] }

[[case]]
name = "syntax"
expr = "sin(x"

[[case]]
name = "typo key"
exrp = "x"

[[case]]
name = "no expr"
vars = { x = 1.0 }

[[case]]
name = "last one still runs"
expr = "tanh(x).sum()"
vars = { x = "randn(4)" }
"""


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def run_cli(*args: str):
    return CliRunner().invoke(main, ["batch", *args])


def test_every_case_runs_and_is_reported_in_order(tmp_path):
    path = write(tmp_path, "cases.toml", MIXED)
    result = run_cli(path, "--json")
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    statuses = [(c["name"], c["status"]) for c in report["cases"]]
    assert statuses == [("cubic", "pass"), ("wrong expect", "fail"), ("syntax", "error"),
                        ("typo key", "error"), ("no expr", "error"), ("last one still runs", "pass")]
    assert (report["passed"], report["failed"], report["errors"], report["ok"]) == (2, 1, 3, False)
    by_name = {c["name"]: c for c in report["cases"]}
    assert "exrp" in by_name["typo key"]["message"]
    assert "no expr" in by_name["no expr"]["message"]
    assert "never closed" in by_name["syntax"]["message"]
    np.testing.assert_allclose(by_name["cubic"]["result"]["inputs"]["a"]["analytic"], [36.0, 81.0], rtol=1e-12)
    # lines point at each [[case]] header
    lines = [n for n, row in enumerate(open(path).read().splitlines(), 1) if row.startswith("[[case]]")]
    assert [c["line"] for c in report["cases"]] == lines


def test_last_case_value_matches_torch(tmp_path):
    path = write(tmp_path, "one.toml", """
        [[case]]
        name = "tanh"
        expr = "tanh(x).sum()"
        vars = { x = [0.1, -2.0, 3.0] }
    """)
    report = json.loads(run_cli(path, "--json").stdout)
    x = torch.tensor([0.1, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    torch.tanh(x).sum().backward()
    np.testing.assert_allclose(report["cases"][0]["result"]["inputs"]["x"]["analytic"], x.grad.numpy(), rtol=1e-14)


@pytest.mark.parametrize("text, status, code", [
    ('[[case]]\nexpr = "sin(x).sum()"\n', "pass", 0),
    ('[[case]]\nexpr = "x*2"\nexpect = { x = 3.0 }\n', "fail", 1),
    ('[[case]]\nexpr = "sin("\n', "error", 2),
])
def test_exit_status_follows_the_worst_case(tmp_path, text, status, code):
    path = write(tmp_path, "c.toml", text)
    result = run_cli(path, "--json")
    assert result.exit_code == code
    assert json.loads(result.stdout)["cases"][0]["status"] == status


def test_txt_format_and_bad_line(tmp_path):
    path = write(tmp_path, "cases.txt", """
        # a comment, then cases
        "3*a**3 - b**2" -v a=2,3 -v b=6,4 --grad-output 1,1 --name cubic
        gradcheck check "w[0]**2 + 2*w[1]**2" -v w=0.5,0.5
        "sin(x).sum()" --seed notanumber
        "x" "y"
    """)
    report = json.loads(run_cli(path, "--json").stdout)
    cases = report["cases"]
    assert [c["status"] for c in cases] == ["pass", "pass", "error", "error"]
    assert cases[0]["name"] == "cubic" and cases[0]["line"] == 3
    np.testing.assert_allclose(cases[1]["result"]["inputs"]["w"]["analytic"], [2 * 0.5, 4 * 0.5], rtol=1e-14)
    # parsed by click's own parser of `gradcheck check`: its messages, one line each
    assert cases[2]["message"] == "Invalid value for '--seed': 'notanumber' is not a valid integer."
    assert cases[2]["line"] == 5
    assert cases[3]["message"] == "Got unexpected extra argument (y)"


def test_folders_are_searched_recursively_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    write(tmp_path, "b/z.txt", '"x*3" -v x=1 --name bz\n')
    write(tmp_path, "a.toml", '[[case]]\nname = "a"\nexpr = "x*2"\n')
    write(tmp_path, "ignored.md", "not a batch file")
    report = json.loads(run_cli(str(tmp_path), "--json").stdout)
    assert [(os.path.relpath(c["file"], tmp_path), c["name"]) for c in report["cases"]] == [
        ("a.toml", "a"), (os.path.join("b", "z.txt"), "bz")]


def test_missing_path_is_an_error_row_and_others_still_run(tmp_path):
    good = write(tmp_path, "g.toml", '[[case]]\nexpr = "x*2"\n')
    result = run_cli(str(tmp_path / "nothere"), good, "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 2
    assert [c["status"] for c in report["cases"]] == ["error", "pass"]
    assert "no such file" in report["cases"][0]["message"]
    assert result.stderr == f"error: {tmp_path / 'nothere'}: no such file or folder\n"


def test_invalid_toml_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, "bad.toml", '[[case]]\nexpr = "x"\nvars = { x = \n')
    report = json.loads(run_cli(path, "--json").stdout)
    assert report["cases"][0]["status"] == "error"
    assert "invalid TOML" in report["cases"][0]["message"]


def test_wrong_types_are_errors_not_crashes(tmp_path):
    path = write(tmp_path, "types.toml", """
        [[case]]
        expr = 3
        [[case]]
        expr = "x*2"
        vars = { x = true }
        [[case]]
        expr = "x*2"
        atol = "small"
        [[case]]
        expr = "x*2"
        vars = [1, 2]
    """)
    report = json.loads(run_cli(path, "--json").stdout)
    assert [c["status"] for c in report["cases"]] == ["error"] * 4


def test_xfail_and_xpass(tmp_path):
    path = write(tmp_path, "x.toml", f"""
        [defaults]
        plugins = ["{PLUGIN}"]
        [[case]]
        name = "known wrong"
        expr = "bad_softplus(x).sum()"
        vars = {{ x = [0.5, -1.0] }}
        xfail = "backward is off by 1e-4"
        [[case]]
        name = "marked but right"
        expr = "my_softplus(x).sum()"
        vars = {{ x = [0.5, -1.0] }}
        xfail = "stale mark"
    """)
    result = run_cli(path, "--json", "--trust-plugins")
    report = json.loads(result.stdout)
    assert [c["status"] for c in report["cases"]] == [Status.XFAIL, Status.XPASS]
    assert result.exit_code == 1


def test_plugins_in_toml_are_relative_to_the_file():
    report = json.loads(run_cli(os.path.join(ROOT, "expressions", "custom_ops.toml"), "--json",
                                "--trust-plugins").stdout)
    assert [c["status"] for c in report["cases"]] == ["pass", "pass", "xfail"]


def test_jobs_give_the_same_report(tmp_path):
    path = write(tmp_path, "cases.toml", MIXED)
    one = json.loads(run_cli(path, "--json", "-j", "1").stdout)
    two = json.loads(run_cli(path, "--json", "-j", "2").stdout)
    strip = lambda r: [(c["name"], c["status"], c["message"]) for c in r["cases"]]  # noqa: E731
    assert strip(one) == strip(two)


def test_timeout_turns_a_slow_case_into_an_error(tmp_path):
    path = write(tmp_path, "slow.toml", """
        [[case]]
        name = "slow"
        expr = "(x @ x.T @ x @ x.T).sum()"
        vars = { x = "randn(400, 400)" }
        method = "richardson"
        [[case]]
        name = "fast"
        expr = "x * 2"
        vars = { x = 1.0 }
    """)
    result = run_cli(path, "--json", "--timeout", "0.5")
    report = json.loads(result.stdout)
    assert [c["status"] for c in report["cases"]] == ["error", "pass"]
    assert "timed out" in report["cases"][0]["message"]


def test_junit_report(tmp_path):
    path = write(tmp_path, "cases.toml", MIXED)
    report = tmp_path / "junit.xml"
    run_cli(path, "--junit", str(report))
    suite = ET.parse(report).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("6", "1", "3")
    kinds = [[child.tag for child in case] for case in suite.findall("testcase")]
    assert kinds == [[], ["failure"], ["error"], ["error"], ["error"], []]
    assert "80.0" in suite.findall("testcase")[1].find("failure").text


def test_github_annotations(tmp_path):
    path = write(tmp_path, "cases.toml", MIXED)
    result = run_cli(path, "--format", "github")
    errors = [line for line in result.stdout.splitlines() if line.startswith("::error")]
    assert len(errors) == 4
    headers = [n for n, row in enumerate(open(path).read().splitlines(), 1) if row.startswith("[[case]]")]
    # the failing and erroring cases are the 2nd to 5th [[case]] tables
    assert [e.split("line=")[1].split(",")[0] for e in errors] == [str(n) for n in headers[1:5]]
    assert errors[0].startswith(f"::error file={path.replace(':', '%3A').replace(',', '%2C')},")
    assert all("\n" not in e for e in errors)
    assert result.stdout.splitlines()[-1].startswith("::notice")


def test_table_report_shows_summary_and_failing_table(tmp_path):
    path = write(tmp_path, "cases.toml", MIXED)
    result = run_cli(path)
    assert "wrong expect" in result.stdout and "FAIL" in result.stdout
    assert "SubBackward0" in result.stdout  # the failing case's full table and graph
    assert "2 passed, 1 failed, 3 errors" in result.stdout
    assert "Traceback" not in result.output


def test_repository_expressions_pass():
    result = run_cli(os.path.join(ROOT, "expressions"), "--json", "--trust-plugins")  # model.py is code too
    report = json.loads(result.stdout)
    assert result.exit_code == 0, [c for c in report["cases"] if c["status"] not in ("pass", "xfail")]
    assert report["passed"] >= 100 and report["xfailed"] == 1


def test_run_batch_api(tmp_path):
    path = write(tmp_path, "c.toml", '[[case]]\nexpr = "exp(x).sum()"\nvars = { x = [0.0, 1.0] }\n')
    batch = run_batch([path])
    assert batch.ok and batch.exit_status == 0
    np.testing.assert_allclose(batch.cases[0].result.inputs["x"].numeric, np.exp([0.0, 1.0]), rtol=1e-14)


def test_a_failure_message_states_the_count_once(tmp_path):
    """The worst element, then the diagnosis; its count (5 of 5 elements) is not said a second time."""
    path = tmp_path / "wrong.toml"
    path.write_text('[[case]]\nexpr = "bad_softplus(x).sum()"\nvars = { x = [-0.5, 0.1, 1.0, 1.5, 2.0] }\n')
    (case,) = run_batch([str(path)], plugins=(PLUGIN,)).cases
    x = torch.tensor([-0.5, 0.1, 1.0, 1.5, 2.0], dtype=torch.float64)
    right = torch.sigmoid(x)  # d softplus / dx; the plugin's backward is this times (1 + 1e-4)
    assert case.status == Status.FAIL
    assert case.message == (f"x[4]: analytic {float(right[4]) * (1 + 1e-4):.10g} vs numeric {float(right[4]):.10g} "
                            "(a constant factor: analytic = (1 + 0.0001) × numeric; wrong at [0], [1], [2], [3] "
                            "and 1 more (5 of 5 elements))")
