"""Features the expression language deliberately leaves out, and must keep leaving out.

Like simpleeval's test_deliberately_missed_features.py: each construct is refused with a message
that names it and says where it is, so a user knows what to write instead. If one of these starts to
parse, that is a decision to take on purpose (and to move out of this file), not an accident.
"""
from __future__ import annotations

import pytest

from gradcheck_cli import InputError
from gradcheck_cli.parse import parse

REFUSED = [
    # (expression, words the message must contain, the refused text the caret sits under)
    ("lambda x: x", "lambda is not allowed", "lambda x: x"),
    ("[i for i in x]", "list comprehension is not allowed", "[i for i in x]"),
    ("{i: 1 for i in x}", "dict comprehension is not allowed", "{i: 1 for i in x}"),
    ("{i for i in x}", "set comprehension is not allowed", "{i for i in x}"),
    ("sum(i for i in x)", "generator expression is not allowed", "(i for i in x)"),
    ("(y := x) * 2", "walrus operator := is not allowed", "y := x"),
    ("f'{x}'", "f-string is not allowed", "f'{x}'"),
    ("sin(*x)", "starred arguments", "*x"),
    ("sin(**x)", "**kwargs is not allowed", "x"),
    ("a < b < c", "chained comparisons are not supported", "a < b < c"),
    ("x is y", "only < <= > >= == != compare values", "x is y"),
    ("x and y", "and/or is not allowed", "x and y"),
    ("x if y else 1", "conditional expression is not allowed", "x if y else 1"),
    ("not x", "only unary minus and plus", "not x"),
    ("~x", "only unary minus and plus", "~x"),
    ("x // 2", "'//' is not supported", "x // 2"),
    ("x % 2", "'%' is not supported", "x % 2"),
    ("x << 1", "'<<' is not supported", "x << 1"),
    ("x | y", "'|' is not supported", "x | y"),
    ("x & y", "'&' is not supported", "x & y"),
    ("x ^ y", "'^' is not supported", "x ^ y"),
    ("'text'", "a string is not allowed", "'text'"),
    ("x * 1j", "1j is not allowed", "1j"),
    ("x * True", "True is not allowed", "True"),
    ("x + None", "None is not allowed", "None"),
    ("[1, 2] * x", "a list is not allowed", "[1, 2]"),
    ("(1, 2)", "a tuple is not allowed", "(1, 2)"),
    ("{1: 2}", "a dict is not allowed", "{1: 2}"),
    ("{1}", "a set is not allowed", "{1}"),
    ("x.shape", "attribute '.shape' is not allowed", "x.shape"),
    ("x.grad * 2", "attribute '.grad' is not allowed", "x.grad"),
    ("x.grad", "attribute '.grad' is not allowed", "x.grad"),
    ("x.__class__", "names starting with '_' are not allowed", "x.__class__"),
    ("_hidden * 2", "names starting with '_' are not allowed", "_hidden"),
    ("x[sin]", "'sin' is a function", "sin"),
    ("x[0:n]", "expected a literal", "n"),
    ("x[None]", "index must be an integer literal", "None"),
    ("x[None]", "index must be an integer literal", "None"),
    ("x[0.5]", "index must be an integer literal", "0.5"),
    ("x[::-1]", "slice step must be positive", "::-1"),
    ("x.sum(dim=d)", "expected a literal", "d"),
    ("x.sum(dim=())", "empty tuple", "()"),
    ("x.sum(dim=True)", "'dim' must be dims", "True"),
    ("x.sum(keepdim=1)", "'keepdim' must be bool", "1"),
    ("x.reshape(2.5)", "'shape' must be integers", "2.5"),
    ("sin(x)(x)", "only named functions and methods can be called", "sin(x)"),
    ("torch.load(x)", "unknown function 'load'", "torch.load"),
    ("x.numpy()", "unknown method 'numpy'", "x.numpy"),
    ("x.backward()", "unknown method 'backward'", "x.backward"),
    ("eval(x)", "unknown function 'eval'", "eval"),
    ("sin", "'sin' is a function; call it", "sin"),
    ("sin(x, x)", "sin() takes at most 1 arguments", "x"),
    ("sin(y=x)", "sin() has no argument 'y'", "x"),
    ("x.sum(dim=0, dim=1)", "sum() got 'dim' twice", "1"),
    ("clamp(x, min='a')", "expected a literal", "'a'"),
    ("import os", "import is not allowed", "import os"),
    ("del x", "del is not allowed", "del x"),
    ("x @= y", "'@=' has no in-place form here", "x @= y"),
    ("x: float = 1", "annotated assignment is not allowed", "x: float = 1"),
    ("a, b = x", "assign to one plain name", "a, b"),
    ("x.data = 1", "assign to one plain name", "x.data"),
    ("for i in x: y", "for loop is not allowed", "for i in x: y"),
    ("while x: y", "while loop is not allowed", "while x: y"),
    ("if x: y", "if is not allowed", "if x: y"),
    ("def f(): pass", "def is not allowed", "def f(): pass"),
    ("class A: pass", "class is not allowed", "class A: pass"),
    ("return x", "return is not allowed", "return x"),
    ("assert x", "assert is not allowed", "assert x"),
    ("pi = 3", "'pi' is a built-in name", "pi"),
    ("sum = x", "'sum' is a built-in name", "sum"),
    ("y = x; y = 2*x; y", "assigned twice", "y"),
]


@pytest.mark.parametrize("expr, words, under", REFUSED, ids=[r[0] for r in REFUSED])
def test_stays_refused(expr, words, under):
    with pytest.raises(InputError) as info:
        parse(expr)
    err = info.value
    assert words in err.message
    assert err.source == expr and err.line == 1
    assert expr[err.col:err.end_col] == under


@pytest.mark.parametrize("expr, words, under", REFUSED[:12], ids=[r[0] for r in REFUSED[:12]])
def test_stays_refused_on_the_command_line(gradcheck, expr, words, under):
    stderr = gradcheck.error("check", "--", expr)
    assert words in stderr.splitlines()[0]
    source_row, caret_row = stderr.rstrip("\n").splitlines()[-2:]
    assert source_row == "  " + expr
    assert caret_row == "  " + " " * expr.index(under) + "^" * len(under)


@pytest.mark.parametrize("expr", ["x.T", "x.sum()", "torch.sin(x)", "x[0, 1:2]", "-x ** 2", "+x",
                                  "x.mean(dim=(0, 1))", "clamp(x, min=-inf)", "y = x\nz = y * 2\nz"])
def test_the_nearby_allowed_forms_parse(expr):
    """The whitelist is not so tight that the features the SPEC promises are refused."""
    program = parse(expr)
    assert program.inputs == ("x",)
