"""The summaries part of `codeassist bench search`: the definitions of a few files of a
corpus summarized by the model (the prompts hovers and the server's background lane use,
written from code without docstrings), then BM25, dense and hybrid search over those files
with summaries at several coverages and blend weights.

Summaries are kept in CODEASSIST_HOME/bench/search-summaries.json (keyed by model, code and
context), so a second run measures without writing them again.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path


from retrieval import CodeIndex, IndexConfig
from retrieval.definitions import DefinitionFinder
from retrieval.indexer import chunk_terms
from retrieval.store import SUMMARY_WEIGHT, Snapshot
from retrieval.summary_targets import summary_targets

COVERAGES = (0.0, 0.25, 0.5, 1.0)
WEIGHTS = (0.3, 0.5, 0.7)
MODES = ("bm25", "dense", "hybrid")

Quality = Callable[..., dict]  # search._quality(snapshot, queries, vectors, mode, variant[, margin])


def summarized_subset(corpus: Path, paths: list[str], definitions: int, work: Path,
                      encoder, summarizer, cache, log=print) -> CodeIndex:
    """An index over the first of `paths` (copied from `corpus`) holding at least
    `definitions` definitions, every one of them summarized."""
    finder = DefinitionFinder(corpus)
    chosen, count = [], 0
    for path in paths:
        if count >= definitions:
            break
        found = finder.definitions_of(path)
        if found:
            chosen.append(path)
            count += len(found)
    shutil.rmtree(work, ignore_errors=True)
    for path in chosen:
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus / path, work / path)
    index = CodeIndex(work, IndexConfig(index_dir=str(work.parent / f"{work.name}-index")), encoder=encoder)
    index.update()
    finder = DefinitionFinder(work, index)
    targets = [t for path in chosen for t in summary_targets(index, finder, path)]
    written, start, made = [], time.perf_counter(), 0
    for i, target in enumerate(targets):
        request = finder.summary_request(target.definition)
        key = request.key(summarizer.loaded.name)
        text = cache.get(key)
        if text is None:
            text = summarizer.summarize(request).text
            cache.put(key, text)
            made += 1
        written.append(target.summary(text))
        if made and (i + 1) % 10 == 0:
            log(f"  summaries: {i + 1}/{len(targets)} ({made} written, {time.perf_counter() - start:.0f} s)")
    index.add_summaries(written)
    return index


def coverage_rows(snapshot: Snapshot, queries: list, vectors: dict, quality: Quality,
                  project: str, margins: tuple[float, ...] = ()) -> list[dict]:
    """Search quality over `snapshot` with a random share of its summaries kept, for each
    coverage and blend weight (BM25 does not depend on the weight); then, with every summary,
    for each member margin (retrieval.search.members_first)."""
    summarized = snapshot.summarized_rows
    rows = []
    for coverage in COVERAGES:
        kept = set(random.Random(0).sample(summarized, round(coverage * len(summarized))))
        for weight in WEIGHTS:
            masked = _with_only(snapshot, kept, weight)
            for mode in MODES:
                if mode == "bm25" and weight != SUMMARY_WEIGHT:
                    continue
                row = quality(masked, queries, vectors, mode, "sea")
                rows.append({**row, "measure": "summaries", "project": project, "coverage": coverage,
                             "weight": weight, "chunks": len(snapshot), "queries": len(queries)})
    full = _with_only(snapshot, set(summarized), SUMMARY_WEIGHT)
    for margin in margins:
        row = quality(full, queries, vectors, "hybrid", "sea", margin)
        rows.append({**row, "measure": "member margin", "project": project, "coverage": 1.0, "margin": margin,
                     "chunks": len(snapshot), "queries": len(queries)})
    return rows


def _with_only(snapshot: Snapshot, kept: set[int], weight: float) -> Snapshot:
    """`snapshot` with only the summaries of the `kept` rows, blended at `weight`."""
    summaries = [text if row in kept else "" for row, text in enumerate(snapshot.summaries)]
    vectors = snapshot.summary_vectors_of(sorted(kept))
    terms = [chunk_terms(chunk, text) for chunk, text in zip(snapshot.chunks, summaries)]
    return Snapshot(snapshot.encoder, snapshot.dim, snapshot.chunks, snapshot.hashes, terms,
                    snapshot.vectors, snapshot.files, summaries=summaries, summary_vectors=vectors,
                    summary_weight=weight)
