"""Reports that a stranger's text cannot break: markup shown literally, GitHub's workflow-command
escaping, control characters as escapes, well-formed JUnit, and --junit targets that are refused."""
from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from gradcheck_cli.cli import main
from gradcheck_cli.render.safe import visible, xml_text

HOSTILE_NAMES = ["[/]", "[bold red]x[/bold red]", "[link=http://evil]click[/link]", "a\n::error file=x.py,line=1::pwned",
                 "b\r\n::set-output name=x::y", "c\x1b[31mred\x1b[0m", "d\x01\x00\x0c\x7f", "e%0A::warning::x",
                 "f\u202egnp.exe", "g\u2028h"]


def toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a TOML basic string (\\u escapes included)


def write_cases(tmp_path, names) -> str:
    parts = []
    for i, name in enumerate(names):
        expr = "sin(x" if i % 2 else "x * 2"  # every other case errors, so its name reaches every report
        parts.append(f'[[case]]\nname = {toml_string(name)}\nexpr = "{expr}"\nvars = {{ x = 1.0 }}\n'
                     f'expect = {{ x = {3.0 if i % 3 == 0 else 2.0} }}\n')
    path = tmp_path / "hostile.toml"
    path.write_text("\n".join(parts), encoding="utf-8")
    return str(path)


def run(*args: str, env=None):
    return CliRunner(env=env or {"NO_COLOR": "1", "COLUMNS": "200"}).invoke(main, ["batch", *args])


@pytest.mark.parametrize("columns", ["80", "200"])
def test_table_shows_markup_literally_and_loses_no_case(tmp_path, columns):
    path = write_cases(tmp_path, HOSTILE_NAMES)
    result = run(path, env={"NO_COLOR": "1", "COLUMNS": columns})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2
    assert "[/]" in result.stdout and "[bold red]x[/bold red]" in result.stdout
    assert "\x1b" not in result.stdout and "\x00" not in result.stdout and "\u202e" not in result.stdout
    assert "c\\x1b[31mred\\x1b[0m" in result.stdout.replace("\n", "")  # escapes, possibly wrapped
    assert re.search(r"PASS|FAIL", result.stdout)
    json_report = json.loads(run(path, "--json").stdout)
    assert [c["name"] for c in json_report["cases"]] == HOSTILE_NAMES  # JSON keeps the data as it is
    counts = json_report["passed"] + json_report["failed"] + json_report["errors"]
    assert f"{json_report['passed']} passed" in result.stdout and counts == len(HOSTILE_NAMES)


def test_github_annotations_start_no_command_gradcheck_did_not_mean(tmp_path):
    path = write_cases(tmp_path, HOSTILE_NAMES)
    result = run(path, "--format", "github")
    assert result.exit_code == 2
    lines = result.stdout.split("\n")
    assert lines[-1] == ""
    commands = [line for line in lines if line]
    # every line is one of gradcheck's own commands, whole: nothing a name says starts another line
    assert all(re.match(r"::(error|notice) ", line) for line in commands), commands
    for line in commands:
        head, _, message = line.partition("::")[2].partition("::")
        assert "\r" not in line and "\u2028" not in line and "\x1b" not in line
        props = head.split(" ", 1)[1]
        # properties: , separates them and : ends them, so neither may appear unescaped in a value
        for prop in props.split(","):
            key, _, value = prop.partition("=")
            assert key in ("file", "line", "title") and ":" not in value
    errors = [line for line in commands if line.startswith("::error")]
    assert len(errors) == json.loads(run(path, "--json").stdout)["errors"] + json.loads(run(path, "--json").stdout)["failed"]
    first = next(e for e in errors if "title=gradcheck a%0A" in e or "title=gradcheck a\\n" in e)
    assert "%3A%3Aerror file=x.py%2Cline=1%3A%3Apwned" in first
    assert any("e%250A%3A%3Awarning%3A%3Ax" in e for e in errors)  # a literal %0A stays text


