"""Code search in the server: the workspace index, kept up to date in the background.

One worker thread runs index updates in order (the first indexes the whole workspace, with
$/progress; later ones re-index saved or changed files). It encodes with one torch thread
and waits between batches while a completion runs. Searches read the current snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.uris import to_fs_path

from retrieval import CodeIndex, IndexConfig, SearchHit

if TYPE_CHECKING:
    from .server import CodeassistServer

logger = logging.getLogger(__name__)

_PAUSE_S = 0.05
_PROGRESS_EVERY_S = 0.5
_SYMBOL_KINDS = {"class": types.SymbolKind.Class, "method": types.SymbolKind.Method,
                 "function": types.SymbolKind.Function, "module": types.SymbolKind.Module}


class WorkspaceSearch:
    def __init__(self, server: CodeassistServer):
        self.server = server
        self.index: CodeIndex | None = None
        self.status = "off"  # off | indexing | ready | failed
        self._key = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="indexer")
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """(Re)open the workspace index for the current settings and index it all."""
        settings = self.server.settings
        root = self.server.workspace.root_path if settings.index_enabled else None
        if (settings.index_key, root) == self._key:
            return
        self._key = (settings.index_key, root)
        self.index, self.status = None, "off"
        if root is None:
            return
        try:
            config = IndexConfig(encoder=settings.embedding_model, location=settings.index_location,
                                 index_dir=settings.index_dir or None, threads=1, batch_size=16)
            self.index = CodeIndex(root, config)
        except ValueError as error:
            self.server.tell_client(logging.WARNING, f"codeassist: code search is off: {error}")
            return
        self._loop = asyncio.get_running_loop()
        await self._index_all(self.index)

    async def _index_all(self, index: CodeIndex) -> None:
        self.status = "indexing"
        token = f"codeassist-index-{uuid.uuid4().hex[:8]}"
        progress = await self.server._begin_progress(token, "Indexing workspace")
        report = self._reporter(token) if progress else None
        future = self._worker.submit(index.update, None, report, self._pause)
        try:
            stats = await asyncio.wrap_future(future)
        except Exception as error:  # a broken encoder or disk must not take the server down
            self.status = "failed"
            self.server.tell_client(logging.ERROR, f"codeassist: indexing failed: {error}")
            message = "failed"
        else:
            if self.index is index:
                self.status = "ready"
            message = stats.summary()
            self.server.tell_client(logging.INFO, f"codeassist: indexed {index.root}: {message}")
        if progress:
            self.server.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))

    async def watch_files(self) -> None:
        """Ask the client to report file changes in the workspace, when it can and the
        index is on (workspace/didChangeWatchedFiles)."""
        workspace = self.server.client_capabilities.workspace
        watched = workspace.did_change_watched_files if workspace else None
        if not self.server.settings.index_enabled or not (watched and watched.dynamic_registration):
            return
        options = types.DidChangeWatchedFilesRegistrationOptions(
            watchers=[types.FileSystemWatcher(glob_pattern="**/*")])
        registration = types.Registration(f"codeassist-watch-{uuid.uuid4().hex[:8]}",
                                          types.WORKSPACE_DID_CHANGE_WATCHED_FILES, options)
        try:
            await self.server.client_register_capability_async(
                types.RegistrationParams(registrations=[registration]))
        except Exception:
            logger.warning("client refused to watch files; re-indexing on save only", exc_info=True)

    def _reporter(self, token: str):
        """A progress callback for the worker thread that reports on the event loop."""
        last = 0.0

        def report(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < _PROGRESS_EVERY_S and done < total:
                return
            last = now
            value = types.WorkDoneProgressReport(message=f"{done}/{total} chunks",
                                                 percentage=int(100 * done / max(total, 1)))
            self._loop.call_soon_threadsafe(self.server.work_done_progress.report, token, value)

        return report

    def _pause(self) -> None:
        """Between encoder batches: wait while the model worker has a completion to run."""
        while self.server.scheduler.busy():
            time.sleep(_PAUSE_S)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    # --- file events -----------------------------------------------------------------
    def files_changed(self, uris: list[str]) -> Future | None:
        """Re-index these files (saved, created, changed or deleted) in the background."""
        index = self.index
        paths = [p for p in (to_fs_path(uri) for uri in uris) if p]
        if index is None or not paths:
            return None
        future = self._worker.submit(index.update, paths, None, self._pause)
        future.add_done_callback(_log_failure)
        return future

    # --- queries ---------------------------------------------------------------------
    async def search(self, query: str, k: int) -> list[SearchHit]:
        index = self._ready_index()
        if index is None:
            return []
        return await asyncio.get_running_loop().run_in_executor(None, index.search, query, k)

    async def symbols(self, query: str) -> list[SearchHit]:
        index = self._ready_index()
        if index is None:
            return []
        return await asyncio.get_running_loop().run_in_executor(None, index.symbols, query)

    def _ready_index(self) -> CodeIndex | None:
        if self.index is None:
            logger.info("code search while the index is %s", self.status)
        return self.index

    def location(self, hit: SearchHit) -> types.Location:
        """The hit's lines as an LSP location (0-based lines; whole lines)."""
        uri = (self.index.root / hit.path).as_uri()
        return types.Location(uri, types.Range(types.Position(hit.start_line - 1, 0),
                                               types.Position(hit.end_line, 0)))

    def symbol(self, hit: SearchHit) -> types.WorkspaceSymbol:
        return types.WorkspaceSymbol(
            name=hit.symbol, kind=_SYMBOL_KINDS.get(hit.kind, types.SymbolKind.Function),
            location=self.location(hit), container_name=hit.scope or None)


def _log_failure(future: Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("re-indexing failed: %s", future.exception())
