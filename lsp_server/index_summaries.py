"""Summaries in the search index, written while the model idles: every indexed function,
method and class without one, the open files' first, with $/progress.

Each summary is the one a hover shows (the hover summaries' worker, prompt and cache, in the
engine host's background lane), so a hover over a summarized definition answers at once and
the other way round. Only a few are queued in the worker at a time: a hover, or a file that
was just re-indexed, never waits behind the whole workspace. Finding the next definitions
(parsing a file) and attaching written summaries to the index (a few at a time, their vectors
encoded in the background lane) run on the indexing thread, in order with index updates.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from concurrent.futures import Future

from retrieval import CodeIndex, DefinitionSummary
from retrieval.summary_targets import SummaryTarget, summary_targets, workspace_order

from .client import ClientChannel, Progress
from .hover import HoverProvider
from .search import WorkspaceSearch
from .settings import ServerSettings
from .workspace_files import WorkspaceFiles

logger = logging.getLogger(__name__)

IN_FLIGHT = 2  # summaries queued in the worker at a time
ATTACH_EVERY = 8  # written summaries attached to the index at once (fewer when the pass ends)


class IndexSummaries:
    def __init__(self, search: WorkspaceSearch, hovers: HoverProvider, files: WorkspaceFiles,
                 client: ClientChannel):
        self._search, self._hovers, self._files, self._client = search, hovers, files, client
        self._lock = threading.Lock()
        self._index: CodeIndex | None = None  # the index this pass summarizes
        self._finder = None
        self._paths: deque[str] = deque()  # files still to look at
        self._targets: deque[SummaryTarget] = deque()  # definitions found, not yet queued
        self._in_flight = 0
        self._written: list[DefinitionSummary] = []
        self._progress: Progress | None = None
        self._done = 0
        self._total = 0

    # --- from the event loop ---------------------------------------------------------
    async def start(self, index: CodeIndex, settings: ServerSettings) -> None:
        """Summarize the definitions of `index` that have no summary, unless this pass already
        does (`files_changed` brings it what changes); stop when the settings turn it off."""
        if not settings.index_summaries:
            self.stop()
            return
        if self._index is index:
            return
        done, total = await asyncio.get_running_loop().run_in_executor(None, index.summary_coverage)
        progress = await self._client.progress("Summarizing definitions") if done < total else None
        with self._lock:
            self._end_progress("replaced")
            self._index, self._finder = index, self._files.finder(index)
            self._paths = deque(workspace_order(index, self._files.open_paths()))
            self._targets.clear()
            self._written, self._progress, self._done, self._total = [], progress, 0, total - done
        self._search.on_indexer(self._feed)

    def files_changed(self, index: CodeIndex, paths: list[str]) -> None:
        """Look at these (re-indexed) files again, before the rest."""
        with self._lock:
            if self._index is not index:
                return
            self._paths.extendleft(reversed([p for p in paths if p not in self._paths]))
        self._search.on_indexer(self._feed)

    def resume(self) -> None:
        """Go on after a model was loaded (the pass waits while there is none)."""
        self._search.on_indexer(self._feed)

    def stop(self) -> None:
        with self._lock:
            self._index = None
            self._paths.clear()
            self._targets.clear()
            self._end_progress("stopped")

    def status(self) -> dict:
        index = self._index
        if index is None:
            return {"state": "off"}
        done, total = index.summary_coverage()
        with self._lock:
            busy = bool(self._paths or self._targets or self._in_flight or self._written)
        return {"state": "summarizing" if busy else "done", "summarized": done, "definitions": total}

    # --- on the indexing thread ------------------------------------------------------
    def _feed(self) -> None:
        """Queue definitions in the worker until IN_FLIGHT are there; end the pass when
        nothing is left."""
        while True:
            with self._lock:
                index, finder = self._index, self._finder
                if index is None or index is not self._search.index or self._in_flight >= IN_FLIGHT:
                    return
                target = self._targets.popleft() if self._targets else None
                path = self._paths.popleft() if target is None and self._paths else None
                if target is None and path is None:
                    finished = self._in_flight == 0 and not self._written
                    if finished:
                        self._end_progress(f"{self._done} definitions summarized")
                    return
                if target is not None:
                    self._in_flight += 1
            if path is not None:
                found = summary_targets(index, finder, path)  # an open file's text must be the indexed one
                with self._lock:
                    self._targets.extend(found)
                continue
            future = self._hovers.queue_summary(target.definition, finder)
            if future is None:  # no model yet: `resume` goes on
                with self._lock:
                    self._in_flight -= 1
                    self._targets.appendleft(target)
                return
            future.add_done_callback(lambda done, target=target: self._summarized(index, target, done))

    def _attach(self, index: CodeIndex, force: bool) -> None:
        with self._lock:
            if not self._written or len(self._written) < ATTACH_EVERY and not force:
                return
            written, self._written = self._written, []
        try:
            self._search.attach_summaries(index, written)
        except Exception:  # a full disk or a closed host: the summaries stay in the cache
            logger.warning("could not attach %d summaries to the index", len(written), exc_info=True)

    # --- on the engine host's thread (the worker's callbacks) ------------------------
    def _summarized(self, index: CodeIndex, target: SummaryTarget, future: Future) -> None:
        text = None if future.cancelled() else future.result()
        with self._lock:
            self._in_flight -= 1
            if self._index is not index:
                return
            if text:
                self._written.append(target.summary(text))
                self._done += 1
            idle = not (self._paths or self._targets or self._in_flight)
            if self._progress is not None:
                self._progress.report(f"{self._done}/{self._total} definitions",
                                      int(100 * self._done / max(self._total, 1)))

        def attach_then_feed() -> None:
            self._attach(index, force=idle)
            self._feed()

        self._search.on_indexer(attach_then_feed)

    def _end_progress(self, message: str) -> None:
        """(Under the lock.)"""
        if self._progress is not None:
            self._progress.end(message)
            self._progress = None
