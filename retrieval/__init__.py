"""Code search: AST-split chunks, embeddings, faiss + BM25 hybrid, incremental and on disk."""

from .index import CodeIndex, IndexConfig
from .types import DefinitionSummary, IndexStats, SearchHit

__all__ = ["CodeIndex", "DefinitionSummary", "IndexConfig", "IndexStats", "SearchHit"]
