"""Ranking: dense (faiss), lexical (BM25) and their score fusion; symbol lookup."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from .store import Snapshot
from .tokens import split_identifier, words
from .types import SearchHit

MAX_RESULTS = 200  # a client's `k` is bounded: every hit carries a snippet
MODES = ("hybrid", "dense", "bm25", "rrf")  # rrf: reciprocal rank fusion, for comparison
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al.)
# Hybrid score = dense score + weight * BM25 score / the best BM25 score of the query. A
# sentence leans on the dense side (a docstring's words are rarely the code's); a name or a
# few keywords lean on BM25. Chosen on half of `codeassist bench search`'s docstring queries
# and on the symbol names of its targets, checked on the other half. Reciprocal rank fusion
# (equal weights, k=60) scored below dense alone there: BM25's ranks 1..50 count as much as
# dense's while its lower ranks are mostly noise for sentences.
SENTENCE_LEXICAL_WEIGHT = 0.05
KEYWORD_LEXICAL_WEIGHT = 0.3
# Identifier shapes: snake_case, dotted.name, call(, Scope::name, camelCase.
_CODE_SHAPE = re.compile(r"\w_|_\w|\w\.\w|\w\(|::|[a-z][A-Z]")
_SNIPPET_LINES = 12
# A class and one of its methods both match a query: the method may be the more specific
# answer ("is a point inside the circle": Circle.contains, not Circle). The best method
# scoring within this much of its class can be put just above it (dense and hybrid). Off:
# `codeassist bench search` (class docstrings as well as methods' as queries) sweeps it, and
# every margin above 0 cost class queries more than it gained function queries.
MEMBER_MARGIN = 0.0


def validate(query: str, k: int, mode: str = "hybrid") -> None:
    if not query or not query.strip():
        raise ValueError("the search query is empty")
    if not 0 < k <= MAX_RESULTS:
        raise ValueError(f"k must be within 1..{MAX_RESULTS}, got {k}")
    if mode not in MODES:
        raise ValueError(f"unknown search mode {mode!r}; valid: {', '.join(MODES)}")


def rank(snapshot: Snapshot, query: str, k: int, mode: str,
         encode_query: Callable[[str], np.ndarray], member_margin: float = MEMBER_MARGIN,
         ) -> list[tuple[int, float]]:
    """(row, score) of the best `k` chunks for `query`, best first."""
    validate(query, k, mode)
    depth = max(4 * k, 50)  # candidates from each ranker before fusion
    lexical = snapshot.lexical(words(query), depth) if mode != "dense" else []
    if mode == "bm25":
        return lexical[:k]
    vector = encode_query(query)
    dense = snapshot.dense(vector, depth)
    if mode == "dense":
        return members_first(snapshot, dense, member_margin)[:k]
    if mode == "rrf":
        return fuse_ranks([dense, lexical])[:k]
    fused = fuse(dense, lexical, lexical_weight(query), lambda rows: snapshot.similarity(vector, rows))
    return members_first(snapshot, fused, member_margin)[:k]


def members_first(snapshot: Snapshot, ranked: list[tuple[int, float]],
                  margin: float) -> list[tuple[int, float]]:
    """`ranked` (best first) with each class's best-scoring method put just above the class
    when it scores within `margin` of it (it then shows the class's score)."""
    if margin <= 0:
        return ranked
    chunks = snapshot.chunks
    best_member: dict[tuple[str, str], tuple[int, float]] = {}
    for row, score in ranked:  # best first: the first seen is the best
        chunk = chunks[row]
        if chunk.kind == "method":
            best_member.setdefault((chunk.path, chunk.scope), (row, score))
    result, placed = [], set()
    for row, score in ranked:
        if row in placed:
            continue
        chunk = chunks[row]
        member = best_member.get((chunk.path, chunk.qualified_name)) if chunk.kind == "class" else None
        if member is not None and member[0] not in placed and score - member[1] <= margin:
            result.append((member[0], score))
            placed.add(member[0])
        result.append((row, score))
        placed.add(row)
    return result


def lexical_weight(query: str) -> float:
    """BM25's weight in the hybrid score: high for a name or a few keywords, low for prose."""
    tokens = query.split()
    code_like = sum(bool(_CODE_SHAPE.search(token)) for token in tokens)
    keywords = len(tokens) <= 3 or 2 * code_like >= len(tokens)
    return KEYWORD_LEXICAL_WEIGHT if keywords else SENTENCE_LEXICAL_WEIGHT


def fuse(dense: list[tuple[int, float]], lexical: list[tuple[int, float]], weight: float,
         similarity: Callable[[list[int]], np.ndarray]) -> list[tuple[int, float]]:
    """Candidates of both rankings by dense score + `weight` * BM25 score / the best BM25
    score. `similarity(rows)` gives the dense scores of lexical-only candidates; a chunk
    outside the lexical ranking has BM25 score 0 (below that ranking's cut, or no term)."""
    scores = dict(dense)
    missing = [row for row, _ in lexical if row not in scores]
    if missing:
        scores.update(zip(missing, (float(s) for s in similarity(missing))))
    best = max((score for _, score in lexical), default=0.0)
    for row, score in lexical:
        scores[row] += weight * score / best if best > 0 else 0.0
    return sorted(scores.items(), key=lambda item: -item[1])


def fuse_ranks(rankings: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
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
