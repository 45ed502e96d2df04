"""Expression text → a small IR of statements and nodes, each with a source span. Never evaluates.

The parser is a whitelist over Python's `ast`: `_EXPR_HANDLERS` maps each allowed node type to its
converter, and anything else is refused with the construct's name and column.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import textwrap
import warnings
from typing import Any, Callable, Union

from .errors import InputError, Span
from .ops import CONSTANTS, Kind, OpSpec, OPS, functions


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


@dataclasses.dataclass(frozen=True, eq=False)
class Num:
    value: float
    span: Span


@dataclasses.dataclass(frozen=True, eq=False)
class Name:
    id: str
    span: Span


@dataclasses.dataclass(frozen=True, eq=False)
class Call:
    """An op applied to arguments in its parameter order: nodes for tensors, literals otherwise."""

    op: str
    args: tuple[Any, ...]
    span: Span


Node = Union[Num, Name, Call]


@dataclasses.dataclass(frozen=True, eq=False)
class Statement:
    target: str | None   # the assigned name, or None for a bare expression
    value: Node
    span: Span
    text: str            # the statement's source, for messages


@dataclasses.dataclass(frozen=True)
class Program:
    source: str
    statements: tuple[Statement, ...]
    inputs: tuple[str, ...]         # free names, in order of first use
    intermediates: tuple[str, ...]  # assigned names, in order
    ops: frozenset[str]             # every op the program uses

    @property
    def output(self) -> Statement:
        return self.statements[-1]


_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow",
           ast.MatMult: "matmul"}

# Friendly names for refusal messages only; what is allowed is decided by _EXPR_HANDLERS alone.
_CONSTRUCT_NAMES = {
    "Lambda": "lambda", "ListComp": "a list comprehension", "SetComp": "a set comprehension",
    "DictComp": "a dict comprehension", "GeneratorExp": "a generator expression",
    "NamedExpr": "the walrus operator :=", "JoinedStr": "an f-string", "Starred": "starred arguments",
    "Compare": "a comparison", "BoolOp": "and/or", "IfExp": "a conditional expression",
    "Dict": "a dict", "Set": "a set", "List": "a list", "Tuple": "a tuple", "Await": "await",
    "Yield": "yield", "YieldFrom": "yield", "Slice": "a slice", "FormattedValue": "an f-string",
    "Import": "import", "ImportFrom": "import", "FunctionDef": "def", "ClassDef": "class",
    "For": "a for loop", "While": "a while loop", "If": "if", "With": "with", "Try": "try",
    "Delete": "del", "Global": "global", "Nonlocal": "nonlocal", "AugAssign": "augmented assignment",
    "AnnAssign": "an annotated assignment", "Raise": "raise", "Assert": "assert", "Return": "return",
    "Pass": "pass", "Break": "break", "Continue": "continue", "AsyncFunctionDef": "async def",
}

# Qualified spellings accepted as the plain function: torch.sin(x) is sin(x).
_NAMESPACES = ("torch",)


def _char_col(line_text: str, byte_col: int) -> int:
    """ast columns count UTF-8 bytes; carets count characters."""
    return len(line_text.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


class _Parser:
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

    def program(self) -> Program:
        tree = self._ast()
        self._check_depth(tree)
        if not tree.body:
            raise InputError("the expression is empty; give one, e.g. 'sin(x).sum()'")
        if len(tree.body) > self.limits.max_statements:
            raise self.error(f"too many statements ({len(tree.body)}; the limit is "
                             f"{self.limits.max_statements}, raise it with --max-statements)", tree.body[-1])
        statements, seen_inputs, assigned, used_ops = [], [], [], set()
        for stmt in tree.body:
            target, value_node = self._statement_parts(stmt)
            value = self.expr(value_node)
            for name_node in _names(value):
                if name_node.id not in assigned and name_node.id not in seen_inputs:
                    seen_inputs.append(name_node.id)
            used_ops.update(_ops(value))
            if target is not None:
                self._check_target(target, stmt, seen_inputs, assigned)
                assigned.append(target)
            span = self.span(stmt)
            text = self.lines[span.line - 1][span.col:span.end_col] if span.line - 1 < len(self.lines) else ""
            statements.append(Statement(target, value, span, text.strip()))
        return Program(self.source, tuple(statements), tuple(seen_inputs), tuple(assigned),
                       frozenset(used_ops))

    def _ast(self) -> ast.Module:
        if len(self.source) > self.limits.max_length:
            raise InputError(f"the expression is {len(self.source)} characters long; the limit is "
                             f"{self.limits.max_length} (raise it with --max-length)")
        try:
            with warnings.catch_warnings():  # "invalid decimal literal" and the like: the error says it
                warnings.simplefilter("ignore", SyntaxWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                return ast.parse(self.source, mode="exec")
        except SyntaxError as err:
            line = err.lineno or 1
            col = max((err.offset or 1) - 1, 0)
            end = (err.end_offset - 1) if err.end_offset and err.end_lineno == line else col + 1
            raise InputError(f"syntax error: {err.msg}", self.source, line, col, max(end, col + 1)) from None
        except (RecursionError, MemoryError):
            raise InputError(f"the expression nests too deeply (the limit is {self.limits.max_depth} levels)") from None
        except ValueError as err:  # e.g. a NUL byte, or an integer literal past Python's digit limit
            raise InputError(f"the expression cannot be read: {err}") from None

    def _check_depth(self, tree: ast.AST) -> None:
        """Refuse deep nesting before any recursive walk (iterative, so it cannot overflow)."""
        stack = [(tree, 0)]
        while stack:
            node, depth = stack.pop()
            if depth > self.limits.max_depth:
                raise self.error(f"the expression nests deeper than {self.limits.max_depth} levels "
                                 "(raise it with --max-depth)", node)
            stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))

    def _statement_parts(self, stmt: ast.stmt) -> tuple[str | None, ast.expr]:
        if isinstance(stmt, ast.Expr):
            return None, stmt.value
        if isinstance(stmt, ast.Assign):
            if len(stmt.targets) != 1 or not isinstance(stmt.targets[0], ast.Name):
                raise self.error("assign to one plain name, e.g. 'y = x + 2'", stmt.targets[0])
            return stmt.targets[0].id, stmt.value
        raise self.refuse(stmt)

    def _check_target(self, target: str, stmt: ast.Assign, inputs: list[str], assigned: list[str]) -> None:
        node = stmt.targets[0]
        self._check_name(target, node)
        if target in assigned:
            raise self.error(f"'{target}' is assigned twice; give each intermediate its own name", node)
        if target in inputs:
            raise self.error(f"'{target}' is an input used before this line; assign to a new name", node)
        if target in self.functions or target in CONSTANTS:
            raise self.error(f"'{target}' is a built-in name; assign to another name", node)

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
        op = _BINOPS.get(type(node.op))
        if op is None:
            symbol = {ast.FloorDiv: "//", ast.Mod: "%", ast.LShift: "<<", ast.RShift: ">>",
                      ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^"}.get(type(node.op), "this operator")
            raise self.error(f"'{symbol}' is not supported; use + - * / ** @", node)
        right = self.expr(node.right)
        if op == "pow" and isinstance(right, Num) and abs(right.value) > self.limits.max_power:
            raise self.error(f"the exponent {right.value:g} is larger than {self.limits.max_power:g} "
                             "(raise it with --max-power)", node.right)
        return Call(op, (self.expr(node.left), right), self.span(node))

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
        self._check_name(node.attr, node)
        raise self.error(f"attribute '.{node.attr}' is not allowed; only .T and method calls such as "
                         f"x.sum() are", node)

    def subscript(self, node: ast.Subscript) -> Node:
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        index = tuple(self._index_item(item) for item in items)
        return Call("getitem", (self.expr(node.value), index), self.span(node))

    def _index_item(self, item: ast.expr) -> Any:
        if isinstance(item, ast.Slice):
            parts = [None if p is None else self._int_literal(p, "a slice bound") for p in
                     (item.lower, item.upper, item.step)]
            if parts[2] is not None and parts[2] <= 0:
                raise self.error("a slice step must be positive", item)
            return slice(*parts)
        return self._int_literal(item, "an index")

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
            if isinstance(func.value, ast.Name) and func.value.id in _NAMESPACES:
                receiver = None
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
            raise self.error(f"unknown {kind} '{name}'; run 'gradcheck ops' for the list", func)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.refuse(arg)
        for kw in node.keywords:
            if kw.arg is None:
                raise self.error("**kwargs is not allowed", kw.value)
        positional = ([receiver] if receiver is not None else []) + list(node.args)
        return Call(spec.name, self._bind(spec, positional, node), self.span(node))

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
            return self.expr(arg)
        if param.kind is Kind.ANY:  # a plugin op's argument: a literal is passed as the Python value it is
            try:
                return self.literal(arg)
            except InputError:
                return self.expr(arg)
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
}


def _walk(node: Node):
    """Every node of a tree, iteratively."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, Call):
            stack.extend(a for a in reversed(current.args) if isinstance(a, (Num, Name, Call)))


def _names(node: Node) -> list[Name]:
    return [n for n in _walk(node) if isinstance(n, Name)]


def _ops(node: Node) -> set[str]:
    return {n.op for n in _walk(node) if isinstance(n, Call)}


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
