"""When a suggestion ends, and what of it to keep.

Mid-line, a suggestion finishes the line; with code right of the cursor it may go past the
line end where the model's lines lead into that code (it retypes it) or the model ends the
middle itself, within a few lines (a hole that spans a line end). On a blank line inside a
block (or right after a line that opens one) it is a block: it ends at the first line that
dedents below the block's indentation, at a line that repeats the code below the cursor, or
at `max_lines`.
A blank line with code below it at the cursor's column or deeper is a place between
statements. Where the code below is indented deeper (a header whose body is below, or lines
missing at the top of a body) the model decides: lines after the first are kept where they
rejoin the code below (the model goes on with that code's first line, or ends the middle
itself within a few lines); otherwise only the first line is. Where the code below is at the
cursor's column, one statement (with the body it opens, if any).
Either ends where the model leaks a markdown fence or a special token's text; a finished
suggestion that is junk (completion/junk.py) is dropped.
"""

from __future__ import annotations

import logging
from itertools import islice
from dataclasses import dataclass

from .junk import FENCE, cut_leaks, junk_reason
from .syntax import enclosing_block_indent

logger = logging.getLogger(__name__)
_NEARBY_LINES = 8  # non-blank lines above and below the cursor line a suggestion may repeat

_BLOCK_OPENERS = (":", "{", "(", "[", "=>")


@dataclass(frozen=True)
class StopPolicy:
    multiline: bool
    min_indent: int  # a generated line indented less than this ends a block suggestion
    line_suffix: str  # the rest of the cursor line, after the cursor
    next_code_line: str  # the first non-blank line below the cursor line, stripped
    max_lines: int = 16
    block_closed_below: bool = False  # code below the cursor already dedents out of the block
    line_prefix: str = ""  # the cursor line before the cursor
    lines_above: tuple[str, ...] = ()  # the nearest non-blank lines above, stripped, nearest last
    lines_below: tuple[str, ...] = ()  # the nearest non-blank lines below, stripped, nearest first
    fences_allowed: bool = False  # the document has markdown fences of its own
    one_statement: bool = False  # a line back at min_indent - 1 ends it (closing brackets kept)
    rejoin_below: bool = False  # lines after the first only where they lead into the code below
    past_line_end: bool = False  # code right of the cursor: lines after the first only where they lead into it


_REJOIN_LINES = 4  # lines after the first a rejoining suggestion may add
_PAST_LINE_END = 2  # lines after the first a mid-line suggestion may add
# Ends before the model finished (mid-line, maybe): lines past the first that have not
# rejoined the code after the cursor are dropped, and a block's unfinished last line.
CUT_SHORT = frozenset({"max_tokens", "length", "time_budget"})


_CLOSERS = frozenset(")]};,")


def _indent_of(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip(" "))


def decide_policy(text: str, cursor: int, language: str | None, max_lines: int = 16) -> StopPolicy:
    line_start = text.rfind("\n", 0, cursor) + 1
    line_end = text.find("\n", cursor)
    line_end = len(text) if line_end < 0 else line_end
    before = text[line_start:cursor]
    after = text[cursor:line_end].rstrip("\r")
    below = text[line_end + 1 :].split("\n") if line_end < len(text) else []
    lines_below = tuple(islice((line.strip() for line in below if line.strip()), _NEARBY_LINES))
    next_code = lines_below[0] if lines_below else ""
    lines_above = _nonblank_lines_before(text, line_start, _NEARBY_LINES)
    fences = FENCE in text

    def policy(multiline: bool, min_indent: int = 0, one_statement: bool = False,
               rejoin: bool = False, past_line_end: bool = False) -> StopPolicy:
        block = min_indent - 1 if one_statement else min_indent  # the enclosing block's indentation
        closed = any(line.strip() and _indent_of(line) < block for line in below)
        return StopPolicy(multiline, min_indent, after, next_code, max_lines, closed, before, lines_above,
                          lines_below, fences, one_statement, rejoin, past_line_end)

    if after.strip():
        return policy(False, past_line_end=True)  # code right of the cursor: finish the line
    if before.strip():
        if before.rstrip().endswith(_BLOCK_OPENERS):
            return policy(True, _indent_of(before) + 1)  # the body of what this line opens
        return policy(False)
    column = len(before.expandtabs(4))
    next_indent = next((_indent_of(line) for line in below if line.strip()), -1)
    if column > 0 and next_indent > column:
        return policy(True, column + 1, rejoin=True)  # a header whose body is below
    if column > 0 and next_indent == column:
        return policy(True, column + 1, one_statement=True)  # between two statements
    if column > 0:
        return policy(True, column)
    block = enclosing_block_indent(text, cursor, language)
    if block is not None:
        return policy(True, block)
    previous = next((ln for ln in reversed(text[:line_start].split("\n")) if ln.strip()), "")
    indent = _indent_of(previous)
    if previous.rstrip().endswith(_BLOCK_OPENERS):
        indent += 1
    return policy(True, indent)


