"""The index on disk and in memory: chunk metadata in SQLite, vectors in faiss (exact, or
HNSW above a size threshold), BM25 (bm25s) beside them. A chunk may carry a summary in
plain English (the model's, as hovers show it): its words are among the chunk's BM25 terms
and its vector is blended into the chunk's vector for dense search.

Each save writes a complete new generation into a temporary folder, renames it, then
replaces `manifest.json` (format version, generation, encoder, the vectors' sha256) with
`os.replace`: a crash at any point leaves the previous generation in use. Bytes changed in
the vectors file afterwards fail the checksum at the next open. A manifest or generation
that cannot be read raises `CorruptIndexError`; the caller rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .types import Chunk

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 3: summaries; 2: chunk names weigh more in the stored BM25 terms
READABLE_FORMATS = (2, 3)  # a format-2 index is read as one without summaries
MANIFEST = "manifest.json"
# Above this many chunks the vector index is HNSW: an exact search over 100k 384-d vectors
# takes ~9 ms on one core here, HNSW ~1 ms (`codeassist bench search` measures both).
APPROXIMATE_ABOVE = 100_000
HNSW_NEIGHBOURS = 32
HNSW_EF_SEARCH = 96
# A summarized chunk's search vector: (1 - SUMMARY_WEIGHT) * its code vector + SUMMARY_WEIGHT
# * its summary's vector, so its dense score is that weighted sum of cosines. Chosen on the
# stdlib part of `codeassist bench search --summaries` (0.3, 0.5, 0.7 swept; 0.3 best there).
SUMMARY_WEIGHT = 0.3


class CorruptIndexError(Exception):
    """The index on disk cannot be used (missing, truncated, other format): rebuild it."""


@dataclass(frozen=True)
class FileRecord:
    size: int
    mtime_ns: int
    sha: str  # of the file's bytes


class Snapshot:
    """An immutable index state. Searches read it while an update builds the next one."""

    def __init__(self, encoder: str, dim: int, chunks: list[Chunk], hashes: list[str],
                 terms: list[str], vectors: np.ndarray, files: dict[str, FileRecord],
                 generation: str | None = None, folder: Path | None = None,
                 summaries: list[str] | None = None, summary_vectors: np.ndarray | None = None,
                 summary_weight: float = SUMMARY_WEIGHT):
        if not len(chunks) == len(hashes) == len(terms) == len(vectors):
            raise ValueError("chunks, hashes, terms and vectors must be aligned")
        summaries = summaries if summaries is not None else [""] * len(chunks)
        summarized = sum(bool(s) for s in summaries)
        if summary_vectors is None:
            summary_vectors = np.zeros((0, dim), np.float32)
        if len(summaries) != len(chunks) or summary_vectors.shape != (summarized, dim):
            raise ValueError("summaries and their vectors must match the chunks")
        self.encoder = encoder
        self.dim = dim
        self.chunks = chunks
        self.hashes = hashes
        self.terms = terms  # space-separated BM25 terms of each chunk
        self.vectors = vectors  # of the code (kind, name, blocks)
        self.summaries = summaries  # each chunk's summary ("" when it has none)
        self.summary_vectors = summary_vectors  # one per summary, in row order
        self.summary_weight = summary_weight
        self.files = files
        self.generation = generation
        self._folder = folder  # the generation it was loaded from (prebuilt indexes)

    @classmethod
    def empty(cls, encoder: str, dim: int) -> Snapshot:
        return cls(encoder, dim, [], [], [], np.zeros((0, dim), np.float32), {})

    def __len__(self) -> int:
        return len(self.chunks)

    @cached_property
    def summarized_rows(self) -> list[int]:
        return [row for row, summary in enumerate(self.summaries) if summary]

    def summary_vectors_of(self, rows: list[int]) -> np.ndarray:
        """The summary vectors of those of `rows` that have a summary, in their order."""
        position = {row: i for i, row in enumerate(self.summarized_rows)}
        picks = [position[row] for row in rows if row in position]
        return np.asarray(self.summary_vectors[picks], np.float32).reshape(len(picks), self.dim)

    @cached_property
    def search_vectors(self) -> np.ndarray:
        """The vectors dense search compares with: code vectors, blended with their summary's."""
        rows = self.summarized_rows
        if not rows:
            return self.vectors
        blended = np.array(self.vectors, dtype=np.float32)
        weight = self.summary_weight
        blended[rows] = (1 - weight) * blended[rows] + weight * self.summary_vectors
        return blended

    @cached_property
    def vector_index(self):
        import faiss

        if self._folder is not None and (self._folder / "hnsw.faiss").exists():
            return faiss.read_index(str(self._folder / "hnsw.faiss"))
        return build_vector_index(np.ascontiguousarray(self.search_vectors), len(self) > APPROXIMATE_ABOVE)

    @cached_property
    def rows_by_symbol(self) -> dict[str, list[int]]:
        """Rows of the chunks that define each name (built once per snapshot)."""
        rows: dict[str, list[int]] = {}
        for row, chunk in enumerate(self.chunks):
            if chunk.symbol:
                rows.setdefault(chunk.symbol, []).append(row)
        return rows

    @cached_property
    def bm25(self):
        import bm25s

        if self._folder is not None and (self._folder / "bm25").is_dir():
            return bm25s.BM25.load(str(self._folder / "bm25"), mmap=True)
        retriever = bm25s.BM25()
        if self.terms:
            retriever.index([t.split() for t in self.terms], show_progress=False)
        return retriever

    def dense(self, query: np.ndarray, n: int) -> list[tuple[int, float]]:
        """(row, inner product with the query) of the `n` nearest chunks (see `indexer.embed`)."""
        if not len(self):
            return []
        import faiss

        # One query gains nothing from more threads. The setting is the calling thread's
        # OpenMP one, which torch shares: left at 1, it would halve the model's speed in a
        # thread that also completes (the server's model worker gathers context).
        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            scores, rows = self.vector_index.search(query.reshape(1, -1).astype(np.float32),
                                                    min(n, len(self)))
        finally:
            faiss.omp_set_num_threads(previous)
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]

    def similarity(self, query: np.ndarray, rows: list[int]) -> np.ndarray:
        """The dense scores of `rows` (what `dense` would give them, exactly)."""
        return np.asarray(self.search_vectors[rows], np.float32) @ np.asarray(query, np.float32)

    def lexical(self, terms: list[str], n: int) -> list[tuple[int, float]]:
        """(row, BM25 score) of the `n` best chunks with a positive score."""
        if not len(self):
            return []
        known = [t for t in terms if t in self.bm25.vocab_dict]
        if not known:
            return []
        rows, scores = self.bm25.retrieve([known], k=min(n, len(self)), show_progress=False,
                                          n_threads=1)
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if s > 0]


