"""One exception type for bad input, and the exit statuses."""
from __future__ import annotations

import enum


_MAX_SHOWN = 100  # characters of a source line shown above a caret


class ExitStatus(enum.IntEnum):
    """Process exit statuses, the same for every command."""

    OK = 0
    MISMATCH = 1
    BAD_INPUT = 2


class InputError(Exception):
    """Bad input: a message, and where in the source (or file) it was found.

    Args:
        message: one line saying what was expected, what was found, and the fix.
        source: the text the position refers to (an expression), if any.
        line: 1-based line in ``source``.
        col: 0-based column (characters, not bytes) where the span starts.
        end_col: 0-based column just past the span; defaults to ``col + 1``.
        path: the file the input came from, if any.
    """

    def __init__(self, message: str, source: str | None = None, line: int | None = None,
                 col: int | None = None, end_col: int | None = None, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.source = source
        self.line = line
        self.col = col
        self.end_col = end_col
        self.path = path

    def __str__(self) -> str:
        return self.message

    def located(self, source: str, span: "Span") -> "InputError":
        """The same error, placed at ``span`` of ``source`` unless already placed."""
        if self.source is None:
            self.source = source
            self.line, self.col, self.end_col = span.line, span.col, span.end_col
        return self

    def caret_lines(self) -> list[str]:
        """The offending source line and a caret row under the span (empty if none)."""
        if self.source is None or self.line is None or self.col is None:
            return []
        lines = self.source.splitlines() or [""]
        text = lines[min(self.line, len(lines)) - 1]
        end = self.end_col if self.end_col and self.end_col > self.col else self.col + 1
        end = min(end, max(len(text), self.col + 1))
        col = self.col
        if len(text) > _MAX_SHOWN:  # show a window around the span, not a 20,000-character line
            start = max(0, min(col - _MAX_SHOWN // 2, len(text) - _MAX_SHOWN))
            text = text[start:start + _MAX_SHOWN]
            col, end = col - start, min(end - start, _MAX_SHOWN)
        return [text, " " * col + "^" * max(end - col, 1)]

    def format(self) -> str:
        """The message, then the source line and caret row, as shown on stderr."""
        head = f"{self.path}: {self.message}" if self.path else self.message
        return "\n".join([head, *("  " + row for row in self.caret_lines())])


class Span:
    """A source position: 1-based line, 0-based [col, end_col) in characters."""

    __slots__ = ("line", "col", "end_col")

    def __init__(self, line: int, col: int, end_col: int):
        self.line = line
        self.col = col
        self.end_col = end_col

    def __repr__(self) -> str:
        return f"Span({self.line}, {self.col}, {self.end_col})"
