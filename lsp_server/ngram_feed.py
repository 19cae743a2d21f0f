"""Open documents, and once per folder their sibling files of the same kind, given to the
engine's repository n-gram cache (a draft source of speculative decoding). Files are
tokenized on a thread of their own, off the event loop and the engine host; the cache itself
changes on the engine host, in its background lane."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from completion import Engine
from retrieval.files import read_text

from .scheduler import LatestWinsScheduler
from .workspace_files import WorkspaceFiles

logger = logging.getLogger(__name__)


class NgramFeed:
    def __init__(self, files: WorkspaceFiles, scheduler: LatestWinsScheduler):
        self.files = files
        self.scheduler = scheduler
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codeassist-ngrams")
        self._folders: set[Path] = set()  # whose siblings were given

    def new_engine(self) -> None:
        """A new engine starts with an empty cache: folders are given again."""
        self._folders.clear()

    def give(self, engine: Engine, uri: str, text: str, path: str) -> None:
        """The document's text, and its folder's files when the folder is new (workspace only)."""
        if not engine.learns_from_files:
            return
        self._thread.submit(self._remember_text, engine, uri, text)
        folder = Path(path).parent
        inside = self.files.relative(uri) is not None
        if inside and Path(path).suffix and folder not in self._folders:
            self._folders.add(folder)
            self._thread.submit(self._remember_siblings, engine, Path(path))

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    def _remember_text(self, engine: Engine, key: str, text: str) -> None:
        ids = engine.encode([text])[0] if text else []
        # The background lane: a request never waits behind the feed of a newly opened
        # folder (up to 17 files, a few ms each on the engine host).
        self.scheduler.background(f"ngrams:{key}", lambda cancelled: engine.remember_tokens(key, ids))

    def _remember_siblings(self, engine: Engine, path: Path, limit: int = 16, max_bytes: int = 256_000) -> None:
        """Files next to `path` with its extension, newest first."""
        try:
            root = self.files.root()
            siblings = sorted((p for p in path.parent.glob(f"*{path.suffix}") if p != path and not p.is_symlink()
                               and p.is_file() and p.stat().st_size <= max_bytes
                               and root is not None and p.resolve().is_relative_to(root.resolve())),
                              key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
            for sibling in siblings:
                text = read_text(sibling, max_bytes)
                if text is not None:
                    self._remember_text(engine, sibling.as_uri(), text)
        except OSError as error:
            logger.info("n-gram cache: could not read the files next to %s: %s", path, error)
