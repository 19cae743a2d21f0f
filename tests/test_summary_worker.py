"""Hover summaries in the engine host's background lane: they run only while no request
waits, a request stops one that goes on where it stopped, finished summaries go into the
cache, hovers go before precomputation."""

import threading
from dataclasses import dataclass, field

import pytest

from completion.summarize import Summary, SummaryRequest
from completion.summary_cache import SummaryCache
from lsp_server.scheduler import LatestWinsScheduler
from lsp_server.summaries import BACKGROUND, HOVER, SummaryWorker
from tests.host_helpers import hold


@dataclass
class FakeRun:
    request: SummaryRequest
    step: int = 0


@dataclass
class FakeSummarizer:
    """Summarizes in `steps` steps, checking `cancelled()` before each; at step `pause_at`
    it tells `paused` and waits until it is cancelled. Records the steps it ran."""
    steps: int = 3
    pause_at: int | None = None
    paused: threading.Event = field(default_factory=threading.Event)
    ran: list = field(default_factory=list)  # (name, step)
    finished: list = field(default_factory=list)

    def start(self, request):
        return FakeRun(request)

    def advance(self, run, cancelled):
        name = run.request.qualified_name
        while run.step < self.steps:
            if run.step == self.pause_at and not self.paused.is_set():
                self.paused.set()
                stopped = threading.Event()
                while not cancelled() and not stopped.wait(0.005):
                    pass
            if cancelled():
                return None
            self.ran.append((name, run.step))
            run.step += 1
        self.finished.append(name)
        return Summary(f"summary of {name}", 1, self.steps, 1.0, "fake")


def _job(name):
    request = SummaryRequest(name, "function", f"def {name}(): pass")
    return lambda: (request.key("fake"), request)


@pytest.fixture
def host():
    scheduler = LatestWinsScheduler()
    yield scheduler
    scheduler.close()


def test_waits_for_the_host_then_caches(host):
    worker, cache, summarizer = SummaryWorker(host), SummaryCache(), FakeSummarizer()
    release = hold(host)  # a completion runs
    future = worker.submit("a", _job("a"), summarizer, cache, HOVER)
    assert not future.done()
    release.set()
    assert future.result(10) == "summary of a"
    assert cache.get(_job("a")()[0]) == "summary of a"
    again = worker.submit("a2", _job("a"), summarizer, cache, HOVER)
    assert again.result(10) == "summary of a" and summarizer.finished == ["a"]  # from the cache
    worker.close()


def test_a_request_stops_the_summary_which_goes_on_where_it_stopped(host):
    worker, summarizer = SummaryWorker(host), FakeSummarizer(steps=5, pause_at=2)
    future = worker.submit("b", _job("b"), summarizer, SummaryCache(), BACKGROUND)
    assert summarizer.paused.wait(10)
    request = host.submit("doc.py", lambda cancelled: list(summarizer.ran))
    assert request.future.result(10) == [("b", 0), ("b", 1)]  # the request ran in between
    assert future.result(10) == "summary of b"
    assert summarizer.ran == [("b", step) for step in range(5)]  # no step ran twice
    assert worker.preempted == 1
    worker.close()


def test_a_hover_goes_before_background_summaries_even_a_running_one(host):
    worker, cache = SummaryWorker(host), SummaryCache()
    summarizer = FakeSummarizer(steps=3, pause_at=1)
    background = [worker.submit(n, _job(n), summarizer, cache, BACKGROUND) for n in ("x", "y")]
    assert summarizer.paused.wait(10)  # x runs
    hover = worker.submit("h", _job("h"), summarizer, cache, HOVER)
    assert hover.result(10) == "summary of h"
    assert [f.result(10) for f in background] == ["summary of x", "summary of y"]
    assert summarizer.finished == ["h", "x", "y"]  # x kept its place before y
    assert summarizer.ran.count(("x", 0)) == 1
    worker.close()
    assert worker.submit("z", _job("z"), summarizer, cache).result(1) is None


def test_a_closed_files_queued_background_summaries_are_dropped(host):
    worker, cache, summarizer = SummaryWorker(host), SummaryCache(), FakeSummarizer()
    release = hold(host)  # nothing runs meanwhile
    queued = [worker.submit(f"big.py:f{i}:1", _job(f"f{i}"), summarizer, cache, BACKGROUND) for i in range(50)]
    hovered = worker.submit("big.py:g:1", _job("g"), summarizer, cache, HOVER)
    other = worker.submit("small.py:h:1", _job("h"), summarizer, cache, BACKGROUND)
    assert worker.drop_background("big.py:") == 50
    assert all(f.result(1) is None for f in queued) and worker.pending() == 2
    release.set()
    assert hovered.result(10) == "summary of g" and other.result(10) == "summary of h"
    assert summarizer.finished == ["g", "h"]
    worker.close()


def test_a_closed_host_answers_every_summary_with_none(host):
    worker, summarizer = SummaryWorker(host), FakeSummarizer()
    release = hold(host)
    futures = [worker.submit(n, _job(n), summarizer, SummaryCache(), BACKGROUND) for n in "abc"]
    release.set()
    host.close()
    assert all(f.result(10) in (None, f"summary of {n}") for f, n in zip(futures, "abc"))
    assert worker.submit("d", _job("d"), summarizer, SummaryCache()).result(1) is None
