"""Expression text → a small IR of statements and nodes, each with a source span. Never evaluates.

The parser is a whitelist over Python's `ast`: `_EXPR_HANDLERS` maps each allowed node type to its
converter, and anything else is refused with the construct's name and column.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import re
import textwrap
import warnings
from typing import Any, Callable

from .errors import InputError, Span
from .ir import Call, Name, Node, Num, Program, Statement, _arg_nodes, _names, _ops, _walk  # noqa: F401
from .ops import CONSTANTS, Kind, OpSpec, OPS, functions
from .statements import _NAMESPACES, StatementParser, _dotted


@dataclasses.dataclass(frozen=True)
class Limits:
    """Named limits for hostile input; each has a CLI option to raise it."""

    max_length: int = 20_000          # characters of expression text
    max_depth: int = 200              # nesting of the syntax tree
    max_statements: int = 500
    max_power: float = 1_000.0        # |literal exponent| in a ** b
    max_elements: int = 10_000_000    # elements of any one input tensor
    max_memory: int = 4_096           # MB one case may use: inputs, autograd, Jacobian, numeric side


DEFAULT_LIMITS = Limits()

MAX_DIMS = 63  # numpy's and torch's 64, less the batch axis the numeric engine adds


_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow",
           ast.MatMult: "matmul"}

# Friendly names for refusal messages only; what is allowed is decided by _EXPR_HANDLERS alone.
_CONSTRUCT_NAMES = {
    "Lambda": "lambda", "ListComp": "a list comprehension", "SetComp": "a set comprehension",
    "DictComp": "a dict comprehension", "GeneratorExp": "a generator expression",
    "NamedExpr": "the walrus operator :=", "JoinedStr": "an f-string", "Starred": "starred arguments",
    "BoolOp": "and/or", "IfExp": "a conditional expression",
    "Dict": "a dict", "Set": "a set", "List": "a list", "Tuple": "a tuple", "Await": "await",
    "Yield": "yield", "YieldFrom": "yield", "Slice": "a slice", "FormattedValue": "an f-string",
    "Import": "import", "ImportFrom": "import", "FunctionDef": "def", "ClassDef": "class",
    "For": "a for loop", "While": "a while loop", "If": "if", "With": "with", "Try": "try",
    "Delete": "del", "Global": "global", "Nonlocal": "nonlocal", "AugAssign": "augmented assignment",
    "AnnAssign": "an annotated assignment", "Raise": "raise", "Assert": "assert", "Return": "return",
    "Pass": "pass", "Break": "break", "Continue": "continue", "AsyncFunctionDef": "async def",
}

# Namespaces a learner may type that gradcheck does not need: its functions run on both sides.
_FOREIGN = {"np": "numpy's", "numpy": "numpy's", "math": "math's", "t": "torch's (as t)"}
_COMPARE = {ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne"}


# What a pasted notebook line calls that gradcheck does itself: the hint after "unknown function".
_HINTS = {
    "backward": "gradcheck differentiates the last statement itself; leave backward() out "
                "(backward(gradient=g) is --grad-output g)",
    "print": "gradcheck shows the values and gradients itself; leave print out",
    "tensor": "give values with -v, e.g. -v x=1,2 (and -v t=\"long([0, 2])\" for integers)",
    "requires_grad_": "every variable gets requires_grad; hold one constant with --wrt",
    "item": "gradcheck shows values itself; leave .item() out",
    "zero_grad": "each check starts from zero gradients",
}


def quiet_parse(text: str, mode: str) -> ast.AST:
    """ast.parse without the SyntaxWarning or DeprecationWarning Python prints for text such as '1if'
    ("invalid decimal literal"): it would land on stderr beside our one-line message."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return ast.parse(text, mode=mode)


