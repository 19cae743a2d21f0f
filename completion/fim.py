"""FIM templates, one table keyed by model family, checked against the loaded tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FimTemplate:
    family: str
    prefix: str
    suffix: str
    middle: str
    stop_markers: tuple[str, ...]  # end of the middle (beyond the tokenizer's special tokens)
    repo_name: str | None = None  # repository-level form: <repo_name>name <file_sep>path
    file_sep: str | None = None

    @property
    def markers(self) -> tuple[str, ...]:
        optional = tuple(m for m in (self.repo_name, self.file_sep) if m)
        return (self.prefix, self.suffix, self.middle, *self.stop_markers, *optional)


FIM_TEMPLATES: dict[str, FimTemplate] = {
    t.family: t
    for t in (
        FimTemplate(
            "qwen2.5-coder", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
            stop_markers=("<|endoftext|>", "<|fim_pad|>"),
            repo_name="<|repo_name|>", file_sep="<|file_sep|>",
        ),
        FimTemplate(
            "deepseek-coder", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>",
            stop_markers=("<｜end▁of▁sentence｜>",),
        ),
        FimTemplate(
            "starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>",
            stop_markers=("<|endoftext|>", "<fim_pad>"),
            repo_name="<repo_name>", file_sep="<file_sep>",
        ),
        FimTemplate("codellama", "▁<PRE>", "▁<SUF>", "▁<MID>", stop_markers=("▁<EOT>",)),
    )
}


@dataclass(frozen=True)
class FimSpec:
    """A template resolved to token ids of one tokenizer."""

    template: FimTemplate
    prefix_id: int
    suffix_id: int
    middle_id: int
    repo_name_id: int | None
    file_sep_id: int | None
    stop_ids: frozenset[int]


def _token_id(tokenizer: Any, marker: str) -> int | None:
    """The id of `marker` if it is exactly one token of `tokenizer`, else None."""
    token_id = tokenizer.convert_tokens_to_ids(marker)
    if token_id is None or (token_id == tokenizer.unk_token_id and marker != tokenizer.unk_token):
        return None
    return token_id if tokenizer.convert_ids_to_tokens(token_id) == marker else None


def detect_family(tokenizer: Any) -> str:
    """The family whose FIM markers the tokenizer carries as single tokens."""
    for family, template in FIM_TEMPLATES.items():
        core = (template.prefix, template.suffix, template.middle)
        if all(_token_id(tokenizer, m) is not None for m in core):
            return family
    raise ValueError(
        "the model's tokenizer has no known FIM markers; supported families: "
        + ", ".join(FIM_TEMPLATES)
    )


def resolve_fim(tokenizer: Any, family: str | None = None) -> FimSpec:
    """Resolve the template of `family` (detected when None) to ids, verifying each marker."""
    if family is None:
        family = detect_family(tokenizer)
    if family not in FIM_TEMPLATES:
        raise ValueError(f"unknown FIM family {family!r}; valid: {', '.join(FIM_TEMPLATES)}")
    template = FIM_TEMPLATES[family]
    ids = {m: _token_id(tokenizer, m) for m in template.markers}
    missing = [m for m in (template.prefix, template.suffix, template.middle) if ids[m] is None]
    if missing:
        raise ValueError(
            f"FIM family {family!r}: marker(s) {', '.join(missing)} are not single tokens "
            "of this tokenizer"
        )
    stop_ids = {ids[m] for m in template.markers if ids[m] is not None}
    stop_ids.update(tokenizer.all_special_ids)
    stop_ids.update(i for i, t in tokenizer.added_tokens_decoder.items() if t.special)
    return FimSpec(
        template=template,
        prefix_id=ids[template.prefix],
        suffix_id=ids[template.suffix],
        middle_id=ids[template.middle],
        repo_name_id=ids.get(template.repo_name) if template.repo_name else None,
        file_sep_id=ids.get(template.file_sep) if template.file_sep else None,
        stop_ids=frozenset(stop_ids),
    )
