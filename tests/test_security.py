"""Hostile input: nothing an expression or a SPEC says is ever executed, imported or looked up
outside the whitelist. Every case must be refused as bad input (InputError / exit 2), never with
another exception, and never with a side effect. Modelled on simpleeval's test_security.py.
"""
from __future__ import annotations

import os

import pytest

from gradcheck_cli import InputError, check
from gradcheck_cli.ops import OPS, Kind, functions
from gradcheck_cli.parse import parse
from gradcheck_cli.values import parse_spec, resolve


def _sentinel_cases(path: str) -> list[str]:
    """Expressions that would create `path` if any part of them were executed."""
    return [
        f"__import__('os').system('touch {path}')",
        f"os.system('touch {path}')",
        f"open('{path}', 'w')",
        f"torch.save(x, '{path}')",
        f"x.numpy().tofile('{path}')",
        f"eval(\"open('{path}', 'w')\")",
        f"exec(\"open('{path}', 'w')\")",
        f"(lambda: open('{path}', 'w'))()",
        f"[open('{path}', 'w') for _ in x]",
        f"sin(x) if open('{path}', 'w') else x",
        f"f\"{{open('{path}', 'w')}}\"",
        f"(y := open('{path}', 'w'))",
        f"x.__class__.__init__.__globals__['os'].system('touch {path}')",
        f"x.sum(dim=open('{path}', 'w'))",
        f"x[open('{path}', 'w')]",
        f"y = x\nimport os\nos.system('touch {path}')",
    ]


HOSTILE_EXPRESSIONS = [
    # dunder names and attributes
    "__import__", "__builtins__", "__debug__", "__name__", "_", "_x + 1",
    "x.__class__", "x.__class__.__bases__[0].__subclasses__()", "().__class__", "x.__dict__",
    "x.__len__()", "x.__add__(x)", "sin.__globals__", "pi.__class__", "x.T.__class__", "sin(x).__reduce__()",
    "x._version", "x._grad_fn",
    # builtins and escape hatches
    "globals()", "locals()", "vars()", "dir()", "eval('1')", "exec('1')", "compile('1', '', 'eval')",
    "open('/etc/passwd')", "getattr(x, 'data')", "setattr(x, 'a', 1)", "type(x)", "print(x)",
    "input()", "breakpoint()", "help()", "exit()", "quit()", "memoryview(x)", "super()",
    # lambda, comprehensions, walrus, f-strings, starred, strings
    "lambda: 1", "(lambda x: x)(2)", "[i for i in range(3)]", "{i: i for i in x}", "{i for i in x}",
    "(i for i in x)", "(y := 2)", "f'{x}'", "f'{x.__class__}'", "sin(*x)", "sin(**x)", "x.reshape(*x)",
    "'abc'", "b'abc'", "'a' * 10**9", "x * 'a'",
    # attribute access on tensors
    "x.shape", "x.data.shape", "x.grad", "x.grad_fn", "x.device", "x.T.data.T.data.grad", "x.sum", "x.sin",
    # subscripts with non-literal indices
    "x[y.shape]", "x[len(x)]", "x[0:y]", "x[x.__class__]", "x[None]", "x[True]", "x[0.5]", "x['a']",
    # torch.X is an alias of whitelisted ops only
    "torch.load('f')", "torch.load", "torch.save(x, 'f')", "torch.hub.load('a', 'b')",
    "torch.nn.functional.__dict__", "torch.ops.aten.sin(x)", "torch.set_grad_enabled(False)",
    "torch.manual_seed(0)", "torch.from_file('f')", "torch.torch.sin(x)", "torch(x)", "torch.sin",
    "torch.__dict__", "torch.compile(x)",
    # other module-looking names
    "os.system('ls')", "sys.exit(0)", "np.sin(x)", "subprocess.run('ls')", "gradcheck_cli.api.check('x')",
    # tensor methods that are not ops
    "x.numpy()", "x.tolist()", "x.item()", "x.backward()", "x.requires_grad_()", "x.register_hook(print)",
    "x.apply_(print)", "x.storage()", "x.to('cpu')", "x.cuda()", "y = x.fill_(1)", "x.copy_(x)",
    # statements
    "import os", "from os import system", "del x", "global x", "nonlocal x", "def f(): pass",
    "class A: pass", "for i in x: pass", "while 1: pass", "if x: y", "with x: pass",
    "try: x\nexcept: pass", "raise x", "assert x", "return x", "x //= 1", "x @= y", "x: int = 1",
    "async def f(): pass", "@d\ndef f(): pass", "match x:\n case 1: pass",
    # arguments that must be literals
    "x.sum(dim=print)", "x.sum(dim=__import__('os'))", "clamp(x, min=x)", "x.reshape(len(x))",
    "x.sum(keepdim=x)", "x.sum(**{'dim': 0})",
]


@pytest.mark.parametrize("expr", HOSTILE_EXPRESSIONS)
def test_hostile_expression_is_refused_by_the_parser(expr):
    with pytest.raises(InputError) as info:
        parse(expr)
    assert info.value.message


