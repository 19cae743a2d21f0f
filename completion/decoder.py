"""Decoding one suggestion: greedy (or speculative) steps from a prompt's cache until the
stop rules, the token limit, the time budget or a cancellation end it.

The time budget bounds decoding only (`EngineSettings.out_of_time`): the prompt is already
paid for when it starts. A cancelled or superseded request stops at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from .healing import Healing
from .kv_cache import PromptCache
from .speculative import Drafter, greedy_decode
from .stops import StopPolicy, check_text
from .types import EngineSettings


@dataclass(frozen=True)
class Decoded:
    ids: list[int]  # generated tokens (stop ids excluded)
    reason: str  # why decoding stopped
    text: str  # the text so far as the stop rules cut it (before `finalize`)


class Decoder:
    """Greedy decoding of one model with the stop rules on the decoded text."""

    def __init__(self, model, stop_ids: Collection[int], detokenize: Callable[[Sequence[int]], str]):
        self.model = model
        self.stop_ids = stop_ids
        self.detokenize = detokenize

    def run(self, built: PromptCache, policy: StopPolicy, settings: EngineSettings, started: float,
            cancelled: Callable[[], bool] | None, drafter: Drafter | None,
            healing: Healing | None, prefix: Sequence[int] = ()) -> Decoded:
        """Decode from the prompt's cache (and `prefix`, tokens already generated and in the
        cache, with `built.logits` after them); the time budget counts from `started`
        (`time.perf_counter()` when decoding starts)."""
        text = ""

        def should_stop(generated: list[int]) -> str | None:
            nonlocal text
            check = self._check(generated, policy, healing)
            text = check.text
            if check.stop:
                return check.reason
            if cancelled is not None and cancelled():
                return "cancelled"
            if len(generated) >= settings.max_new_tokens:
                return "max_tokens"
            if settings.out_of_time(text, (time.perf_counter() - started) * 1000):
                return "time_budget"
            return None

        ids, reason = greedy_decode(self.model, built.cache, built.logits, self.stop_ids,
                                    should_stop, drafter, healing, prefix)
        return Decoded(ids, reason, text)

    def draft_room(self, policy: StopPolicy, settings: EngineSettings, healing: Healing | None):
        """How many tokens of a draft can still be part of the suggestion. A draft running
        past the token where the stop rules end it (the end of the line, for a one-line
        suggestion) or past the token limit is verify work thrown away: on a CPU a pass
        over 16 tokens costs several single steps."""
        def room(generated: list[int], draft: list[int]) -> int:
            # The pass's bonus token is one more: it may be the last one allowed.
            limit = min(len(draft), settings.max_new_tokens - len(generated) - 1)
            for count in range(max(limit, 0)):
                if self._check([*generated, *draft[: count + 1]], policy, healing).stop:
                    return count  # the token that ends it comes as the bonus, if right
            return max(limit, 0)
        return room

    def _check(self, generated: list[int], policy: StopPolicy, healing: Healing | None):
        written = self.detokenize(generated)
        return check_text(healing.strip(written) if healing else written, policy)
