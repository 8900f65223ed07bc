"""Text fit for a terminal or a one-line message: sizes in the units the docs use, and control
characters made visible so that a document, a file name or an answer can never send the
terminal a command (move the cursor, retitle the window, reverse the text's direction)."""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls (U+009B is a one-character CSI), the bidi
# embeddings, overrides and isolates, and the line and paragraph separators.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                     r"\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_IN_LINE = re.compile(_UNSAFE.pattern[:-1] + r"\t\n]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, newlines: bool = True) -> str:
    """``text`` with every control character escaped as ``\\x1b`` / ``\\u202e``; newlines and
    tabs are kept unless ``newlines`` is False (then the result is a single line)."""
    return (_UNSAFE if newlines else _UNSAFE_IN_LINE).sub(_escape, str(text))


def json_printable(text: str) -> str:
    """JSON text (as ``json.dumps(..., ensure_ascii=False)`` writes it) with the controls it
    leaves raw (C1, bidi, separators) written as ``\\uXXXX`` escapes: the same JSON value."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def format_bytes(n: int) -> str:
    """A size as the docs state it: binary units named B, KB, MB, GB (20 MB is 20 x 1024 x
    1024 bytes), whole where whole ("20 MB"), else to one decimal ("4.5 MB")."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"