def _nonblank_lines_before(text: str, end: int, count: int) -> tuple[str, ...]:
    """The last `count` non-blank lines of text[:end], stripped, in order."""
    lines: list[str] = []
    while end > 0 and len(lines) < count:
        start = text.rfind("\n", 0, end - 1) + 1
        line = text[start:end].strip()
        if line:
            lines.append(line)
        end = start
    return tuple(reversed(lines))


@dataclass(frozen=True)
class StopCheck:
    stop: bool
    text: str  # the suggestion to keep so far
    reason: str = ""


def check_text(generated: str, policy: StopPolicy) -> StopCheck:
    """Apply the policy to the text generated so far (called after every token)."""
    kept, leak = cut_leaks(generated, policy.fences_allowed)
    check = _check_lines(kept, policy)
    if leak is not None and not check.stop:
        return StopCheck(True, check.text, leak)
    return check


def _check_lines(generated: str, policy: StopPolicy) -> StopCheck:
    if not policy.multiline:
        line = generated.split("\n", 1)[0]
        cut = cut_at_line_suffix(line, policy.line_suffix)
        if cut is not None:
            return StopCheck(True, cut, "reached_suffix")
        if "\n" in generated:
            return _check_past_line_end(generated, policy) if policy.past_line_end else \
                StopCheck(True, line, "end_of_line")
        return StopCheck(False, generated)
    lines = generated.split("\n")
    complete = lines[:-1]  # the last line may still grow
    if policy.rejoin_below:
        return _check_rejoin(lines, policy)
    seen_blank = False
    for index, line in enumerate(complete):
        if index == 0:
            continue  # the cursor line: its indentation is the user's
        stripped = line.strip()
        if not stripped:
            seen_blank = True
            continue
        kept = "\n".join(lines[:index])
        if _indent_of(line) < policy.min_indent:
            closes_statement = policy.one_statement and _indent_of(line) == policy.min_indent - 1
            if set(stripped) <= _CLOSERS and (closes_statement or not policy.block_closed_below):
                kept = "\n".join(lines[: index + 1])  # the closing bracket the block needs
            return StopCheck(True, kept, "dedent")
        if policy.next_code_line and stripped == policy.next_code_line:
            return StopCheck(True, kept, "reached_suffix")
        if policy.min_indent == 0 and seen_blank:
            return StopCheck(True, kept, "next_statement")  # top level: one statement
    if len(complete) >= policy.max_lines:
        return StopCheck(True, "\n".join(lines[: policy.max_lines]), "max_lines")
    return StopCheck(False, generated)


def _check_rejoin(lines: list[str], policy: StopPolicy) -> StopCheck:
    """A header over its body: the lines before the one that repeats the code below, or only
    the first line where the model leaves the block or writes more than _REJOIN_LINES."""
    for index, line in enumerate(lines[1:-1], start=1):
        stripped = line.strip()
        if stripped and stripped == policy.next_code_line:
            return StopCheck(True, "\n".join(lines[:index]), "reached_suffix")
        if stripped and _indent_of(line) < policy.min_indent or index > _REJOIN_LINES:
            return StopCheck(True, lines[0], "one_line")
    return StopCheck(False, "\n".join(lines))


