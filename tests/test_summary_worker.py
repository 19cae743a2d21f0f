"""The background summary worker: waits while completions run, is preempted by them, puts
finished summaries in the cache, serves hovers before precomputation."""

import threading
import time

from completion.summarize import Summary, SummaryRequest
from completion.summary_cache import SummaryCache
from lsp_server.summaries import BACKGROUND, HOVER, SummaryWorker


class FakeSummarizer:
    """Summarizes in `steps` steps, checking `cancelled()` at each; records what it ran."""

    def __init__(self, steps=3, gate: threading.Event | None = None):
        self.steps, self.gate, self.ran, self.cancellations = steps, gate, [], 0

    def summarize(self, request, cancelled, model_lock=None):
        if self.gate is not None:
            self.gate.wait(5)
        for _ in range(self.steps):
            if cancelled():
                self.cancellations += 1
                return None
            time.sleep(0.01)
        self.ran.append(request.qualified_name)
        return Summary(f"summary of {request.qualified_name}", 1, 1, 1.0, "fake")


def _job(name):
    request = SummaryRequest(name, "function", f"def {name}(): pass")
    return lambda: (request.key("fake"), request)


def test_waits_while_busy_then_caches():
    busy = threading.Event()
    busy.set()
    worker, cache, summarizer = SummaryWorker(busy.is_set), SummaryCache(), FakeSummarizer()
    future = worker.submit("a", _job("a"), summarizer, cache, HOVER)
    time.sleep(0.2)
    assert not future.done() and summarizer.ran == []  # a completion is running
    busy.clear()
    assert future.result(5) == "summary of a"
    assert cache.get(_job("a")()[0]) == "summary of a"
    again = worker.submit("a2", _job("a"), summarizer, cache, HOVER)
    assert again.result(5) == "summary of a" and summarizer.ran == ["a"]  # from the cache
    worker.close()


def test_a_completion_preempts_the_generation_which_starts_over():
    busy = threading.Event()
    gate = threading.Event()
    worker, summarizer = SummaryWorker(busy.is_set), FakeSummarizer(steps=50, gate=gate)
    future = worker.submit("b", _job("b"), summarizer, SummaryCache(), BACKGROUND)
    time.sleep(0.05)
    busy.set()  # a completion arrives while the summary is generating
    gate.set()
    time.sleep(0.1)
    assert summarizer.cancellations >= 1 and not future.done()
    busy.clear()
    assert future.result(10) == "summary of b"
    assert worker.preempted >= 1
    worker.close()


def test_hover_jobs_go_before_background_ones_and_close_answers_none():
    busy = threading.Event()
    busy.set()
    worker, summarizer, cache = SummaryWorker(busy.is_set), FakeSummarizer(), SummaryCache()
    background = [worker.submit(n, _job(n), summarizer, cache, BACKGROUND) for n in ("x", "y")]
    hover = worker.submit("h", _job("h"), summarizer, cache, HOVER)
    time.sleep(0.1)
    busy.clear()
    assert hover.result(5) and [f.result(5) for f in background]
    assert summarizer.ran[0] in ("x", "h")  # x may have been taken before h arrived
    assert summarizer.ran.index("h") < summarizer.ran.index("y")
    worker.close()
    assert worker.submit("z", _job("z"), summarizer, cache).result(1) is None


def test_a_closed_files_queued_background_summaries_are_dropped():
    busy = threading.Event()
    busy.set()  # a completion keeps the worker waiting: nothing runs meanwhile
    worker, cache, summarizer = SummaryWorker(busy.is_set), SummaryCache(), FakeSummarizer()
    queued = [worker.submit(f"big.py:f{i}:1", _job(f"f{i}"), summarizer, cache, BACKGROUND) for i in range(50)]
    hovered = worker.submit("big.py:g:1", _job("g"), summarizer, cache, HOVER)
    other = worker.submit("small.py:h:1", _job("h"), summarizer, cache, BACKGROUND)
    assert worker.drop_background("big.py:") == 50
    assert all(f.result(1) is None for f in queued) and worker.pending() == 2
    busy.clear()
    assert hovered.result(5) == "summary of g" and other.result(5) == "summary of h"
    assert "f0" not in summarizer.ran
    worker.close()
