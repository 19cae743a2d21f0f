"""FIM completion: model loading, prompts, greedy decoding with stop rules.

The names below load on first use: what retrieval shares with completion (syntax, prompt
files, the cache folder) imports without torch and transformers."""

import importlib

_EXPORTS = {
    "CompletionEngine": ".engine", "Engine": ".engine_api", "load_model": ".models",
    "Completion": ".types", "CompletionRequest": ".types", "EngineSettings": ".types",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
