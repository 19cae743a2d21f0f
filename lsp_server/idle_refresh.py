"""KV refresh in idle time: once the user pauses after a completion, the document's prompt is
re-encoded if its cache is approximate (re-rotated; checked then, after any warm-up grew it).
The next keystroke then starts from exact states, and the engine's own refresh after many
edits (a whole prompt encoded on a keystroke) does not happen while the user takes pauses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from completion import Engine

from .scheduler import LatestWinsScheduler


class IdleRefresh:
    def __init__(self, scheduler: LatestWinsScheduler, current_engine: Callable[[], Engine | None]):
        self.scheduler = scheduler
        self.current_engine = current_engine
        self._timers: dict[str, asyncio.TimerHandle] = {}  # by document URI

    def after_completion(self, uri: str, engine: Engine, delay_ms: float) -> None:
        """Refresh `uri`'s cache once nothing happened for `delay_ms` (0: never); on the event loop."""
        self.cancel(uri)
        if delay_ms > 0:
            self._timers[uri] = asyncio.get_running_loop().call_later(delay_ms / 1000, self._start, uri, engine)

    def cancel(self, uri: str) -> None:
        timer = self._timers.pop(uri, None)
        if timer is not None:
            timer.cancel()

    def _start(self, uri: str, engine: Engine) -> None:
        self._timers.pop(uri, None)
        if engine is not self.current_engine() or not engine.needs_refresh(uri):
            return
        # The host's background lane: any request or warm-up stops it (between layers).
        self.scheduler.background(uri, lambda cancelled: engine.refresh(uri, cancelled))
