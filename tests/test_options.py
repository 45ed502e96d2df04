"""One option schema (options.py): each option means the same from the command line, a TOML case, a txt
line and the Python API; the replay line re-parses to the options it came from; every check option
works in a batch file and does there what it does on the command line."""
from __future__ import annotations

import inspect
import json
import os
import shlex

import pytest

from gradcheck_cli import InputError, api
from gradcheck_cli import check as api_check
from gradcheck_cli.batch import load_cases
from gradcheck_cli.cli import _options, check as check_command, main, step as step_command
from gradcheck_cli.options import BY_NAME, GROUPS, KINDS, OPTIONS, CheckOptions, variable_name
from gradcheck_cli.parse import DEFAULT_LIMITS
from gradcheck_cli.render import REGISTRY, formats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(ROOT, "tests", "plugins", "corpus_ops.py")

# name: (command-line arguments, TOML line, API value, the field's value); every option of the schema.
NON_DEFAULT = {
    "grad_output": (["--grad-output", "1,2"], 'grad_output = "1,2"', "1,2", "1,2"),
    "wrt": (["--wrt", "x"], 'wrt = ["x"]', "x", ("x",)),
    "seed": (["--seed", "7"], "seed = 7", 7, 7),
    "method": (["--method", "central"], 'method = "central"', "central", "central"),
    "dtype": (["--dtype", "float32"], 'dtype = "float32"', "float32", "float32"),
    "eps": (["--eps", "1e-05"], "eps = 1e-5", 1e-5, 1e-5),
    "atol": (["--atol", "0.001"], "atol = 1e-3", 1e-3, 1e-3),
    "rtol": (["--rtol", "0.0001"], "rtol = 1e-4", 1e-4, 1e-4),
    "device": (["--device", "meta"], 'device = "meta"', "meta", "meta"),
    "allow_unreliable": (["--allow-unreliable"], "allow_unreliable = true", True, True),
    "order": (["--order", "2"], "order = 2", 2, 2),
    "fast": (["--full"], "fast = false", False, False),
    "directions": (["--directions", "5"], "directions = 5", 5, 5),
    "symbolic": (["--symbolic"], "symbolic = true", True, True),
    "plugins": (["--plugin", PLUGIN], f"plugins = [{json.dumps(PLUGIN)}]", [PLUGIN], (PLUGIN,)),
    "max_elements": (["--max-elements", "1000"], "max_elements = 1000", 1000, 1000),
    "max_length": (["--max-length", "500"], "max_length = 500", 500, 500),
    "max_depth": (["--max-depth", "50"], "max_depth = 50", 50, 50),
    "max_statements": (["--max-statements", "10"], "max_statements = 10", 10, 10),
    "max_power": (["--max-power", "10"], "max_power = 10.0", 10.0, 10.0),
    "max_memory": (["--max-memory", "100"], "max_memory = 100", 100, 100),
    "accumulate": (["--accumulate", "3"], "accumulate = 3", None, 3),
    "optim": (["--optim", "Adam(lr=0.1)"], 'optim = "Adam(lr=0.1)"', None, "Adam(lr=0.1)"),
    "steps": (["--steps", "4"], "steps = 4", None, 4),
    "recompute": (["--no-recompute"], "recompute = false", None, False),
    "init": (["--init", "features=5"], "init = { features = 5 }", None, {"features": 5}),
    "loss": (["--loss", "out.sum()"], 'loss = "out.sum()"', None, "out.sum()"),
    "params": (["--params", "lin.*,head.bias"], 'params = ["lin.*", "head.bias"]', None, ("lin.*", "head.bias")),
    "wrt_inputs": (["--wrt-inputs"], "wrt_inputs = true", None, True),
    "train": (["--train"], "train = true", None, True),
}
STEP_KIND = ("optim", "steps", "recompute")


def test_every_option_of_the_schema_is_round_tripped_here():
    assert set(NON_DEFAULT) == {o.name for o in OPTIONS}


def _field(options, name):
    return getattr(options.limits if BY_NAME[name].where == "limits" else options, name)


