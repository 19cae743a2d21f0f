"""Greedy FIM completion with the KV cache: prompt → prefill → decode with stop rules."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from transformers import DynamicCache

from .context import select_context
from .fim import resolve_fim
from .healing import Healing, TypedSuggestion, Vocabulary, align_typed
from .kv_plan import ReusePlan, plan_reuse
from .kv_session import (KvSession, KvSessions, build_cache, encode_in_chunks, rope_inv_freq,
                         shift_support)
from .models import LoadedModel
from .prompt import FimPrompt, PromptBudget, build_fim_prompt
from .speculative import AcceptanceStats, Drafter, ForwardCost, greedy_decode
from .speculative.draft_model import DraftModel
from .speculative.ngram import NgramCache
from .speculative.sources import DraftSource, PromptLookup, RecycledSuggestion, RepoLookup
from .speculative.verify import supports_trees
from .stops import StopPolicy, check_text, decide_policy, finalize
from .types import Completion, CompletionRequest, EngineSettings

logger = logging.getLogger(__name__)


class CompletionEngine:
    """Owns one loaded model and turns completion requests into suggestions."""

    def __init__(self, loaded: LoadedModel, settings: EngineSettings = EngineSettings(),
                 draft: LoadedModel | None = None):
        self.loaded = loaded
        self.settings = settings
        self.fim = resolve_fim(loaded.tokenizer)
        self.sessions = KvSessions(settings.kv_budget_tokens)
        self.inv_freq = rope_inv_freq(loaded.model)
        self._logged_refusal: str | None = None
        # Speculation state that outlives requests: what drafts were worth, what passes cost.
        self.acceptance = AcceptanceStats()
        self.forward_cost = ForwardCost()
        self.repo_ngrams = NgramCache(settings.repo_cache_tokens)  # open files
        self.past_ngrams = NgramCache(settings.repo_cache_tokens)  # past suggestions
        self._suggestions: dict[str, _Suggestion] = {}
        self._past_suggestions = 0
        self.refreshes = 0  # approximate sessions re-encoded from scratch (`refresh`)
        # Token healing needs every token's text (~1.5 s for 152k tokens, once per tokenizer).
        self._vocabulary = Vocabulary.of(loaded.tokenizer) if settings.token_healing else None
        self.draft: DraftModel | None = None
        if draft is not None:
            self.draft = DraftModel(draft, settings.kv_budget_tokens, settings.reencode_margin)
            self.draft.check_tokenizer(loaded.tokenizer)

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
        return self._prompt(request)[0]

    def _prompt(self, request: CompletionRequest) -> tuple[FimPrompt, Healing | None, str]:
        """The request's prompt, the text decoding must rewrite first (token healing) and the
        prefix text the prompt encodes as text."""
        # Repository context gets its own budget on top of the prompt's (see context.py).
        files, context_tokens = select_context(request.context, self.encode,
                                               self.settings.context_budget_tokens)
        budget = PromptBudget(self.settings.max_prompt_tokens + context_tokens,
                              self.settings.suffix_share)
        before = request.text[: request.cursor]

        def build(heal: bool) -> FimPrompt:
            return build_fim_prompt(self.fim, self.encode, before, request.text[request.cursor :], budget,
                                    path=request.path, repo_name=request.repo_name, repo_files=files,
                                    heal=heal)

        prompt = build(self.settings.token_healing)
        healed = self.decode(prompt.healed)
        if not before.endswith(healed):  # a token that is part of a character: keep it
            prompt, healed = build(False), ""
        return prompt, self._healing(healed), before[: len(before) - len(healed)]

    def _healing(self, text: str) -> Healing | None:
        return Healing(text, self._vocabulary, self.decode, self.encode) if text and self._vocabulary else None

    def complete(
        self,
        request: CompletionRequest,
        cancelled: Callable[[], bool] | None = None,
        session_key: str | None = None,
    ) -> Completion:
        """Complete `request`. With `session_key` (e.g. the document URI) the KV cache of that
        key's previous prompt is reused as the settings' `kv_mode` says."""
        start = time.perf_counter()
        policy = decide_policy(request.text, request.cursor, request.language, self.settings.max_lines)
        last = self._suggestions.get(session_key) if session_key is not None else None
        rest = _rest_of(last, request)
        remaining = rest if self.settings.speculative and "recycle" in self.settings.draft_sources else ""
        if remaining and self.settings.recycle_direct:
            # The stop rules of the new position apply (typing into a block suggestion puts
            # the cursor mid-line: the answer ends with that line).
            direct = finalize(check_text(remaining, policy).text, policy)
            if direct:
                return self._answer_recycled(session_key, last, request, direct, remaining, start)
        typed = self._typed(last, request)
        if typed is not None:
            # The suggestion's own prompt, then the typed tokens after the middle marker: the
            # model's context at that point of the suggestion (and a pure append to its cache).
            base, head = last.prompt, last.head
            prompt, healing = replace(base, ids=[*base.ids, *typed.tokens]), self._healing(typed.leftover)
        else:
            prompt, healing, head = self._prompt(request)
            base = prompt
        old = self.sessions.get(session_key) if session_key is not None else None
        plan, mode = self._plan(old, prompt.ids)
        cache, logits = build_cache(self.loaded.model, plan, prompt.ids, old, self.inv_freq)
        drafter, draft_source = self._drafter(session_key, prompt.ids, remaining, typed, healing, cache,
                                              policy)
        prompt_ms = (time.perf_counter() - start) * 1000
        generated, reason, text = self._decode(cache, logits, policy, start, cancelled, drafter, healing)
        if draft_source is not None:
            self.draft.keep(draft_source)
        if session_key is not None:
            self._keep_session(session_key, prompt.ids, cache, old if plan.reused else None, plan.stale)
        final = finalize(text, policy) if reason != "cancelled" else ""
        # Kept for the next request: the token stream after `head`, typed tokens included.
        ids = (typed.tokens if typed else []) + generated
        known, ids = _known_rest(last, rest, final, ids) if typed else (final, ids)
        self._remember(session_key, request, known, head, base, ids)
        kv = {"mode": mode, "reused": plan.reused, "rotated": plan.rotated,
              "encoded": plan.encoded, "stale": plan.stale}
        decode_ms = (time.perf_counter() - start) * 1000 - prompt_ms
        result = Completion(
            text=final,
            tokens=len(generated),
            prompt_tokens=len(prompt.ids),
            prompt_ms=prompt_ms,
            decode_ms=decode_ms,
            stop_reason=reason,
            model=self.loaded.name,
            multiline=policy.multiline,
            first_token=generated[0] if generated else int(logits[0, -1].argmax()),
            kv=kv,
            spec=drafter.stats.as_dict() if drafter else {},
        )
        logger.info(
            "complete %s: prompt %d tok %.0f ms (%s: reused %d, rotated %d, encoded %d), "
            "decode %d tok %.0f ms (%s), stop=%s, %s",
            request.path or "<buffer>", result.prompt_tokens, prompt_ms, kv["mode"], kv["reused"],
            kv["rotated"], kv["encoded"], result.tokens, decode_ms,
            _describe_spec(result.spec), reason, "block" if policy.multiline else "line",
        )
        return result

    def _choose_mode(self, old: KvSession | None) -> str:
        mode = self.settings.kv_mode
        if mode != "pie":
            return mode
        # Checked against the current settings: the server may change the prompt budget.
        refusal = shift_support(self.loaded.model.config, self.inv_freq,
                                self.settings.max_prompt_tokens + self.settings.context_budget_tokens)
        if refusal:
            if refusal != self._logged_refusal:
                logger.warning("KV re-rotation disabled, using prefix reuse: %s", refusal)
                self._logged_refusal = refusal
            return "prefix"
        if old is not None and (
            old.edits_since_full >= self.settings.refresh_after_edits
            or old.stale_since_full >= self.settings.refresh_after_stale
        ):
            return "full"  # the approximation got old: refresh it
        return mode

    def _plan(self, old: KvSession | None, prompt_ids: list[int]) -> tuple[ReusePlan, str]:
        mode = self._choose_mode(old)
        margin = self.settings.reencode_margin if mode == "pie" else 0
        return plan_reuse(old.ids if old else [], prompt_ids, mode, margin=margin), mode

    def _keep_session(self, key: str, prompt_ids: list[int], cache: DynamicCache,
                      reused_from: KvSession | None, stale: int) -> None:
        """Store the prompt's cache for the next request; count how approximate it is."""
        extra = cache.get_seq_length() - len(prompt_ids)
        if extra > 0:
            cache.crop(-extra)  # generated tokens are not part of the next prompt
        age = reused_from.edits_since_full if reused_from else 0
        stale_before = reused_from.stale_since_full if reused_from else 0
        session = KvSession(list(prompt_ids), cache, age + (1 if stale else 0), stale_before + stale)
        self.sessions.put(key, session)

    def kv_status(self) -> dict:
        sessions = self.sessions.snapshot()
        return {"documents": len(sessions), "tokens": sum(len(s) for s in sessions),
                "approximate": sum(1 for s in sessions if s.edits_since_full), "refreshed": self.refreshes}

    def speculation_status(self) -> dict:
        """What drafting learned while serving: acceptance per draft kind (first token, next
        token), and verify-pass cost by size."""
        return {"acceptance": self.acceptance.snapshot(), "passMs": self.forward_cost.snapshot()}

    def needs_refresh(self, session_key: str) -> bool:
        """Whether the session's cache is approximate (reused across a change since its last
        full encode)."""
        session = self.sessions.peek(session_key)
        return session is not None and session.edits_since_full > 0

    def refresh(self, session_key: str, cancelled: Callable[[], bool] = lambda: False) -> bool:
        """Re-encode an approximate session's prompt from scratch, so that the next request
        starts from exact states and never pays a whole refresh itself (see `_choose_mode`).
        For idle time: when `cancelled()` turns true the session stays as it was. True when
        the session was refreshed."""
        old = self.sessions.get(session_key)
        if old is None or old.edits_since_full == 0:
            return False
        start = time.perf_counter()
        cache = encode_in_chunks(self.loaded.model, old.ids, cancelled)
        if cache is None or self.sessions.get(session_key) is not old:
            return False
        self.sessions.put(session_key, KvSession(old.ids, cache))
        self.refreshes += 1
        logger.info("refreshed the KV session of %s: %d tokens in %.0f ms (after %d approximate reuses)",
                    session_key, len(old.ids), (time.perf_counter() - start) * 1000, old.edits_since_full)
        return True

    def forget(self, session_key: str) -> None:
        """Free the KV session and the last suggestion of a closed document."""
        self.sessions.drop(session_key)
        self._suggestions.pop(session_key, None)
        if self.draft is not None:
            self.draft.forget(session_key)

    def remember_text(self, key: str, text: str) -> None:
        """Add a file's tokens to the repository n-gram cache (a draft source)."""
        if self.settings.speculative and "repo" in self.settings.draft_sources:
            self.repo_ngrams.add(key, self.encode([text])[0] if text else [])

    def _typed(self, last: _Suggestion | None, request: CompletionRequest) -> TypedSuggestion | None:
        """The last suggestion's tokens split at the cursor, if the user typed into it (and
        changed nothing else): the prompt then ends as the model wrote it."""
        if last is None or not self.settings.token_healing or request.text[request.cursor :] != last.after:
            return None
        return align_typed(last.head, last.ids, request.text[: request.cursor], self.decode)

    def _answer_recycled(self, session_key: str, last: _Suggestion, request: CompletionRequest,
                         answer: str, remaining: str, start: float) -> Completion:
        # The same token stream still describes the text after `head`: keep it for alignment,
        # and all of the rest (the answer may be its first line only).
        self._suggestions[session_key] = _Suggestion(request.text[: request.cursor],
                                                     request.text[request.cursor :], remaining,
                                                     last.head, last.prompt, last.ids)
        elapsed = (time.perf_counter() - start) * 1000
        logger.info("complete %s: the rest of the previous suggestion (%d chars), no model call",
                    request.path or "<buffer>", len(answer))
        return Completion(text=answer, tokens=0, prompt_tokens=0, prompt_ms=elapsed, decode_ms=0.0,
                          stop_reason="recycled", model=self.loaded.name, multiline="\n" in answer)

    def _remember(self, session_key: str | None, request: CompletionRequest, text: str, head: str,
                  prompt: FimPrompt, ids: list[int]) -> None:
        if session_key is not None:
            if text:
                self._suggestions[session_key] = _Suggestion(
                    request.text[: request.cursor], request.text[request.cursor :], text, head,
                    prompt, list(ids))
            else:
                self._suggestions.pop(session_key, None)
        if ids and self.settings.speculative and "repo" in self.settings.draft_sources:
            self._past_suggestions = (self._past_suggestions + 1) % 64
            self.past_ngrams.add(f"suggestion:{self._past_suggestions}", ids)

    def _drafter(self, session_key: str | None, prompt_ids: list[int], remaining: str,
                 typed: TypedSuggestion | None, healing: Healing | None, cache: DynamicCache,
                 policy: StopPolicy):
        """The request's drafter (None when speculation is off) and its draft-model source."""
        settings = self.settings
        if not settings.speculative:
            return None, None
        wanted = settings.draft_sources
        sources: list[DraftSource] = []
        if remaining and "recycle" in wanted:
            # The suggestion's own tokens when the prompt was aligned to them, else its text
            # (decoding writes the healed characters first).
            sources.append(RecycledSuggestion((healing.text if healing else "") + remaining,
                                              lambda t: self.encode([t])[0], self.decode,
                                              ids=typed.rest if typed else None))
        if "prompt" in wanted:
            sources.append(PromptLookup(prompt_ids, self.fim.stop_ids, settings.draft_branches,
                                        settings.max_new_tokens))
        if "repo" in wanted:
            for ngrams, kind in ((self.past_ngrams, "past"), (self.repo_ngrams, "repo")):
                sources.append(RepoLookup(ngrams, prompt_ids, self.fim.stop_ids, settings.draft_branches, kind))
        draft_source = None
        if "model" in wanted and self.draft is not None:
            draft_source = self.draft.start(session_key, prompt_ids)
            sources.append(draft_source)
        cost = self.forward_cost if settings.cost_aware_drafts else None
        drafter = Drafter(sources, self.acceptance, cost, settings.max_draft_tokens,
                          settings.max_draft_nodes, trees=supports_trees(cache),
                          room=self._draft_room(policy, healing))
        return drafter, draft_source

    def _stop_check(self, generated: list[int], policy: StopPolicy, healing: Healing | None):
        written = self.decode(generated)
        return check_text(healing.strip(written) if healing else written, policy)

    def _draft_room(self, policy: StopPolicy, healing: Healing | None):
        """How many tokens of a draft can still be part of the suggestion. A draft running
        past the token where the stop rules end it (the end of the line, for a one-line
        suggestion) or past the token limit is verify work thrown away: on a CPU a pass
        over 16 tokens costs several single steps."""
        def room(generated: list[int], draft: list[int]) -> int:
            # The pass's bonus token is one more: it may be the last one allowed.
            limit = min(len(draft), self.settings.max_new_tokens - len(generated) - 1)
            for count in range(max(limit, 0)):
                if self._stop_check([*generated, *draft[: count + 1]], policy, healing).stop:
                    return count  # the token that ends it comes as the bonus, if right
            return max(limit, 0)
        return room

    def _decode(self, cache: DynamicCache, logits: torch.Tensor, policy: StopPolicy, start: float,
                cancelled: Callable[[], bool] | None, drafter: Drafter | None,
                healing: Healing | None) -> tuple[list[int], str, str]:
        settings = self.settings
        text = ""

        def should_stop(generated: list[int]) -> str | None:
            nonlocal text
            check = self._stop_check(generated, policy, healing)
            text = check.text
            if check.stop:
                return check.reason
            if len(generated) >= settings.max_new_tokens:
                return "max_tokens"
            if (time.perf_counter() - start) * 1000 >= settings.time_budget_ms:
                return "time_budget"
            if cancelled is not None and cancelled():
                return "cancelled"
            return None

        generated, reason = greedy_decode(self.loaded.model, cache, logits, self.fim.stop_ids,
                                          should_stop, drafter, healing)
        return generated, reason, text


