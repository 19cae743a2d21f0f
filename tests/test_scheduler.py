"""Latest-wins scheduling on one model worker."""

import threading

import pytest

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model
from lsp_server.scheduler import LatestWinsScheduler
from tests.tiny_models import force_next_token


@pytest.fixture
def scheduler():
    s = LatestWinsScheduler()
    yield s
    s.close()


def _blocker(release: threading.Event, started: threading.Event):
    def work(cancelled):
        started.set()
        release.wait(10)
        return "blocker done"

    return work


def test_queued_request_is_answered_empty_when_superseded(scheduler):
    release, started = threading.Event(), threading.Event()
    scheduler.submit("other-doc", _blocker(release, started))
    started.wait(5)
    old = scheduler.submit("doc", lambda cancelled: "old")
    new = scheduler.submit("doc", lambda cancelled: "new")
    assert old.future.result(timeout=1) is None  # at once, while the worker is still busy
    release.set()
    assert new.future.result(timeout=5) == "new"


def test_requests_of_one_identity_share_a_job_until_all_cancel(scheduler):
    release, started = threading.Event(), threading.Event()
    runs = []

    def work(cancelled):
        runs.append(1)
        started.set()
        release.wait(10)
        return None if cancelled() else "suggestion"

    inline = scheduler.submit("doc", work, identity=("v1", 10))
    started.wait(5)
    menu = scheduler.submit("doc", work, identity=("v1", 10))  # joins the running job
    assert menu is inline
    scheduler.cancel(inline)  # one waiter gives up: the other still gets the answer
    release.set()
    assert menu.future.result(timeout=5) == "suggestion" and len(runs) == 1

    release.clear()
    started.clear()
    first = scheduler.submit("doc", work, identity=("v2", 11))
    started.wait(5)
    other = scheduler.submit("doc", work, identity=("v3", 12))  # a newer keystroke supersedes
    release.set()
    assert first.future.result(timeout=5) is None and other.future.result(timeout=5) == "suggestion"
    release.clear()
    both = scheduler.submit("doc", work, identity=("v4", 13))
    assert scheduler.submit("doc", work, identity=("v4", 13)) is both
    scheduler.cancel(both)
    scheduler.cancel(both)  # every waiter cancelled: the job stops
    release.set()
    assert both.future.result(timeout=5) is None


def test_documents_are_served_in_arrival_order_one_at_a_time(scheduler):
    order, threads = [], set()

    def work(i):
        def run(cancelled):
            threads.add(threading.get_ident())
            order.append(i)
            return i
        return run

    jobs = [scheduler.submit(f"doc{i}", work(i)) for i in range(5)]
    assert [j.future.result(timeout=5) for j in jobs] == list(range(5))
    assert order == list(range(5)) and len(threads) == 1  # one worker


def test_state_changes_run_on_the_worker_between_jobs_in_order(scheduler):
    release, started = threading.Event(), threading.Event()
    events = []
    scheduler.submit("doc", _blocker(release, started))
    started.wait(5)
    waiting = scheduler.submit("other", lambda cancelled: events.append("job"))
    chores = [scheduler.run_soon(lambda i=i: events.append((i, threading.current_thread().name)))
              for i in range(3)]
    release.set()
    waiting.future.result(timeout=5)
    assert [c.result(timeout=5) for c in chores] == [None] * 3
    assert events == [(0, "model-worker"), (1, "model-worker"), (2, "model-worker"), "job"]
    failing = scheduler.run_soon(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=5)
    assert scheduler.submit("doc", lambda cancelled: "still serving").future.result(timeout=5) == "still serving"


def test_running_generation_stops_within_one_decode_step(scheduler, tiny_model_dir):
    loaded = load_model(str(tiny_model_dir("qwen2.5-coder")), device="cpu", dtype="fp32")
    engine = CompletionEngine(loaded, EngineSettings(max_new_tokens=4096, time_budget_ms=60_000))
    force_next_token(loaded.model, engine.encode(["b"])[0][0])  # never stops by itself
    request = CompletionRequest("x = ", 4, "python")
    steps = {"total": 0, "after_cancel": 0}
    running = threading.Event()

    def work(cancelled):
        def counting():
            steps["total"] += 1
            if steps["total"] == 5:
                running.set()
            if cancelled():
                steps["after_cancel"] += 1
                return True
            return False

        return engine.complete(request, counting)

    first = scheduler.submit("doc", work)
    assert running.wait(30)
    second = scheduler.submit("doc", lambda cancelled: "newer")
    assert first.future.result(timeout=30) is None
    assert steps["after_cancel"] == 1  # the step after the supersede was the last one
    assert second.future.result(timeout=5) == "newer"


def test_every_lane_and_chore_runs_on_the_one_worker(scheduler):
    def thread(*_):
        return threading.get_ident()

    threads = {scheduler.submit("a", thread).future.result(5), scheduler.run_soon(thread).result(5),
               scheduler.warm("a", thread).future.result(5), scheduler.background("a", thread).future.result(5)}
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_explicit_cancel_of_a_queued_job(scheduler):
    release, started = threading.Event(), threading.Event()
    scheduler.submit("a", _blocker(release, started))
    started.wait(5)
    job = scheduler.submit("b", lambda cancelled: "never")
    scheduler.cancel(job)
    assert job.future.result(timeout=1) is None
    release.set()


def test_a_failing_job_does_not_kill_the_worker(scheduler):
    def boom(cancelled):
        raise RuntimeError("model exploded")

    failed = scheduler.submit("doc", boom)
    with pytest.raises(RuntimeError, match="exploded"):
        failed.future.result(timeout=5)
    assert scheduler.submit("doc", lambda c: "fine").future.result(timeout=5) == "fine"


def test_close_answers_everything():
    s = LatestWinsScheduler()
    release, started = threading.Event(), threading.Event()
    running = s.submit("a", _blocker(release, started))
    started.wait(5)
    queued = s.submit("b", lambda c: "never")
    closer = threading.Thread(target=s.close)
    closer.start()
    while not s.closed:  # close() has begun: the running job is being stopped
        threading.Event().wait(0.001)
    release.set()
    closer.join(10)
    assert queued.future.result(timeout=1) is None
    assert running.future.result(timeout=1) is None  # cancelled while running
    assert s.submit("c", lambda c: "late").future.result(timeout=1) is None
