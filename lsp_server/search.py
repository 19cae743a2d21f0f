"""Code search in the server: the workspace index, kept up to date in the background.

One worker thread runs index updates in order (the first indexes the whole workspace, with
$/progress; later ones re-index saved or changed files). Each encoder batch runs in the
engine host's background lane, with one torch thread: only while no completion or warm-up
waits, stopped before the next encoder layer when one arrives and run again at the next
turn. Searches read the current snapshot (the CLI's too, through cli_requests.py, while the
index is ready). When an update is done, `summaries` (index_summaries.py) looks at what it
changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from lsprotocol import types
from pygls.uris import to_fs_path

from completion.home import codeassist_home
from completion.preemption import Preempted, between_layers
from retrieval import CodeIndex, DefinitionSummary, IndexConfig, SearchHit

from .client import ClientChannel, Progress
from .local_endpoint import Unavailable
from .scheduler import LatestWinsScheduler
from .settings import ServerSettings

logger = logging.getLogger(__name__)

# Encoder batches of at most 64 padded tokens, or one longer text: a request waits at most
# one encoder layer over one text of 256 tokens (~40 ms on a small CPU; batches of 128 tokens
# made it ~58), and short texts (names) still go several to a batch (one at a time takes
# twice as long).
ENCODER_BATCH, ENCODER_BATCH_TOKENS = 64, 64
INDEX_KEY = "codeassist:index"  # the index batches' key in the host (never a document's URI)
_PROGRESS_EVERY_S = 0.5
_SYMBOL_KINDS = {"class": types.SymbolKind.Class, "method": types.SymbolKind.Method,
                 "function": types.SymbolKind.Function, "module": types.SymbolKind.Module}


_STOPPED = object()  # a batch stopped before it was done


class IndexingStopped(Exception):
    """The update was abandoned (shutdown, or another index took this one's place)."""


def encode_in_background(host: LatestWinsScheduler, model, encode_batch):
    """Run `encode_batch()` in the host's background lane and wait for its rows; stopped
    between the layers of `model` (when it has them) by more urgent work, it runs again at
    the next turn."""
    def turn(stop):
        try:
            with between_layers(model, stop.preempted):
                return encode_batch()
        except Preempted:
            return _STOPPED

    while True:
        rows = host.background(INDEX_KEY, turn).future.result()
        if rows is None:
            raise IndexingStopped("the server is shutting down")
        if rows is not _STOPPED:
            return rows


class WorkspaceSearch:
    def __init__(self, client: ClientChannel, host: LatestWinsScheduler):
        self.client = client
        self._host = host
        self.index: CodeIndex | None = None
        self.status = "off"  # off | indexing | ready | failed
        self._key = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="indexer")
        self.summaries = None  # an IndexSummaries, told when an update is done

    # --- lifecycle -------------------------------------------------------------------
    async def start(self, settings: ServerSettings, root: str | None) -> None:
        """(Re)open the workspace index for these settings and index it all."""
        root = root if settings.index_enabled else None
        if (settings.index_key, root) == self._key:
            if self.summaries is not None and self.status == "ready":
                await self.summaries.start(self.index, settings)  # `indexSummaries` may have changed
            return
        self._key = (settings.index_key, root)
        self.index, self.status = None, "off"
        if root is None:
            return
        try:
            config = IndexConfig(encoder=settings.embedding_model, location=settings.index_location,
                                 index_dir=client_index_dir(settings.index_dir, root), threads=1,
                                 batch_size=ENCODER_BATCH, batch_tokens=ENCODER_BATCH_TOKENS)
            self.index = CodeIndex(root, config)
        except ValueError as error:
            self.client.tell(logging.WARNING, f"codeassist: code search is off: {error}")
            return
        await self._index_all(self.index, settings)

    async def _index_all(self, index: CodeIndex, settings: ServerSettings) -> None:
        self.status = "indexing"
        progress = await self.client.progress("Indexing workspace")
        future = self._worker.submit(index.update, None, _reporter(progress), functools.partial(self._on_host, index))
        try:
            stats = await asyncio.wrap_future(future)
        except IndexingStopped as reason:
            logger.info("indexing %s stopped: %s", index.root, reason)
            message = "stopped"
        except Exception as error:  # a broken encoder or disk must not take the server down
            self.status = "failed"
            self.client.tell(logging.ERROR, f"codeassist: indexing failed: {error}")
            message = "failed"
        else:
            if self.index is index:
                self.status = "ready"
            message = stats.summary()
            self.client.tell(logging.INFO, f"codeassist: indexed {index.root}: {message}")
        progress.end(message)
        if self.index is index and self.status == "ready" and self.summaries is not None:
            await self.summaries.start(index, settings)

    def _on_host(self, index: CodeIndex, encode_batch):
        """Run one encoder batch of `index` in the host's background lane (on the indexing
        thread: waits for it); a batch stopped by more urgent work is run again at the next
        turn."""
        if self.index is not index:
            raise IndexingStopped("another index took its place")
        return encode_in_background(self._host, getattr(index.encoder, "model", None), encode_batch)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    def answer_cli(self, arguments: dict) -> list[dict]:
        """(On an endpoint thread.) `codeassist search` of this folder, when the CLI's index
        options name this index."""
        index = self.index
        if index is None or self.status != "ready":
            raise Unavailable(f"the server's index is {self.status}")
        wanted = IndexConfig(encoder=arguments.get("encoder") or index.config.encoder,
                             location="workspace" if arguments.get("in_workspace") else "cache",
                             index_dir=arguments.get("index_dir"))
        if wanted.encoder != index.config.encoder or wanted.folder_for(index.root).resolve() != index.folder.resolve():
            raise Unavailable("the server's index is another one (encoder or folder)")
        query, k, mode = arguments.get("query"), arguments.get("k", 10), arguments.get("mode", "hybrid")
        if not isinstance(query, str) or not isinstance(k, int) or not isinstance(mode, str):
            raise ValueError("search needs query (text), k (integer) and mode (text)")
        return [dataclasses.asdict(hit) for hit in index.search(query, k, mode)]

    def on_indexer(self, work) -> None:
        """Run `work()` on the indexing thread, after the updates queued before it."""
        try:
            self._worker.submit(work).add_done_callback(_log_failure)
        except RuntimeError:  # shut down
            pass

    def attach_summaries(self, index: CodeIndex, found: list[DefinitionSummary]) -> int:
        """(On the indexing thread.) Attach summaries to `index`, their vectors encoded in the
        host's background lane."""
        return index.add_summaries(found, functools.partial(self._on_host, index))

    # --- file events -----------------------------------------------------------------
    def files_changed(self, uris: list[str]) -> Future | None:
        """Re-index these files (saved, created, changed or deleted) in the background."""
        index = self.index
        paths = [p for p in (to_fs_path(uri) for uri in uris) if p]
        if index is None or not paths:
            return None
        future = self._worker.submit(index.update, paths, None, functools.partial(self._on_host, index))
        future.add_done_callback(_log_failure)
        if self.summaries is not None:
            relative = [r for r in (index.relative_path(p) for p in paths) if r]
            future.add_done_callback(lambda _: self.summaries.files_changed(index, relative))
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


def _reporter(progress: Progress):
    """A progress callback for the indexing thread, at most one report per interval."""
    last = 0.0

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < _PROGRESS_EVERY_S and done < total:
            return
        last = now
        progress.report(f"{done}/{total} chunks", int(100 * done / max(total, 1)))

    return report


def _log_failure(future: Future) -> None:
    if not future.cancelled() and future.exception() is not None \
            and not isinstance(future.exception(), IndexingStopped):
        logger.error("indexing work failed: %s", future.exception())


def client_index_dir(index_dir: str, root: str) -> str | None:
    """The `indexDir` a client asked for, when it lies inside the workspace or under
    CODEASSIST_HOME (a client must not choose where on disk the server writes); None for
    the default. Raises ValueError otherwise."""
    if not index_dir:
        return None
    folder = Path(index_dir).expanduser().resolve()
    allowed = (Path(root).resolve(), codeassist_home().resolve())
    if not any(folder.is_relative_to(base) for base in allowed):
        raise ValueError(f"indexDir {index_dir} is outside the workspace and {allowed[1]}")
    return str(folder)
