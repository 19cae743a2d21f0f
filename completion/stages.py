"""Where one request's time goes: milliseconds per stage, in the order the stages ran. The
engine fills `plan` (stop rules, the last suggestion), `prompt` (context selection, FIM
prompt, tokenization, token healing), `encode` (the prompt's KV cache), `decode` and `finish`
(stop rules on the text, alternatives, what is kept for the next request); the server adds
`wait` (behind other work on the engine host) and `context` (repository snippets)."""

from __future__ import annotations

import time


class Stages:
    def __init__(self, start: float | None = None):
        self._last = time.perf_counter() if start is None else start
        self._ms: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        """The time since the previous lap (or the start) goes to `stage`."""
        now = time.perf_counter()
        self._ms[stage] = self._ms.get(stage, 0.0) + (now - self._last) * 1000
        self._last = now

    def as_dict(self) -> dict[str, float]:
        return {stage: round(ms, 1) for stage, ms in self._ms.items()}