def _check_past_line_end(generated: str, policy: StopPolicy) -> StopCheck:
    """Past the cursor line's end: up to where a line retypes the code right of the cursor,
    or only the first line once the model wrote more than _PAST_LINE_END lines after it."""
    lines = generated.split("\n")
    for index in range(1, len(lines)):
        cut = cut_at_line_suffix(lines[index], policy.line_suffix)
        if cut is not None:
            return StopCheck(True, "\n".join([*lines[:index], cut]), "reached_suffix")
    if len(lines) - 1 > _PAST_LINE_END:
        return StopCheck(True, lines[0], "end_of_line")
    return StopCheck(False, generated)


def finalize(text: str, policy: StopPolicy, reason: str = "") -> str:
    """Trim trailing blank lines and whatever repeats the text right of the cursor; empty
    when what is left is junk (logged). `reason`: why decoding ended (for a header over its
    body or code right of the cursor, lines past the first are kept only where the model
    ended them itself; a block cut short loses its unfinished last line)."""
    if (policy.rejoin_below or policy.past_line_end) and reason in CUT_SHORT:
        text = text.split("\n", 1)[0]
    elif policy.multiline and reason in CUT_SHORT and "\n" in text.rstrip():
        text = text[: text.rstrip().rfind("\n")]
    if policy.multiline:
        text = text.rstrip()
    else:
        text = text.rstrip("\r")
        if not policy.line_suffix.strip():
            text = text.rstrip()
    text = trim_suffix_overlap(text, policy.line_suffix, policy.line_prefix)
    if not text:
        return text
    reason = junk_reason(text, policy.line_prefix, policy.lines_above, policy.lines_below, policy.line_suffix)
    if reason is not None:
        logger.info("suggestion not shown: %s (%d chars)", reason, len(text))
        return ""
    return text


_PAIRS = {")": "(", "]": "[", "}": "{"}


def _balanced(text: str) -> bool:
    depth = {opener: 0 for opener in _PAIRS.values()}
    for char in text:
        if char in depth:
            depth[char] += 1
        elif char in _PAIRS:
            depth[_PAIRS[char]] -= 1
    return all(d == 0 for d in depth.values())


def cut_at_line_suffix(text: str, line_suffix: str) -> str | None:
    """Where the model starts retyping the rest of the cursor line, keep what comes before.

    Only at a point where what was inserted has balanced brackets, so `f(x))` before `)`
    keeps `f(x)`. None when the rest of the line does not occur that way.
    """
    suffix = line_suffix.strip()
    if not suffix:
        return None
    start = text.find(suffix)
    while start >= 0:
        if _balanced(text[:start]):
            return text[:start]
        start = text.find(suffix, start + 1)
    return None


def _unmatched(text: str) -> int:
    """Brackets of `text` that match none (closers without an opener, openers left open)."""
    open_brackets: list[str] = []
    stray = 0
    for char in text:
        if char in "([{":
            open_brackets.append(char)
        elif char in _PAIRS:
            if open_brackets and open_brackets[-1] == _PAIRS[char]:
                open_brackets.pop()
            else:
                stray += 1
    return stray + len(open_brackets)


def trim_suffix_overlap(text: str, line_suffix: str, line_prefix: str = "") -> str:
    """Drop the longest end of `text` that the cursor line's suffix already starts with
    (the model typed the `)` or `:` that is already there), unless the line's brackets match
    better with it kept (`set(x)` before `), x)`: the `)` closes what the text opened)."""
    suffix = line_suffix.rstrip()
    if not suffix:
        return text
    for size in range(min(len(text), len(suffix)), 0, -1):
        if text.endswith(suffix[:size]):
            kept = _unmatched(line_prefix + text + line_suffix)
            if kept < _unmatched(line_prefix + text[:-size] + line_suffix):
                return text
            return text[:-size]
    return text