def _char_col(line_text: str, byte_col: int) -> int:
    """ast columns count UTF-8 bytes; carets count characters."""
    return len(line_text.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


class _Parser(StatementParser):
    def __init__(self, source: str, table: dict[str, OpSpec], limits: Limits):
        self.source = source
        self.lines = source.splitlines() or [""]
        self.table = table
        self.functions = functions(table)
        self.limits = limits

    # ---- positions and errors ----

    def span(self, node: ast.AST) -> Span:
        line = getattr(node, "lineno", 1)
        text = self.lines[line - 1] if line - 1 < len(self.lines) else ""
        col = _char_col(text, getattr(node, "col_offset", 0))
        end_line = getattr(node, "end_lineno", line) or line
        end_byte = getattr(node, "end_col_offset", None)
        end = len(text) if end_line != line or end_byte is None else _char_col(text, end_byte)
        return Span(line, col, max(end, col + 1))

    def error(self, message: str, node: ast.AST) -> InputError:
        span = self.span(node)
        return InputError(message, self.source, span.line, span.col, span.end_col)

    def refuse(self, node: ast.AST) -> InputError:
        kind = type(node).__name__
        what = _CONSTRUCT_NAMES.get(kind, kind)
        return self.error(f"{what} is not allowed in an expression", node)

    # ---- statements ----

    def _ast(self) -> ast.Module:
        if len(self.source) > self.limits.max_length:
            raise InputError(f"the expression is {len(self.source)} characters long; the limit is "
                             f"{self.limits.max_length} (raise it with --max-length)")
        try:
            return quiet_parse(self.source, "exec")
        except SyntaxError as err:
            line = err.lineno or 1
            col = max((err.offset or 1) - 1, 0)
            end = (err.end_offset - 1) if err.end_offset and err.end_lineno == line else col + 1
            text = self.lines[line - 1] if line - 1 < len(self.lines) else ""
            joined = re.search(r";\s*with\b", text)
            if joined:  # y1 = x**2; with no_grad(): ... is not Python: a with block starts a line
                raise InputError("a 'with' block starts its own line: put a newline before 'with' (a ';' "
                                 "cannot lead into one)", self.source, line, joined.start(), joined.end()) from None
            raise InputError(f"syntax error: {err.msg}", self.source, line, col, max(end, col + 1)) from None
        except (RecursionError, MemoryError):
            raise InputError(f"the expression nests too deeply for Python's parser (the limit is "
                             f"{self.limits.max_depth} levels; a chain a + b + ... of some 3,000 terms or more "
                             "is too long too: split it into statements, s1 = ...; s2 = ...; s1 + s2)") from None
        except ValueError as err:  # e.g. a NUL byte, or an integer literal past Python's digit limit
            raise InputError(f"the expression cannot be read: {err}") from None

    def _check_depth(self, tree: ast.AST) -> None:
        """Refuse deep nesting before any recursive walk (iterative, so it cannot overflow). A chain of
        binary operators (`a + b + c + ...`, which Python nests to the left) is one level, not one a term:
        the parser and the walker both go down such chains by iteration."""
        stack = [(tree, 0)]
        while stack:
            node, depth = stack.pop()
            if depth > self.limits.max_depth:
                raise self.error(f"the expression nests deeper than {self.limits.max_depth} levels "
                                 "(raise it with --max-depth)", node)
            for child in ast.iter_child_nodes(node):
                chain = isinstance(node, ast.BinOp) and child is node.left and isinstance(child, ast.BinOp)
                stack.append((child, depth if chain else depth + 1))

    def _check_name(self, name: str, node: ast.AST) -> None:
        if name.startswith("_"):
            raise self.error(f"names starting with '_' are not allowed: '{name}'", node)

    # ---- expressions ----

    def expr(self, node: ast.expr) -> Node:
        handler = _EXPR_HANDLERS.get(type(node))
        if handler is None:
            raise self.refuse(node)
        return handler(self, node)

    def constant(self, node: ast.Constant) -> Node:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "a string" if isinstance(value, (str, bytes)) else repr(value)
            raise self.error(f"{kind} is not allowed here; expected a number or a tensor expression", node)
        number = float(value) if abs(value) < 1e308 else math.inf
        if not math.isfinite(number):
            raise self.error(f"the number {value!r} is not finite", node)
        return Num(number, self.span(node))

    def name(self, node: ast.Name) -> Node:
        self._check_name(node.id, node)
        if node.id in CONSTANTS:
            return Num(CONSTANTS[node.id], self.span(node))
        if node.id in self.functions:
            raise self.error(f"'{node.id}' is a function; call it, e.g. {node.id}(x)", node)
        return Name(node.id, self.span(node))

    def binop(self, node: ast.BinOp) -> Node:
        spine = []  # a left-nested chain a + b - c ...: walked by iteration, left to right
        while isinstance(node, ast.BinOp):
            spine.append(node)
            node = node.left
        value = self.expr(node)
        for current in reversed(spine):
            op = _BINOPS.get(type(current.op))
            if op is None:
                symbol = {ast.FloorDiv: "//", ast.Mod: "%", ast.LShift: "<<", ast.RShift: ">>",
                          ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^"}.get(type(current.op), "this operator")
                raise self.error(f"'{symbol}' is not supported; use + - * / ** @", current)
            right = self.expr(current.right)
            if op == "pow" and isinstance(right, Num) and abs(right.value) > self.limits.max_power:
                raise self.error(f"the exponent {right.value:g} is larger than {self.limits.max_power:g} "
                                 "(raise it with --max-power)", current.right)
            value = Call(op, (value, right), self.span(current))
        return value

    def compare(self, node: ast.Compare) -> Node:
        if len(node.ops) != 1:
            raise self.error("chained comparisons are not supported; compare two values at a time", node)
        op = _COMPARE.get(type(node.ops[0]))
        if op is None:
            raise self.error("only < <= > >= == != compare values here", node)
        return Call(op, (self.expr(node.left), self.expr(node.comparators[0])), self.span(node))

    def unaryop(self, node: ast.UnaryOp) -> Node:
        operand = self.expr(node.operand)
        if isinstance(node.op, ast.UAdd):
            return operand
        if not isinstance(node.op, ast.USub):
            raise self.error("only unary minus and plus are supported", node)
        if isinstance(operand, Num):
            return Num(-operand.value, self.span(node))
        return Call("neg", (operand,), self.span(node))

    def attribute(self, node: ast.Attribute) -> Node:
        if node.attr == "T":
            return Call("T", (self.expr(node.value),), self.span(node))
        if node.attr == "data":  # x.data: x's value without its history, as detach()
            return Call("detach", (self.expr(node.value),), self.span(node))
        self._check_name(node.attr, node)
        if node.attr == "grad":
            raise self.error("attribute '.grad' is not allowed: it is what gradcheck computes and shows; "
                             "leave it out", node)
        raise self.error(f"attribute '.{node.attr}' is not allowed; only .T, .data and method calls such as "
                         f"x.sum() are", node)

    def subscript(self, node: ast.Subscript) -> Node:
        value = self.expr(node.value)
        return Call("getitem", (value, self._index(node)), self.span(node))

    def _index(self, node: ast.Subscript) -> tuple[Any, ...]:
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        return tuple(self._index_item(item) for item in items)

    def _index_item(self, item: ast.expr) -> Any:
        """An int or a slice of ints (literals), `...`, or a tensor: a mask (x > 0) or integer labels."""
        if isinstance(item, ast.Slice):
            parts = [None if p is None else self._int_literal(p, "a slice bound") for p in
                     (item.lower, item.upper, item.step)]
            if parts[2] is not None and parts[2] <= 0:
                raise self.error("a slice step must be positive", item)
            return slice(*parts)
        if isinstance(item, ast.Constant) and item.value is Ellipsis:
            return Ellipsis
        literal = isinstance(item, ast.Constant) or (isinstance(item, ast.UnaryOp) and
                                                    isinstance(item.operand, ast.Constant))
        if literal:
            return self._int_literal(item, "an index")
        return self.expr(item)

    def _int_literal(self, node: ast.expr, what: str) -> int:
        value = self.literal(node)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{what} must be an integer literal", node)
        return value

    def literal(self, node: ast.expr) -> Any:
        """A literal argument: number, True/False/None, inf, or a tuple/list of those."""
        if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (bool, int, float))):
            if isinstance(node.value, int) and not isinstance(node.value, bool) and abs(node.value) > 2**62:
                raise self.error("this integer is too large", node)
            return node.value
        if isinstance(node, ast.Name) and node.id == "inf":
            return math.inf
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = self.literal(node.operand)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return -value
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(self.literal(elt) for elt in node.elts)
        raise self.error("expected a literal here (a number, True/False, None or a tuple of ints)", node)

    def call(self, node: ast.Call) -> Node:
        func = node.func
        receiver = None
        if isinstance(func, ast.Name):
            name = func.id
        elif isinstance(func, ast.Attribute):
            name = func.attr
            prefix = _dotted(func.value)
            root = prefix.split(".")[0] if prefix else None
            if prefix in _NAMESPACES:
                receiver = None
            elif root in _FOREIGN and root not in self._variables():
                raise self.error(f"{_FOREIGN[root]} namespace is not needed: write {name}(...) "
                                 f"(gradcheck runs each function in torch and in numpy itself)", func.value)
            else:
                receiver = func.value
        else:
            raise self.error("only named functions and methods can be called", func)
        self._check_name(name, func)
        if receiver is not None:  # judge what a method is called on before the method itself
            self.expr(receiver)
        spec = self.functions.get(name)
        if spec is None:
            kind = "method" if receiver is not None else "function"
            hint = _HINTS.get(name, "run 'gradcheck ops' for the list")
            raise self.error(f"unknown {kind} '{name}'; {hint}", func)
        if spec.mutates and not getattr(self, "_inplace_ok", False):
            raise self.error(f"'{name}' changes a tensor in place: give it a statement of its own on a name "
                             f"(y.{name}(...)), or use the plain '{name[:-1]}' for a new value", func)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.refuse(arg)
        for kw in node.keywords:
            if kw.arg is None:
                raise self.error("**kwargs is not allowed", kw.value)
        positional = ([receiver] if receiver is not None else []) + list(node.args)
        return Call(spec.name, self._bind(spec, positional, node), self.span(node))

    def _variables(self) -> set[str]:
        """Names the program has bound or read so far (a variable called `t` is not a namespace)."""
        return set(getattr(self, "inputs", ())) | set(getattr(self, "assigned", ()))

    def _bind(self, spec: OpSpec, positional: list[ast.expr], node: ast.Call) -> tuple[Any, ...]:
        """Match arguments to the op's parameters; tensors become nodes, the rest literals."""
        bound: dict[str, Any] = {}
        params = list(spec.params)
        queue = list(positional)
        for param in params:
            if not queue:
                break
            if param.kind is Kind.SHAPE:
                bound[param.name] = queue
                queue = []
                break
            bound[param.name] = queue.pop(0)
        if queue:
            raise self.error(f"{spec.name}() takes at most {len(params)} arguments "
                             f"({spec.signature()})", queue[0])
        names = {p.name: p for p in params}
        for kw in node.keywords:
            if kw.arg not in names:
                raise self.error(f"{spec.name}() has no argument '{kw.arg}' ({spec.signature()})", kw.value)
            if kw.arg in bound:
                raise self.error(f"{spec.name}() got '{kw.arg}' twice", kw.value)
            bound[kw.arg] = [kw.value] if names[kw.arg].kind is Kind.SHAPE else kw.value
        values = []
        for param in params:
            if param.name not in bound:
                if param.required:
                    raise self.error(f"{spec.name}() is missing '{param.name}' ({spec.signature()})", node)
                values.append(param.default)
            else:
                values.append(self._argument(spec, param, bound[param.name]))
        return tuple(values)

    def _argument(self, spec: OpSpec, param, arg: Any) -> Any:
        if param.kind is Kind.TENSOR:
            if isinstance(arg, ast.Constant) and arg.value is None and not param.required:
                return None  # linear(x, w, None): the optional tensor left out
            return self.expr(arg)
        if param.kind is Kind.ANY:  # a plugin op's argument: a literal is passed as the Python value it is
            try:
                return self.literal(arg)
            except InputError:
                return self.expr(arg)
        if param.kind is Kind.TENSORS:
            if not isinstance(arg, (ast.Tuple, ast.List)) or not arg.elts:
                raise self.error(f"{spec.name}() takes a tuple or list of tensors, e.g. {spec.name}((a, b))", arg)
            return tuple(self.expr(elt) for elt in arg.elts)
        if param.kind is Kind.SHAPE:
            items = [self.literal(a) for a in arg]
            shape = items[0] if len(items) == 1 and isinstance(items[0], tuple) else tuple(items)
            if not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
                raise self.error(f"{spec.name}(): '{param.name}' must be integers", arg[0] if arg else None)
            if len(shape) > MAX_DIMS:
                raise self.error(f"{spec.name}(): at most {MAX_DIMS} dims are supported, not {len(shape)}", arg[0])
            return shape
        value = self.literal(arg)
        ok = {
            Kind.INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
            Kind.DIM: lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
            Kind.DIMS: lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)) or (
                isinstance(v, tuple) and all(isinstance(d, int) and not isinstance(d, bool) for d in v)),
            Kind.BOOL: lambda v: isinstance(v, bool),
            Kind.NUMBER: lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
        }[param.kind](value)
        if not ok:
            raise self.error(f"{spec.name}(): '{param.name}' must be {param.kind.value}, not {value!r}", arg)
        if param.kind is Kind.DIMS and value == ():  # torch reads dim=() as "every dim", numpy as "none"
            raise self.error(f"{spec.name}(): '{param.name}' is an empty tuple; name the dims, or leave "
                             f"'{param.name}' out to reduce over all of them", arg)
        return float(value) if param.kind is Kind.NUMBER and value is not None else value


