"""LSP positions (line + character in the negotiated encoding) <-> offsets into the text.

Strict: a position past the end of its line or document is an error, not silently clamped.
"""

from __future__ import annotations

_UNITS = {"utf-8": 4, "utf-16": 2, "utf-32": 1}  # unit size in bytes


def _units(char: str, encoding: str) -> int:
    if encoding == "utf-32":
        return 1
    if encoding == "utf-16":
        return 2 if ord(char) > 0xFFFF else 1
    return len(char.encode("utf-8", "surrogatepass"))


def _line_starts(text: str) -> list[int]:
    starts = [0]
    index = text.find("\n")
    while index >= 0:
        starts.append(index + 1)
        index = text.find("\n", index + 1)
    return starts


def offset_at(text: str, line: int, character: int, encoding: str = "utf-16") -> int:
    """Offset (in code points) of an LSP position. ValueError when it is outside the text."""
    if encoding not in _UNITS:
        raise ValueError(f"unknown position encoding {encoding!r}; valid: {', '.join(_UNITS)}")
    starts = _line_starts(text)
    if not 0 <= line < len(starts):
        raise ValueError(f"line {line} is out of range (document has {len(starts)} lines)")
    if character < 0:
        raise ValueError(f"negative character {character}")
    start = starts[line]
    end = starts[line + 1] - 1 if line + 1 < len(starts) else len(text)
    if end > start and text[end - 1] == "\r":
        end -= 1
    units = 0
    offset = start
    while units < character:
        if offset >= end:
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
    line = text.count("\n", 0, offset)
    start = text.rfind("\n", 0, offset) + 1
    return line, sum(_units(c, encoding) for c in text[start:offset])