def _parse(command, args):
    """click's own parse of a command's arguments (with the group's help names: click caches them)."""
    return command.make_context(command.name, args, help_option_names=["-h", "--help"]).params


def _from_cli(args, command=check_command):
    params = _parse(command, ["x * y", "-v", "x=1,2", "-v", "y=3", *args])
    return params, _options(params)


def _from_toml(tmp_path, line, optim=False):
    path = tmp_path / "case.toml"
    path.write_text(f'[[case]]\nexpr = "x * y"\nvars = {{ x = [1.0, 2.0], y = 3.0 }}\n{line}\n'
                    + ('optim = "SGD(lr=0.1)"\n' if optim else ""))
    (case,) = load_cases(str(path), trust_plugins=True)
    assert case.problem is None, case.problem
    return case


def _from_txt(tmp_path, args):
    path = tmp_path / "case.txt"
    path.write_text(shlex.join(["gradcheck", "check", "x * y", "-v", "x=1,2", "-v", "y=3", *args]) + "\n")
    (case,) = load_cases(str(path), trust_plugins=True)
    assert case.problem is None, case.problem
    return case


def _from_api(monkeypatch, name, value):
    seen = []
    monkeypatch.setattr(api, "run_check", lambda expr, values, options: seen.append((values, options)))
    api_check("x * y", x=[1, 2], y=3, **{name: value})
    (values, options), = seen
    assert values == {"x": [1, 2], "y": 3}
    return options


@pytest.mark.parametrize("name", [o.name for o in OPTIONS if o.where in ("options", "limits")])
def test_a_check_option_means_the_same_from_cli_toml_txt_and_api(name, tmp_path, monkeypatch):
    args, line, value, expected = NON_DEFAULT[name]
    _, cli = _from_cli(args)
    assert _field(cli, name) == expected
    assert cli == CheckOptions(**{} if BY_NAME[name].where == "limits" else {name: expected},
                               limits=cli.limits)  # nothing else moved from its default
    assert _from_toml(tmp_path, line).options == cli
    assert _from_txt(tmp_path, args).options == cli
    assert _from_api(monkeypatch, name, value) == cli


@pytest.mark.parametrize("name", [o.name for o in KINDS])
def test_a_kind_option_means_the_same_on_its_command_and_in_a_batch_case(name, tmp_path):
    args, line, _, expected = NON_DEFAULT[name]
    command = step_command if name in STEP_KIND else check_command
    extra = [] if name == "optim" or command is check_command else ["--optim", "SGD(lr=0.1)"]
    params, _ = _from_cli([*args, *extra], command)
    assert params[name] == expected
    case = _from_toml(tmp_path, line, optim=name in STEP_KIND and name != "optim")
    assert case.kind[name] == expected
    if command is check_command:  # a txt line is an argument list of `check`
        assert _from_txt(tmp_path, args).kind == {name: expected}


@pytest.mark.parametrize("name", [o.name for o in OPTIONS if o.where == "module"])
def test_a_module_option_means_the_same_on_the_command_and_in_a_module_case(name, tmp_path):
    """gradcheck module's own options (options.MODULE_OPTIONS): click's value, converted by its row, is the
    value a module [[case]] gets from its TOML key; the replay line of that case writes the flag back."""
    from gradcheck_cli.cli import module_command
    from gradcheck_cli.module_load import parse_init
    args, line, _, expected = NON_DEFAULT[name]
    raw = _parse(module_command, [os.path.join(ROOT, "tests", "modules", "layers.py") + ":NormNet", *args])[name]
    value = BY_NAME[name].convert(raw)
    assert (parse_init(value) if name == "init" else value) == expected
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "layers.py").write_text(open(os.path.join(ROOT, "tests", "modules", "layers.py")).read())
    path = tmp_path / "case.toml"
    path.write_text(f'[[case]]\nmodule = "models/layers.py:NormNet"\nvars = {{ x = "randn(3,4)" }}\n{line}\n')
    (case,) = load_cases(str(path), trust_plugins=True)
    assert case.problem is None, case.problem
    assert case.kind[name] == expected
    assert BY_NAME[name].replay(raw if name == "init" else expected) == args


