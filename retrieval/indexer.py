"""Incremental index updates: from one snapshot and the files on disk to the next snapshot.

Files whose size and mtime are unchanged are not read; a file whose bytes are unchanged is
not chunked; chunks are keyed by a hash of their content (not their path), so a changed
file embeds only its changed chunks and a renamed file embeds nothing. A chunk's summary is
kept with its content: an edited chunk loses it, a moved one keeps it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from completion.syntax import language_for

from .chunking import chunk_file
from .encoder import BatchRunner, Encoder
from .files import FileFilter, FileState, is_indexable, read_text, walk
from .store import FileRecord, Snapshot
from .tokens import split_identifier, words
from .types import Chunk, IndexStats

logger = logging.getLogger(__name__)

# Bump when the text given to the encoder for a chunk, or how its vectors are combined,
# changes: stored vectors are then stale.
EMBED_RECIPE = 2
# A chunk's vector: (1 - NAME_WEIGHT) * its blocks' mean (normalised) + NAME_WEIGHT * its name
# text's vector, so its score is that weighted sum of cosines. Docstring queries of
# `codeassist bench search`: dense MRR@10 0.558 without the name part, 0.592 at 0.2 (flat
# from 0.2 to 0.3).
NAME_WEIGHT = 0.2
# Times a chunk's name is repeated in its BM25 terms.
NAME_REPEAT = 3
# Word pieces kept free in the window for the header `document_text` puts before a block.
_HEADER_TOKENS = 24

# Embedding goes in groups of whole files, at least this many chunks each; between groups,
# at least CHECKPOINT_EVERY_S apart, the files done so far are saved.
GROUP_CHUNKS = 256
CHECKPOINT_EVERY_S = 60.0

Progress = Callable[[int, int], None]  # (texts encoded so far, texts to encode): blocks, names


def encoder_key(encoder: Encoder) -> str:
    """What must match for stored vectors to be reused."""
    return f"{encoder.name}|recipe{EMBED_RECIPE}"


def document_text(chunk: Chunk, block: str) -> str:
    """What the encoder sees for one block of a chunk: kind, qualified name and the name's
    words, then the code. The path is left out so that a rename keeps the vectors."""
    name = chunk.qualified_name
    spoken = " ".join(split_identifier(chunk.symbol))
    header = f"{chunk.kind} {name} ({spoken})" if name else chunk.kind
    return f"{header}\n{block}"


def name_text(chunk: Chunk) -> str | None:
    """A short text of what the chunk is called: the name's and scope's words, then the line
    that declares it ("area of circle: def area(self):"); None for anonymous chunks."""
    if not chunk.symbol:
        return None
    spoken = " ".join(split_identifier(chunk.symbol))
    scope = " ".join(split_identifier(chunk.scope))
    lines = [line.strip() for line in chunk.text.split("\n") if line.strip()]
    # The declaring line, not a decorator or a doc comment above it.
    declaration = next((line for line in lines if chunk.symbol in line), lines[0] if lines else "")
    return f"{spoken}{' of ' + scope if scope else ''}: {declaration}"


def chunk_terms(chunk: Chunk, summary: str = "") -> str:
    """The BM25 terms of a chunk: its path, qualified name, code and summary, split and
    stemmed; the name's terms count NAME_REPEAT times, as a name says more than any one line
    of code."""
    name = chunk.qualified_name
    return " ".join(words(f"{chunk.path} {' '.join([name] * NAME_REPEAT)} {chunk.text} {summary}"))


def text_sha(text: str) -> str:
    """What a FileRecord keeps of a file's text."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def content_hash(chunk: Chunk) -> str:
    key = "\0".join((chunk.language, chunk.kind, chunk.scope, chunk.symbol, chunk.text))
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


