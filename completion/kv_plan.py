"""Plan how a new prompt's KV cache is built from the previous prompt's (pure; no model).

The new token ids are diffed against the old ones. Matching blocks are reused: as they are
when they stay at the same position, re-rotated when they moved. Everything else is encoded.
The last prompt token is always encoded, because its logits start the suggestion.
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher

MODES = ("full", "prefix", "pie")


@dataclass(frozen=True)
class Segment:
    start: int  # in the new prompt
    end: int
    source: int | None = None  # start in the old prompt when reused, None when encoded

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def shift(self) -> int:
        return 0 if self.source is None else self.start - self.source


@dataclass(frozen=True)
class ReusePlan:
    segments: tuple[Segment, ...]

    @property
    def reused(self) -> int:
        return sum(s.length for s in self.segments if s.source is not None)

    @property
    def rotated(self) -> int:
        return sum(s.length for s in self.segments if s.source is not None and s.shift)

    @property
    def encoded(self) -> int:
        return sum(s.length for s in self.segments if s.source is None)

    @property
    def stale(self) -> int:
        """Reused tokens that follow a change (an encoded run, or tokens deleted before a
        shifted run): their cached states saw the old text before them."""
        seen_change = False
        stale = 0
        for segment in self.segments:
            if segment.source is None:
                seen_change = True
            elif seen_change or segment.shift:
                stale += segment.length
        return stale


def plan_reuse(old: list[int], new: list[int], mode: str, min_block: int = 8,
               min_reuse_fraction: float = 0.1, margin: int = 0) -> ReusePlan:
    """Segments covering `new` in order. `min_block`: shorter matches are cheaper to encode
    than to stitch in (each encoded gap is a forward pass). `margin`: also re-encode this
    many tokens after each change, whose cached states saw the old text most directly."""
    if mode not in MODES:
        raise ValueError(f"unknown KV reuse mode {mode!r}; valid: {', '.join(MODES)}")
    if not new:
        raise ValueError("the new prompt is empty")
    blocks: list[tuple[int, int, int]] = []  # (old start, new start, length)
    if mode == "prefix":
        common = common_prefix(old, new)
        if common:
            blocks.append((0, 0, common))
    elif mode == "pie" and old:
        # The common prefix first, as it is: a diff of repetitive code (a run of the same
        # token) may otherwise align it shifted by a token, turning an exact append into an
        # approximate move.
        common = common_prefix(old, new)
        if common:
            blocks.append((0, 0, common))
        matcher = SequenceMatcher(None, old[common:], new[common:], autojunk=False)
        blocks += [(a + common, b + common, n) for a, b, n in matcher.get_matching_blocks()
                   if n >= min_block]
    segments = _segments(blocks, len(new))
    if margin > 0:
        segments = _widen_changes(segments, margin)
    plan = ReusePlan(tuple(segments))
    if mode != "prefix" and plan.reused < min_reuse_fraction * len(new):
        return ReusePlan((Segment(0, len(new)),))  # reuse would save little: start afresh
    return plan


def common_prefix(old: list[int], new: list[int]) -> int:
    limit = min(len(old), len(new))
    index = 0
    while index < limit and old[index] == new[index]:
        index += 1
    return index


def _segments(blocks: list[tuple[int, int, int]], total: int) -> list[Segment]:
    segments: list[Segment] = []
    cursor = 0
    for old_start, new_start, length in blocks:
        if new_start < cursor:  # overlaps what is already placed: trim its head
            trim = cursor - new_start
            old_start, new_start, length = old_start + trim, cursor, length - trim
        if length <= 0:
            continue
        if new_start > cursor:
            segments.append(Segment(cursor, new_start))
        segments.append(Segment(new_start, new_start + length, old_start))
        cursor = new_start + length
    if cursor < total:
        segments.append(Segment(cursor, total))
    last = segments[-1]
    if last.source is not None:  # the last token is always run, for its logits
        segments[-1:] = [s for s in (Segment(last.start, last.end - 1, last.source),
                                     Segment(last.end - 1, last.end)) if s.length > 0]
    return _merge_encoded(segments)


def _widen_changes(segments: list[Segment], margin: int) -> list[Segment]:
    """Move the first `margin` tokens of each reused run that follows a change into the
    encoded run before it."""
    widened: list[Segment] = []
    for segment in segments:
        after_change = widened and widened[-1].source is None
        if segment.source is not None and after_change:
            take = min(margin, segment.length)
            widened[-1] = Segment(widened[-1].start, segment.start + take)
            if take < segment.length:
                widened.append(Segment(segment.start + take, segment.end, segment.source + take))
        else:
            widened.append(segment)
    return _merge_encoded(widened)


def _merge_encoded(segments: list[Segment]) -> list[Segment]:
    merged: list[Segment] = []
    for segment in segments:
        if merged and segment.source is None and merged[-1].source is None:
            merged[-1] = Segment(merged[-1].start, segment.end)
        else:
            merged.append(segment)
    return merged