_EXPR_HANDLERS: dict[type, Callable[[_Parser, Any], Node]] = {
    ast.Constant: _Parser.constant,
    ast.Name: _Parser.name,
    ast.BinOp: _Parser.binop,
    ast.UnaryOp: _Parser.unaryop,
    ast.Call: _Parser.call,
    ast.Attribute: _Parser.attribute,
    ast.Subscript: _Parser.subscript,
    ast.Compare: _Parser.compare,
}


def normalize(source: str) -> str:
    """Remove common indentation and surrounding blank lines, so pasted blocks parse."""
    return textwrap.dedent(source.replace("\r\n", "\n")).strip("\n").rstrip()


def parse(source: str, table: dict[str, OpSpec] | None = None, limits: Limits = DEFAULT_LIMITS) -> Program:
    """Parse expression text into a Program.

    Args:
        source: one or more statements separated by ';' or newlines; the last is the output.
        table: the op table (the built-ins, or a copy extended by plugins).
        limits: the limits for hostile input.

    Raises:
        InputError: for anything outside the whitelist, with its position.
    """
    if not isinstance(source, str):
        raise InputError(f"the expression must be text, not {type(source).__name__}")
    try:
        return _Parser(normalize(source), OPS if table is None else table, limits).program()
    except RecursionError:  # only reachable when --max-depth was raised past what Python can walk
        raise InputError(f"the expression nests too deeply to parse (--max-depth is {limits.max_depth}; "
                         "lower it)") from None


