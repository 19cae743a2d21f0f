"""Greedy FIM completion with the KV cache: prompt → prefill → decode with stop rules."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import torch
from transformers import DynamicCache

from .fim import resolve_fim
from .kv_plan import ReusePlan, plan_reuse
from .kv_session import KvSession, KvSessions, build_cache, rope_inv_freq, shift_support
from .models import LoadedModel
from .prompt import FimPrompt, PromptBudget, build_fim_prompt
from .stops import StopPolicy, check_text, decide_policy, finalize
from .types import Completion, CompletionRequest, EngineSettings

logger = logging.getLogger(__name__)


class CompletionEngine:
    """Owns one loaded model and turns completion requests into suggestions."""

    def __init__(self, loaded: LoadedModel, settings: EngineSettings = EngineSettings()):
        self.loaded = loaded
        self.settings = settings
        self.fim = resolve_fim(loaded.tokenizer)
        self.sessions = KvSessions(settings.kv_budget_tokens)
        self.inv_freq = rope_inv_freq(loaded.model)
        self._logged_refusal: str | None = None

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.loaded.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        return self.loaded.tokenizer.decode(
            list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def build_prompt(self, request: CompletionRequest) -> FimPrompt:
        budget = PromptBudget(self.settings.max_prompt_tokens, self.settings.suffix_share)
        return build_fim_prompt(
            self.fim,
            self.encode,
            request.text[: request.cursor],
            request.text[request.cursor :],
            budget,
            path=request.path,
            repo_name=request.repo_name,
        )

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
        prompt = self.build_prompt(request)
        old = self.sessions.get(session_key) if session_key is not None else None
        plan, mode = self._plan(old, prompt.ids)
        cache, logits = build_cache(self.loaded.model, plan, prompt.ids, old, self.inv_freq)
        prompt_ms = (time.perf_counter() - start) * 1000
        generated, reason, text = self._decode(cache, logits, policy, start, cancelled)
        if session_key is not None:
            self._keep_session(session_key, prompt.ids, cache, old if plan.reused else None, plan.stale)
        kv = {"mode": mode, "reused": plan.reused, "rotated": plan.rotated,
              "encoded": plan.encoded, "stale": plan.stale}
        decode_ms = (time.perf_counter() - start) * 1000 - prompt_ms
        result = Completion(
            text=finalize(text, policy) if reason != "cancelled" else "",
            tokens=len(generated),
            prompt_tokens=len(prompt.ids),
            prompt_ms=prompt_ms,
            decode_ms=decode_ms,
            stop_reason=reason,
            model=self.loaded.name,
            multiline=policy.multiline,
            first_token=int(logits[0, -1].argmax()),
            kv=kv,
        )
        logger.info(
            "complete %s: prompt %d tok %.0f ms (%s: reused %d, rotated %d, encoded %d), "
            "decode %d tok %.0f ms, stop=%s, %s",
            request.path or "<buffer>", result.prompt_tokens, prompt_ms, kv["mode"], kv["reused"],
            kv["rotated"], kv["encoded"], result.tokens, decode_ms, reason,
            "block" if policy.multiline else "line",
        )
        return result

    def _choose_mode(self, old: KvSession | None) -> str:
        mode = self.settings.kv_mode
        if mode != "pie":
            return mode
        # Checked against the current settings: the server may change the prompt budget.
        refusal = shift_support(self.loaded.model.config, self.inv_freq, self.settings.max_prompt_tokens)
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

    def forget(self, session_key: str) -> None:
        """Free the KV session of a closed document."""
        self.sessions.drop(session_key)

    @torch.inference_mode()
    def _decode(self, cache: DynamicCache, logits: torch.Tensor, policy: StopPolicy, start: float,
                cancelled: Callable[[], bool] | None) -> tuple[list[int], str, str]:
        model, device = self.loaded.model, self.loaded.device
        settings = self.settings
        generated: list[int] = []
        text = ""
        while True:
            next_id = int(logits[0, -1].argmax())
            if next_id in self.fim.stop_ids:
                return generated, "eos", text
            generated.append(next_id)
            check = check_text(self.decode(generated), policy)
            text = check.text
            if check.stop:
                return generated, check.reason, text
            if len(generated) >= settings.max_new_tokens:
                return generated, "max_tokens", text
            if (time.perf_counter() - start) * 1000 >= settings.time_budget_ms:
                return generated, "time_budget", text
            if cancelled is not None and cancelled():
                return generated, "cancelled", text
            step = torch.tensor([[next_id]], dtype=torch.long, device=device)
            logits = model(input_ids=step, cache=cache, use_cache=True).logits

