"""A txt batch line's arguments, parsed by click's own parser of `gradcheck check` (plus --name and --xfail).

click processes every parameter of a command for every parse, the absent ones too (their defaults, types,
callbacks): about 2 ms a line for `check`'s 27, which would make loading a 10⁵-line file slower than
running it with -j. So each line is parsed by a command holding only the parameters its tokens mention
(the same click Parameter objects, cached per set), and the others take the defaults click gives them on
an empty line. Errors are click's own; an unknown option is re-parsed by the whole command so that its
message (and click's "did you mean") is the one `gradcheck check` gives.
"""
from __future__ import annotations

from typing import Any

import click

from .errors import InputError

_DISPLAY = ("rows", "fmt", "as_json", "explain")  # how `check` shows a result: no meaning in a batch line
_commands: dict[frozenset[str] | None, click.Command] = {}
_state: dict[str, Any] = {}


def _params() -> list[click.Parameter]:
    if "params" not in _state:
        from .cli import check
        params = [p for p in check.params if p.name not in _DISPLAY]
        params += [click.Option(["--name"], help="The case's name in reports."),
                   click.Option(["--xfail"], metavar="WHY", help="Expected to fail, because WHY.")]
        _state["params"] = params
        _state["by_flag"] = {flag: p for p in params if isinstance(p, click.Option)
                             for flag in (*p.opts, *p.secondary_opts)}
    return _state["params"]


def _command(names: frozenset[str] | None) -> click.Command:
    """The `check` parser over these parameters (None: all of them)."""
    if names not in _commands:
        from .cli import ExpressionCommand

        class LineCommand(ExpressionCommand):
            parser: Any = None

            def make_parser(self, ctx: click.Context) -> Any:  # built once per parameter set
                if self.parser is None:
                    self.parser = super().make_parser(ctx)
                    short, long = getattr(self.parser, "_short_opt", None), getattr(self.parser, "_long_opt", None)
                    if isinstance(short, dict) and isinstance(long, dict):
                        # `-v` found as it is: click first looks it up as a long option, and the NoSuchOption
                        # it raises (translated, with spelling suggestions) costs more than the rest of the line
                        for flag, option in short.items():
                            long.setdefault(flag, option)
                self.parser.ctx = ctx
                return self.parser

        params = [p for p in _params() if names is None or p.name in names]
        _commands[names] = LineCommand("check", params=params, add_help_option=False)
    return _commands[names]


def _defaults() -> dict[str, Any]:
    if "defaults" not in _state:
        _state["defaults"] = _command(None).make_context("check", ["x"]).params
    return _state["defaults"]


def _mentioned(tokens: list[str]) -> frozenset[str]:
    """The parameters whose flags appear among the tokens (as `--x`, `--x=v` or `-vVALUE`), and EXPR."""
    by_flag = _state["by_flag"]
    names = {"expr"}
    for token in tokens:
        if token.startswith("-"):
            param = by_flag.get(token.split("=", 1)[0]) or by_flag.get(token[:2])
            if param is not None:
                names.add(param.name)
    return frozenset(names)


def parse_line(tokens: list[str]) -> dict[str, Any]:
    """Every parameter's value (defaults included) for one line; InputError with click's one-line message."""
    _params()
    try:
        try:
            params = _command(_mentioned(tokens)).make_context("check", list(tokens)).params
        except click.NoSuchOption:  # its message as the whole command gives it (with click's suggestions)
            params = _command(None).make_context("check", list(tokens)).params
    except click.MissingParameter as err:
        if err.param is not None and err.param.name == "expr":
            raise InputError("the line has no expression") from None
        raise InputError(err.format_message()) from None
    except click.ClickException as err:
        raise InputError(err.format_message()) from None
    return {**_defaults(), **params}