@dataclasses.dataclass(frozen=True)
class LiteralCall:
    """`Name(key=literal, ...)` as an option gives it (`--optim "SGD(lr=0.01)"`); never evaluated."""

    source: str
    name: str                      # the callee, dotted as written: "SGD", "torch.optim.SGD"
    name_span: Span
    keywords: dict[str, Any]       # keyword → literal (numbers, True/False/None, tuples of those)
    spans: dict[str, Span]         # keyword → the span of `key=value`, for carets

    def error(self, message: str, keyword: str | None = None) -> InputError:
        """Bad input placed under a keyword (or under the callee's name)."""
        span = self.spans[keyword] if keyword is not None else self.name_span
        return InputError(message, self.source, span.line, span.col, span.end_col)


def parse_literal_call(source: str, what: str, limits: Limits = DEFAULT_LIMITS) -> LiteralCall:
    """Parse one call with keyword literals, such as `SGD(lr=0.01, betas=(0.9, 0.999))`.

    Args:
        source: the text, e.g. an option's value.
        what: how messages name it, e.g. "--optim".

    Raises:
        InputError: anything but a named call with literal keyword arguments, with its position.
    """
    if not isinstance(source, str):
        raise InputError(f"{what} must be text, not {type(source).__name__}")
    parser = _Parser(source.strip(), OPS, limits)
    tree = parser._ast()
    parser._check_depth(tree)
    example = f"{what} \"SGD(lr=0.01, momentum=0.9)\""
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr) or not isinstance(tree.body[0].value, ast.Call):
        raise InputError(f"{what} must be one call with keyword arguments, e.g. {example}", parser.source, 1, 0,
                         max(len(parser.source), 1))
    call = tree.body[0].value
    parts, func = [], call.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        raise parser.error(f"{what} must call a name, e.g. {example}", call.func)
    name = ".".join([func.id, *reversed(parts)])
    if call.args:
        raise parser.error(f"{what} takes keyword arguments only, e.g. {example}", call.args[0])
    keywords, spans = {}, {}
    for kw in call.keywords:
        if kw.arg is None:
            raise parser.error("**kwargs is not allowed", kw.value)
        if kw.arg in keywords:
            raise parser.error(f"'{kw.arg}' is given twice", kw)
        keywords[kw.arg] = parser.literal(kw.value)
        spans[kw.arg] = parser.span(kw)
    return LiteralCall(parser.source, name, parser.span(call.func), keywords, spans)
