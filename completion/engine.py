"""Greedy FIM completion with the KV cache: prompt → prefill → decode with stop rules."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import torch
from transformers import DynamicCache

from .fim import resolve_fim
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
        self, request: CompletionRequest, cancelled: Callable[[], bool] | None = None
    ) -> Completion:
        start = time.perf_counter()
        policy = decide_policy(request.text, request.cursor, request.language, self.settings.max_lines)
        prompt = self.build_prompt(request)
        generated, reason, prompt_ms, text = self._generate(prompt.ids, policy, start, cancelled)
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
        )
        logger.info(
            "complete %s: prompt %d tok %.0f ms, decode %d tok %.0f ms, stop=%s, %s",
            request.path or "<buffer>", result.prompt_tokens, prompt_ms, result.tokens,
            decode_ms, reason, "block" if policy.multiline else "line",
        )
        return result

    @torch.inference_mode()
    def _generate(
        self,
        prompt_ids: list[int],
        policy: StopPolicy,
        start: float,
        cancelled: Callable[[], bool] | None,
    ) -> tuple[list[int], str, float, str]:
        model, device = self.loaded.model, self.loaded.device
        settings = self.settings
        cache = DynamicCache(config=model.config)
        inputs = torch.tensor([prompt_ids], dtype=torch.long, device=device)
        logits = model(input_ids=inputs, cache=cache, use_cache=True, logits_to_keep=1).logits
        prompt_ms = (time.perf_counter() - start) * 1000
        generated: list[int] = []
        text = ""
        while True:
            next_id = int(logits[0, -1].argmax())
            if next_id in self.fim.stop_ids:
                return generated, "eos", prompt_ms, text
            generated.append(next_id)
            check = check_text(self.decode(generated), policy)
            text = check.text
            if check.stop:
                return generated, check.reason, prompt_ms, text
            if len(generated) >= settings.max_new_tokens:
                return generated, "max_tokens", prompt_ms, text
            if (time.perf_counter() - start) * 1000 >= settings.time_budget_ms:
                return generated, "time_budget", prompt_ms, text
            if cancelled is not None and cancelled():
                return generated, "cancelled", prompt_ms, text
            step = torch.tensor([[next_id]], dtype=torch.long, device=device)
            logits = model(input_ids=step, cache=cache, use_cache=True).logits
