"""Code search: AST-split chunks, embeddings, faiss + BM25 hybrid, incremental and on disk.

The names below load on first use: a CLI that only reads a setting's default (or asks a
running server) does not pay for BM25's and faiss's imports."""

import importlib

_EXPORTS = {
    "CodeIndex": ".index", "IndexConfig": ".index",
    "DefinitionSummary": ".types", "IndexStats": ".types", "SearchHit": ".types",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
