"""gradcheck's own fuzz campaign (issue 11): random expressions, SPECs, TOML and txt batch files through
the Python API and the CLI, and a corpus of escape payloads that must all be refused with no side effect.

    python bench/fuzz.py                    # the full campaign: 100,000+ inputs, bounded to ~15 min
    python bench/fuzz.py --count 5000 --seed 3 --minutes 2

It counts inputs tried; tracebacks (any exception other than InputError through the API; through the
CLI an exit status other than 0/1/2, an exception out of the command, or "Traceback" in its output; in
a batch, a case reported as "unexpected ..."), escapes (a payload accepted, a canary file written, or a
module imported), hangs (an input over the per-input time limit) and corrupted reports (--json output
that is not one strict JSON document, or anything on stdout with exit 2). Same seed, same inputs.
Exit status 1 when any of those is nonzero.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from gradcheck_cli import InputError, check, run_batch  # noqa: E402
from gradcheck_cli.cli import main  # noqa: E402
from gradcheck_cli.ops import OPS, functions  # noqa: E402

FUNCS = sorted(functions(OPS))
NAMES = ["x", "y", "w"]
NUMBERS = ["0", "1", "2", "0.5", "-1", "3", "1e-300", "1e308", "1e400", "pi", "e", "inf", "10", "0.0", "2.5e-3"]
BINOPS = ["+", "-", "*", "/", "**", "@", "//", "%", "<", "and"]
KWARGS = ["dim=0", "dim=-1", "dim=1", "keepdim=True", "dim=(0,1)", "min=0", "max=1", "p=2", "dim=()", "dim=5"]
INDEXES = ["0", "-1", "1:", ":", "::2", "0, 1", ":, 0", "5", "1:0", "None", "..."]
MUTATION_CHARS = list("()[]{},.;:=+-*/@_'\"\\\n\t #!$%^&|~`?<>0123456789xyz") + ["é", "١", "\u200b", "\x00", "𝑥"]
SPEC_PARTS = ["randn", "rand", "ones", "zeros", "full", "arange", "linspace", "long", "eye", "__import__"]


CRASHED = re.compile(r"unexpected [A-Z][A-Za-z]*(Error|Exception|Exit|Interrupt)?: ")  # batch's catch-all


class Hang(BaseException):
    """Raised by the per-input alarm; a BaseException so that no `except Exception` swallows it."""


# ---------------------------------------------------------------- generators


def expression(rng: random.Random, depth: int = 4) -> str:
    """A random expression: mostly well-formed trees over the op table, some mutated into garbage."""
    def tree(d: int) -> str:
        r = rng.random()
        if d <= 0 or r < 0.22:
            return rng.choice(NAMES) if rng.random() < 0.7 else rng.choice(NUMBERS)
        if r < 0.42:
            return f"({tree(d - 1)} {rng.choice(BINOPS[:6] if rng.random() < 0.95 else BINOPS)} {tree(d - 1)})"
        if r < 0.48:
            return f"-{tree(d - 1)}"
        if r < 0.75:
            args = [tree(d - 1) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
            if rng.random() < 0.25:
                args.append(rng.choice(KWARGS))
            return f"{rng.choice(FUNCS)}({', '.join(args)})"
        if r < 0.9:
            extra = rng.choice(["", "", "0", rng.choice(KWARGS), "2, 3", "-1"])
            return f"{tree(d - 1)}.{rng.choice(FUNCS + ['T'])}({extra})".replace(".T()", ".T")
        return f"{tree(d - 1)}[{rng.choice(INDEXES)}]"

    text = tree(depth)
    if rng.random() < 0.15:  # several statements
        text = f"y2 = {tree(2)}; z2 = y2 * {tree(2)}; {rng.choice(['z2', 'z2.sum()', 'y2 + z2'])}"
    if rng.random() < 0.3:  # mutate into near-misses
        chars = list(text)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(chars) + 1)
            op = rng.random()
            if op < 0.4 and chars:
                del chars[min(i, len(chars) - 1)]
            elif op < 0.7:
                chars.insert(i, rng.choice(MUTATION_CHARS))
            elif chars:
                chars[min(i, len(chars) - 1)] = rng.choice(MUTATION_CHARS)
        text = "".join(chars)
    return text


def spec(rng: random.Random) -> str:
    """A random SPEC: numbers, lists (some ragged), generators with odd arguments, garbage."""
    r = rng.random()
    if r < 0.2:
        return rng.choice(["2", "-0.5", "1e308", "1e999", "nan", "inf", "-inf", "0x10", "1_000", "True", "None",
                           "[]", "[[]]", "[[1],[2,3]]", "1,", ",", "١", "2j", "'a'", "-" * rng.randint(1, 2000) + "1",
                           "[" * 300 + "]" * 300, "+-+-2", "..."])
    if r < 0.45:
        n = rng.randint(0, 6)
        items = [repr(round(rng.uniform(-3, 3), 3)) for _ in range(n)]
        return ",".join(items) if rng.random() < 0.5 else "[" + ", ".join(items) + "]"
    if r < 0.6:
        rows, cols = rng.randint(1, 3), rng.randint(1, 3)
        return "[" + ", ".join("[" + ", ".join(str(rng.randint(-3, 3)) for _ in range(cols + (rng.random() < 0.1)))
                               + "]" for _ in range(rows)) + "]"
    func = rng.choice(SPEC_PARTS)
    args = [rng.choice(["0", "1", "2", "3", "-1", "2.5", "1e9", "10**7", "x", "(2,3)", "[2]", "100000"])
            for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.3:
        args.append(rng.choice(["value=0.5", "low=1", "high=0", "mean=nan", "std=-1", "std=2", "foo=1", "**k"]))
    text = f"{func}({', '.join(args)})"
    if rng.random() < 0.15:
        text = text[:rng.randrange(len(text))]
    return text


def toml_file(rng: random.Random) -> str:
    parts = []
    if rng.random() < 0.2:
        default = rng.choice(['dtype = "float32"', 'method = "central"', "seed = -1", "atol = 1e-6", "bogus = 1",
                              'seed = "a"'])
        parts.append(f"[defaults]\n{default}\n")
    for _ in range(rng.randint(0, 3)):
        lines = ["[[case]]", f"expr = {json.dumps(expression(rng, 3))}"]
        if rng.random() < 0.6:
            values = ", ".join(f"{n} = {json.dumps(spec(rng))}" if rng.random() < 0.5 else
                               f"{n} = {rng.choice(['[1.0, 2.0]', '2', '[[1, 2], [3, 4]]', '[]', 'true', '{a = 1}'])}"
                               for n in rng.sample(NAMES, rng.randint(1, 3)))
            lines.append(f"vars = {{ {values} }}")
        if rng.random() < 0.3:
            lines.append(rng.choice(["grad_output = [1.0, 1.0]", "wrt = [1]", "wrt = 'x'", "atol = 'big'",
                                     "expect = { x = [1.0] }", "name = \"[/]\"", "method = \"taylor\"",
                                     "order = 2", "fast = true", "rtol = -1"]))
        parts.append("\n".join(lines) + "\n")
    text = "".join(parts)
    if rng.random() < 0.1:
        cut = rng.randrange(len(text) + 1)
        text = text[:cut] + rng.choice(["[[", "=", "\"", "\x00", "[" * 2000]) + text[cut:]
    return text


def txt_file(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(0, 3)):
        args = [json.dumps(expression(rng, 3))]
        for n in rng.sample(NAMES, rng.randint(0, 3)):
            args += ["-v", json.dumps(f"{n}={spec(rng)}")]
        if rng.random() < 0.3:
            args.append(rng.choice(["--fast", "--method taylor", "--order 2", "--grad-output 1,1", "--seed -1",
                                    "--dtype float32", "--bogus", "--wrt q", "'unclosed", "#comment"]))
        lines.append(" ".join(args))
    return "\n".join(lines) + ("\n" if rng.random() < 0.8 else "")


def check_options(rng: random.Random) -> dict[str, Any]:
    options: dict[str, Any] = {}
    r = rng.random()
    if r < 0.1:
        options["method"] = rng.choice(["central", "richardson", "complex", "taylor"])
    elif r < 0.15:
        options["order"] = 2
    elif r < 0.2:
        options["fast"] = True
    elif r < 0.25:
        options["grad_output"] = rng.choice(["1", "1,1,1", "[[1,1]]", "randn(3)", "ones(2,3)"])
    elif r < 0.28:
        options["dtype"] = "float32"
    elif r < 0.3:
        options["seed"] = rng.choice([-1, 2**63, 7])
    return options


def values_for(rng: random.Random) -> dict[str, Any]:
    shapes = {"x": rng.choice([(), (3,), (2, 3)]), "y": rng.choice([(), (3,)]), "w": rng.choice([(3,), (3, 3)])}
    np_rng = np.random.default_rng(rng.randrange(2**32))
    return {n: np_rng.uniform(0.2, 1.5, size=s) for n, s in shapes.items()}


# ---------------------------------------------------------------- escape corpus

_PRIMITIVES = [
    "__import__('os').system('touch {canary}')", "open('{canary}', 'w')", "os.system('touch {canary}')",
    "eval(\"open('{canary}','w')\")", "exec(\"open('{canary}','w')\")", "compile('1','<s>','exec')",
    "globals()['__builtins__']", "().__class__.__bases__[0].__subclasses__()", "x.__class__.__mro__",
    "x.__reduce_ex__(2)", "sin.__globals__", "getattr(x, '__class__')", "vars(x)", "breakpoint()",
    "torch.save(x, '{canary}')", "x.numpy().tofile('{canary}')", "torch.load('{canary}')",
    "importlib.import_module('subprocess')", "__builtins__.open('{canary}', 'w')", "type(x)",
    "x.T.__init__.__globals__", "sys.modules", "subprocess.call(['touch', '{canary}'])",
    "np.save('{canary}', x)", "pickle.loads(b'')", "ctypes.CDLL(None)", "socket.socket()",
    "'{{0.__class__}}'.format(x)", "'%s' % x", "x.__format__('')", "x ** 10 ** 10 ** 10", "9 ** 9 ** 9 ** 9",
    "lambda: open('{canary}','w')", "[open('{canary}','w') for _ in [1]]", "{{open('{canary}','w')}}",
    "(q := open('{canary}', 'w'))", "f\"{{open('{canary}','w')}}\"", "x if open('{canary}','w') else x",
    "ｏｐｅｎ('{canary}', 'w')", "__ｉｍｐｏｒｔ__('os')", "\u200bopen('{canary}','w')", "x.\u0073um.__self__",
    "sin(" * 400 + "x" + ")" * 400, "-" * 5000 + "x", "(" * 300 + "x" + ")" * 300, "x" + ".T" * 3000,
    "torch.ops.aten.sin(x)", "torch.nn.Module()", "torch.hub.load('a','b')", "torch.classes.load_library('{canary}')",
]
_CONTEXTS = [
    "{p}", "sin({p})", "x + {p}", "x.sum(dim={p})", "x[{p}]", "y = {p}; x", "y = x\n{p}", "sin(x) * ({p})",
    "clamp(x, min={p})", "[{p}]", "{p}.sum()", "with no_grad(): y = {p}\ny",
]


def escape_payloads(canary: str) -> list[str]:
    """Every primitive in every context: over 600 expressions that must all be refused."""
    return [c.format(p=p.format(canary=canary)) for p in _PRIMITIVES for c in _CONTEXTS]


def escape_specs(canary: str) -> list[str]:
    return [p.format(canary=canary) for p in _PRIMITIVES] + [
        "randn(__import__('os').getpid())", "ones(*[2])", "full(2, value=open('x'))", "rand(2)[0]",
        "randn(3).__class__", "zeros(2) if 1 else 0", "[x for x in (1,2)]", "{'a': 1}", "b'12'", "...",
    ]


# ---------------------------------------------------------------- drivers


class Tally:
    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.kinds: dict[str, str] = {}   # traceback kind -> an example input
        self.escapes: list[str] = []
        self.hangs: list[str] = []
        self.corrupt: list[str] = []

    def traceback(self, err: BaseException, example: str) -> None:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if "gradcheck_cli" in f.filename]
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        kind = f"{type(err).__name__} at {where}: {str(err).splitlines()[0][:100] if str(err) else ''}"
        self.counts["tracebacks"] += 1
        self.kinds.setdefault(kind, example)

    def summary(self) -> dict[str, Any]:
        return {"inputs": self.counts["inputs"], "by_kind": {k: v for k, v in self.counts.items() if k != "inputs"},
                "tracebacks": self.counts["tracebacks"], "traceback_kinds": len(self.kinds),
                "escapes": len(self.escapes), "hangs": len(self.hangs), "reports_corrupted": len(self.corrupt)}


@contextlib.contextmanager
def time_limit(seconds: float):
    def alarm(signum: int, frame: Any) -> None:
        raise Hang()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Campaign:
    def __init__(self, seed: int, limit: float, workdir: Path):
        self.rng = random.Random(seed)
        self.limit = limit
        self.work = workdir
        self.canary = str(workdir / "CANARY")
        self.tally = Tally()
        self.runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "80"})

    def guarded(self, what: str, example: str, fn: Callable[[], Any]) -> Any:
        self.tally.counts["inputs"] += 1
        self.tally.counts[what] += 1
        try:
            with time_limit(self.limit):
                return fn()
        except InputError:
            return InputError
        except Hang:
            self.tally.hangs.append(f"{what}: {example[:200]!r}")
        except Exception as err:  # noqa: BLE001 - counting what escapes is the point
            self.tally.traceback(err, f"{what}: {example[:300]!r}")
        return None

    def api_expression(self) -> None:
        text = expression(self.rng)
        values = values_for(self.rng)
        options = check_options(self.rng)
        used = {n: v for n, v in values.items() if n in text}
        self.guarded("api expressions", text, lambda: check(text, vars=used, **options))

    def api_spec(self) -> None:
        text = spec(self.rng)
        self.guarded("api specs", text, lambda: check("(x * 2).sum()", x=text))

    def cli(self, args: list[str], what: str, is_json: bool) -> None:
        def run() -> None:
            result = self.runner.invoke(main, args, catch_exceptions=True)
            output = result.stdout + result.stderr
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                raise result.exception
            if result.exit_code not in (0, 1, 2) or "Traceback" in output:
                raise RuntimeError(f"exit {result.exit_code}: {output[-300:]}")
            batch = args[0] == "batch"  # a batch reports its error cases too: exit 2 with a JSON report
            if result.exit_code == 2 and result.stdout.strip() and not batch:
                self.tally.corrupt.append(f"{what}: stdout on exit 2: {args!r}")
            elif is_json and (result.exit_code in (0, 1) or batch and result.stdout.strip()):
                try:
                    json.loads(result.stdout, parse_constant=_refuse)
                except ValueError:
                    self.tally.corrupt.append(f"{what}: {args!r}")
            if batch and result.stdout.strip():
                for case in json.loads(result.stdout, parse_constant=_refuse).get("cases", []):
                    if CRASHED.match(case.get("message") or ""):
                        raise RuntimeError(f"a batch case crashed: {case['message'][:200]}")
        self.guarded(what, " ".join(args), run)

    def cli_check(self) -> None:
        text = expression(self.rng)
        args = ["check", text] + [a for n in NAMES if n in text for a in ("-v", f"{n}={spec(self.rng)}")]
        if self.rng.random() < 0.5:
            args.append("--json")
        options = args[:args.index("--")] if "--" in args else args  # after '--', '--json' is an expression
        self.cli(args, "cli check", "--json" in options)

    def batch_file(self, via_cli: bool) -> None:
        kind = "toml" if self.rng.random() < 0.5 else "txt"
        path = self.work / f"case.{kind}"
        path.write_text(toml_file(self.rng) if kind == "toml" else txt_file(self.rng), encoding="utf-8")
        if via_cli:
            self.cli(["batch", str(path), "--json", "--timeout", "0"], f"cli batch {kind}", True)
            return

        def run() -> None:
            result = run_batch([str(path)], (), 1, None)
            for case in result.cases:
                if CRASHED.match(case.message or ""):
                    raise RuntimeError(f"case {case.name}: {case.message[:200]}")
        self.guarded(f"api batch {kind}", path.read_text(encoding="utf-8")[:300], run)

    def escapes(self) -> None:
        before = set(sys.modules)
        for payload in escape_payloads(self.canary):
            if self.guarded("escape expressions", payload, lambda: check(payload, x=[1.0, 2.0], y=1.0)) \
                    is not InputError:
                self.tally.escapes.append(f"accepted: {payload[:200]!r}")
        for payload in escape_specs(self.canary):
            if self.guarded("escape specs", payload, lambda: check("x.sum()", x=payload)) is not InputError:
                self.tally.escapes.append(f"accepted SPEC: {payload[:200]!r}")
        for payload in escape_payloads(self.canary)[::12]:  # one of each primitive through the CLI too
            self.cli(["check", payload, "-v", "x=1,2"], "escape cli", False)
        if os.path.exists(self.canary):
            self.tally.escapes.append("the canary file was written")
        new = sorted(set(sys.modules) - before)
        if new:
            self.tally.escapes.append(f"modules imported: {', '.join(new[:20])}")

    def subprocesses(self, count: int) -> None:
        for _ in range(count):
            text = expression(self.rng)
            args = [sys.executable, "-m", "gradcheck_cli", "check", text, "--json"] + \
                [a for n in NAMES if n in text for a in ("-v", f"{n}={spec(self.rng)}")]

            def run() -> None:
                env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
                done = subprocess.run(args, capture_output=True, text=True, timeout=self.limit * 6, env=env)
                if done.returncode not in (0, 1, 2) or "Traceback" in done.stdout + done.stderr:
                    raise RuntimeError(f"exit {done.returncode}: {(done.stdout + done.stderr)[-300:]}")
                if done.returncode in (0, 1):
                    json.loads(done.stdout, parse_constant=_refuse)
            self.guarded("subprocess check", " ".join(args[3:]), run)


def _refuse(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def warm_up() -> None:
    """Lazy imports (sympy through torch, rich, the renderers) happen here, before any alarm is armed
    and before the escape corpus snapshots sys.modules."""
    check("sin(x).sum()", x=[1.0, 2.0])
    check("x*y", x=[1.0, 2.0], y=1.0, method="taylor", grad_output=[1.0, 1.0])
    CliRunner().invoke(main, ["check", "sin(x)", "-v", "x=1", "--json"])
    CliRunner().invoke(main, ["check", "sin(x)*x", "-v", "x=1,2"])
    CliRunner().invoke(main, ["check", "-", "-v", "x=1"])
    CliRunner().invoke(main, ["check"])
    CliRunner().invoke(main, ["check", "--help"])
    CliRunner().invoke(main, ["check", "x", "--bogus"])


def run(count: int, seed: int, minutes: float, limit: float, subprocess_count: int,
        workdir: Path | None = None, escapes: bool = True) -> dict[str, Any]:
    """The campaign: `count` random inputs (mixed by kind), the escape corpus, some subprocesses."""
    warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        campaign = Campaign(seed, limit, Path(workdir or tmp))
        if escapes:
            campaign.escapes()
        deadline = time.monotonic() + minutes * 60
        mix = [(0.62, campaign.api_expression), (0.82, campaign.api_spec), (0.9, campaign.cli_check),
               (0.97, lambda: campaign.batch_file(False)), (1.0, lambda: campaign.batch_file(True))]
        start = time.monotonic()
        while campaign.tally.counts["inputs"] < count and time.monotonic() < deadline:
            r = campaign.rng.random()
            next(fn for edge, fn in mix if r < edge)()
        campaign.subprocesses(subprocess_count)
        if os.path.exists(campaign.canary):
            campaign.tally.escapes.append("the canary file was written")
        summary = campaign.tally.summary()
        summary["seconds"] = round(time.monotonic() - start, 1)
        summary["seed"] = seed
        summary["kinds"] = campaign.tally.kinds
        summary["escape_list"] = campaign.tally.escapes
        summary["hang_list"] = campaign.tally.hangs
        summary["corrupt_list"] = campaign.tally.corrupt
        summary["escape_corpus"] = len(escape_payloads("c")) + len(escape_specs("c"))
        return summary


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="random inputs (escapes come on top)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=14.0, help="stop generating after this long")
    parser.add_argument("--limit", type=float, default=20.0, help="seconds one input may take (a hang)")
    parser.add_argument("--subprocesses", type=int, default=30)
    args = parser.parse_args()
    summary = run(args.count, args.seed, args.minutes, args.limit, args.subprocesses)
    for key in ("kinds", "escape_list", "hang_list", "corrupt_list"):
        for item in summary[key] if isinstance(summary[key], list) else summary[key].items():
            print(f"{key}: {item}", file=sys.stderr)
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_list") and k != "kinds"}, indent=2))
    bad = summary["tracebacks"] + summary["escapes"] + summary["hangs"] + summary["reports_corrupted"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main_())
