"""Statements of the expression language: assignments, `with no_grad():` blocks and in-place changes.

A mixin of the parser (`parse._Parser`): it turns each statement of Python's ast into a `Statement`,
and leaves expressions to the parser's whitelist.
"""
from __future__ import annotations

import ast

from .errors import InputError, Span
from .ir import Call, Name, Node, Program, Statement, _names, _ops
from .ops import CONSTANTS

# Qualified spellings accepted as the plain function: torch.sin(x) is sin(x), F.linear(...) is linear(...).
_NAMESPACES = ("torch", "torch.nn.functional", "nn.functional", "F", "torch.special", "torch.linalg")
_NO_GRAD = ("no_grad", "torch.no_grad", "torch.autograd.no_grad")
_AUG = {ast.Add: "add_", ast.Sub: "sub_", ast.Mult: "mul_", ast.Div: "div_", ast.Pow: "pow_"}
_CREATORS = ("tensor", "as_tensor", "ones", "zeros", "randn", "rand", "full", "arange", "linspace")


def _dotted(node: ast.AST) -> str | None:
    """`torch.nn.functional` for a chain of plain names, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


class StatementParser:
    """Statement handling of the parser; expressions come from the class it is mixed into."""

    def program(self) -> Program:
        tree = self._ast()
        self._check_depth(tree)
        items = self._flatten(tree.body)
        if not items:
            raise InputError("the expression is empty; give one, e.g. 'sin(x).sum()'")
        if len(items) > self.limits.max_statements:
            raise self.error(f"too many statements ({len(items)}; the limit is "
                             f"{self.limits.max_statements}, raise it with --max-statements)", items[-1][0])
        self.inputs: list[str] = []
        self.assigned: list[str] = []
        self.modified: list[str] = []
        statements, used_ops = [], set()
        for stmt, no_grad in items:
            statement = self._statement(stmt, no_grad)
            used_ops.update(_ops(statement.value))
            statements.append(statement)
        return Program(self.source, tuple(statements), tuple(self.inputs), tuple(self.assigned),
                       frozenset(used_ops), tuple(self.modified))

    def _flatten(self, body: list[ast.stmt]) -> list[tuple[ast.stmt, bool]]:
        """Statements in order, each with whether it stands under `with no_grad()`."""
        items = []
        for stmt in body:
            if not isinstance(stmt, ast.With):
                items.append((stmt, False))
                continue
            self._check_with(stmt)
            one_line = stmt.body[0].lineno == stmt.lineno
            for k, inner in enumerate(stmt.body):
                if isinstance(inner, ast.With):
                    raise self.error("with blocks do not nest; one 'with no_grad():' is enough", inner)
                # `with no_grad(): y = ...; z = ...`: a ';' does not continue a with line (the SPEC)
                items.append((inner, not one_line or k == 0))
        return items

    def _check_with(self, stmt: ast.With) -> None:
        item = stmt.items[0]
        call = item.context_expr
        name = _dotted(call.func) if isinstance(call, ast.Call) else None
        if len(stmt.items) != 1 or name not in _NO_GRAD or call.args or call.keywords or item.optional_vars:
            raise self.error("only 'with no_grad():' (or 'with torch.no_grad():') is supported", stmt.items[0].context_expr)

    def _statement(self, stmt: ast.stmt, no_grad: bool) -> Statement:
        span = self.span(stmt)
        text = self.lines[span.line - 1][span.col:span.end_col] if span.line - 1 < len(self.lines) else ""
        text = text.strip()
        if isinstance(stmt, ast.Expr):
            if self._is_inplace_call(stmt.value):
                return self._inplace_call(stmt, no_grad, span, text)
            value = self.expr(stmt.value)  # a pasted print(...) is explained first
            if no_grad:
                raise self.error("an expression under no_grad has no gradient to check; assign it to a name "
                                 "there (y = ...) and use the name after the block", stmt)
            self._note_inputs(value)
            return Statement(None, value, span, text)
        if isinstance(stmt, ast.Assign):
            if len(stmt.targets) != 1:
                raise self.error("assign to one name at a time, e.g. 'y = x + 2'", stmt.targets[1])
            target = stmt.targets[0]
            if isinstance(target, ast.Name):
                self._check_creation(target.id, stmt.value)
                value = self.expr(stmt.value)
                self._note_inputs(value)
                self._check_target(target.id, stmt)
                self.assigned.append(target.id)
                untracked = no_grad and not isinstance(value, Name)  # `y = x` under no_grad is x itself
                return Statement(target.id, value, span, text, untracked=untracked)
            if isinstance(target, ast.Subscript):
                name, data, base = self._inplace_target(target.value)
                index = self._index(target)
                value = self.expr(stmt.value)
                call = Call("setitem", (Name(name, self.span(base)), index, value), span)
                return self._inplace(name, call, span, text, no_grad, data)
            raise self.error("assign to one plain name (y = ...), or change one in place (y[0] = ..., y += ..., "
                             "y.mul_(2))", target)
        if isinstance(stmt, ast.AugAssign):
            return self._augmented(stmt, no_grad, span, text)
        raise self.refuse(stmt)

    def _check_creation(self, name: str, node: ast.expr) -> None:
        """`x = torch.tensor([1., 2.], requires_grad=True)` from a notebook: say how to give x instead."""
        if not isinstance(node, ast.Call):
            return
        func = _dotted(node.func) or ""
        maker = func.split(".")[-1]
        if maker not in _CREATORS or func.split(".")[0] not in ("torch", "t", maker):
            return
        keep = [ast.get_source_segment(self.source, a) or "" for a in node.args]
        spec = keep[0] if maker in ("tensor", "as_tensor") and keep else f"{maker}({', '.join(keep)})"
        raise self.error(f"'{name}' is an input: give its value with -v {name}=\"{spec}\" (gradcheck sets "
                         f"requires_grad itself; --wrt picks which inputs get gradients) and leave this line out",
                         node)

    def _augmented(self, stmt: ast.AugAssign, no_grad: bool, span: Span, text: str) -> Statement:
        method = _AUG.get(type(stmt.op))
        if method is None:
            symbol = {ast.MatMult: "@=", ast.FloorDiv: "//=", ast.Mod: "%="}.get(type(stmt.op), "this operator")
            raise self.error(f"'{symbol}' has no in-place form here; use += -= *= /= **=", stmt)
        target = stmt.target
        if isinstance(target, ast.Subscript):  # y[i] += v is y[i] = y[i] + v, as Python runs it
            name, data, base = self._inplace_target(target.value)
            index = self._index(target)
            value = self.expr(stmt.value)
            old = Call("getitem", (Name(name, self.span(base)), index), self.span(target))
            new = Call(method[:-1], (old, value), span)
            call = Call("setitem", (Name(name, self.span(base)), index, new), span)
            return self._inplace(name, call, span, text, no_grad, data)
        name, data, base = self._inplace_target(target)
        value = self.expr(stmt.value)
        call = Call(method, (Name(name, self.span(base)), value), span)
        return self._inplace(name, call, span, text, no_grad, data)

    def _is_inplace_call(self, node: ast.expr) -> bool:
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            return False
        spec = self.functions.get(node.func.attr)
        return spec is not None and spec.mutates and _dotted(node.func.value) not in _NAMESPACES

    def _inplace_call(self, stmt: ast.Expr, no_grad: bool, span: Span, text: str) -> Statement:
        node = stmt.value
        name, data, base = self._inplace_target(node.func.value)
        spec = self.functions[node.func.attr]
        receiver = ast.Name(id=name, ctx=ast.Load())
        ast.copy_location(receiver, base)
        receiver.end_lineno, receiver.end_col_offset = base.end_lineno, base.end_col_offset
        self._inplace_ok = True
        try:
            args = self._bind(spec, [receiver, *node.args], node)
        finally:
            self._inplace_ok = False
        return self._inplace(name, Call(spec.name, args, span), span, text, no_grad, data)

    def _inplace_target(self, node: ast.expr) -> tuple[str, bool, ast.expr]:
        """The name an in-place statement changes: `y` or `y.data`."""
        data = False
        if isinstance(node, ast.Attribute) and node.attr == "data" and isinstance(node.value, ast.Name):
            node, data = node.value, True
        if not isinstance(node, ast.Name):
            raise self.error("in-place statements change a name: y[0] = ..., y += ..., y.mul_(2) "
                             "(for a part of y, index it: y[0] *= 2)", node)
        self._check_name(node.id, node)
        if node.id in CONSTANTS or node.id in self.functions:
            raise self.error(f"'{node.id}' is a built-in name; it cannot be changed in place", node)
        return node.id, data, node

    def _inplace(self, name: str, call: Call, span: Span, text: str, no_grad: bool, data: bool) -> Statement:
        if name not in self.assigned and name not in self.inputs:
            self.inputs.append(name)  # `a[2] = 1` on a variable: an input, changed in place
        self._note_inputs(call)
        if name not in self.modified:
            self.modified.append(name)
        return Statement(name, call, span, text, inplace=True, untracked=no_grad or data, data=data)

    def _note_inputs(self, value: Node) -> None:
        for name_node in _names(value):
            if name_node.id not in self.assigned and name_node.id not in self.inputs:
                self.inputs.append(name_node.id)

    def _check_target(self, target: str, stmt: ast.Assign) -> None:
        node = stmt.targets[0]
        self._check_name(target, node)
        if target in self.functions or target in CONSTANTS:
            raise self.error(f"'{target}' is a built-in name; assign to another name", node)
        if target in self.assigned or target in self.inputs:
            what = "assigned twice" if target in self.assigned else "an input used before this line"
            raise self.error(f"'{target}' is {what}; a name is assigned once, so give this value a new name "
                             f"(e.g. '{target}2 = ...'), or change '{target}' in place ({target}[0] = ..., "
                             f"{target} += ..., {target}.mul_(2))", node)
