"""The engine host: one model worker that owns the engine's state, fed by lanes in priority
order. Lane 1, the requests a user waits for: for each document only the newest matters
(latest wins). Lane 2, warm-up: the prompt of the place the user is at, encoded before the
key that needs it; one at a time (a newer hint replaces it), run only while lane 1 is empty,
and stopped between encoding passes as soon as a lane-1 request waits (what it encoded is
kept). Lane 3, background: re-encoding a document's approximate KV session in idle time,
hover summaries, the code-search index's embeddings; it runs only while lanes 1 and 2 are
empty and stops between layers when either has work. Every forward pass of every model the
server runs happens on this one worker, so two passes never share the CPU and no lock or
polling loop is needed.

A newer request for the same key answers the queued older one with None at once, and asks
a running one to stop (the engine checks between decode steps). A request with the same
`identity` as the waiting or running one of its key joins it instead (editors ask for ghost
text and menu items of one keystroke: one computation answers both); the job then stops
only when every waiter has cancelled it. Different documents are served in arrival order.
Nothing here knows about LSP.

The worker is the one owner of the engine's state: changes to it from other threads (a
document closed) are queued with `run_soon` and run on the worker between jobs, in the order
they were queued, before any job still waiting; changes nobody waits for (a file's tokens
for the n-gram cache) go to lane 3 instead.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

logger = logging.getLogger(__name__)

Work = Callable[[Callable[[], bool]], Any]  # receives `cancelled()`, returns the result
USER, WARM, BACKGROUND = 1, 2, 3  # lanes


def _drop(job: "Job") -> None:
    """Stop `job` and answer its waiters with None."""
    job.cancel()
    resolve(job.future, None)


def resolve(future: Future, value: Any) -> None:
    """Resolve `future` unless its waiter already gave up on it."""
    if not future.done():
        future.set_result(value)


class Job:
    def __init__(self, key: str, work: Work, identity: Any = None):
        self.key = key
        self.work = work
        self.identity = identity  # requests with an equal identity share the job (None: never)
        self.waiters = 1
        self.lane = USER
        self.future: Future = Future()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def cancelled(self) -> bool:
        return self._cancelled.is_set()


class LatestWinsScheduler:
    def __init__(self, name: str = "model-worker"):
        self._lock = threading.Condition()
        self._pending: OrderedDict[str, Job] = OrderedDict()
        self._chores: deque[tuple[Callable[[], Any], Future]] = deque()
        self._running: Job | None = None
        self._warm: Job | None = None  # lane 2: waiting to run
        self._background: OrderedDict[str, Job] = OrderedDict()  # lane 3, by key
        self._closed = False
        self.max_concurrent = 0  # the most jobs seen running at once
        self._active = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, key: str, work: Work, identity: Any = None) -> Job:
        job = Job(key, work, identity)
        with self._lock:
            if self._closed:
                resolve(job.future, None)
                return job
            same = self._joinable(key, identity)
            if same is not None:
                same.waiters += 1
                return same
            older = self._pending.pop(key, None)
            if older is not None:
                _drop(older)  # superseded before it started
            running = self._running
            if running is not None and running.key == key and running.lane == USER:
                running.cancel()  # superseded while running: stop at the next step
            # (A warm-up of this document stops at its next pass by itself, keeping what it
            # encoded for this request.)
            self._pending[key] = job
            self._lock.notify()
        return job

    def _joinable(self, key: str, identity: Any) -> Job | None:
        """The job of `key` a request of this identity can share: the waiting one, else the
        running one when nothing waits (the lock is held)."""
        if identity is None:
            return None
        newest = self._pending.get(key)
        if newest is None and self._running is not None and self._running.key == key:
            newest = self._running
        if newest is None or newest.cancelled() or newest.identity != identity:
            return None
        return newest

    def warm(self, key: str, work: Work) -> Job:
        """Queue warm-up work for `key` in lane 2, replacing any warm-up that waits or runs.
        `work` gets a `cancelled()` that also turns true when a lane-1 request waits."""
        job = Job(key, work)
        job.lane = WARM
        with self._lock:
            if self._closed:
                resolve(job.future, None)
                return job
            self._drop_warm()
            self._warm = job
            self._lock.notify()
        return job

    def background(self, key: str, work: Work) -> Job:
        """Queue idle-time work for `key` in lane 3 (re-encoding an approximate KV session),
        replacing the waiting one of `key`; it runs only while lanes 1 and 2 are empty and
        stops between passes, or between layers, as soon as work of either waits."""
        job = Job(key, work)
        job.lane = BACKGROUND
        with self._lock:
            if self._closed:
                resolve(job.future, None)
                return job
            older = self._background.pop(key, None)
            if older is not None:
                _drop(older)
            self._background[key] = job
            self._lock.notify()
        return job

    def _drop_warm(self) -> None:
        """Answer the waiting warm-up with None and stop a running one (the lock is held)."""
        if self._warm is not None:
            _drop(self._warm)
            self._warm = None
        if self._running is not None and self._running.lane == WARM:
            self._running.cancel()

    def run_soon(self, chore: Callable[[], Any]) -> Future:
        """Run `chore` on the worker after the running job and before any waiting one; never
        superseded. The future gets its result (None when the scheduler is closed)."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                resolve(future, None)
                return future
            self._chores.append((chore, future))
            self._lock.notify()
        return future

    def cancel_key(self, key: str) -> None:
        """Stop the running job of `key` at its next step and answer a waiting one with None."""
        with self._lock:
            job = self._pending.pop(key, None)
            if job is not None:
                _drop(job)
            if self._warm is not None and self._warm.key == key:
                self._drop_warm()
            queued = self._background.pop(key, None)
            if queued is not None:
                _drop(queued)
            if self._running is not None and self._running.key == key:
                self._running.cancel()

    @property
    def closed(self) -> bool:
        return self._closed

    def busy(self) -> bool:
        """Whether a job of either lane runs or waits (background work yields meanwhile)."""
        with self._lock:
            return (self._running is not None or bool(self._pending) or self._warm is not None
                    or bool(self._background))

    def waiting(self, above: int = WARM) -> bool:
        """Whether work of a lane above (more urgent than) `above` waits to run (default: a
        lane-1 request)."""
        with self._lock:
            return bool(self._pending) or above > WARM and self._warm is not None

    def waiting_other(self, key: str) -> bool:
        """Whether a job of another key than `key` waits to run."""
        with self._lock:
            return any(other != key for other in self._pending)

    def cancel(self, job: Job) -> None:
        """One waiter gives up on `job`; it stops once all of them have."""
        with self._lock:
            job.waiters -= 1
            if job.waiters > 0:
                return
            job.cancel()
            if self._pending.get(job.key) is job:
                del self._pending[job.key]
                resolve(job.future, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for job in self._pending.values():
                _drop(job)
            self._pending.clear()
            self._drop_warm()
            for job in self._background.values():
                _drop(job)
            self._background.clear()
            for _, future in self._chores:
                resolve(future, None)
            self._chores.clear()
            if self._running is not None:
                self._running.cancel()
            self._lock.notify()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while (not self._pending and not self._chores and self._warm is None and not self._background
                       and not self._closed):
                    self._lock.wait()
                if self._closed:
                    return
                if self._chores:
                    chore, future = self._chores.popleft()
                    job = None
                elif self._pending:
                    _, job = self._pending.popitem(last=False)
                    self._running = job
                elif self._warm is not None:
                    job, self._warm = self._warm, None
                    self._running = job
                else:
                    _, job = self._background.popitem(last=False)
                    self._running = job
            if job is None:
                _run_chore(chore, future)
                continue
            self._run(job)
            with self._lock:
                self._running = None

    def _run(self, job: Job) -> None:
        if job.cancelled() or not job.future.set_running_or_notify_cancel():
            resolve(job.future, None)
            return
        self._active += 1
        self.max_concurrent = max(self.max_concurrent, self._active)
        cancelled = job.cancelled if job.lane == USER else LaneStop(job, self)
        try:
            result = job.work(cancelled)
            job.future.set_result(None if job.cancelled() else result)
        except Exception as error:  # the worker must survive any job
            logger.exception("job for %s failed", job.key)
            job.future.set_exception(error)
        finally:
            self._active -= 1


class LaneStop:
    """The stop signals of lane-2 and lane-3 work. Called, between encoding passes: it was
    replaced, or work of a higher lane waits (what is encoded is kept; a request of the same
    document goes on from it). `preempted()`, between layers of a pass: it was replaced, or
    higher-lane work waits for which the pass in flight is not worth finishing (for a
    warm-up: a request of another document; for background work: anything)."""

    def __init__(self, job: Job, host: LatestWinsScheduler):
        self._job, self._host = job, host

    def __call__(self) -> bool:
        return self._job.cancelled() or self._host.waiting(above=self._job.lane)

    def preempted(self) -> bool:
        if self._job.lane == WARM:
            return self._job.cancelled() or self._host.waiting_other(self._job.key)
        return self()


def _run_chore(chore: Callable[[], Any], future: Future) -> None:
    try:
        resolve(future, chore())
    except Exception as error:  # the worker must survive any chore
        logger.exception("a state change on the model worker failed")
        if not future.done():
            future.set_exception(error)
