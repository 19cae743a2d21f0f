"""Hover summaries in the background: one thread, hover requests before precomputation,
and never while a completion runs or waits (completion has the model first).

A job waits until the model worker is idle, then generates; a completion that arrives
meanwhile cancels the generation at its next step, and the job starts over once the worker
is idle again. Finished summaries go into the cache, so the next hover has them at once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from completion.summarize import Summarizer, SummaryRequest
from completion.summary_cache import SummaryCache

logger = logging.getLogger(__name__)

HOVER, BACKGROUND = 0, 1  # job priorities (lower first)
_IDLE_POLL_S = 0.05
_MAX_TRIES = 8

Prepare = Callable[[], "tuple[str, SummaryRequest] | None"]  # -> (cache key, request)


class SummaryWorker:
    def __init__(self, busy: Callable[[], bool], model_lock: threading.Lock | None = None):
        self._busy = busy
        self._model_lock = model_lock  # held by the model worker's jobs and by each summary pass
        self._lock = threading.Condition()
        self._heap: list[tuple[int, int, str]] = []
        self._jobs: dict[str, tuple[Prepare, Summarizer, SummaryCache, Future]] = {}
        self._order = itertools.count()
        self._hover_ids: set[str] = set()  # jobs a hover waits for: never dropped
        self._closed = False
        self.generated = 0
        self.preempted = 0
        self._thread = threading.Thread(target=self._loop, name="summaries", daemon=True)
        self._thread.start()

    def submit(self, job_id: str, prepare: Prepare, summarizer: Summarizer, cache: SummaryCache,
               priority: int = BACKGROUND) -> Future:
        """Queue a summary (once per `job_id` while queued); the future gets its text, or
        None when it could not be made."""
        with self._lock:
            if job_id in self._jobs:
                future = self._jobs[job_id][3]
            else:
                future = Future()
                self._jobs[job_id] = (prepare, summarizer, cache, future)
            if self._closed:
                if not future.done():
                    future.set_result(None)
                return future
            if priority == HOVER:
                self._hover_ids.add(job_id)
            heapq.heappush(self._heap, (priority, next(self._order), job_id))  # may raise priority
            self._lock.notify()
        return future

    def drop_background(self, prefix: str) -> int:
        """Forget queued background jobs whose id starts with `prefix` (a closed file's);
        their futures get None. Returns how many were dropped."""
        with self._lock:
            dropped = [job_id for job_id in self._jobs if job_id.startswith(prefix)
                       and job_id not in self._hover_ids]
            for job_id in dropped:
                *_, future = self._jobs.pop(job_id)
                if not future.done():
                    future.set_result(None)
        return len(dropped)

    def pending(self) -> int:
        with self._lock:
            return len(self._jobs)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for *_, future in self._jobs.values():
                if not future.done():
                    future.set_result(None)
            self._jobs.clear()
            self._lock.notify()

    def _cancelled(self) -> bool:
        return self._closed or self._busy()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._heap:
                    self._lock.wait()
                if self._closed:
                    return
                _, _, job_id = heapq.heappop(self._heap)
                job = self._jobs.get(job_id)
            if job is not None:
                self._run(job_id, *job)

    def _run(self, job_id: str, prepare: Prepare, summarizer: Summarizer, cache: SummaryCache,
             future: Future) -> None:
        text = None
        try:
            prepared = prepare()
            if prepared is not None:
                key, request = prepared
                text = cache.get(key)
                if text is None:
                    text = self._generate(job_id, summarizer, request)
                    if text is not None:
                        cache.put(key, text)
                        self.generated += 1
        except Exception:  # the worker survives any job
            logger.exception("summary job %s failed", job_id)
        with self._lock:
            self._jobs.pop(job_id, None)
            self._hover_ids.discard(job_id)
        if not future.done():
            future.set_result(text)

    def _generate(self, job_id: str, summarizer: Summarizer, request: SummaryRequest) -> str | None:
        for _ in range(_MAX_TRIES):
            while self._busy() and not self._closed:
                time.sleep(_IDLE_POLL_S)
            with self._lock:
                dropped = job_id not in self._jobs  # its file was closed while it waited
            if self._closed or dropped:
                return None
            summary = summarizer.summarize(request, self._cancelled, self._model_lock)
            if summary is not None:
                return summary.text
            self.preempted += 1
            logger.debug("summary of %s preempted by a completion", request.qualified_name)
        return None