def build_vector_index(vectors: np.ndarray, approximate: bool):
    """Inner-product faiss index over normalised `vectors`: flat (exact) or HNSW."""
    import faiss

    dim = vectors.shape[1]
    if approximate:
        index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(vectors)
    return index


# --- disk ---------------------------------------------------------------------------------
def save(folder: Path, snapshot: Snapshot) -> str:
    """Write `snapshot` as a new generation and make it current; returns its name."""
    folder.mkdir(parents=True, exist_ok=True)
    generation = f"gen-{uuid.uuid4().hex[:12]}"
    staging = folder / f"tmp-{generation}"
    staging.mkdir()
    try:
        _write_sqlite(staging / "chunks.sqlite", snapshot)
        np.save(staging / "vectors.npy", np.ascontiguousarray(snapshot.vectors, np.float32))
        np.save(staging / "summary_vectors.npy", np.ascontiguousarray(snapshot.summary_vectors, np.float32))
        if len(snapshot):
            snapshot.bm25.save(str(staging / "bm25"), show_progress=False)
        if len(snapshot) > APPROXIMATE_ABOVE:
            import faiss

            faiss.write_index(snapshot.vector_index, str(staging / "hnsw.faiss"))
        for path in staging.rglob("*"):
            if path.is_file():
                _fsync(path)
        os.replace(staging, folder / generation)
        manifest = {"format": FORMAT_VERSION, "generation": generation,
                    "encoder": snapshot.encoder, "dim": snapshot.dim, "chunks": len(snapshot),
                    "vectors_sha256": _sha256(folder / generation / "vectors.npy"),
                    "summary_vectors_sha256": _sha256(folder / generation / "summary_vectors.npy")}
        temporary = folder / f"{MANIFEST}.{generation}.tmp"
        temporary.write_text(json.dumps(manifest, indent=1))
        _fsync(temporary)
        os.replace(temporary, folder / MANIFEST)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    snapshot.generation = generation
    _remove_old_generations(folder, keep=generation)
    return generation


def current_generation(folder: Path) -> str | None:
    """The generation the manifest names, or None when there is no readable manifest."""
    try:
        return json.loads((folder / MANIFEST).read_text()).get("generation")
    except (OSError, ValueError, AttributeError):
        return None