def test_github_escaping_rules():
    from gradcheck_cli.render.batch import _escape
    assert _escape("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert _escape("a:b,c%\n", prop=True) == "a%3Ab%2Cc%25\\n"
    assert _escape("\x1b[2J") == "\\x1b[2J"


def test_visible_and_xml_text():
    assert visible("a\x1b[31m\tb\n") == "a\\x1b[31m\\tb\\n"
    assert visible("a\nb\x07", newlines=True) == "a\nb\\x07"
    assert visible("\u202e\ud800") == "\\u202e\\ud800"
    assert xml_text("ok \x00\x01\x0c\ufffe\uffff é \U0001f600") == "ok \\x00\\x01\\x0c\\ufffe\\uffff é \U0001f600"


def test_junit_is_well_formed_whatever_the_names(tmp_path):
    names = HOSTILE_NAMES + ["lone \ud800 surrogate", "nul\x00", "]]> <![CDATA[", "&amp; <tag/>"]
    path = tmp_path / "hostile.toml"
    # a lone surrogate cannot be in a UTF-8 file, but TOML's \ud800 escape is refused too: feed it via txt
    write_cases(tmp_path, names[:-4] + names[-2:])
    (tmp_path / "more.txt").write_text('"x*2" -v x=1 --name "form\x0cfeed"\n"sin(x" --name "esc\x1b nul"\n',
                                       encoding="utf-8")
    report = tmp_path / "junit.xml"
    result = run(str(tmp_path), "--junit", str(report))
    assert result.exit_code == 2, result.output
    root = ET.parse(report).getroot()  # raises if not well-formed
    cases = root.find("testsuite").findall("testcase")
    got = [c.get("name") for c in cases]
    assert "[/]" in got and "]]> <![CDATA[" in got and "&amp; <tag/>" in got
    assert "d\\x01\\x00\\x0c\\x7f" in got and "form\\x0cfeed" in got
    assert all(not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f]", n) for n in got)
    from gradcheck_cli.batch import BatchResult, CaseResult
    from gradcheck_cli.render.junit import junit_xml
    text = junit_xml(BatchResult((CaseResult("f\ud800.toml", 1, "lone \ud800", "error", "msg \udfff\x00", 0.0),)))
    element = ET.fromstring(text.split("\n", 1)[1])
    assert element.find("testsuite/testcase").get("name") == "lone \\ud800"


def test_junit_refuses_targets_that_are_not_regular_files(tmp_path):
    path = write_cases(tmp_path, ["plain"])
    (tmp_path / "folder").mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.xml"
    link.symlink_to(tmp_path / "elsewhere.xml")
    readonly = tmp_path / "ro.xml"
    readonly.write_text("keep")
    readonly.chmod(0o444)
    folder = run(path, "--junit", str(tmp_path / "folder"))  # click's own Path check answers first
    assert folder.exit_code == 2 and "is a directory" in folder.stderr and folder.stdout == ""
    for target, why in ((str(fifo), "it exists and is a FIFO"),
                        ("/dev/full", "it exists and is a character device"),
                        (str(link), "it exists and is a symbolic link"), (str(readonly), "it is read-only"),
                        (path, f"it is {path}, one of the files being read")):
        result = run(path, "--junit", target)
        assert result.exit_code == 2, (target, result.output)
        assert result.stderr == f"error: cannot write {target}: {why}" + (
            "; reports are written to regular files only" if "exists" in why else "") + "\n"
        assert result.stdout == ""  # refused before any case ran
    assert os.path.isdir(tmp_path / "folder") and not os.path.exists(tmp_path / "elsewhere.xml")
    assert readonly.read_text() == "keep" and os.path.exists("/dev/full") and not os.path.isfile("/dev/full")
    same_folder = run(str(tmp_path), "--junit", path)  # the batch file, found through its folder
    assert same_folder.exit_code == 2 and "one of the files being read" in same_folder.stderr


def test_junit_replaces_a_regular_file_atomically(tmp_path):
    path = write_cases(tmp_path, ["plain"])
    target = tmp_path / "report.xml"
    target.write_text("old")
    result = run(path, "--junit", str(target))
    assert result.exit_code == 1  # the one case's expect is wrong (3.0)
    assert ET.parse(target).getroot().find("testsuite").get("tests") == "1"
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".gradcheck-")] == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
