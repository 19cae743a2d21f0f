"""A smaller model of the same tokenizer as a draft source, with its own KV sessions.

Per request the draft model's cache for the prompt is built by its own KV cache manager, with
the same edit-aware reuse and the same refusals as the target's (a session per document). Each proposal first brings the draft cache to the
tokens the target has produced (crop to the common prefix, encode the rest), then drafts
greedily until it is no longer confident.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from ..kv_cache import KvCacheManager, PromptCache
from ..models import LoadedModel
from ..types import EngineSettings
from .sources import Chain


class DraftModel:
    """Owns the draft model and its per-document KV sessions."""

    def __init__(self, loaded: LoadedModel, kv_budget_mb: int, min_confidence: float = 0.3):
        self.loaded = loaded
        self.kv = KvCacheManager(loaded.model, kv_budget_mb)
        self.min_confidence = min_confidence
        self.token_ms: float | None = None  # measured cost of one draft step

    def check_tokenizer(self, target_tokenizer) -> None:
        if self.loaded.tokenizer.get_vocab() != target_tokenizer.get_vocab():
            raise ValueError(f"draft model {self.loaded.name} has another tokenizer than the target")

    @torch.inference_mode()
    def start(self, key: str | None, prompt_ids: Sequence[int],
              settings: EngineSettings) -> "DraftModelSource":
        """A source for one request; its prompt cache reuses the document's previous one
        under the same rules as the target's."""
        built = self.kv.build(key, list(prompt_ids), settings)
        return DraftModelSource(self, key, built)

    def forget(self, key: str) -> None:
        self.kv.forget(key)


class DraftModelSource:
    name, expensive = "model", True

    def __init__(self, owner: DraftModel, key: str | None, built: PromptCache):
        self.owner, self.key, self.built = owner, key, built
        self.prompt_ids = built.ids
        self.cache = built.cache
        self.ids = list(built.ids)  # tokens whose keys are in `cache`
        self.logits: torch.Tensor | None = built.logits  # after `ids`

    @property
    def token_ms(self) -> float | None:
        return self.owner.token_ms

    @torch.inference_mode()
    def propose(self, generated: list[int], max_tokens: int) -> list[Chain]:
        started = time.perf_counter()
        self._sync(self.prompt_ids + generated)
        draft: list[int] = []
        while len(draft) < max_tokens:
            probs = torch.softmax(self.logits[0, -1].float(), dim=-1)
            confidence, token = probs.max(dim=-1)
            if float(confidence) < self.owner.min_confidence:
                break
            draft.append(int(token))
            if len(draft) < max_tokens:
                self._feed([int(token)])
        if draft:
            ms = (time.perf_counter() - started) * 1000 / len(draft)
            old = self.owner.token_ms
            self.owner.token_ms = ms if old is None else old + 0.3 * (ms - old)
        return [Chain(draft, self.name)] if draft else []

    def update(self, chain: Chain, accepted: int) -> None:
        pass  # the next proposal crops the cache to what the target kept

    def finish(self) -> None:
        """Store the prompt's draft cache for the document's next request."""
        self.owner.kv.keep(self.key, self.built)

    def _sync(self, target: list[int]) -> None:
        common = 0
        for mine, theirs in zip(self.ids, target):
            if mine != theirs:
                break
            common += 1
        if common == len(target) and common == len(self.ids) and self.logits is not None:
            return
        common = min(common, len(target) - 1)  # re-run at least one token to get its logits
        extra = len(self.ids) - common
        if extra > 0:
            self.cache.crop(-extra)
        self.ids = self.ids[:common]
        self._feed(target[common:])

    def _feed(self, tokens: list[int]) -> None:
        model = self.owner.loaded.model
        start = len(self.ids)
        inputs = torch.tensor([tokens], dtype=torch.long, device=self.owner.loaded.device)
        positions = torch.arange(start, start + len(tokens), device=inputs.device)[None, :]
        self.logits = model(input_ids=inputs, position_ids=positions, cache=self.cache,
                            use_cache=True, logits_to_keep=1).logits
        self.ids.extend(tokens)
