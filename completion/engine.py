"""FIM completion of one loaded model: a request becomes a prompt, the prompt's KV cache is
rebuilt from the document's previous one, drafts are proposed and verified, and the decoded
text is cut by the stop rules.

The engine's state across requests (KV sessions, the last suggestion per document, n-gram
caches, draft statistics) is not locked: the server uses an engine from one thread only,
its engine host. Settings travel with each request (`settings=`); `self.settings` is only
the default for callers that pass none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from .context import select_context
from .decoder import Decoded, Decoder
from .fim import resolve_fim
from .growing_cache import crop_to
from .healing import Healing, Vocabulary
from .kv_cache import KvCacheManager, PromptCache
from .kv_plan import common_prefix
from .kv_session import EncodingCancelled
from .models import LoadedModel
from .prompt import FimPrompt, PromptBudget, build_fim_prompt
from .speculative import AcceptanceStats, Drafter, ForwardCost
from .speculative.draft_model import DraftModel
from .speculative.ngram import NgramCache
from .speculative.registry import DraftRequest, DraftSourceRegistry
from .speculative.sources import PromptLookup, RecycledSuggestion, RepoLookup
from .speculative.verify import supports_trees
from .stages import Stages
from .stops import StopPolicy, check_text, decide_policy, finalize
from .suggestion_memory import Recall, SuggestionMemory
from .types import Completion, CompletionRequest, EngineSettings

logger = logging.getLogger(__name__)

_PAST_SUGGESTIONS = 64  # past suggestions kept in the n-gram cache


class CompletionEngine:
    """Owns one loaded model (and an optional draft model) and turns completion requests
    into suggestions (an `engine_api.Engine`)."""

    learns_from_files = True

    def __init__(self, loaded: LoadedModel, settings: EngineSettings = EngineSettings(),
                 draft: LoadedModel | None = None):
        self.loaded = loaded
        self.settings = settings  # the default when a request brings none
        self.fim = resolve_fim(loaded.tokenizer)
        self.kv = KvCacheManager(loaded.model, settings.kv_budget_mb)
        self.memory = SuggestionMemory()
        self.decoder = Decoder(loaded.model, self.fim.stop_ids, self.decode)
        # Speculation state that outlives requests: what drafts were worth, what passes cost.
        self.acceptance = AcceptanceStats()
        self.forward_cost = ForwardCost()
        self.repo_ngrams = NgramCache(settings.repo_cache_tokens)  # open files
        self.past_ngrams = NgramCache(settings.repo_cache_tokens)  # past suggestions
        self._past_suggestions = 0
        # Token healing needs every token's text (~1 s for 152k tokens, once per tokenizer): built
        # here when the settings heal, so that the first request does not pay it; otherwise at
        # the first request whose settings turn healing on.
        self._vocabulary: Vocabulary | None = Vocabulary.of(loaded.tokenizer) if settings.token_healing else None
        self.draft: DraftModel | None = None
        if draft is not None:
            self.draft = DraftModel(draft, settings.kv_budget_mb)
            self.draft.check_tokenizer(loaded.tokenizer)
        self.drafts = self._draft_sources()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.loaded.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        return self.loaded.tokenizer.decode(
            list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def build_prompt(self, request: CompletionRequest) -> FimPrompt:
        """The prompt `complete` would use for `request` in a fresh session."""
        return self._prompt(request, self.settings)[0]

    def _prompt(self, request: CompletionRequest,
                settings: EngineSettings) -> tuple[FimPrompt, Healing | None, str]:
        """The request's prompt, the text decoding must rewrite first (token healing) and the
        prefix text the prompt encodes as text."""
        # Repository context gets its own budget on top of the prompt's (see context.py).
        files, context_tokens = select_context(request.context, self.encode, settings.context_budget_tokens)
        budget = PromptBudget(settings.max_prompt_tokens + context_tokens, settings.suffix_share)
        before = request.text[: request.cursor]

        def build(heal: bool) -> FimPrompt:
            return build_fim_prompt(self.fim, self.encode, before, request.text[request.cursor :], budget,
                                    path=request.path, repo_name=request.repo_name, repo_files=files,
                                    heal=heal)

        prompt = build(settings.token_healing)
        healed = self.decode(prompt.healed)
        if not before.endswith(healed):  # a token that is part of a character: keep it
            prompt, healed = build(False), ""
        return prompt, self._healing(healed, settings), before[: len(before) - len(healed)]

    def _healing(self, text: str, settings: EngineSettings) -> Healing | None:
        """Healing of `text`, the characters the prompt left out, when the request's settings heal."""
        if not text or not settings.token_healing:
            return None
        if self._vocabulary is None:
            self._vocabulary = Vocabulary.of(self.loaded.tokenizer)
        return Healing(text, self._vocabulary, self.decode, self.encode)

    def warm(self, request: CompletionRequest, cancelled: Callable[[], bool] | None = None,
             session_key: str | None = None, settings: EngineSettings | None = None) -> dict:
        """Encode the prompt `complete` would build for `request` into the session of
        `session_key`, without decoding: the next request near that place reuses it. At a
        place far from the warm session that is the first window, which the first key there
        answers from (`window`: "short"; its whole prompt is `grow`'s). Stops between
        encoding passes when `cancelled()`, keeping what was encoded. Returns what was done
        (tokens, reused, encoded, ms, finished, window)."""
        return self._warm(request, cancelled, session_key, settings or self.settings, first_window=True)

    def _warm(self, request: CompletionRequest, cancelled: Callable[[], bool] | None, session_key: str | None,
              settings: EngineSettings, first_window: bool) -> dict:
        start = time.perf_counter()
        prompt, _, _ = self._prompt(request, settings)
        window = "full"
        short = self._first_window_prompt(session_key, request, Recall(None, "", None), prompt, settings) \
            if first_window else None  # (nothing typed yet)
        if short is not None:
            prompt, window = short[0], "short"
        session = self.kv.sessions.peek(session_key) if session_key is not None else None
        if session is not None and session.ids == prompt.ids:
            return {"tokens": len(prompt.ids), "finished": True, "ms": 0.0, "encoded": 0, "window": window}
        try:
            built = self.kv.build(session_key, prompt.ids, settings, cancelled)
        except EncodingCancelled as stopped:
            logger.info("warm %s: %s", request.path or "<buffer>", stopped)
            return {"tokens": len(prompt.ids), "finished": False, "ms": (time.perf_counter() - start) * 1000,
                    "window": window}
        self.kv.keep(session_key, built)
        stats = built.stats()
        elapsed = (time.perf_counter() - start) * 1000
        logger.info("warm %s: %s prompt %d tok in %.0f ms (%s: reused %d, rotated %d, encoded %d)",
                    request.path or "<buffer>", "first-window" if window == "short" else "whole", len(built.ids),
                    elapsed, stats["mode"], stats["reused"], stats["rotated"], stats["encoded"])
        return {"tokens": len(built.ids), "finished": True, "ms": elapsed, "window": window, **stats}

    def grow(self, request: CompletionRequest, cancelled: Callable[[], bool] | None = None,
             session_key: str | None = None, settings: EngineSettings | None = None) -> dict:
        """`warm` for the whole prompt of a place answered from its first window, in a side
        session: until it is finished, the session of `session_key` stays the window's, which
        the keys typed meanwhile reuse (a stopped pass keeps the side session's prefix, and the
        next `grow` goes on from it); finished, the whole prompt becomes `session_key`'s."""
        if session_key is None:
            return self.warm(request, cancelled, None, settings)
        side = _whole_prompt_key(session_key)
        window = self.kv.sessions.peek(session_key)
        if self.kv.sessions.peek(side) is None and window is not None:
            # The window's session, shared: building from it copies what it reuses, so the
            # window's own cache stays as it is.
            self.kv.sessions.put(side, window)
        result = self._warm(request, cancelled, side, settings or self.settings, first_window=False)
        if result.get("finished"):
            self.kv.move(side, session_key)
        return result

    def complete(self, request: CompletionRequest, cancelled: Callable[[], bool] | None = None,
                 session_key: str | None = None, settings: EngineSettings | None = None,
                 alternatives: int = 0) -> Completion:
        """Complete `request`. With `session_key` (e.g. the document URI) the KV cache of that
        key's previous prompt is reused as the settings' `kv_mode` says, and its last
        suggestion is recycled where the user typed into it. With `alternatives`, up to that
        many other suggestions too (not from a recycled one)."""
        settings = settings or self.settings
        start = time.perf_counter()
        stages = Stages(start)
        policy = decide_policy(request.text, request.cursor, request.language, settings.max_lines)
        recall = self.memory.recall(session_key, request)
        recycled = recall.rest if settings.speculative and "recycle" in settings.draft_sources else ""
        if recycled and settings.recycle_direct and not alternatives:
            # The stop rules of the new position apply (typing into a block suggestion puts
            # the cursor mid-line: the answer ends with that line).
            direct = finalize(check_text(recycled, policy).text, policy)
            if direct:
                stages.lap("plan")
                return replace(self._answer_rest(session_key, request, recall, direct, start), stages=stages.as_dict())
        if settings.token_healing:
            recall = self.memory.align(recall, request, self.decode)
        stages.lap("plan")
        prompt, healing, head, base = self._prompt_for(request, recall, settings)
        window = "full"
        short = self._first_window_prompt(session_key, request, recall, prompt, settings)
        if short is not None:
            full_tokens = len(prompt.ids)
            (prompt, healing, head, base), window = short, "short"
            logger.info("complete %s: far from the warm session: the first %d of %d prompt tokens answer first",
                        request.path or "<buffer>", len(prompt.ids), full_tokens)
        stages.lap("prompt")
        try:
            built = self.kv.build(session_key, prompt.ids, settings, cancelled)
        except EncodingCancelled as stopped:
            logger.info("complete %s: %s", request.path or "<buffer>", stopped)
            stages.lap("encode")
            return Completion(text="", tokens=0, prompt_tokens=len(prompt.ids),
                              prompt_ms=(time.perf_counter() - start) * 1000, decode_ms=0.0,
                              stop_reason="cancelled", model=self.loaded.name, multiline=policy.multiline,
                              stages=stages.as_dict())
        stages.lap("encode")
        drafter = self._drafter(session_key, built, recall, recycled, healing, policy, settings)
        decode_start = time.perf_counter()
        prompt_ms = (decode_start - start) * 1000
        decoded = self.decoder.run(built, policy, settings, decode_start, cancelled, drafter, healing)
        if drafter is not None:
            drafter.finish()
        stages.lap("decode")
        final = finalize(decoded.text, policy, decoded.reason) if decoded.reason != "cancelled" else ""
        others = self._alternatives(built, decoded, final, alternatives, policy, settings, cancelled, healing) \
            if alternatives and decoded.ids and decoded.reason != "cancelled" else ()
        self.kv.keep(session_key, built)
        ids = (recall.typed.tokens if recall.typed else []) + decoded.ids  # the stream after `head`
        self.memory.remember(session_key, request, recall, final, head, base, ids)
        self._remember_suggestion(ids, settings)
        stages.lap("finish")
        return replace(self._result(request, final, decoded, built, policy, drafter, start, prompt_ms),
                       window=window, alternatives=others, stages=stages.as_dict())

    def _alternatives(self, built: PromptCache, decoded: Decoded, final: str, count: int, policy: StopPolicy,
                      settings: EngineSettings, cancelled: Callable[[], bool] | None,
                      healing: Healing | None) -> tuple[str, ...]:
        """Up to `count` other suggestions from the same prompt cache: each branch starts with
        the most likely token not tried yet at the first free place (after the tokens that
        rewrite what token healing took back) and goes on greedily; a few extra branches when
        some end as the same text, or empty."""
        healed = _healed_length(decoded.ids, healing)
        if healed >= len(decoded.ids):
            return ()
        start = len(built.ids) + healed  # the branch point in the cache
        if healed:
            crop_to(built.cache, start - 1)
            at_branch = self._forward_one(built.cache, decoded.ids[healed - 1], start - 1)
        else:
            at_branch = built.logits
        found: list[str] = []
        tried = [decoded.ids[healed]]
        for _ in range(count + 2):
            if len(found) == count or (cancelled is not None and cancelled()):
                break
            crop_to(built.cache, start)
            logits = at_branch.clone()
            logits[0, -1, tried] = float("-inf")
            branch = self.decoder.run(replace(built, logits=logits), policy, settings, time.perf_counter(),
                                      cancelled, None, healing, decoded.ids[:healed])
            if len(branch.ids) <= healed or branch.reason == "cancelled":
                break
            tried.append(branch.ids[healed])
            text = finalize(branch.text, policy, branch.reason)
            if text and text != final and text not in found:
                found.append(text)
        crop_to(built.cache, len(built.ids))
        return tuple(found)

    @torch.inference_mode()
    def _forward_one(self, cache, token: int, position: int) -> torch.Tensor:
        """The logits after `token` at `position`, appended to `cache`."""
        device = self.loaded.device
        out = self.loaded.model(input_ids=torch.tensor([[token]], device=device),
                                position_ids=torch.tensor([[position]], device=device),
                                cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits

    def _first_window_prompt(self, session_key: str | None, request: CompletionRequest, recall: Recall,
                             prompt: FimPrompt, settings: EngineSettings):
        """`_prompt_for`'s answer for the first window when it answers first, else None (the
        whole `prompt`). It does where the session is far from this place: the whole prompt
        would encode more than the window's tokens, and at least a window's more than the
        window itself would (a window that is already warm is reused, also where the whole
        prompt shares its start); never while the user types into a suggestion."""
        window = settings.first_window_tokens
        if not window or session_key is None or recall.typed is not None or len(prompt.ids) <= 2 * window:
            return None
        session = self.kv.sessions.peek(session_key)
        if session is not None and len(prompt.ids) - common_prefix(session.ids, prompt.ids) <= window:
            return None  # typing near the cached place: no diff needed on this keystroke
        whole = self.kv.tokens_to_encode(session_key, prompt.ids, settings)
        if whole <= window:
            return None
        short = self._prompt_for(request, recall, _first_window(settings))
        if self.kv.tokens_to_encode(session_key, short[0].ids, settings) + window > whole:
            return None
        return short

    def _prompt_for(self, request: CompletionRequest, recall: Recall, settings: EngineSettings):
        """(prompt, healing, head, base): after typing into the last suggestion, its own
        prompt followed by the typed tokens (the model's context at that point of the
        suggestion, and a pure append to its cache); else the request's prompt."""
        if recall.typed is not None:
            base = recall.last.prompt
            prompt = replace(base, ids=[*base.ids, *recall.typed.tokens])
            return prompt, self._healing(recall.typed.leftover, settings), recall.last.head, base
        prompt, healing, head = self._prompt(request, settings)
        return prompt, healing, head, prompt

    def _result(self, request: CompletionRequest, text: str, decoded: Decoded, built: PromptCache,
                policy: StopPolicy, drafter: Drafter | None, start: float, prompt_ms: float) -> Completion:
        decode_ms = (time.perf_counter() - start) * 1000 - prompt_ms
        result = Completion(
            text=text, tokens=len(decoded.ids), prompt_tokens=len(built.ids), prompt_ms=prompt_ms,
            decode_ms=decode_ms, stop_reason=decoded.reason, model=self.loaded.name,
            multiline=policy.multiline,
            first_token=decoded.ids[0] if decoded.ids else int(built.logits[0, -1].argmax()),
            kv=built.stats(), spec=drafter.stats.as_dict() if drafter else {},
        )
        kv = result.kv
        logger.info(
            "complete %s: prompt %d tok %.0f ms (%s: reused %d, rotated %d, encoded %d), "
            "decode %d tok %.0f ms (%s), stop=%s, %s",
            request.path or "<buffer>", result.prompt_tokens, prompt_ms, kv["mode"], kv["reused"],
            kv["rotated"], kv["encoded"], result.tokens, decode_ms,
            _describe_spec(result.spec), decoded.reason, "block" if policy.multiline else "line",
        )
        return result

    def _answer_rest(self, session_key: str, request: CompletionRequest, recall: Recall,
                     answer: str, start: float) -> Completion:
        self.memory.keep_rest(session_key, request, recall)
        elapsed = (time.perf_counter() - start) * 1000
        logger.info("complete %s: the rest of the previous suggestion (%d chars), no model call",
                    request.path or "<buffer>", len(answer))
        return Completion(text=answer, tokens=0, prompt_tokens=0, prompt_ms=elapsed, decode_ms=0.0,
                          stop_reason="recycled", model=self.loaded.name, multiline="\n" in answer)

    def status(self) -> dict:
        return {"device": str(self.loaded.device), "dtype": self.loaded.dtype_name,
                "ngramCacheTokens": self.repo_ngrams.total_tokens + self.past_ngrams.total_tokens,
                "kvSessions": self.kv_status(), "speculation": self.speculation_status()}

    # --- KV sessions ------------------------------------------------------------------
    def kv_status(self) -> dict:
        return self.kv.status()

    def needs_refresh(self, session_key: str) -> bool:
        return self.kv.needs_refresh(session_key)

    def refresh(self, session_key: str, cancelled: Callable[[], bool] = lambda: False) -> bool:
        """Re-encode an approximate KV session in idle time (see KvCacheManager.refresh)."""
        return self.kv.refresh(session_key, cancelled)

    def forget(self, session_key: str) -> None:
        """Free the KV sessions and the last suggestion of a closed document."""
        self.kv.forget(session_key)
        self.kv.forget(_whole_prompt_key(session_key))
        self.memory.forget(session_key)
        if self.draft is not None:
            self.draft.forget(session_key)

    # --- speculation ------------------------------------------------------------------
    def speculation_status(self) -> dict:
        """What drafting learned while serving: acceptance per draft kind (first token, next
        token), and verify-pass cost by size."""
        return {"acceptance": self.acceptance.snapshot(), "passMs": self.forward_cost.snapshot()}

    def remember_text(self, key: str, text: str) -> None:
        """Add a file's tokens to the repository n-gram cache (a draft source)."""
        self.remember_tokens(key, self.encode([text])[0] if text else [])

    def remember_tokens(self, key: str, ids: list[int]) -> None:
        """Add a file's tokens (`encode`) to the repository n-gram cache (bounded; whether a
        request drafts from it is its own settings' choice)."""
        self.repo_ngrams.add(key, ids)

    def _remember_suggestion(self, ids: list[int], settings: EngineSettings) -> None:
        if ids and settings.speculative and "repo" in settings.draft_sources:
            self._past_suggestions = (self._past_suggestions + 1) % _PAST_SUGGESTIONS
            self.past_ngrams.add(f"suggestion:{self._past_suggestions}", ids)

    def _draft_sources(self) -> DraftSourceRegistry:
        registry = DraftSourceRegistry()

        def recycle(request: DraftRequest):
            if not request.recycled:
                return []
            return [RecycledSuggestion(request.recycled, lambda t: self.encode([t])[0], self.decode,
                                       ids=request.recycled_ids)]

        def prompt(request: DraftRequest):
            settings = request.settings
            return [PromptLookup(request.prompt_ids, self.fim.stop_ids, settings.draft_branches,
                                 settings.max_new_tokens)]

        def repo(request: DraftRequest):
            return [RepoLookup(ngrams, request.prompt_ids, self.fim.stop_ids, request.settings.draft_branches, kind)
                    for ngrams, kind in ((self.past_ngrams, "past"), (self.repo_ngrams, "repo"))]

        def model(request: DraftRequest):
            if self.draft is None:
                return []
            return [self.draft.start(request.key, request.prompt_ids, request.settings)]

        for name, factory in (("recycle", recycle), ("prompt", prompt), ("repo", repo), ("model", model)):
            registry.register(name, factory)
        return registry

    def _drafter(self, session_key: str | None, built: PromptCache, recall: Recall, recycled: str,
                 healing: Healing | None, policy: StopPolicy, settings: EngineSettings) -> Drafter | None:
        """The request's drafter; None when speculation is off."""
        if not settings.speculative:
            return None
        # The suggestion's own tokens when the prompt was aligned to them, else its text
        # (decoding writes the healed characters first).
        request = DraftRequest(
            session_key, built.ids, (healing.text if healing else "") + recycled if recycled else "",
            recall.typed.rest if recall.typed else None, settings)
        sources = self.drafts.build(settings.draft_sources, request)
        cost = self.forward_cost if settings.cost_aware_drafts else None
        return Drafter(sources, self.acceptance, cost, settings.max_draft_tokens, settings.max_draft_nodes,
                       trees=supports_trees(built.cache),
                       room=self.decoder.draft_room(policy, settings, healing))


def _healed_length(ids: list[int], healing: Healing | None) -> int:
    """How many of the first `ids` rewrite the text token healing took back (0 without it)."""
    if healing is None:
        return 0
    for count in range(1, len(ids) + 1):
        if len(healing.decode(ids[:count])) >= len(healing.text):
            return count
    return len(ids)


def _describe_spec(spec: dict) -> str:
    if not spec:
        return "plain"
    return (f"{spec['verify_steps']} passes, {spec['accepted']}/{spec['drafted']} drafted accepted "
            f"{spec['accepted_by_source']}")


def _whole_prompt_key(session_key: str) -> str:
    """The side session `grow` fills for `session_key`."""
    return f"{session_key}\x00whole-prompt"


def _first_window(settings: EngineSettings) -> EngineSettings:
    """The settings of a far place's first answer: its nearest `first_window_tokens`, no
    repository context."""
    return replace(settings, max_prompt_tokens=settings.first_window_tokens, context_budget_tokens=0)