def test_each_command_takes_the_options_its_groups_give_it():
    for command in (main.commands[name] for name in ("check", "step", "graph", "steps", "module")):  # batch, ops: own --plugin
        names = {p.name for p in command.params}
        for option in OPTIONS:
            assert (option.name in names) == (command.name in option.commands), (command.name, option.name)
    assert set(GROUPS["check"]) >= {"check", "step"}


def test_the_api_signature_names_every_option():
    params = inspect.signature(api_check).parameters
    assert {o.name for o in OPTIONS if o.where in ("options", "limits")} | {"vars", "limits", "expression",
                                                                          "variables"} == set(params)
    assert params["seed"].default == 0 and params["max_memory"].default == DEFAULT_LIMITS.max_memory


def test_api_keywords_are_checked_as_the_cli_checks_them():
    with pytest.raises(InputError, match="--directions must be between 1 and 1000, not 0"):
        api_check("x*2", x=1, directions=0)
    with pytest.raises(InputError, match="--atol must be a number, not 'small'"):
        api_check("x*2", x=1, atol="small")
    with pytest.raises(InputError, match="'x' would have 4 elements; the limit is 3"):
        api_check("x.sum()", x=[1, 2, 3, 4], max_elements=3)
    assert api_check("seed * x", vars={"seed": 2.0}, x=3.0, seed=1).inputs["seed"].analytic == pytest.approx(3.0)


