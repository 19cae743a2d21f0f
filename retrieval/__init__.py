"""Code search: tree-sitter chunks, embeddings, faiss + BM25 hybrid index (see ARCHITECTURE.md)."""

__all__: list[str] = []