@dataclass(frozen=True)
class _Suggestion:
    """The last suggestion shown for a document, with the text around the cursor then."""

    before: str
    after: str
    text: str
    head: str  # the prefix text `prompt` encodes (healed characters excluded)
    prompt: FimPrompt  # what `ids` were generated from
    ids: list[int]


def _rest_of(last: _Suggestion | None, request: CompletionRequest) -> str:
    """The rest of the last suggestion if the user typed its first characters and changed
    nothing else; "" otherwise."""
    if last is None:
        return ""
    before, after = request.text[: request.cursor], request.text[request.cursor :]
    if after != last.after or not before.startswith(last.before):
        return ""
    typed = before[len(last.before):]
    if not typed or not last.text.startswith(typed):
        return ""
    return last.text[len(typed):]


def _known_rest(last: _Suggestion, rest: str, text: str, ids: list[int]) -> tuple[str, list[int]]:
    """What to remember after completing a typed-into suggestion: the previous suggestion's
    longer rest when the new one is its start, token for token. The stop rules of a mid-line
    cursor cut a block suggestion to its line; a user typing on into the next lines is still
    typing the model's suggestion, and its tokens are still the model's greedy continuation."""
    if text and rest.startswith(text) and last.ids[: len(ids)] == ids:
        return rest, last.ids
    return text, ids


def _describe_spec(spec: dict) -> str:
    if not spec:
        return "plain"
    return (f"{spec['verify_steps']} passes, {spec['accepted']}/{spec['drafted']} drafted accepted "
            f"{spec['accepted_by_source']}")