def _replay_options(args):
    from click.testing import CliRunner
    done = CliRunner().invoke(main, ["check", "--json", *args], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    replay = shlex.split(json.loads(done.stdout)["replay"])
    assert replay[:2] == ["gradcheck", "check"]
    return _options(_parse(check_command, list(args))), _options(_parse(check_command, replay[2:])), replay


@pytest.mark.parametrize("extra", [
    ["--order", "2", "--symbolic", "--allow-unreliable", "--atol", "1e-7", "--rtol", "1e-6"],
    ["--fast", "--directions", "5", "--eps", "1e-06", "--method", "central"],
    ["--full", "--max-elements", "100", "--max-length", "300", "--max-depth", "40", "--max-statements", "9",
     "--max-power", "12.5", "--max-memory", "512", "--wrt", "y", "--grad-output", "2"],
    ["--plugin", PLUGIN, "--seed", "-3", "--dtype", "float32", "--method", "richardson"],
])
def test_the_replay_line_reparses_to_the_same_options(extra):
    args = ["(x * y).sin().sum()", "-v", "x=1,2", "-v", "y=0.5", "--method", "complex", *extra]
    original, replayed, replay = _replay_options(args)
    assert replayed == original
    assert original != CheckOptions(method=original.method)  # the test has something to lose


def _batch_json(tmp_path, body):
    from click.testing import CliRunner
    path = tmp_path / "cases.toml"
    path.write_text(body)
    done = CliRunner().invoke(main, ["batch", str(path), "--json"], catch_exceptions=False)
    return done.exit_code, json.loads(done.stdout)["cases"]


@pytest.mark.parametrize("args, toml", [
    (["--order", "2"], "order = 2"),
    (["--fast", "--directions", "5"], "fast = true\ndirections = 5"),
    (["--symbolic"], "symbolic = true"),
    (["--full", "--max-memory", "100"], "fast = false\nmax_memory = 100"),
])
def test_a_batch_case_does_what_the_command_line_does(tmp_path, args, toml):
    from click.testing import CliRunner
    done = CliRunner().invoke(main, ["check", "(x**3 * y.exp()).sum()", "-v", "x=1.5,0.5", "-v", "y=0.25", "--json", *args],
                              catch_exceptions=False)
    assert done.exit_code == 0, done.output
    code, (case,) = _batch_json(tmp_path, f'[[case]]\nexpr = "(x**3 * y.exp()).sum()"\nvars = {{ x = "1.5,0.5", y = 0.25 }}\n'
                                          f"{toml}\n")
    assert code == 0 and case["status"] == "pass"
    assert case["result"] == json.loads(done.stdout)
    assert ("hessians" in json.dumps(case["result"])) == ("--order" in args)


def test_a_lowered_limit_in_a_batch_case_refuses_as_the_command_line_does(tmp_path, gradcheck):
    stderr = gradcheck.error("check", "x.sum()", "-v", "x=1,2,3,4", "--max-elements", "3")
    _, (case,) = _batch_json(tmp_path, '[[case]]\nexpr = "x.sum()"\nvars = { x = [1, 2, 3, 4] }\nmax_elements = 3\n')
    assert case["status"] == "error"
    assert stderr.splitlines()[0] == f"error: {case['message'].splitlines()[0]}"


def test_a_batch_file_that_raises_a_limit_must_be_trusted(tmp_path):
    _, (case,) = _batch_json(tmp_path, '[[case]]\nexpr = "x.sum()"\nvars = { x = [1, 2] }\nmax_memory = 100000\n')
    assert case["status"] == "error"
    assert case["message"] == ("this batch file raises --max-memory to 100000 (default 4096); "
                               "pass --trust-plugins if you trust it")


def test_bad_txt_lines_are_one_line_errors_and_the_batch_goes_on(tmp_path):
    from click.testing import CliRunner
    path = tmp_path / "cases.txt"
    path.write_text('"x*2" -v x=1 --order 3\n'
                    '"x*2" -v x=1 --bogus\n'
                    '"x*2" -v 1x=1\n'
                    '"x*2" -v x=1 --dtype float64,float32\n'
                    '"x*2" -v x=1 --json\n'
                    '--name nothing\n'
                    '"-log(p).mean()" -v p=0.2,0.7 --name "leading minus" --method central\n'
                    '"x*2" -v x=1 --xfail "known" --atol 0 --rtol 0 --eps 0.5 --method central\n')
    done = CliRunner().invoke(main, ["batch", str(path), "--json"], catch_exceptions=False)
    assert done.exit_code == 2
    cases = json.loads(done.stdout)["cases"]
    assert [c["status"] for c in cases] == ["error"] * 6 + ["pass", "xpass"]
    assert [c["message"] for c in cases[:6]] == [
        "Invalid value for '--order': 3 is not in the range 1<=x<=2.",
        "No such option '--bogus'.",
        "Invalid value for '-v' / '--var': expected NAME=SPEC such as a=2,3 or w=randn(3,4), got '1x=1'",
        "a batch case runs one dtype; give --dtype a single value",
        "No such option '--json'.",
        "the line has no expression"]
    assert all("\n" not in c["message"] for c in cases[:6])
    assert cases[6]["name"] == "leading minus"
    assert cases[6]["result"]["inputs"]["p"]["analytic"] == pytest.approx([-0.5 / 0.2, -0.5 / 0.7])


def test_unknown_toml_keys_are_refused_with_the_allowed_ones(tmp_path):
    _, (case,) = _batch_json(tmp_path, '[[case]]\nexpr = "x*2"\norderr = 2\n')
    allowed = case["message"].split("allowed: ")[1].split(", ")
    assert case["message"].startswith("unknown key 'orderr'; allowed: ")
    from gradcheck_cli.kinds import MODULE_CASE_KEYS  # gradcheck module's case keys (SPEC v2 batch TOML)
    assert set(allowed) == {o.name for o in OPTIONS} | {"name", "expr", "vars", "expect", "xfail"} | set(MODULE_CASE_KEYS)
    _, (case,) = _batch_json(tmp_path, '[defaults]\noptim = "SGD()"\n[[case]]\nexpr = "x*2"\n')
    allowed = case["message"].split("allowed: ")[1].split(", ")
    assert case["message"].startswith("unknown key 'optim' in [defaults]; allowed: ")
    assert set(allowed) == {o.name for o in OPTIONS if o.where in ("options", "limits")} - {"grad_output"}


@pytest.mark.parametrize("name, ok", [("x", "x"), ("w_1", "w_1"), ("α", "α"), ("ﬁ", "fi"), ("_x", None),
                                      ("1x", None), ("x y", None), ("if", None), ("", None)])
def test_one_rule_for_variable_names(tmp_path, gradcheck, name, ok):
    if ok is None:
        with pytest.raises(InputError):
            variable_name(name)
        assert "Invalid value for '-v' / '--var'" in gradcheck.error("check", "x*2", "-v", f"{name}=1")
        with pytest.raises(InputError, match="is not a variable name"):
            api_check("x*2", vars={name: 1.0})
        _, (case,) = _batch_json(tmp_path, f'[[case]]\nexpr = "x*2"\nvars = {{ {json.dumps(name)} = 1.0 }}\n')
        assert case["status"] == "error" and "is not a variable name" in case["message"]
        return
    assert variable_name(name) == ok
    expr = f"{ok} * 2"
    assert gradcheck.json("check", expr, "-v", f"{name}=1.5")["inputs"][ok]["analytic"] == pytest.approx(2.0)
    assert api_check(expr, vars={name: 1.5}).inputs[ok].analytic == pytest.approx(2.0)
    _, (case,) = _batch_json(tmp_path, f'[[case]]\nexpr = "{expr}"\nvars = {{ {json.dumps(name)} = 1.5 }}\n')
    assert case["status"] == "pass"


def test_every_command_formats_through_the_registry(gradcheck):
    choices = {c.name: next(p for p in c.params if p.name == "fmt").type.choices for c in main.commands.values()
               if any(p.name == "fmt" for p in c.params)}
    assert tuple(choices["batch"]) == formats("batch") == ("table", "json", "github")
    for name in ("check", "step", "graph", "steps", "ops"):
        assert tuple(choices[name]) == formats(name) == ("table", "json")
    assert set(REGISTRY) >= {"check", "ladder", "accumulate", "step", "batch", "graph", "steps", "ops"}


def test_readme_lists_every_batch_key():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## `gradcheck batch PATH...`"):]
    section = section[:section.index("\n## ", 5)]
    missing = [o.name for o in OPTIONS if f"`{o.name}`" not in section and f"{o.name} =" not in section]
    assert not missing


def test_a_txt_line_is_parsed_as_check_parses_it(tmp_path):
    from gradcheck_cli.txtline import parse_line
    assert parse_line(["x*2", "-v", "x=1", "--name", "--fast"])["name"] == "--fast"  # a value, not the flag
    assert parse_line(["x*2", "-v", "x=1", "--name", "--fast"])["fast"] is None
    line = parse_line(["x*2", "-vx=1", "--seed=3", "--full"])
    assert (line["variables"], line["seed"], line["fast"], line["directions"]) == ((("x", "1"),), 3, False, 16)
    with pytest.raises(InputError, match=r"^No such option '--orderr'. Did you mean '--order'\?$"):
        parse_line(["x*2", "--orderr", "2"])
    assert parse_line(["-log(p).mean()", "-v", "p=0.2"])["expr"] == "-log(p).mean()"


def test_a_module_replay_line_reparses_to_the_same_options():
    """The replay of `gradcheck module` is written from the schema rows: every module option and every
    check option (a limit too, which the hand-written line used to drop) parse back to what was given."""
    from click.testing import CliRunner

    from gradcheck_cli.cli import module_command
    target = os.path.join(ROOT, "tests", "modules", "layers.py") + ":NormNet"
    args = [target, "--init", "features=4", "-v", "x=randn(3,4)", "--loss", "out.pow(2).mean()", "--params",
            "*weight", "--train", "--atol", "1e-06", "--max-memory", "300", "--directions", "5", "--full",
            "--method", "richardson"]
    done = CliRunner().invoke(main, ["module", *args, "--json"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    replay = shlex.split(json.loads(done.stdout)["replay"])
    assert replay[:2] == ["gradcheck", "module"]
    given, again = _parse(module_command, args), _parse(module_command, replay[2:])
    assert _options(again) == _options(given)
    assert _options(given).limits.max_memory == 300
    for option in OPTIONS:
        if option.where == "module":
            assert again[option.name] == given[option.name], option.name
