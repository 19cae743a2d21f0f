"""FIM prompts as text, for an engine that tokenizes them itself (a remote server).

The prompt is built by the same builder as the local one (prompt.py: budgets, repository
context, truncation at line boundaries) over either the served model family's tokenizer,
when we have its files, or a tokenizer of single characters whose budget is the token
budget times a safe number of characters per token. Its ids are then written out as text,
FIM markers included, which the engine tokenizes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .context import select_context
from .fim import FIM_TEMPLATES, FimSpec, FimTemplate, resolve_fim
from .prompt import PromptBudget, build_fim_prompt
from .types import CompletionRequest, EngineSettings

# Code averages 3-4 characters per token in the BPE vocabularies of code models; counting
# 3 keeps a character budget inside the token budget for nearly all code.
CHARS_PER_TOKEN = 3
_MARKER_BASE = 0x110000  # past every code point: marker ids of the character tokenizer


def family_of(model_name: str) -> str | None:
    """The FIM family a served model's name suggests (e.g. a GGUF path or a hub id)."""
    name = model_name.lower().replace("_", "-")
    hints = {"qwen": "qwen2.5-coder", "deepseek": "deepseek-coder", "starcoder": "starcoder",
             "codellama": "codellama", "code-llama": "codellama"}
    return next((family for hint, family in hints.items() if hint in name), None)


@dataclass(frozen=True)
class TextPrompt:
    text: str
    tokens: int  # in the tokenizer's units (characters for the character tokenizer)
    stops: tuple[str, ...]  # strings that end the middle


class TextPrompter:
    """Builds FIM prompts as text for one model family."""

    def __init__(self, family: str, tokenizer=None):
        if family not in FIM_TEMPLATES:
            raise ValueError(f"unknown FIM family {family!r}; valid: {', '.join(FIM_TEMPLATES)}")
        self.template = FIM_TEMPLATES[family]
        self.tokenizer = tokenizer
        self.spec = resolve_fim(tokenizer, family) if tokenizer is not None else _character_spec(self.template)
        self.scale = 1 if tokenizer is not None else CHARS_PER_TOKEN

    @property
    def budget_unit(self) -> str:
        return "tokens" if self.tokenizer is not None else f"characters ({CHARS_PER_TOKEN} per token)"

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        if self.tokenizer is None:
            return [[ord(c) for c in text] for text in texts]
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def build(self, request: CompletionRequest, settings: EngineSettings) -> TextPrompt:
        files, context_units = select_context(request.context, self.encode,
                                              settings.context_budget_tokens * self.scale)
        budget = PromptBudget(settings.max_prompt_tokens * self.scale + context_units, settings.suffix_share)
        prompt = build_fim_prompt(self.spec, self.encode, request.text[: request.cursor],
                                  request.text[request.cursor :], budget, path=request.path,
                                  repo_name=request.repo_name, repo_files=files)
        stops = tuple(m for m in (*self.template.stop_markers, self.template.file_sep) if m)
        return TextPrompt(self._text(prompt.ids), len(prompt.ids), stops)

    def _text(self, ids: list[int]) -> str:
        if self.tokenizer is not None:
            return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        markers = _markers(self.template)
        return "".join(markers[i - _MARKER_BASE] if i >= _MARKER_BASE else chr(i) for i in ids)


def _markers(template: FimTemplate) -> list[str]:
    return [template.prefix, template.suffix, template.middle, template.repo_name or "", template.file_sep or ""]


def _character_spec(template: FimTemplate) -> FimSpec:
    ids = {marker: _MARKER_BASE + index for index, marker in enumerate(_markers(template))}
    return FimSpec(template, ids[template.prefix], ids[template.suffix], ids[template.middle],
                   ids[template.repo_name] if template.repo_name else None,
                   ids[template.file_sep] if template.file_sep else None, frozenset())
