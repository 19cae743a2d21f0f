"""Server settings from initializationOptions and workspace/didChangeConfiguration.

Who may set what (SECURITY.md): a client may set everything in `_KEYS`; the name of the
environment variable holding the engine's API key comes only from the server's own command
line, so a client cannot make the server send another secret."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from completion.model_choice import AUTO
from retrieval.encoder import DEFAULT_ENCODER


@dataclass(frozen=True)
class ServerSettings:
    model: str = AUTO  # the embedded model this machine runs best (completion/model_choice.py)
    engine: str = "local"  # "local" (the model in this process) or an engine's URL (/v1/completions)
    engine_model: str = ""  # the served model's name ("" = the engine's default)
    # The environment variable holding the engine's API key: from the command line only.
    engine_api_key_env: str = "CODEASSIST_ENGINE_API_KEY"
    device: str = "auto"
    dtype: str = "auto"
    max_new_tokens: int = 128  # as llama.vscode's n_predict: room for a block of 16 lines
    context_tokens: int = 1024
    first_window_tokens: int = 256  # a place far from the warm session answers first from this many (0: off)
    time_budget_ms: float = 5000.0
    kv_mode: str = "pie"  # full | prefix | pie
    kv_refresh_idle_ms: float = 2000.0  # idle this long: re-encode an approximate KV cache (0: never)
    inline_completion: bool = True  # feature switches
    completion: bool = True
    speculative: bool = True  # greedy-lossless speculative decoding
    draft_sources: str = "recycle,prompt,repo,model"  # comma-separated, cheapest first
    draft_model: str = ""  # a model of the same tokenizer drafting for `model` ("" = none)
    max_draft_tokens: int = 16
    token_healing: bool = True  # prompts end at a token boundary of the model's choosing
    index_enabled: bool = True  # code search: index the workspace in the background
    index_location: str = "cache"  # CODEASSIST_HOME/indexes, or "workspace" (ROOT/.codeassist/index)
    index_dir: str = ""  # an explicit index folder (overrides index_location)
    embedding_model: str = DEFAULT_ENCODER
    repo_context: bool = True  # repository snippets before the FIM prompt
    repo_context_tokens: int = 512  # their budget, on top of context_tokens
    max_document_chars: int = 1_000_000  # larger documents stay in sync but get no model work
    hover_summaries: bool = True  # LLM summaries in hovers (signature + docstring always)
    summary_budget_ms: float = 3000.0  # a hover waits this long for a summary not cached yet
    index_summaries: bool = False  # the model summarizes every indexed definition while idle, for search
    warm_up: bool = True  # encode the prompt where the cursor rests, before the first key

    @property
    def index_key(self) -> tuple[bool, str, str, str]:
        """Settings that need the index reopened when they change."""
        return (self.index_enabled, self.index_location, self.index_dir, self.embedding_model)

    @property
    def model_key(self) -> tuple[str, ...]:
        """Settings that need the model (or the engine) reloaded when they change."""
        return (self.model, self.device, self.dtype, self.draft_model, self.engine, self.engine_model,
                self.engine_api_key_env)

    def engine_settings(self):
        """What the engine takes from these settings, as `EngineSettings` (ValueError when one
        is invalid); they travel with each request."""
        from completion.types import EngineSettings  # loads torch: only where an engine runs

        return EngineSettings(
            max_new_tokens=self.max_new_tokens,
            time_budget_ms=self.time_budget_ms,
            max_prompt_tokens=self.context_tokens,
            first_window_tokens=self.first_window_tokens,
            context_budget_tokens=self.repo_context_tokens,
            kv_mode=self.kv_mode,
            speculative=self.speculative,
            draft_sources=tuple(name.strip() for name in self.draft_sources.split(",") if name.strip()),
            max_draft_tokens=self.max_draft_tokens,
            token_healing=self.token_healing,
        )


# camelCase (what editors send) -> field name: every setting a client may change
_KEYS = {
    "model": "model", "engine": "engine", "engineModel": "engine_model", "device": "device", "dtype": "dtype", "maxNewTokens": "max_new_tokens",
    "contextTokens": "context_tokens", "firstWindowTokens": "first_window_tokens", "timeBudgetMs": "time_budget_ms", "kvMode": "kv_mode",
    "kvRefreshIdleMs": "kv_refresh_idle_ms",
    "inlineCompletion": "inline_completion", "completion": "completion",
    "speculative": "speculative", "draftSources": "draft_sources", "draftModel": "draft_model",
    "maxDraftTokens": "max_draft_tokens", "tokenHealing": "token_healing",
    "indexEnabled": "index_enabled", "indexLocation": "index_location", "indexDir": "index_dir",
    "embeddingModel": "embedding_model",
    "repoContext": "repo_context", "repoContextTokens": "repo_context_tokens",
    "maxDocumentChars": "max_document_chars", "hoverSummaries": "hover_summaries", "summaryBudgetMs": "summary_budget_ms",
    "warmUp": "warm_up", "indexSummaries": "index_summaries",
}
_TYPES = {f.name: f.type for f in fields(ServerSettings)}
_CASTS = {"str": str, "int": int, "float": float, "bool": bool}
# What a number may be (inclusive); a value outside, NaN or infinite is refused.
_RANGES = {
    "max_new_tokens": (1, 4096), "context_tokens": (64, 32_768), "first_window_tokens": (0, 32_768), "repo_context_tokens": (0, 32_768),
    "max_draft_tokens": (1, 256), "max_document_chars": (1, 1_000_000_000),
    "time_budget_ms": (0, 600_000), "kv_refresh_idle_ms": (0, 86_400_000), "summary_budget_ms": (0, 600_000),
}


def merge_settings(current: ServerSettings, options: Any) -> tuple[ServerSettings, list[str]]:
    """Apply `options` (a dict, possibly nested under "codeassist") to `current`.

    Returns the new settings and messages about keys that were ignored (unknown or invalid).
    """
    if not isinstance(options, dict):
        return current, [] if options is None else [f"settings must be an object, got {options!r}"]
    if isinstance(options.get("codeassist"), dict):
        options = options["codeassist"]
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in options.items():
        name = _KEYS.get(key, key if key in _KEYS.values() else None)
        if name is None:
            problems.append(f"unknown setting {key!r} ignored; known: {', '.join(_KEYS)}")
            continue
        cast = _CASTS[_TYPES[name]]
        if cast is bool and not isinstance(value, bool) or cast is not bool and isinstance(value, bool):
            problems.append(f"setting {key!r} must be {_TYPES[name]}, got {value!r}")
            continue
        try:
            changes[name] = cast(value)
        except (TypeError, ValueError, OverflowError):
            problems.append(f"setting {key!r} must be {_TYPES[name]}, got {value!r}")
            continue
        if name in _RANGES and not _in_range(changes[name], *_RANGES[name]):
            low, high = _RANGES[name]
            problems.append(f"setting {key!r} must be a finite number within {low}..{high}, got {value!r}")
            del changes[name]
    return replace(current, **changes), problems


def _in_range(value: float, low: float, high: float) -> bool:
    return math.isfinite(value) and low <= value <= high
