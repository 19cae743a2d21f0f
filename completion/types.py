"""Requests and results of the completion engine (frozen; converted to LSP/JSON at the edges)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .kv_plan import MODES
from .prompt import RepoFile
from .speculative.sources import SOURCES


@dataclass(frozen=True)
class CompletionRequest:
    text: str  # the whole document
    cursor: int  # offset into `text`, in characters (code points)
    language: str | None = None  # our language name (see syntax.language_for)
    path: str | None = None  # path relative to the repository root, shown to the model
    repo_name: str | None = None
    # Repository snippets for the prompt, most useful first (see completion/context.py)
    context: tuple[RepoFile, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.cursor <= len(self.text):
            raise ValueError(f"cursor {self.cursor} is outside the document (0..{len(self.text)})")


@dataclass(frozen=True)
class EngineSettings:
    max_new_tokens: int = 64
    # Decoding time, counted after the prompt is encoded (paid work is never thrown away):
    # at least one token; an unfinished first line goes on up to first_line_cap_ms.
    time_budget_ms: float = 10_000.0
    first_line_cap_ms: float = 15_000.0
    max_prompt_tokens: int = 1024
    context_budget_tokens: int = 512  # repository context, on top of max_prompt_tokens
    # A place whose prompt would encode more than twice this many new tokens is answered
    # first from a window of this many tokens nearest the cursor (0: never); the server then
    # grows it to the whole prompt in the warm-up lane.
    first_window_tokens: int = 0
    suffix_share: float = 0.25
    max_lines: int = 16
    kv_mode: str = "pie"  # full | prefix | pie: how the previous prompt's KV cache is reused
    reencode_margin: int = 64  # tokens after each change re-encoded too (fidelity vs speed)
    kv_budget_mb: int = 512  # memory of the KV sessions kept, over all documents (LRU)
    refresh_after_edits: int = 32  # approximate reuses before a full re-encode
    refresh_after_stale: int = 16_384  # tokens reused after a change before a full re-encode
    # Speculative decoding (greedy-lossless): which draft sources, how long a draft may be.
    speculative: bool = True
    draft_sources: tuple[str, ...] = SOURCES  # any of recycle, prompt, repo, model
    max_draft_tokens: int = 16
    max_draft_nodes: int = 32  # tree size limit per verify pass, root included
    draft_branches: int = 3  # alternative continuations an n-gram source may offer
    cost_aware_drafts: bool = True  # verify a draft only when it beats plain decoding per ms
    recycle_direct: bool = True  # typed into the last suggestion: answer its rest, no model call
    # The prompt ends where the model would cut tokens (see healing.py)
    token_healing: bool = True
    repo_cache_tokens: int = 200_000  # repository n-gram cache (open files, past suggestions)

    def out_of_time(self, text: str, decoding_ms: float) -> bool:
        """Whether decoding that wrote `text` in `decoding_ms` must stop for time. Past the
        budget, an unfinished first line is still finished, up to first_line_cap_ms: on a busy
        machine a budget spent after two tokens gave fragments such as "1" or "i"."""
        if decoding_ms < self.time_budget_ms:
            return False
        return "\n" in text.lstrip() or decoding_ms >= max(self.first_line_cap_ms, self.time_budget_ms)

    def __post_init__(self) -> None:
        if self.kv_mode not in MODES:
            raise ValueError(f"unknown kv_mode {self.kv_mode!r}; valid: {', '.join(MODES)}")
        if not 1 <= self.max_new_tokens <= 4096:
            raise ValueError(f"max_new_tokens must be within 1..4096, got {self.max_new_tokens}")
        if not 64 <= self.max_prompt_tokens <= 32_768:
            raise ValueError(f"the prompt budget (contextTokens) must be within 64..32768, got {self.max_prompt_tokens}")
        unknown = set(self.draft_sources) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown draft sources {sorted(unknown)}; valid: {', '.join(SOURCES)}")
        if self.max_draft_tokens < 1 or self.max_draft_nodes < 2 or self.draft_branches < 1:
            raise ValueError("max_draft_tokens and draft_branches must be >= 1, max_draft_nodes >= 2")
        if self.first_window_tokens and not 64 <= self.first_window_tokens <= self.max_prompt_tokens:
            raise ValueError(f"first_window_tokens must be 0 or within 64..max_prompt_tokens, got "
                             f"{self.first_window_tokens}")
        if not 0 <= self.context_budget_tokens <= 32_768:
            raise ValueError(f"context_budget_tokens must be within 0..32768, got {self.context_budget_tokens}")
        if self.time_budget_ms < 0 or self.first_line_cap_ms < 0:
            raise ValueError(f"time budgets must be >= 0, got {self.time_budget_ms} and {self.first_line_cap_ms}")


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int  # tokens generated (including any the stop rules cut off)
    prompt_tokens: int
    prompt_ms: float
    decode_ms: float
    stop_reason: str  # eos | end_of_line | dedent | reached_suffix | next_statement | max_lines
    #                   | max_tokens | time_budget | cancelled
    #                   | recycled (the rest of the previous suggestion, no model call)
    model: str
    multiline: bool
    first_token: int | None = None  # id of the first generated token (fidelity checks)
    # KV reuse of this request: mode used, tokens reused / re-rotated / encoded
    kv: dict = field(default_factory=dict, compare=False)
    # Speculation in this request: verify steps, drafted / accepted tokens, by source
    spec: dict = field(default_factory=dict, compare=False)
    window: str = "full"  # "short": answered from the first window (EngineSettings)
    alternatives: tuple[str, ...] = ()  # other suggestions, when asked for (distinct, not empty)
    stages: dict = field(default_factory=dict, compare=False)  # ms per stage (completion/stages.py)
