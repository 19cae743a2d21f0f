"""Ranking: dense (faiss), lexical (BM25) and their reciprocal rank fusion; symbol lookup."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .store import Snapshot
from .tokens import split_identifier, words
from .types import SearchHit

MODES = ("hybrid", "dense", "bm25")
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al.)
_SNIPPET_LINES = 12


def validate(query: str, k: int, mode: str = "hybrid") -> None:
    if not query or not query.strip():
        raise ValueError("the search query is empty")
    if k <= 0:
        raise ValueError(f"k must be a positive number of results, got {k}")
    if mode not in MODES:
        raise ValueError(f"unknown search mode {mode!r}; valid: {', '.join(MODES)}")


def rank(snapshot: Snapshot, query: str, k: int, mode: str,
         encode_query: Callable[[str], np.ndarray]) -> list[tuple[int, float]]:
    """(row, score) of the best `k` chunks for `query`, best first."""
    validate(query, k, mode)
    depth = max(4 * k, 50)  # candidates from each ranker before fusion
    lexical = snapshot.lexical(words(query), depth) if mode != "dense" else []
    if mode == "bm25":
        return lexical[:k]
    dense = snapshot.dense(encode_query(query), depth)
    if mode == "dense":
        return dense[:k]
    return fuse([dense, lexical])[:k]


def fuse(rankings: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score = sum over rankings of 1 / (RRF_K + rank)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for position, (row, _) in enumerate(ranking, start=1):
            scores[row] = scores.get(row, 0.0) + 1.0 / (RRF_K + position)
    return sorted(scores.items(), key=lambda item: -item[1])


def symbol_rows(snapshot: Snapshot, query: str, k: int) -> list[tuple[int, float]]:
    """Chunks whose name matches `query`: exact, then prefix, then substring, then all the
    query's words in the name; shorter names first within a class."""
    needle = query.strip().lower()
    if not needle:
        return []
    parts = set(split_identifier(query))
    scored = []
    for row, chunk in enumerate(snapshot.chunks):
        if not chunk.symbol:
            continue
        name = chunk.symbol.lower()
        if name == needle or chunk.qualified_name.lower() == needle:
            score = 4.0
        elif name.startswith(needle):
            score = 3.0
        elif needle in name or needle in chunk.qualified_name.lower():
            score = 2.0
        elif parts and parts <= set(split_identifier(chunk.symbol)):
            score = 1.0
        else:
            continue
        scored.append((row, score - len(name) / 1000.0))
    scored.sort(key=lambda item: -item[1])
    return scored[:k]


def hit(snapshot: Snapshot, row: int, score: float) -> SearchHit:
    chunk = snapshot.chunks[row]
    lines = chunk.text.split("\n")
    snippet = "\n".join(lines[:_SNIPPET_LINES]) + ("\n..." if len(lines) > _SNIPPET_LINES else "")
    return SearchHit(chunk.path, chunk.start_line, chunk.end_line, chunk.kind, chunk.symbol,
                     chunk.scope, round(score, 6), snippet)
