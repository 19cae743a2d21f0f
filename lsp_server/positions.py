"""LSP positions (line + character in the negotiated encoding) <-> offsets into the text.

Strict: a position past the end of its line or document is an error, not silently clamped.
"""

from __future__ import annotations

import re

_UNITS = {"utf-8": 4, "utf-16": 2, "utf-32": 1}  # unit size in bytes


def _units(char: str, encoding: str) -> int:
    if encoding == "utf-32":
        return 1
    if encoding == "utf-16":
        return 2 if ord(char) > 0xFFFF else 1
    return len(char.encode("utf-8", "surrogatepass"))


_BREAK = re.compile(r"\r\n|\r|\n")  # LSP's line breaks


def _line_starts(text: str) -> list[int]:
    return [0, *(found.end() for found in _BREAK.finditer(text))]


def _line_span(text: str, line: int) -> tuple[int, int]:
    """(start, end before the break) of `line`, scanning the text only up to it (this runs
    for every edit and every request)."""
    if line < 0:
        raise ValueError(f"line {line} is out of range")
    start, seen = 0, 0
    for found in _BREAK.finditer(text):
        if seen == line:
            return start, found.start()
        start, seen = found.end(), seen + 1
    if seen == line:
        return start, len(text)
    raise ValueError(f"line {line} is out of range (document has {seen + 1} lines)")


def offset_at(text: str, line: int, character: int, encoding: str = "utf-16", clamp: bool = False) -> int:
    """Offset (in code points) of an LSP position. ValueError when it is outside the text;
    with `clamp`, a character past the end of its line means the line's end (what the LSP
    prescribes for edit ranges)."""
    if encoding not in _UNITS:
        raise ValueError(f"unknown position encoding {encoding!r}; valid: {', '.join(_UNITS)}")
    if character < 0:
        raise ValueError(f"negative character {character}")
    start, end = _line_span(text, line)
    units = 0
    offset = start
    while units < character:
        if offset >= end:
            if clamp:
                return end
            raise ValueError(f"character {character} is past the end of line {line}")
        units += _units(text[offset], encoding)
        offset += 1
    if units != character:
        raise ValueError(f"character {character} splits a character on line {line}")
    return offset


def position_of(text: str, offset: int, encoding: str = "utf-16") -> tuple[int, int]:
    """(line, character) in `encoding` units of an offset into `text`."""
    if not 0 <= offset <= len(text):
        raise ValueError(f"offset {offset} is outside the text (0..{len(text)})")
    starts = _line_starts(text[:offset])
    if offset < len(text) and text[offset] == "\n" and text.startswith("\r", offset - 1):
        starts.pop()  # inside "\r\n": still on the line the "\r" ends
    return len(starts) - 1, sum(_units(c, encoding) for c in text[starts[-1]:offset])


def is_word_char(char: str) -> bool:
    """Whether `char` belongs to an identifier (ASCII letters, digits, `_` and `$`)."""
    return char in "_$" or (char.isascii() and char.isalnum())