def update(snapshot: Snapshot, root: Path, encoder: Encoder, file_filter: FileFilter,
           paths: list[str] | None = None, batch_size: int = 32,
           progress: Progress | None = None, run_batch: BatchRunner | None = None,
           checkpoint: Callable[[Snapshot], None] | None = None,
           checkpoint_every_s: float = CHECKPOINT_EVERY_S) -> tuple[Snapshot, IndexStats]:
    """The next snapshot: all files under `root`, or only `paths` (relative to `root`).
    Chunks are embedded in groups of whole files; at least `checkpoint_every_s` apart,
    `checkpoint` gets a snapshot with the files embedded so far (the others as they were),
    so that a killed update starts again from there."""
    start = time.perf_counter()
    current, gone = _file_states(snapshot, root, file_filter, paths)
    files = {p: r for p, r in snapshot.files.items() if p not in gone}
    changed: dict[str, list[Chunk]] = {}
    for state in current:
        old = snapshot.files.get(state.path)
        if old is not None and (old.size, old.mtime_ns) == (state.size, state.mtime_ns):
            continue
        text = read_text(root / state.path, file_filter.max_bytes)
        sha = text_sha(text) if text is not None else ""
        files[state.path] = FileRecord(state.size, state.mtime_ns, sha)
        if old is not None and old.sha == sha:
            continue  # touched, not changed
        changed[state.path] = [] if text is None else chunk_file(
            state.path, text, language_for(state.path), encoder.max_tokens - _HEADER_TOKENS,
            encoder.count_tokens)
    ordered = sorted(changed)
    new_chunks = [c for path in ordered for c in changed[path]]
    new_hashes = [content_hash(c) for c in new_chunks]
    vectors, todo = _reused_vectors(snapshot, new_hashes)
    summaries = _reused_summaries(snapshot, new_hashes)
    ends = dict(zip(ordered, itertools.accumulate(len(changed[p]) for p in ordered)))  # path -> end row
    total_texts = sum(_text_count(new_chunks[i]) for i in todo)
    done_texts, last_checkpoint = 0, time.perf_counter()
    for group in _whole_file_groups(todo, new_chunks):
        def advance(done: int, _: int, before: int = done_texts) -> None:
            if progress is not None:
                progress(before + done, total_texts)

        vectors[group] = embed([new_chunks[i] for i in group], encoder, batch_size, advance, run_batch)
        done_texts += sum(_text_count(new_chunks[i]) for i in group)
        if checkpoint is not None and group[-1] != todo[-1] \
                and time.perf_counter() - last_checkpoint >= checkpoint_every_s:
            through = ends[new_chunks[group[-1]].path]  # every row before this one has its vector
            finished = [path for path in ordered if ends[path] <= through]
            checkpoint(_assemble(snapshot, set(finished), new_chunks[:through], new_hashes[:through],
                                 vectors[:through], {**snapshot.files, **{p: files[p] for p in finished}},
                                 summaries))
            last_checkpoint = time.perf_counter()
    next_snapshot = _assemble(snapshot, set(changed) | gone, new_chunks, new_hashes, vectors, files, summaries)
    stats = IndexStats(len(files), len(changed), len(gone & set(snapshot.files)), len(next_snapshot),
                       len(todo), time.perf_counter() - start)
    return next_snapshot, stats


def _assemble(snapshot: Snapshot, replaced: set[str], new_chunks: list[Chunk], new_hashes: list[str],
              new_vectors: np.ndarray, files: dict[str, FileRecord],
              summaries: dict[str, tuple[str, np.ndarray]]) -> Snapshot:
    """`snapshot` with the chunks of the `replaced` paths swapped for `new_chunks`; new
    chunks take their summary from `summaries` (content hash -> text, vector)."""
    keep = [row for row, chunk in enumerate(snapshot.chunks) if chunk.path not in replaced]
    new_summaries = [summaries.get(h, ("", None)) for h in new_hashes]
    kept_summaries = [snapshot.summaries[r] for r in keep]
    kept_vectors = snapshot.summary_vectors_of(keep)
    return Snapshot(
        snapshot.encoder, snapshot.dim,
        [snapshot.chunks[r] for r in keep] + [_without_blocks(c) for c in new_chunks],
        [snapshot.hashes[r] for r in keep] + new_hashes,
        [snapshot.terms[r] for r in keep] + [chunk_terms(c, s) for c, (s, _) in zip(new_chunks, new_summaries)],
        np.concatenate([np.asarray(snapshot.vectors[keep], np.float32), new_vectors]),
        files,
        summaries=kept_summaries + [s for s, _ in new_summaries],
        summary_vectors=np.concatenate([kept_vectors] + [v[None] for s, v in new_summaries if s]).astype(np.float32),
    )


def _reused_summaries(snapshot: Snapshot, hashes: list[str]) -> dict[str, tuple[str, np.ndarray]]:
    """content hash -> (summary, its vector) for the hashes the snapshot has a summary of."""
    wanted = set(hashes)
    found = {}
    for i, row in enumerate(snapshot.summarized_rows):
        if snapshot.hashes[row] in wanted:
            found[snapshot.hashes[row]] = (snapshot.summaries[row], np.asarray(snapshot.summary_vectors[i]))
    return found


