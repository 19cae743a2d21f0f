"""Hover summaries in the engine host's background lane: hover requests before precomputed
ones, one summary at a time in the host.

A summary runs only while no completion or warm-up waits; one that arrives stops it before
the next decoder layer. The summary keeps what it encoded and generated (`SummaryRun`), goes
back into the queue and goes on from there at its next turn. A hover request stops a
precomputed summary in the host the same way, to run first. Finished summaries go into the
cache, so the next hover has them at once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from completion.summarize import Summarizer, SummaryRequest, SummaryRun
from completion.summary_cache import SummaryCache

from .scheduler import LatestWinsScheduler, resolve

logger = logging.getLogger(__name__)

HOVER, BACKGROUND = 0, 1  # job priorities (lower first)
HOST_KEY = "codeassist:summaries"  # the summaries' key in the host (never a document's URI)
_MAX_TURNS = 64  # turns a summary may be stopped and resumed before it is given up

Prepare = Callable[[], "tuple[str, SummaryRequest] | None"]  # -> (cache key, request)


@dataclass
class SummaryJob:
    job_id: str
    prepare: Prepare
    summarizer: Summarizer
    cache: SummaryCache
    priority: int
    seq: int  # its place among jobs of its priority: kept when it is stopped and queued again
    future: Future = field(default_factory=Future)
    prepared: tuple[str, SummaryRequest] | None = None
    run: SummaryRun | None = None
    turns: int = 0


@dataclass(frozen=True)
class _Done:  # a turn's outcome when the job is over (text None: no summary could be made)
    text: str | None


class SummaryWorker:
    def __init__(self, host: LatestWinsScheduler):
        self._host = host
        self._lock = threading.Lock()
        self._heap: list[tuple[int, int, str]] = []
        self._jobs: dict[str, SummaryJob] = {}
        self._order = itertools.count()
        self._current: SummaryJob | None = None  # the job whose turn is in the host
        self._closed = False
        self.generated = 0
        self.preempted = 0

    def submit(self, job_id: str, prepare: Prepare, summarizer: Summarizer, cache: SummaryCache,
               priority: int = BACKGROUND) -> Future:
        """Queue a summary (once per `job_id` while queued); the future gets its text, or
        None when it could not be made."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                job = SummaryJob(job_id, prepare, summarizer, cache, priority, next(self._order))
                self._jobs[job_id] = job
            if self._closed:
                resolve(job.future, None)
                return job.future
            job.priority = min(job.priority, priority)
            heapq.heappush(self._heap, (priority, job.seq, job_id))  # may raise its priority
            current = self._current
            overtakes = priority == HOVER and current is not None and current.priority == BACKGROUND
        if overtakes:
            self._host.cancel_key(HOST_KEY)  # it keeps its progress and waits its next turn
        self._next_turn()
        return job.future

    def drop_background(self, prefix: str) -> int:
        """Forget queued background jobs whose id starts with `prefix` (a closed file's);
        their futures get None. Returns how many were dropped."""
        with self._lock:
            dropped = [job for job_id, job in self._jobs.items()
                       if job_id.startswith(prefix) and job.priority == BACKGROUND]
            for job in dropped:
                del self._jobs[job.job_id]
                resolve(job.future, None)
            stop_current = self._current in dropped
        if stop_current:
            self._host.cancel_key(HOST_KEY)
        return len(dropped)

    def pending(self) -> int:
        with self._lock:
            return len(self._jobs)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for job in self._jobs.values():
                resolve(job.future, None)
            self._jobs.clear()
            self._heap.clear()
        self._host.cancel_key(HOST_KEY)

    def _next_turn(self) -> None:
        """Give the most urgent queued job a turn in the host, unless one has it."""
        if self._host.closed:
            self.close()
            return
        with self._lock:
            if self._closed or self._current is not None:
                return
            job = None
            while self._heap and job is None:
                _, _, job_id = heapq.heappop(self._heap)
                job = self._jobs.get(job_id)
            if job is None:
                return
            self._current = job
        turn = self._host.background(HOST_KEY, lambda cancelled: self._turn(job, cancelled))
        turn.future.add_done_callback(lambda future: self._turn_ended(job, future))

    def _turn(self, job: SummaryJob, cancelled: Callable[[], bool]) -> _Done | None:
        """On the host: the job's summary from the cache, or generated until it is done
        (_Done) or stopped (None)."""
        try:
            if job.prepared is None:
                job.prepared = job.prepare()
                if job.prepared is None:
                    return _Done(None)
            key, request = job.prepared
            text = job.cache.get(key)
            if text is not None:
                return _Done(text)
            if job.run is None:
                job.run = job.summarizer.start(request)
            summary = job.summarizer.advance(job.run, cancelled)
        except Exception:  # the host survives any job
            logger.exception("summary job %s failed", job.job_id)
            return _Done(None)
        if summary is None:
            return None
        job.cache.put(key, summary.text)
        self.generated += 1
        return _Done(summary.text)

    def _turn_ended(self, job: SummaryJob, turn: Future) -> None:
        outcome = turn.result()  # None: stopped, or dropped by the host before it ran
        with self._lock:
            self._current = None
            if self._jobs.get(job.job_id) is not job:  # dropped or closed meanwhile
                pass
            elif isinstance(outcome, _Done) or job.turns >= _MAX_TURNS or self._host.closed:
                del self._jobs[job.job_id]
                resolve(job.future, outcome.text if isinstance(outcome, _Done) else None)
            else:
                job.turns += 1
                self.preempted += 1
                heapq.heappush(self._heap, (job.priority, job.seq, job.job_id))
                logger.debug("summary %s stopped; it goes on at its next turn", job.job_id)
        self._next_turn()

