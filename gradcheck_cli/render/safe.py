"""A stranger's text made safe to show: control characters as escapes, and what XML 1.0 forbids."""
from __future__ import annotations

import re

# C0 and C1 controls, DEL, bidi overrides and other invisible format characters, line/paragraph
# separators, lone surrogates: none of them may reach a terminal or a log raw
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]")
_CONTROL_OR_NEWLINE = re.compile(_CONTROL.pattern[:-1] + "\n]")
# XML 1.0: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return {9: "\\t", 10: "\\n", 13: "\\r"}.get(code) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(text: str, newlines: bool = False) -> str:
    """`text` with control characters written as escapes (\\x1b, \\u202e); newlines kept if `newlines`."""
    return (_CONTROL if newlines else _CONTROL_OR_NEWLINE).sub(_escape, str(text))


def xml_text(text: str) -> str:
    """`text` with every character XML 1.0 forbids written as an escape, so any parser reads the file."""
    return _NOT_XML.sub(_escape, visible(str(text), newlines=True))
