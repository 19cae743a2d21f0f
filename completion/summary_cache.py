"""Summaries cached by content hash in one small JSON file, kept next to the code-search
index so that they outlive the server.

Several processes share the file (the server, `codeassist summarize`): a write takes an
exclusive lock on a lock file beside it, merges what is on disk with what this process made,
writes a temporary file and renames it over the cache (a reader never sees half a file; a
write killed midway leaves the old cache and a temporary file, removed by the next write)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import uuid
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: writes are still atomic, merges are not serialized
    fcntl = None

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAX_ENTRIES = 5000  # the oldest are dropped beyond this


class SummaryCache:
    """key (sha256 hex) -> summary text. `path=None` keeps it in memory only."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._entries: dict[str, str] = self._read()
        self.hits = 0
        self.misses = 0

    def _read(self) -> dict[str, str]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"format version {data.get('version')!r}")
            entries = data["summaries"]
            if not isinstance(entries, dict):
                raise ValueError("summaries is not an object")
            return {str(k): str(v) for k, v in entries.items()}
        except (OSError, ValueError, KeyError, AttributeError) as error:
            logger.warning("summary cache %s is unreadable (%s); starting empty", self.path, error)
            return {}

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
            return value

    def put(self, key: str, summary: str) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = summary
            while len(self._entries) > MAX_ENTRIES:
                self._entries.pop(next(iter(self._entries)))
            self._write()

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict:
        return {"entries": len(self._entries), "hits": self.hits, "misses": self.misses}

    def _write(self) -> None:
        """Merge the file's entries (other processes' summaries) with ours and replace it."""
        if self.path is None:
            return
        temporary = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._exclusive():
                for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                    leftover.unlink(missing_ok=True)  # a killed write's: nobody else writes now
                merged = self._read()
                merged.update(self._entries)
                while len(merged) > MAX_ENTRIES:
                    merged.pop(next(iter(merged)))
                self._entries = merged
                temporary.write_text(json.dumps({"version": FORMAT_VERSION, "summaries": merged}),
                                     encoding="utf-8")
                os.replace(temporary, self.path)
        except OSError as error:  # a read-only disk loses persistence, not summaries
            temporary.unlink(missing_ok=True)
            logger.warning("cannot write the summary cache %s: %s", self.path, error)

    @contextlib.contextmanager
    def _exclusive(self):
        """An exclusive lock on `.NAME.lock` beside the cache, across processes."""
        if fcntl is None:
            yield
            return
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
