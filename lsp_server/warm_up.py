"""Warm before the keystroke: where the user's cursor rests, the prompt of that place is
encoded in the engine host's lane 2, so the first key there reuses it.

Hints come from didOpen, `textDocument/documentHighlight` (VS Code sends it on every cursor
move) and the `codeassist/cursor` notification (the Neovim plugin's cursor moves). They are
debounced: a hint waits HINT_DELAY_S and a newer one replaces it, so moving through a file
does not start an encoding per step. A warm-up in progress stops between encoding passes
when a newer hint or any request arrives, keeping what it encoded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from lsprotocol import types

from .positions import is_word_char

logger = logging.getLogger(__name__)

HINT_DELAY_S = 0.15
OPEN_DELAY_S = 1.0  # didOpen says nothing of the cursor: a guess, replaced by any real hint
CURSOR_NOTIFICATION = "codeassist/cursor"


class WarmUp:
    def __init__(self, start: Callable[[str, types.Position], None]):
        self._start = start  # queues the warm-up of a place on the engine host
        self._timer: asyncio.TimerHandle | None = None
        self.hints = 0  # received
        self.finished = 0  # warm-ups that encoded their whole prompt
        self.last: dict | None = None  # what the last warm-up did (engine.warm's answer)

    def hint(self, uri: str, position: types.Position, delay_s: float = HINT_DELAY_S) -> None:
        """The user's cursor is at `position` of `uri` (called on the event loop)."""
        self.hints += 1
        self.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._fire, uri, position)

    def record(self, result: dict | None) -> None:
        """What a warm-up did (on the host; None: dropped before it ran)."""
        if result is not None:
            self.last = result
            self.finished += bool(result.get("finished"))

    def status(self) -> dict:
        return {"hints": self.hints, "finished": self.finished, "last": self.last}

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self, uri: str, position: types.Position) -> None:
        self._timer = None
        try:
            self._start(uri, position)
        except Exception:  # a hint must never take the event loop down
            logger.exception("warm-up of %s failed to start", uri)


def identifier_occurrences(text: str, cursor: int, limit: int = 1000) -> list[tuple[int, int]]:
    """(start, end) offsets of each whole-word occurrence of the identifier at `cursor`
    (touching it from either side); empty when the cursor is not on one."""
    start = end = cursor
    while start > 0 and is_word_char(text[start - 1]):
        start -= 1
    while end < len(text) and is_word_char(text[end]):
        end += 1
    name = text[start:end]
    if not name or name[0].isdigit():
        return []
    found, at = [], text.find(name)
    while at >= 0 and len(found) < limit:
        after = at + len(name)
        if (at == 0 or not is_word_char(text[at - 1])) and (after == len(text) or not is_word_char(text[after])):
            found.append((at, after))
        at = text.find(name, after)
    return found
