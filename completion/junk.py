"""Suggestions not worth showing, and text a code model must never deliver.

Junk: only whitespace; only closing brackets that close nothing open on the cursor line; the
lines just above the cursor again; the code right below the cursor again (duplicated code is what users of code assistants complain
about most). Leaks: a markdown fence where the document has none, or a special token's text
(`<|endoftext|>`, `<|fim_middle|>`, `<|im_start|>`): the model stepped out of the code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_CLOSING = frozenset(")]};,")
_OPENER = {")": "(", "]": "[", "}": "{"}
_SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>|<(?:fim|file)_(?:prefix|suffix|middle|sep)>")
FENCE = "```"


def junk_reason(text: str, line_prefix: str, lines_above: Sequence[str], lines_below: Sequence[str],
                line_suffix: str) -> str | None:
    """Why `text`, inserted after `line_prefix` on the cursor line, is not worth showing;
    None when it is. `lines_above` / `lines_below`: the nearest non-blank lines above and
    below the cursor line, stripped (nearest last above, nearest first below)."""
    stripped = text.strip()
    if not stripped:
        return "only whitespace"
    if set(stripped) - set(" \t\r\n") <= _CLOSING and not _closes_open_brackets(stripped, line_prefix):
        return "only closing brackets"
    inserted = [line.strip() for line in (line_prefix + text).split("\n") if line.strip()]
    if len(inserted) <= len(lines_above) and inserted == list(lines_above[len(lines_above) - len(inserted):]):
        return "repeats the lines above"
    if not line_suffix.strip() and inserted == list(lines_below[: len(inserted)]):
        return "repeats the code below"
    return None


def _closes_open_brackets(closers: str, line_prefix: str) -> bool:
    """Whether every bracket in `closers` closes one still open in `line_prefix`."""
    open_brackets = []
    for char in line_prefix:
        if char in "([{":
            open_brackets.append(char)
        elif char in _OPENER and open_brackets and open_brackets[-1] == _OPENER[char]:
            open_brackets.pop()
    for char in closers:
        if char in _OPENER:
            if not open_brackets or open_brackets.pop() != _OPENER[char]:
                return False
    return True


def cut_leaks(text: str, fences_allowed: bool) -> tuple[str, str | None]:
    """`text` up to where it leaks (a special token's text; a line that opens a markdown
    fence unless the document has fences), and what leaked (None: nothing)."""
    cut, reason = len(text), None
    special = _SPECIAL_TOKEN.search(text)
    if special is not None:
        cut, reason = special.start(), "special token"
    if not fences_allowed:
        start = 0
        for line in text[:cut].split("\n"):
            if line.lstrip().startswith(FENCE):
                return text[:start], "markdown fence"
            start += len(line) + 1
    return text[:cut], reason
