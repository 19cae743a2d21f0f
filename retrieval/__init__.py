"""Code search: AST-split chunks, embeddings, faiss + BM25 hybrid, incremental and on disk."""

from .index import CodeIndex, IndexConfig
from .types import IndexStats, SearchHit

__all__ = ["CodeIndex", "IndexConfig", "IndexStats", "SearchHit"]
