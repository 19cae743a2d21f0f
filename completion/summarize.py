"""One- or two-sentence summaries of a function or class with the instruct model's chat
template (a plain prompt when the tokenizer has none), greedy, a few dozen tokens.

The prompt is prefilled in small chunks and `cancelled()` is checked between chunks, after
every token and before every decoder layer, so a completion request takes the model back
within one layer's time. A stopped summary keeps what it encoded and generated
(`SummaryRun`): the next turn goes on from there instead of starting over.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .growing_cache import crop_to, growing_cache
from .models import LoadedModel
from .preemption import Preempted, between_layers
from .summary_request import SummaryRequest

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = ("You are a code assistant. Summarize what this code does in one or two "
                 "sentences of plain English. Do not repeat the code.")
_PREFILL_CHUNK = 32  # tokens per prompt pass: a request waits at most one layer of one pass
_MAX_CODE_TOKENS = 768
_MAX_CONTEXT_TOKENS = 384


@dataclass(frozen=True)
class Summary:
    text: str
    prompt_tokens: int
    tokens: int
    ms: float
    model: str


@dataclass
class SummaryRun:
    """A summary in progress: the prompt, the cache of what is encoded, the tokens so far."""
    request: SummaryRequest
    ids: list[int]
    cache: object
    encoded: int = 0  # prompt and generated tokens in the cache
    logits: torch.Tensor | None = None  # after the last encoded token
    generated: list[int] = field(default_factory=list)
    ms: float = 0.0  # time spent on it over all turns


class Summarizer:
    """Summaries from one loaded model (the completion model: instruct checkpoints)."""

    def __init__(self, loaded: LoadedModel, max_new_tokens: int = 60):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.loaded = loaded
        self.max_new_tokens = max_new_tokens
        tokenizer = loaded.tokenizer
        stops = {tokenizer.eos_token_id}
        for marker in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
            token = tokenizer.convert_tokens_to_ids(marker)
            if isinstance(token, int) and token != tokenizer.unk_token_id:
                stops.add(token)
        self.stop_ids = {s for s in stops if s is not None}

    def prompt_ids(self, request: SummaryRequest) -> list[int]:
        tokenizer = self.loaded.tokenizer
        code = self._clip(request.code, _MAX_CODE_TOKENS)
        context = self._clip(request.context, _MAX_CONTEXT_TOKENS)
        fence = request.language or ""
        user = ""
        if context.strip():
            user += f"Context from the repository:\n```{fence}\n{context}\n```\n\n"
        user += (f"Summarize what the {request.kind} `{request.qualified_name}` does, in one or "
                 f"two sentences:\n```{fence}\n{code}\n```")
        if getattr(tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = f"{SYSTEM_PROMPT}\n\n{user}\n\nSummary:"
        return tokenizer([text], add_special_tokens=False)["input_ids"][0]

    def _clip(self, text: str, tokens: int) -> str:
        ids = self.loaded.tokenizer([text], add_special_tokens=False)["input_ids"][0]
        if len(ids) <= tokens:
            return text
        return self.loaded.tokenizer.decode(ids[:tokens]) + "\n..."

    def summarize(self, request: SummaryRequest, cancelled: Callable[[], bool] = lambda: False) -> Summary | None:
        """The summary, or None when `cancelled()` became true first."""
        return self.advance(self.start(request), cancelled)

    def start(self, request: SummaryRequest) -> SummaryRun:
        return SummaryRun(request, self.prompt_ids(request), growing_cache(self.loaded.model.config))

    @torch.inference_mode()
    def advance(self, run: SummaryRun, cancelled: Callable[[], bool] = lambda: False) -> Summary | None:
        """Go on with `run` until its summary is written (returned) or `cancelled()` turns
        true (None; `run` keeps its progress). Before each decoder layer `cancelled.preempted()`
        (or `cancelled()` without one) is checked: true drops the pass in flight."""
        start = time.perf_counter()
        try:
            text = self._advance(run, cancelled)
        finally:
            run.ms += (time.perf_counter() - start) * 1000
        if text is None:
            return None
        logger.info("summary of %s: prompt %d tok, %d tok generated in %.0f ms",
                    run.request.qualified_name, len(run.ids), len(run.generated), run.ms)
        return Summary(text, len(run.ids), len(run.generated), run.ms, self.loaded.name)

    def _advance(self, run: SummaryRun, cancelled: Callable[[], bool]) -> str | None:
        preempted = getattr(cancelled, "preempted", cancelled)
        model, device = self.loaded.model, self.loaded.device

        def forward(tokens: list[int]) -> bool:
            if cancelled():
                return False
            inputs = torch.tensor([tokens], device=device)
            try:
                with between_layers(model, preempted):  # gives the model back within a layer
                    run.logits = model(input_ids=inputs, cache=run.cache, use_cache=True, logits_to_keep=1).logits
            except Preempted:
                crop_to(run.cache, run.encoded)
                return False
            run.encoded += len(tokens)
            return True

        while run.encoded < len(run.ids):
            if not forward(run.ids[run.encoded : run.encoded + _PREFILL_CHUNK]):
                return None
        while True:
            if run.encoded == len(run.ids) + len(run.generated):  # the last token's logits are in
                token = int(run.logits[0, -1].argmax())
                if token in self.stop_ids or len(run.generated) >= self.max_new_tokens:
                    break
                run.generated.append(token)
            if not forward(run.generated[-1:]):
                return None
        return _tidy(self.loaded.tokenizer.decode(run.generated, skip_special_tokens=True))


def _tidy(text: str) -> str:
    """One paragraph of at most two sentences; one cut off by the token limit ends with an
    ellipsis."""
    text = " ".join(text.split())
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z`])", text)
    if len(sentences) > 2:
        return " ".join(sentences[:2])
    if text and text[-1] not in ".!?)`" and len(text) > 40:
        text += "…"
    return text