def with_summaries(snapshot: Snapshot, summaries: dict[int, str], encoder: Encoder,
                   batch_size: int = 32, run_batch: BatchRunner | None = None) -> Snapshot:
    """`snapshot` with these rows' summaries set (replacing any they had): each summary is
    embedded and its words join the chunk's BM25 terms."""
    rows = sorted(row for row, text in summaries.items() if text and text.strip())
    fresh = {}
    if rows:
        fresh = dict(zip(rows, encoder.encode([summaries[row].strip() for row in rows], batch_size,
                                              None, run_batch)))
    old = dict(zip(snapshot.summarized_rows, np.asarray(snapshot.summary_vectors, np.float32)))
    texts, terms = list(snapshot.summaries), list(snapshot.terms)
    for row in rows:
        texts[row] = summaries[row].strip()
        terms[row] = chunk_terms(snapshot.chunks[row], texts[row])
    vectors = [fresh[row] if row in fresh else old[row] for row, text in enumerate(texts) if text]
    return Snapshot(snapshot.encoder, snapshot.dim, snapshot.chunks, snapshot.hashes, terms,
                    snapshot.vectors, snapshot.files, summaries=texts,
                    summary_vectors=np.asarray(vectors, np.float32).reshape(len(vectors), snapshot.dim))


def _whole_file_groups(todo: list[int], chunks: list[Chunk]) -> list[list[int]]:
    """`todo` (chunk rows in path order) cut into groups of at least GROUP_CHUNKS rows that
    never split a file's chunks."""
    groups: list[list[int]] = []
    for row in todo:
        if groups and (len(groups[-1]) < GROUP_CHUNKS or chunks[groups[-1][-1]].path == chunks[row].path):
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def _text_count(chunk: Chunk) -> int:
    """Texts `embed` encodes for `chunk`: its blocks, and its name when it has one."""
    return len(chunk.blocks) + (name_text(chunk) is not None)


def _file_states(snapshot: Snapshot, root: Path, file_filter: FileFilter,
                 paths: list[str] | None) -> tuple[list[FileState], set[str]]:
    """(files to look at, indexed paths that are gone or no longer indexable)."""
    if paths is None:
        current = list(walk(root, file_filter))
        present = {s.path for s in current}
        return current, set(snapshot.files) - present
    current, gone = [], set()
    for path in dict.fromkeys(paths):
        full = root / path
        try:
            stat = full.stat()
        except OSError:
            stat = None
        if (stat is not None and full.is_file() and not full.is_symlink() and 0 < stat.st_size
                <= file_filter.max_bytes and is_indexable(root, path, file_filter)):
            current.append(FileState(path, stat.st_size, stat.st_mtime_ns))
        else:
            gone.add(path)
    return current, gone


def _reused_vectors(snapshot: Snapshot, hashes: list[str]) -> tuple[np.ndarray, list[int]]:
    """Vectors for chunks of these content hashes where the snapshot has one, and the rows
    still to embed."""
    known = {h: row for row, h in enumerate(snapshot.hashes)}
    vectors = np.zeros((len(hashes), snapshot.dim), np.float32)
    todo = []
    for i, h in enumerate(hashes):
        if h in known:
            vectors[i] = snapshot.vectors[known[h]]
        else:
            todo.append(i)
    return vectors, todo


def embed(chunks: list[Chunk], encoder: Encoder, batch_size: int = 32,
          progress: Progress | None = None, run_batch: BatchRunner | None = None, first_block_only: bool = False,
          ) -> np.ndarray:
    """One vector per chunk: its blocks encoded separately and averaged (SEA; only the
    first block with `first_block_only`), combined with its name text's vector."""
    texts, owners, named = [], [], []
    for i, chunk in enumerate(chunks):
        for block in chunk.blocks[:1] if first_block_only else chunk.blocks:
            texts.append(document_text(chunk, block))
            owners.append(i)
    for i, chunk in enumerate(chunks):
        name = name_text(chunk)
        if name is not None:
            texts.append(name)
            named.append(i)
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, len(texts))

    encoded = encoder.encode(texts, batch_size, advance, run_batch)
    vectors = np.zeros((len(chunks), encoder.dim), np.float32)
    np.add.at(vectors, np.asarray(owners, dtype=np.int64), encoded[: len(owners)])
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    vectors *= 1 - NAME_WEIGHT
    if named:  # an anonymous chunk matches nothing by name: its name part is zero
        vectors[named] += NAME_WEIGHT * encoded[len(owners):]
    return vectors


def _without_blocks(chunk: Chunk) -> Chunk:
    """Blocks are only needed to embed; snapshots keep the chunk's text."""
    return replace(chunk, blocks=())