def load(folder: Path) -> Snapshot | None:
    """The current snapshot; None when there is no index yet; CorruptIndexError when there
    is one that cannot be read."""
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        version = manifest.get("format")
        if version not in READABLE_FORMATS:
            raise CorruptIndexError(f"index format {version!r}, expected {FORMAT_VERSION}")
        generation = folder / manifest["generation"]
        chunks, hashes, terms, summaries = _read_chunks(generation / "chunks.sqlite", version >= 3)
        files = _read_files(generation / "chunks.sqlite")
        vectors = _read_vectors(generation / "vectors.npy", manifest.get("vectors_sha256"))
        dim = int(manifest["dim"])
        if vectors.shape != (len(chunks), dim) or len(chunks) != manifest["chunks"]:
            raise CorruptIndexError(f"vectors {vectors.shape} do not match {len(chunks)} chunks")
        summary_vectors = None
        if version >= 3:
            summary_vectors = _read_vectors(generation / "summary_vectors.npy",
                                            manifest.get("summary_vectors_sha256"))
            if summary_vectors.shape != (sum(map(bool, summaries)), dim):
                raise CorruptIndexError(f"summary vectors {summary_vectors.shape} do not match the summaries")
        snapshot = Snapshot(manifest["encoder"], dim, chunks, hashes, terms, vectors, files,
                            manifest["generation"], generation, summaries, summary_vectors)
        if len(snapshot):
            snapshot.bm25  # read now: a broken BM25 folder is corruption, not a search error
    except CorruptIndexError:
        raise
    except Exception as error:  # truncated npy, bad JSON, SQLite errors, missing keys ...
        # The type only: some messages quote the stored text, and logs never hold code.
        raise CorruptIndexError(f"{type(error).__name__} while reading it") from error
    return snapshot


_CHUNK_COLUMNS = ("path", "language", "kind", "symbol", "scope", "start_line", "end_line", "text")


def _read_vectors(path: Path, sha256: str | None) -> np.ndarray:
    """A stored matrix, checked against its checksum (a manifest without one is not checked)."""
    if sha256 is not None and _sha256(path) != sha256:
        raise CorruptIndexError(f"{path.name} does not match its checksum")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _write_sqlite(path: Path, snapshot: Snapshot) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(f"CREATE TABLE chunks (row INTEGER PRIMARY KEY, hash TEXT, terms TEXT, summary TEXT, "
                   f"{', '.join(_CHUNK_COLUMNS)})")
        db.execute("CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha TEXT)")
        db.executemany(
            f"INSERT INTO chunks VALUES ({', '.join('?' * (4 + len(_CHUNK_COLUMNS)))})",
            ((row, h, t, s, *(getattr(c, name) for name in _CHUNK_COLUMNS)) for row, (c, h, t, s)
             in enumerate(zip(snapshot.chunks, snapshot.hashes, snapshot.terms, snapshot.summaries))),
        )
        db.executemany("INSERT INTO files VALUES (?, ?, ?, ?)",
                       ((p, r.size, r.mtime_ns, r.sha) for p, r in snapshot.files.items()))
        db.commit()
    finally:
        db.close()


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise CorruptIndexError(f"{path.name} is missing")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _read_chunks(path: Path, with_summaries: bool) -> tuple[list[Chunk], list[str], list[str], list[str]]:
    db = _connect(path)
    summary = "summary" if with_summaries else "''"
    try:
        rows = db.execute(f"SELECT row, hash, terms, {summary}, {', '.join(_CHUNK_COLUMNS)} "
                          "FROM chunks ORDER BY row").fetchall()
    finally:
        db.close()
    if [r[0] for r in rows] != list(range(len(rows))):
        raise CorruptIndexError("chunk rows are not contiguous")
    chunks = [Chunk(*r[4:], blocks=()) for r in rows]
    return chunks, [r[1] for r in rows], [r[2] for r in rows], [r[3] or "" for r in rows]


def _read_files(path: Path) -> dict[str, FileRecord]:
    db = _connect(path)
    try:
        rows = db.execute("SELECT path, size, mtime_ns, sha FROM files").fetchall()
    finally:
        db.close()
    return {p: FileRecord(size, mtime, sha) for p, size, mtime, sha in rows}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _remove_old_generations(folder: Path, keep: str) -> None:
    for entry in folder.iterdir():
        if entry.is_dir() and entry.name != keep and entry.name.startswith(("gen-", "tmp-gen-")):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(f"{MANIFEST}.") and entry.name.endswith(".tmp"):
            entry.unlink(missing_ok=True)
