"""The KV caches of one model across requests: a session per document, how the previous
prompt's cache is reused for the next one (the mode, and when re-rotation is refused), and
refreshing approximate sessions. The target model and a draft model each own one."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .kv_plan import ReusePlan, plan_reuse
from .kv_session import (EncodingCancelled, KvSession, KvSessions, build_cache, kv_bytes_per_token, rope_inv_freq,
                         shift_support)
from .types import EngineSettings

logger = logging.getLogger(__name__)


@dataclass
class PromptCache:
    """A prompt's cache as built for one request, and how it was built."""

    ids: list[int]
    cache: DynamicCache
    logits: torch.Tensor  # of the prompt's last token
    plan: ReusePlan
    mode: str
    reused_from: KvSession | None  # the session its reused tokens came from

    def stats(self) -> dict:
        return {"mode": self.mode, "reused": self.plan.reused, "rotated": self.plan.rotated,
                "encoded": self.plan.encoded, "stale": self.plan.stale}


class KvCacheManager:
    """Per-document KV sessions of one model, least recently used evicted beyond a budget."""

    def __init__(self, model, budget_mb: int):
        self.model = model
        self.sessions = KvSessions(budget_mb * 2**20 // kv_bytes_per_token(model))
        self.inv_freq = rope_inv_freq(model)
        self.refreshes = 0  # sessions re-encoded from scratch in idle time (`refresh`)
        self._logged_refusal: str | None = None

    def build(self, key: str | None, prompt_ids: list[int], settings: EngineSettings,
              cancelled: Callable[[], bool] | None = None) -> PromptCache:
        """The cache for `prompt_ids`, reusing the previous prompt of `key` as the mode allows
        (raises EncodingCancelled when `cancelled()` turns true between encoding passes)."""
        old = self.sessions.get(key) if key is not None else None
        mode = self._mode(old, settings)
        margin = settings.reencode_margin if mode == "pie" else 0
        plan = plan_reuse(old.ids if old else [], prompt_ids, mode, margin=margin)
        reused_from = old if plan.reused else None
        try:
            cache, logits = build_cache(self.model, plan, prompt_ids, old, self.inv_freq, cancelled)
        except EncodingCancelled as stopped:
            if stopped.tokens:  # paid for: the next request of `key` starts from this prefix
                self._store(key, list(prompt_ids[: stopped.tokens]), stopped.cache, reused_from, plan.stale)
            raise
        return PromptCache(list(prompt_ids), cache, logits, plan, mode, reused_from)

    def tokens_to_encode(self, key: str | None, prompt_ids: list[int], settings: EngineSettings) -> int:
        """How many tokens `build` would encode for `prompt_ids` (its plan; no model work)."""
        old = self.sessions.peek(key) if key is not None else None
        mode = self._mode(old, settings)
        margin = settings.reencode_margin if mode == "pie" else 0
        return plan_reuse(old.ids if old else [], prompt_ids, mode, margin=margin).encoded

    def keep(self, key: str | None, built: PromptCache) -> None:
        """Store the prompt's cache for the next request of `key`."""
        extra = built.cache.get_seq_length() - len(built.ids)
        if key is not None and extra > 0:
            built.cache.crop(-extra)  # generated tokens are not part of the next prompt
        self._store(key, built.ids, built.cache, built.reused_from, built.plan.stale)

    def _store(self, key: str | None, ids: list[int], cache: DynamicCache, reused_from: KvSession | None,
               stale: int) -> None:
        """`cache` (of `ids`) as the session of `key`, counting how approximate it is."""
        if key is None:
            return
        edits = (reused_from.edits_since_full if reused_from else 0) + (1 if stale else 0)
        stale_total = (reused_from.stale_since_full if reused_from else 0) + stale
        self.sessions.put(key, KvSession(ids, cache, edits, stale_total))

    def _mode(self, old: KvSession | None, settings: EngineSettings) -> str:
        mode = settings.kv_mode
        if mode != "pie":
            return mode
        # Checked against the request's settings: the server may change the prompt budget.
        refusal = shift_support(self.model.config, self.inv_freq,
                                settings.max_prompt_tokens + settings.context_budget_tokens)
        if refusal:
            if refusal != self._logged_refusal:
                logger.warning("KV re-rotation disabled, using prefix reuse: %s", refusal)
                self._logged_refusal = refusal
            return "prefix"
        if old is not None and (old.edits_since_full >= settings.refresh_after_edits
                                or old.stale_since_full >= settings.refresh_after_stale):
            return "full"  # the approximation got old: refresh it
        return mode

    def needs_refresh(self, key: str) -> bool:
        """Whether the session is approximate (reused across a change since its last full
        encode). Only reads: safe from another thread."""
        session = self.sessions.peek(key)
        return session is not None and session.edits_since_full > 0

    def refresh(self, key: str, cancelled: Callable[[], bool] = lambda: False) -> bool:
        """Re-encode an approximate session from scratch, so that the next request starts from
        exact states and never pays a whole refresh itself (see `_mode`). For idle time: when
        `cancelled()` turns true the session stays as it was. True when it was refreshed."""
        old = self.sessions.get(key)
        if old is None or old.edits_since_full == 0:
            return False
        start = time.perf_counter()
        try:
            cache, _ = build_cache(self.model, plan_reuse([], old.ids, "full"), old.ids, None, self.inv_freq,
                                   cancelled)
        except EncodingCancelled:
            return False
        if self.sessions.get(key) is not old:
            return False
        self.sessions.put(key, KvSession(old.ids, cache))
        self.refreshes += 1
        logger.info("refreshed the KV session of %s: %d tokens in %.0f ms (after %d approximate reuses)",
                    key, len(old.ids), (time.perf_counter() - start) * 1000, old.edits_since_full)
        return True

    def forget(self, key: str) -> None:
        self.sessions.drop(key)

    def move(self, source: str, target: str) -> None:
        """The session of `source` becomes `target`'s (replacing it)."""
        session = self.sessions.peek(source)
        if session is not None:
            self.sessions.drop(source)
            self.sessions.put(target, session)

    def status(self) -> dict:
        sessions = self.sessions.snapshot()
        return {"documents": len(sessions), "tokens": sum(len(s) for s in sessions),
                "approximate": sum(1 for s in sessions if s.edits_since_full), "refreshed": self.refreshes}