@pytest.mark.parametrize("expr", HOSTILE_EXPRESSIONS)
def test_hostile_expression_exits_2(gradcheck, expr):
    stderr = gradcheck.error("check", "--", expr)
    assert stderr.startswith("error: ")


def test_nothing_is_executed(gradcheck, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = str(tmp_path / "PWNED")
    for expr in _sentinel_cases(path):
        with pytest.raises(InputError):
            check(expr, x=[1.0, 2.0])
        gradcheck.error("check", expr, "-v", "x=1,2")
        gradcheck.error("graph", expr, "-v", "x=1,2")
        assert not os.path.exists(path), expr
    assert os.listdir(tmp_path) == []


def test_torch_namespace_admits_only_table_functions():
    """`torch.NAME(x)` parses exactly when NAME is a named row of the op table."""
    import torch
    named = {n: row for n, row in functions(OPS).items() if not row.mutates}  # x.mul_(2) is a statement
    candidates = sorted(n for n in dir(torch) if not n.startswith("_") and callable(getattr(torch, n, None)))
    refused = [n for n in candidates if n not in named]
    assert {"load", "save", "from_file", "set_grad_enabled"} <= set(refused)
    for name in refused:
        with pytest.raises(InputError, match=f"'{name}'"):
            parse(f"torch.{name}(x)")
    for name in sorted(set(candidates) & set(named)):
        required = [p for p in named[name].params if p.required]
        args = ", ".join("x" if p in named[name].tensor_params else "(x, x)" if p.kind is Kind.TENSORS else "1"
                         for p in required)
        assert parse(f"torch.{name}({args})").ops == {name}


def test_unknown_methods_are_refused():
    """A method is an op of the table called on a receiver; tensor methods outside it are refused."""
    import torch
    named = functions(OPS)
    methods = sorted(n for n in dir(torch.Tensor) if not n.startswith("_") and n not in named and n != "T")
    for name in methods:
        with pytest.raises(InputError):
            parse(f"x.{name}()")


HOSTILE_SPECS = [
    "__import__('os').system('touch PWNED')", "os.system('ls')", "open('/etc/passwd')", "eval('1')",
    "().__class__", "randn.__globals__", "randn(3).__class__", "randn(3)[0]", "lambda: 1",
    "[x for x in range(3)]", "(y := 1)", "1 if 1 else 2", "f'{1}'", "'a'", "b'a'", "{1: 2}", "{1}",
    "randn(10**10)", "randn(1e10)", "ones(*[3])", "ones(**{'a': 1})", "randn(3, seed=1)",
    "randn(3, dtype=float)", "full(2, value=x)", "full(2, value='a')", "linspace(0, 1, -1)",
    "[1, [2]]", "[[1], [2, 3]]", "['a']", "[None]", "True", "None", "...", "1j", "[1j]", "x", "pi",
    "", "   ", ",", "[", "]", "(" * 300 + "1" + ")" * 300, "[" * 5000, "-" * 5000 + "1",
    "1" * 5000, "1e400", "-1e400", "nan", "inf", "randn(3, mean=inf)", "rand(2, low=-inf)",
    "torch.load('f')", "np.ones(3)", "ones(3).numpy()", "randn(" + "9" * 30 + ")",
    "\x00", "1\x00", "\ud800",
]


@pytest.mark.parametrize("spec", HOSTILE_SPECS, ids=lambda s: repr(s[:40]))
def test_hostile_spec_is_refused(spec):
    with pytest.raises(InputError):
        resolve(spec, "x", 0)


ARGV_SPECS = [s for s in HOSTILE_SPECS if "\x00" not in s and "\ud800" not in s]  # argv cannot hold these


@pytest.mark.parametrize("spec", ARGV_SPECS, ids=lambda s: repr(s[:40]))
def test_hostile_spec_exits_2(gradcheck, spec):
    gradcheck.error("check", "(x*2).sum()", "-v", f"x={spec}")
    gradcheck.error("check", "(x*2).sum()", "-v", "x=1,2", "--grad-output", spec)


def test_spec_parser_never_evaluates(tmp_path):
    path = tmp_path / "PWNED"
    for spec in (f"__import__('os').system('touch {path}')", f"open('{path}', 'w')",
                 f"ones(open('{path}', 'w'))", f"[open('{path}', 'w')]", f"full(1, value=open('{path}', 'w'))"):
        with pytest.raises(InputError):
            parse_spec(spec, "x")
    assert not path.exists()


@pytest.mark.parametrize("name", ["__class__", "_x", "x.y", "x-y", "1x", "x[0]", "os.system"])
def test_hostile_variable_names(gradcheck, name):
    stderr = gradcheck.error("check", "x", "-v", f"{name}=1")
    assert "Invalid value for '-v' / '--var'" in stderr


@pytest.mark.parametrize("wrt", ["__import__", "x.y", "os.system('ls')"])
def test_hostile_wrt(gradcheck, wrt):
    stderr = gradcheck.error("check", "x*2", "-v", "x=1", "--wrt", wrt)
    assert "--wrt" in stderr


def test_hostile_values_through_the_api():
    for value in (object(), "x", {"a": 1}, [[1, 2], [3]], True, [1j], "__import__('os')"):
        with pytest.raises(InputError):
            check("(x*2).sum()", x=value)
