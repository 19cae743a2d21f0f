"""Hybrid ranking: score fusion of dense and BM25, its weight by query shape."""

import numpy as np
import pytest

from retrieval import search
from retrieval.store import Snapshot
from retrieval.types import Chunk

DENSE = [(0, 0.80), (1, 0.60), (2, 0.56)]
LEXICAL = [(2, 10.0), (3, 9.0)]  # row 3 is not among the dense candidates


def _similarity(calls):
    def similarity(rows):
        calls.append(list(rows))
        return np.array([0.1 for _ in rows], np.float32)

    return similarity


def test_a_sentence_keeps_the_dense_order_where_bm25_only_nudges():
    calls = []
    fused = search.fuse(DENSE, LEXICAL, search.SENTENCE_LEXICAL_WEIGHT, _similarity(calls))
    # Reciprocal rank fusion would put row 2 first (ranks 3 and 1); here BM25's best match
    # only moves it past row 1, whose dense score is nearly the same.
    assert [row for row, _ in fused] == [0, 2, 1, 3]
    assert fused[1][1] == pytest.approx(0.56 + search.SENTENCE_LEXICAL_WEIGHT)
    assert fused[3][1] == pytest.approx(0.1 + search.SENTENCE_LEXICAL_WEIGHT * 0.9)
    assert calls == [[3]]  # dense scores are computed only for lexical-only candidates


def test_keywords_lean_on_bm25():
    fused = search.fuse(DENSE, LEXICAL, search.KEYWORD_LEXICAL_WEIGHT, _similarity([]))
    assert [row for row, _ in fused] == [2, 0, 1, 3]


def test_without_lexical_matches_the_dense_ranking_stands():
    calls = []
    assert search.fuse(DENSE, [], 0.3, _similarity(calls)) == DENSE and calls == []


@pytest.mark.parametrize("query", ["raw_decode", "JSONDecoder.raw_decode", "parseHeader",
                                   "parse header", "os.path join", "Foo::bar(x) baz"])
def test_names_and_keywords_get_the_keyword_weight(query):
    assert search.lexical_weight(query) == search.KEYWORD_LEXICAL_WEIGHT


@pytest.mark.parametrize("query", [
    "Return the number of contained cookies",
    "Write the file list in self.filelist to the manifest file",
    "Test whether two pathnames reference the same actual file. Or directory.",
])
def test_sentences_get_the_sentence_weight(query):
    assert search.lexical_weight(query) == search.SENTENCE_LEXICAL_WEIGHT


def _chunk(name: str, text: str) -> Chunk:
    return Chunk("m.py", "python", "function", name, "", 1, 2, text, ())


def test_rank_gives_lexical_only_candidates_their_exact_dense_score():
    # 60 chunks, dense scores 0.500, 0.499, ...: with k=1 the dense side sees the best 50,
    # so row 59 (dense 0.441), BM25's only match, comes from the lexical side alone.
    rows = 60
    vectors = np.zeros((rows, 2), np.float32)
    vectors[:, 0] = 0.5 - np.arange(rows) / 1000
    chunks = [_chunk(f"f{i}", f"def f{i}():\n    pass") for i in range(rows)]
    terms = ["alpha"] * (rows - 1) + ["delta"]
    snapshot = Snapshot("fake", 2, chunks, ["h"] * rows, terms, vectors, {})
    query = np.array([1.0, 0.0], np.float32)
    assert snapshot.similarity(query, [59, 1]).tolist() == pytest.approx([0.441, 0.499])
    assert search.rank(snapshot, "delta", 1, "dense", lambda q: query)[0][0] == 0
    [(row, score)] = search.rank(snapshot, "delta", 1, "hybrid", lambda q: query)
    assert row == 59 and score == pytest.approx(0.441 + search.KEYWORD_LEXICAL_WEIGHT)


def test_reciprocal_rank_fusion_for_comparison():
    fused = search.fuse_ranks([DENSE, LEXICAL])
    # Row 2: 1/(60+3) + 1/(60+1) beats row 0's single 1/(60+1).
    assert [row for row, _ in fused] == [2, 0, 1, 3]
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)


def test_the_number_of_results_a_client_asks_for_is_bounded():
    from retrieval.search import MAX_RESULTS, validate

    validate("query", MAX_RESULTS)
    for k in (0, -1, MAX_RESULTS + 1, 10**9):
        with pytest.raises(ValueError, match="k must be within"):
            validate("query", k)


def test_a_method_close_to_its_class_goes_above_it():
    from retrieval.types import Chunk

    def chunk(kind, symbol, scope="", path="geo.py"):
        return Chunk(path, "python", kind, symbol, scope, 1, 2, "", ())

    chunks = [chunk("class", "Circle"), chunk("method", "area", "Circle"), chunk("method", "contains", "Circle"),
              chunk("function", "other"), chunk("method", "contains", "Circle", path="elsewhere.py"),
              chunk("class", "Square"), chunk("method", "side", "Square")]
    snapshot = Snapshot("fake", 2, chunks, ["h"] * 7, [""] * 7, np.zeros((7, 2), np.float32), {})
    ranked = [(0, 0.70), (3, 0.68), (4, 0.67), (2, 0.66), (1, 0.60), (5, 0.5), (6, 0.3)]
    # Circle's best method (contains, 0.04 below) goes just above it, with the class's score; a
    # method of another file's Circle, and Square's method 0.2 below, stay where they are.
    assert search.members_first(snapshot, ranked, 0.05) == [
        (2, 0.70), (0, 0.70), (3, 0.68), (4, 0.67), (1, 0.60), (5, 0.5), (6, 0.3)]
    assert search.members_first(snapshot, ranked, 0.0) == ranked
    # A method already above its class stays where it is.
    assert search.members_first(snapshot, [(2, 0.8), (0, 0.7)], 0.05) == [(2, 0.8), (0, 0.7)]
