"""`CodeIndex`: one workspace's search index, what the CLI and the server hold.

Updates run under a file lock (a CLI and a server may share an index) and swap in a new
immutable snapshot, so searches never wait for an update. An index that cannot be read is
logged and rebuilt; an index built with another encoder is rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from . import indexer, search, store
from .encoder import DEFAULT_ENCODER, Encoder, LazyEncoder, load_encoder
from .files import FileFilter
from .index_folder import check_index_folder, claim_index_folder
from .types import DefinitionSummary, IndexStats, SearchHit

logger = logging.getLogger(__name__)

LOCATIONS = ("workspace", "cache")
SUMMARIZED_KINDS = ("function", "method", "class")  # chunks that can carry a summary


@dataclass(frozen=True)
class IndexConfig:
    encoder: str = DEFAULT_ENCODER  # name, hub id or local directory
    location: str = "cache"  # CODEASSIST_HOME/indexes (out of the user's tree), or "workspace": ROOT/.codeassist/index
    index_dir: str | None = None  # an explicit folder overrides `location`
    file_filter: FileFilter = field(default_factory=FileFilter)
    batch_size: int = 32
    # At most this many padded tokens per batch (None: no cap): a batch of one long text, or of
    # many short ones, takes about the same time per encoder layer.
    batch_tokens: int | None = None
    threads: int | None = None  # torch threads for encoding (None: torch's default)
    checkpoint_every_s: float = indexer.CHECKPOINT_EVERY_S  # save what is embedded this often
    trust_remote_code: bool = False

    def __post_init__(self):
        if self.location not in LOCATIONS:
            raise ValueError(f"unknown index location {self.location!r}; valid: {', '.join(LOCATIONS)}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")

    def folder_for(self, root: Path) -> Path:
        if self.index_dir:
            return Path(self.index_dir).expanduser()
        if self.location == "cache":
            digest = hashlib.sha1(str(root).encode("utf-8")).hexdigest()[:12]
            return _home() / "indexes" / f"{root.name}-{digest}"
        return root / ".codeassist" / "index"


def _home() -> Path:
    from completion.home import codeassist_home

    return codeassist_home()


class CodeIndex:
    def __init__(self, root: str | Path, config: IndexConfig = IndexConfig(),
                 encoder: Encoder | None = None):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise ValueError(f"{root}: not a directory")
        self.config = config
        self.folder = config.folder_for(self.root)
        check_index_folder(self.folder, self.root, _home())
        self._encoder = encoder or LazyEncoder(config.encoder, self._load_encoder, config.trust_remote_code)
        self._update_lock = threading.Lock()
        self._snapshot: store.Snapshot | None = None

    # --- the encoder and the snapshot ------------------------------------------------
    @property
    def encoder(self) -> Encoder | LazyEncoder:
        return self._encoder

    def _load_encoder(self) -> Encoder:
        encoder = load_encoder(self.config.encoder, threads=self.config.threads,
                               trust_remote_code=self.config.trust_remote_code)
        encoder.batch_tokens = self.config.batch_tokens
        return encoder

    @property
    def snapshot(self) -> store.Snapshot:
        """The current state (read from disk on first use; empty when there is none)."""
        if self._snapshot is None:
            self._snapshot = self._load()
        return self._snapshot

    def _load(self) -> store.Snapshot:
        try:
            snapshot = store.load(self.folder)
        except store.CorruptIndexError as error:
            logger.warning("index at %s is unreadable (%s); rebuilding it", self.folder, error)
            snapshot = None
        key = indexer.encoder_key(self.encoder)
        if snapshot is not None and snapshot.encoder != key:
            logger.warning("index at %s was built with %s, not %s; rebuilding it",
                           self.folder, snapshot.encoder, key)
            snapshot = None
        return snapshot or store.Snapshot.empty(key, self.encoder.dim)

    # --- updates ---------------------------------------------------------------------
    def update(self, paths: list[str | Path] | None = None, progress=None,
               run_batch=None) -> IndexStats:
        """Bring the index up to date with the files (all, or only `paths`) and save it;
        each encoder batch runs through `run_batch` when given (retrieval.encoder)."""
        relative = None if paths is None else [p for p in (self.relative_path(p) for p in paths) if p]
        with self._update_lock, FileLock(str(self._lock_path())):
            if store.current_generation(self.folder) != self.snapshot.generation:
                self._snapshot = self._load()  # another process saved a newer index
            snapshot, stats = indexer.update(
                self.snapshot, self.root, self.encoder, self.config.file_filter, relative,
                self.config.batch_size, progress, run_batch, self._save, self.config.checkpoint_every_s)
            if snapshot.files != self.snapshot.files or self.snapshot.generation is None:
                self._save(snapshot)
            logger.info("index %s: %s", self.root, stats.summary())
            return stats

    def add_summaries(self, found: list[DefinitionSummary], run_batch=None) -> int:
        """Attach summaries to their chunks (embedded, each batch through `run_batch` when
        given) and save; a summary whose file changed since it was read, or whose
        definition is not indexed, is left out. Returns how many were attached."""
        with self._update_lock, FileLock(str(self._lock_path())):
            if store.current_generation(self.folder) != self.snapshot.generation:
                self._snapshot = self._load()
            snapshot = self.snapshot
            definitions: dict[tuple[str, str], list[int]] = {}
            for row, chunk in enumerate(snapshot.chunks):
                if chunk.kind in SUMMARIZED_KINDS:
                    definitions.setdefault((chunk.path, chunk.qualified_name), []).append(row)
            rows = {}
            for summary in found:
                row = _row_of(snapshot, definitions, summary)
                if row is not None:
                    rows[row] = summary.text
            if not rows:
                return 0
            self._save(indexer.with_summaries(snapshot, rows, self.encoder, self.config.batch_size, run_batch))
            logger.info("index %s: %d summaries attached", self.root, len(rows))
            return len(rows)

    def unsummarized(self, path: str) -> set[str]:
        """Qualified names of the indexed definitions of `path` without a summary."""
        snapshot = self.snapshot
        return {chunk.qualified_name for row, chunk in enumerate(snapshot.chunks)
                if chunk.path == path and chunk.kind in SUMMARIZED_KINDS and not snapshot.summaries[row]}

    def summary_coverage(self) -> tuple[int, int]:
        """(definitions with a summary, definitions) in the index."""
        snapshot = self.snapshot
        rows = [row for row, chunk in enumerate(snapshot.chunks) if chunk.kind in SUMMARIZED_KINDS]
        return sum(bool(snapshot.summaries[row]) for row in rows), len(rows)

    def _save(self, snapshot: store.Snapshot) -> None:
        """Save `snapshot` (the update's result, or a checkpoint of it) and serve it."""
        self._write_gitignore()
        store.save(self.folder, snapshot)
        self._snapshot = snapshot

    def relative_path(self, path: str | Path) -> str | None:
        candidate = Path(path)
        try:  # a relative path (`file:../x`) is taken from the root, and must stay under it
            return (self.root / candidate).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            logger.debug("not under the indexed root %s: %s", self.root, path)
            return None

    @property
    def summaries_path(self) -> Path:
        """The hover summaries cache of this workspace (inside the index folder)."""
        return self.folder / "summaries.json"

    def _lock_path(self) -> Path:
        claim_index_folder(self.folder, self.root, _home())
        return self.folder / "index.lock"

    def _write_gitignore(self) -> None:
        """Keep ROOT/.codeassist out of git."""
        marker = self.root / ".codeassist"
        if self.folder.is_relative_to(marker) and not (marker / ".gitignore").exists():
            (marker / ".gitignore").write_text("*\n")

    # --- queries ---------------------------------------------------------------------
    def search(self, query: str, k: int = 10, mode: str = "hybrid") -> list[SearchHit]:
        """The best `k` chunks for a natural-language or code query."""
        snapshot = self.snapshot
        rows = search.rank(snapshot, query, k, mode, self.encoder.encode_query)
        return [search.hit(snapshot, row, score) for row, score in rows]

    def symbols(self, query: str, k: int = 50) -> list[SearchHit]:
        """Workspace symbols: names matching `query` first, then semantic matches."""
        snapshot = self.snapshot
        named = search.symbol_rows(snapshot, query, k)
        rows = [row for row, _ in named]
        if len(rows) < k and query.strip():
            semantic = search.rank(snapshot, query, k, "hybrid", self.encoder.encode_query)
            rows += [row for row, _ in semantic if row not in rows and snapshot.chunks[row].symbol]
        scores = dict(named)
        return [search.hit(snapshot, row, scores.get(row, 0.0)) for row in rows[:k]]


def _row_of(snapshot: store.Snapshot, definitions: dict[tuple[str, str], list[int]],
            summary: DefinitionSummary) -> int | None:
    """The row of the chunk `summary` describes (`definitions`: rows by path and qualified
    name); None when the indexed file is not the text the summary was made from, or holds no
    such definition."""
    record = snapshot.files.get(summary.path)
    if record is None or record.sha != summary.file_sha:
        return None
    rows = definitions.get((summary.path, summary.qualified_name), [])
    return min(rows, key=lambda row: abs(snapshot.chunks[row].start_line - summary.start_line), default=None)
