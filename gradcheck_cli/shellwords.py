"""A txt batch line split into arguments as a POSIX shell splits them, in linear time."""
from __future__ import annotations

import re

from .errors import InputError

_WORD = re.compile(r"""[^\s'"\\]+|'([^']*)'|"((?:[^"\\]|\\.)*)"|\\(.)|(['"\\])""", re.DOTALL)
_DOUBLE_QUOTED_ESCAPE = re.compile(r"""\\([$`"\\\n])""")


def split_line(row: str) -> list[str]:
    """A line split into arguments as a POSIX shell does ('...', "...", backslashes; # starts a comment
    at the start of a word), in time linear in its length (shlex is quadratic on long words).

    Raises:
        InputError: an unclosed quote or a trailing backslash.
    """
    tokens: list[str] = []
    position, end = 0, len(row)
    while True:
        while position < end and row[position].isspace():
            position += 1
        if position >= end or row[position] == "#":
            return tokens
        parts = []
        while position < end and not row[position].isspace():
            match = _WORD.match(row, position)
            single, double, escaped, unclosed = match.groups()
            if unclosed is not None:
                what = "a backslash at the end of the line" if unclosed == "\\" else f"no closing {unclosed}"
                raise InputError(f"cannot split the line into arguments: {what}")
            if single is not None:
                parts.append(single)
            elif double is not None:
                parts.append(_DOUBLE_QUOTED_ESCAPE.sub(r"\1", double))
            elif escaped is not None:
                parts.append(escaped)
            else:
                parts.append(match.group())
            position = match.end()
        tokens.append("".join(parts))
