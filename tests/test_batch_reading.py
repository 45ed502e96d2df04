"""Reading a stranger's batch files: regular files only (after symlinks), a size limit, linear parsing,
no file that takes the batch down, timeouts that never corrupt the process, and exit 0 only when every
case was checked and passed."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcheck_cli import cases as cases_module
from gradcheck_cli import pool
from gradcheck_cli.batch import run_batch, split_line
from gradcheck_cli.cli import main
from gradcheck_cli.errors import InputError
from gradcheck_cli.render.json import batch_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = '[[case]]\nname = "good"\nexpr = "x * 2"\nvars = { x = 1.0 }\n'


def run(*args: str):
    return CliRunner().invoke(main, ["batch", *args])


def report(result) -> dict:
    return json.loads(result.stdout)


def by_file(result) -> dict:
    return {os.path.basename(c["file"]): c for c in report(result)["cases"]}


def test_devices_fifos_and_links_to_them_are_refused_unread(tmp_path):
    (tmp_path / "good.toml").write_text(GOOD)
    os.symlink("/dev/zero", tmp_path / "zero.toml")
    os.symlink("/dev/urandom", tmp_path / "random.txt")
    os.mkfifo(tmp_path / "fifo.toml")
    os.symlink(tmp_path / "fifo.toml", tmp_path / "to_fifo.txt")
    os.mkdir(tmp_path / "dir.toml")
    names = ["zero.toml", "random.txt", "fifo.toml", "to_fifo.txt"]
    # a real process with a deadline: reading any of these would hang or fill memory
    proc = subprocess.run([sys.executable, "-m", "gradcheck_cli", "batch", "--json", *(str(tmp_path / n) for n in names),
                           str(tmp_path / "good.toml")], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 2, proc.stderr
    cases = {os.path.basename(c["file"]): c for c in json.loads(proc.stdout)["cases"]}
    link = " (through a symbolic link)"
    assert cases["zero.toml"]["message"] == f"is a character device{link}, not a regular file; batch reads regular files only"
    assert cases["random.txt"]["message"] == f"is a character device{link}, not a regular file; batch reads regular files only"
    assert cases["fifo.toml"]["message"] == "is a FIFO, not a regular file; batch reads regular files only"
    assert cases["to_fifo.txt"]["message"] == f"is a FIFO{link}, not a regular file; batch reads regular files only"
    assert cases["good.toml"]["status"] == "pass"
    assert "Traceback" not in proc.stderr


def test_links_out_of_a_folder_are_not_followed(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\nAPI_TOKEN=hunter2\n")
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "good.toml").write_text(GOOD)
    os.symlink(secret, cases / "passwd.txt")
    os.symlink("/etc/passwd", cases / "etc.txt")
    os.symlink(cases / "good.toml", cases / "inside.toml")  # inside the folder: followed
    result = run(str(cases), "--format", "github")
    assert result.exit_code == 2
    assert "hunter2" not in result.output and "/bin/bash" not in result.output and "root:x" not in result.output
    result = run(str(cases), "--json")
    found = by_file(result)
    assert found["passwd.txt"]["message"] == f"is a symbolic link to {secret}, outside {cases}; not read"
    assert found["etc.txt"]["message"].startswith("is a symbolic link to /etc/passwd, outside")
    assert found["inside.toml"]["status"] == "pass" and found["good.toml"]["status"] == "pass"


def test_text_that_is_not_a_batch_file_is_one_error_without_its_lines(tmp_path):
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    os.symlink(secret, tmp_path / "named.txt")  # named on the command line: read, but shown as one error
    result = run(str(tmp_path / "named.txt"), "--format", "github")
    assert result.exit_code == 2
    assert "root:x" not in result.output and "nologin" not in result.output and "/bin/bash" not in result.output
    case = report(run(str(tmp_path / "named.txt"), "--json"))["cases"]
    assert len(case) == 1 and case[0]["message"] == (
        "not a gradcheck batch file: none of its 2 lines is a `gradcheck check` argument list with a valid "
        "expression (its lines are not shown)")


def test_files_over_max_file_bytes_are_refused(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text(GOOD + "#" * 2000 + "\n")
    size = path.stat().st_size
    result = run(str(path), "--json", "--max-file-bytes", "1000")
    assert result.exit_code == 2
    assert report(result)["cases"][0]["message"] == f"is {size:,} bytes, more than --max-file-bytes 1,000"
    assert run(str(path), "--json").exit_code == 0  # the default (10 MB) takes it


def test_a_ten_megabyte_line_is_read_in_linear_time(tmp_path):
    path = tmp_path / "long.txt"
    long_name = "n" * 9_900_000  # under the 10 MB default; shlex needed hours for this
    path.write_text(f'"x*2" -v x=1 --name {long_name}\n"sin(x)" -v x=0.5 --name \'quoted {long_name[:1000]}\'\n')
    result = run(str(path), "--json")
    assert result.exit_code == 0, result.output[:500]
    names = [c["name"] for c in report(result)["cases"]]
    assert names == [long_name, "quoted " + long_name[:1000]]


WORDS = st.text(alphabet=st.sampled_from(list("ab =-,.[]()*'\"\\ \t#$`")), max_size=30)


@settings(max_examples=300, deadline=None)
@given(WORDS)
def test_split_line_agrees_with_a_posix_shell_splitter(text):
    try:
        expected = shlex.split(text, comments=True)
    except ValueError:
        with pytest.raises(InputError, match="cannot split the line into arguments"):
            split_line(text)
        return
    if "#" in text:  # shlex ends a word at #; a shell (and split_line) only starts a comment at a word
        return
    if "\\$" in text or "\\`" in text:  # in "...", a shell (and split_line) unescapes \$ and \`; shlex keeps them
        return
    assert split_line(text) == expected


def test_split_line_unescapes_dollar_and_backtick_in_double_quotes_as_a_shell_does():
    # sh -c 'printf %s "\`" "\$"' prints ` and $: shlex.split keeps the backslashes
    assert split_line('"\\`" "\\$" "\\a"') == ["`", "$", "\\a"]


def test_split_line_comments_and_errors():
    assert split_line('"a b" c # comment "unclosed') == ["a b", "c"]
    assert split_line('x#y') == ["x#y"]
    assert split_line('"a\\"b" \'c\\d\' e\\ f') == ['a"b', "c\\d", "e f"]
    with pytest.raises(InputError, match="no closing \""):
        split_line('"abc')
    with pytest.raises(InputError, match="a backslash at the end of the line"):
        split_line("abc\\")


def test_deep_toml_and_bad_types_are_error_cases(tmp_path):
    (tmp_path / "a_deep.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "b_deep_table.toml").write_text("x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n")
    (tmp_path / "c_good.toml").write_text(GOOD)
    result = run(str(tmp_path), "--json")
    assert result.exit_code == 2
    found = by_file(result)
    assert found["a_deep.toml"]["message"] == "invalid TOML: nested too deeply for a batch file"
    assert found["b_deep_table.toml"]["message"] == "invalid TOML: nested too deeply for a batch file"
    assert found["c_good.toml"]["status"] == "pass"


BAD_VALUES = [
    ("expr = 1", "the case has no expr"), ("vars = [1]", "vars must be a table"),
    ("vars = { x = { a = 1 } }", "'x' must be a number, a list of numbers or a SPEC string, not dict"),
    ("grad_output = { a = 1 }", "'grad_output' must be a number"), ("expect = 3", "expect must be a table"),
    ("expect = { x = \"randn(2)\" }", "expect.x must be a number or a (nested, rectangular) list of numbers"),
    ("xfail = 1", "xfail must be a string"), ("plugins = \"ops.py\"", "'plugins' must be list, not str"),
    ("plugins = [1]", "plugins must be a list of file paths or module names"), ("dtype = 1", "'dtype' must be str"),
    ("method = 1", "'method' must be str"), ("atol = \"small\"", "'atol' must be a number, not str"),
    ("rtol = true", "'rtol' must be a number, not bool"), ("seed = 1.5", "'seed' must be int, not float"),
    ("eps = [1]", "'eps' must be a number, not list"), ("device = 1", "'device' must be str"),
    ("wrt = 1", "'wrt' must be str or list, not int"),
    ("wrt = [1]", "'wrt' must be a string \"a,b\" or a list of names [\"a\", \"b\"]"),
    ("allow_unreliable = \"yes\"", "'allow_unreliable' must be bool"), ("fast = 1", "'fast' must be bool"),
    ("directions = \"a\"", "'directions' must be int"), ("symbolic = 1", "'symbolic' must be bool"),
    ("seed = 1979-05-27", "'seed' must be int, not date"),
]


@pytest.mark.parametrize("where", ["case", "defaults"])
def test_a_wrong_type_in_any_key_is_a_clear_error_case(tmp_path, where):
    case_only = ("expr", "vars", "grad_output", "expect", "xfail")  # [defaults] takes options only
    keys = [line for line, _ in BAD_VALUES if not line.startswith(case_only) or where == "case"]
    for i, line in enumerate(keys):
        body = (f"[defaults]\n{line}\n[[case]]\nexpr = \"x * 2\"\nvars = {{ x = 1.0 }}\n" if where == "defaults"
                else f"[[case]]\nexpr = \"x * 2\"\nvars = {{ x = 1.0 }}\n{line}\n")
        if line.startswith(("expr", "vars")) and where == "case":
            body = f"[[case]]\n{line}\n" + ("expr = \"x * 2\"\n" if line.startswith("vars") else "")
        (tmp_path / f"{i:02d}.toml").write_text(body)
    (tmp_path / "zz_good.toml").write_text(GOOD)
    result = run(str(tmp_path), "--json")
    assert result.exit_code == 2
    cases = report(result)["cases"]
    assert cases[-1]["status"] == "pass"
    expected = dict(BAD_VALUES)
    for case, line in zip(cases, keys):
        assert case["status"] == "error", (line, case)
        assert expected[line] in case["message"], (line, case["message"])


@pytest.mark.parametrize("content", ["", "# only a comment\n\n", None])
def test_paths_with_no_case_are_an_error_on_stderr(tmp_path, content):
    target = tmp_path / "suite"
    target.mkdir()
    if content is not None:
        (target / "empty.txt").write_text(content)
    else:
        (target / "notes.md").write_text("not a batch file")
    result = run(str(target), "--json")
    assert result.exit_code == 2
    why = ("holds no gradcheck case (no *.toml or *.txt file with a [[case]] or a line)" if content is None
           else "holds no gradcheck case (its batch files are empty)")
    assert result.stderr == f"error: {target}: {why}\n"
    data = report(result)
    assert data["ok"] is False and data["errors"] == 1


def test_an_empty_path_beside_a_good_one_still_fails_the_batch(tmp_path):
    (tmp_path / "empty").mkdir()
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    result = run(str(good), str(tmp_path / "empty"), "--json")
    assert result.exit_code == 2
    assert [c["status"] for c in report(result)["cases"]] == ["pass", "error"]
    assert "empty: holds no gradcheck case" in result.stderr


@pytest.mark.parametrize("value, code, text", [
    ("nan", 2, "error: --timeout must be a number of seconds >= 0 (0 or inf: no limit), not nan\n"),
    ("inf", 0, ""), ("0", 0, ""),
])
def test_timeout_values(tmp_path, value, code, text):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    result = run(str(good), "--json", "--timeout", value)
    assert result.exit_code == code, result.output
    assert result.stderr == text
    if code == 0:
        assert report(result)["cases"][0]["status"] == "pass"


def test_a_tiny_timeout_times_every_case_out_cleanly(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(GOOD + GOOD.replace("good", "second").replace("x * 2", "(x @ x.T).sum()").replace("1.0", '"randn(60, 60)"'))
    result = run(str(good), "--json", "--timeout", "1e-9")
    assert result.exit_code == 2
    for case in report(result)["cases"]:
        assert case["status"] == "pass" or case["message"] == "timed out after 0.001 s (raise it with --timeout)"


def test_timeout_in_a_fresh_process_never_corrupts_later_cases(tmp_path):
    """The first check in a process imports sympy (through torch); an alarm must never cut that import."""
    path = tmp_path / "t.toml"
    path.write_text("".join(f'[[case]]\nname = "c{i}"\nexpr = "sin(x) * exp(x){".sum()" if i % 2 else ""}"\n'
                            f'vars = {{ x = "randn(5)" }}\n' for i in range(6)))
    proc = subprocess.run([sys.executable, "-m", "gradcheck_cli", "batch", str(path), "--json", "--timeout", "0.3"],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": ROOT})
    data = json.loads(proc.stdout)
    messages = [c["message"] for c in data["cases"]]
    assert not any("has no attribute" in m for m in messages), messages
    assert [c["status"] for c in data["cases"]].count("pass") >= 5, messages


def test_an_alarm_waits_for_an_import_to_finish(tmp_path, monkeypatch):
    (tmp_path / "slow_import_mod.py").write_text(textwrap.dedent("""
        import time
        for _ in range(30):
            time.sleep(0.01)
        DONE = True
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    previous = signal.signal(signal.SIGALRM, cases_module._alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        with pytest.raises(cases_module._Timeout):
            import slow_import_mod
            for _ in range(1000):
                sum(range(10_000))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert sys.modules["slow_import_mod"].DONE is True
    monkeypatch.delitem(sys.modules, "slow_import_mod")


def test_a_batch_keeps_a_summary_not_the_arrays_of_a_large_case(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text('[[case]]\nname = "big"\nexpr = "(x * 2).sum()"\nvars = { x = "randn(50)" }\n'
                    '[[case]]\nname = "small"\nexpr = "(x * 2).sum()"\nvars = { x = "randn(5)" }\n')
    batch = run_batch([str(path)], keep=10)
    big, small = batch.cases
    assert big.result is None and big.summary.elements == 50 and big.summary.ok
    assert small.result is not None and small.result.inputs["x"].analytic.tolist() == [2.0] * 5
    assert big.message.startswith("arrays not kept (50 gradient elements, more than a batch keeps per case); "
                                  "replay: gradcheck check")
    data = batch_dict(batch)["cases"][0]["result"]
    assert data["inputs"]["x"] == {"shape": [50], "max_abs_error": 0.0, "max_rel_error": 0.0, "ok": True, "failures": 0}
    assert "analytic" not in json.dumps(data)


def test_jobs_beyond_the_machine_are_clamped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(pool, "machine_limits", lambda: (4, 3 * pool.WORKER_BYTES + 5))
    assert pool.clamp_jobs(2) == (2, None)
    assert pool.clamp_jobs(100) == (3, "-j 100 is more than this machine can run at once (4 cores, 3.2 GB "
                                       "available); using -j 3")
    monkeypatch.setattr(pool, "machine_limits", lambda: (1, None))
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    result = run(str(good), "--json", "-j", "64")
    assert result.exit_code == 0
    assert result.stderr == "note: -j 64 is more than this machine can run at once (1 core); using -j 1\n"


def test_a_timeout_is_not_swallowed_by_code_that_catches_exception(tmp_path, monkeypatch):
    """Code on a case's path that recovers from any Exception (the meta-device size walk does, and so
    may a plugin) must not swallow the alarm and run on: the case times out."""
    import time

    from gradcheck_cli import memory

    def stubborn(*args, **kwargs):
        deadline = time.perf_counter() + 3.0
        while time.perf_counter() < deadline:
            try:
                sum(range(10_000))
            except Exception:  # what recovering code does
                pass
        return None

    monkeypatch.setattr(memory, "_meta_sizes", stubborn)
    path = tmp_path / "t.toml"
    path.write_text(GOOD)
    result = run(str(path), "--json", "--timeout", "0.2")
    (case,) = report(result)["cases"]
    assert case["message"] == "timed out after 0.2 s (raise it with --timeout)"
    assert result.exit_code == 2 and case["seconds"] < 2.0
