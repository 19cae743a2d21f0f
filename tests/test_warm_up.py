"""Warm before the keystroke: lane 2 of the engine host encodes the place the cursor rests
at; it yields to any request, a newer hint replaces it, and the first key there reuses it."""

import re
import threading
from dataclasses import replace

import pytest
from lsprotocol import types

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model
from lsp_server.scheduler import LatestWinsScheduler
from lsp_server.warm_up import identifier_occurrences
from tests.host_helpers import hold
from tests.lsp_helpers import open_document, start_server, status, wait_until_ready

SOURCE = '''import math


class Circle:
    def __init__(self, radius):
        self.radius = radius

    def area(self):
        return math.pi * self.radius ** 2

    def perimeter(self):
        return 2 * math.pi * self.radius


def total_area(circles):
    return sum(circle.area() for circle in circles)
'''


@pytest.fixture
def host():
    scheduler = LatestWinsScheduler()
    yield scheduler
    scheduler.close()


def _until_cancelled(started: threading.Event, seen: list):
    """Warm-up work that runs until it is told to stop (a guard ends it after 30 s)."""
    def work(cancelled):
        started.set()
        stopped = threading.Event()
        while not cancelled() and not stopped.wait(0.005):
            pass
        seen.append(cancelled())
        return "stopped"

    return work


def test_a_warm_up_yields_to_a_request_of_any_document(host):
    started, seen = threading.Event(), []
    warm = host.warm("a.py", _until_cancelled(started, seen))
    assert started.wait(10)
    request = host.submit("b.py", lambda cancelled: "suggestion")
    assert request.future.result(timeout=30) == "suggestion"
    assert warm.future.result(timeout=5) == "stopped" and seen == [True]


def test_a_newer_hint_replaces_the_warm_up(host):
    release = hold(host)
    waiting = host.warm("a.py", lambda cancelled: "old place")
    newer = host.warm("a.py", lambda cancelled: "new place")
    assert waiting.future.result(timeout=1) is None  # replaced before it ran
    release.set()
    assert newer.future.result(timeout=30) == "new place"

    started, seen = threading.Event(), []
    running = host.warm("a.py", _until_cancelled(started, seen))
    assert started.wait(10)
    host.warm("b.py", lambda cancelled: "elsewhere")
    assert running.future.result(timeout=30) is None and seen == [True]  # stopped, its answer dropped


def test_requests_run_before_a_waiting_warm_up(host):
    release, order = hold(host), []
    warm = host.warm("a.py", lambda cancelled: order.append("warm"))
    request = host.submit("a.py", lambda cancelled: order.append("request"))
    assert host.busy()
    release.set()
    warm.future.result(timeout=30)
    request.future.result(timeout=30)
    assert order == ["request", "warm"]


def test_identifier_occurrences():
    text = "area = 1\nareas = area + area_2 + x.area\n"
    cursor = text.index("area +") + 2
    assert identifier_occurrences(text, cursor) == [(0, 4), (17, 21), (35, 39)]
    assert identifier_occurrences(text, text.index("=")) == []
    assert identifier_occurrences("", 0) == []


@pytest.fixture(scope="module")
def tiny_engine_model(tiny_model_dir):
    return load_model(str(tiny_model_dir("qwen2.5-coder")), device="cpu", dtype="fp32")


def test_the_first_key_after_a_warm_up_reuses_its_prompt(tiny_engine_model):
    cursor = SOURCE.index("** 2") + 4
    request = CompletionRequest(SOURCE, cursor, "python", "shapes.py", "repo")
    settings = EngineSettings(max_new_tokens=12)
    warmed = CompletionEngine(tiny_engine_model, settings)
    done = warmed.warm(request, session_key="doc")
    assert done["finished"] and done["encoded"] == done["tokens"] > 100
    assert warmed.warm(request, session_key="doc")["encoded"] == 0  # the same place: nothing to do
    result = warmed.complete(request, session_key="doc")
    assert result.kv["encoded"] <= 1  # only the last token, for its logits
    cold = CompletionEngine(tiny_engine_model, settings).complete(request, session_key="doc")
    assert cold.kv["encoded"] == cold.prompt_tokens and result.text == cold.text


def test_a_cancelled_warm_up_keeps_what_it_encoded(tiny_engine_model):
    long_source = SOURCE * 12
    request = CompletionRequest(long_source, len(long_source), "python", "shapes.py", "repo")
    settings = EngineSettings(max_new_tokens=4, max_prompt_tokens=2048)
    engine = CompletionEngine(tiny_engine_model, settings)
    passes = []
    done = engine.warm(request, lambda: passes.append(1) or len(passes) > 1, session_key="doc")
    assert not done["finished"]
    result = engine.complete(request, session_key="doc")
    assert 0 < result.kv["reused"] and result.kv["encoded"] < result.prompt_tokens


def test_healing_turned_on_after_the_engine_was_made(tiny_engine_model):
    """Settings travel with each request: healing that was off when the engine was made
    heals a later request as an engine made with it on does."""
    text = "import math\n\n\ndef area(r):\n    return math.p"
    request = CompletionRequest(text, len(text), "python", "a.py", "repo")
    healing = EngineSettings(max_new_tokens=8, token_healing=True)
    made_without = CompletionEngine(tiny_engine_model, EngineSettings(max_new_tokens=8, token_healing=False))
    made_with = CompletionEngine(tiny_engine_model, healing)
    assert made_without.complete(request, settings=healing).text == made_with.complete(request).text


async def test_document_highlight_answers_and_warms_the_place(tmp_path, tiny_model_dir):
    client, result = await start_server(tmp_path, tmp_path / "server.log",
                                        {"model": str(tiny_model_dir("qwen2.5-coder")), "dtype": "fp32"})
    try:
        assert result.capabilities.document_highlight_provider
        await wait_until_ready(client)
        uri = open_document(client, tmp_path / "shapes.py", SOURCE)
        line = SOURCE.splitlines().index("    def perimeter(self):")
        highlights = await client.text_document_document_highlight_async(types.DocumentHighlightParams(
            types.TextDocumentIdentifier(uri), types.Position(line + 1, SOURCE.splitlines()[line + 1].index("radius") + 2)))
        spans = sorted((h.range.start.line, h.range.start.character, h.range.end.character) for h in highlights)
        assert spans == [(number, found.start(), found.end()) for number, text in enumerate(SOURCE.splitlines())
                         for found in re.finditer(r"\bradius\b", text)]
        assert len(spans) == 5
        before = (await status(client))["warmUp"]["finished"]
        state = await _status_until(client, lambda state: state["warmUp"]["finished"] > before)
        assert state["warmUp"]["last"]["tokens"] > 50 and state["kvSessions"]["documents"] == 1

        hints = state["warmUp"]["hints"]
        client.protocol.notify("codeassist/cursor", {"textDocument": {"uri": uri},
                                                     "position": {"line": 14, "character": 4}})
        client.protocol.notify("codeassist/cursor", {"position": "nowhere"})  # ignored, logged
        assert (await status(client))["warmUp"]["hints"] == hints + 1
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams({"warmUp": False}))
        client.protocol.notify("codeassist/cursor", {"textDocument": {"uri": uri},
                                                     "position": {"line": 2, "character": 0}})
        assert (await status(client))["warmUp"]["hints"] == hints + 1  # off: no hint taken
    finally:
        await client.shutdown_session()


async def _status_until(client, predicate, timeout_s: float = 120) -> dict:
    """The server's status once `predicate(status)` holds (asked every 0.1 s)."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate(state := await status(client)):
        assert asyncio.get_running_loop().time() < deadline, state
        await asyncio.sleep(0.1)
    return state


async def test_a_setting_changed_while_the_model_loads_applies(tmp_path):
    """Settings travel with each request: a change that arrives while the model loads is
    what the first request after the load uses."""
    from tests.lsp_helpers import expected_text
    from tests.tiny_models import build_plain_text_model

    model = build_plain_text_model(tmp_path / "plain")
    workspace = tmp_path / "repo"
    workspace.mkdir()
    client, _ = await start_server(workspace, tmp_path / "server.log",
                                   {"model": str(model), "dtype": "fp32", "repoContext": False})
    try:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams({"maxNewTokens": 3}))
        text = "def double(x):\n    return "
        uri = open_document(client, workspace / "double.py", text)
        answer = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(1, 11),
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Automatic)))
        assert (await status(client))["modelStatus"] == "ready"
        got = answer.items[0].insert_text if answer.items else ""
        short, default = (expected_text(model, text, len(text), "double.py", "repo", time_budget_ms=5000,
                                        max_new_tokens=tokens) for tokens in (3, 64))
        assert short != default and got == short
    finally:
        await client.shutdown_session()


class _StopAfter:
    """Stop signals for a warm-up: `preempted()` turns true at its `after`-th check."""

    def __init__(self, after: int):
        self.after, self.checks = after, 0

    def __call__(self) -> bool:
        return False

    def preempted(self) -> bool:
        self.checks += 1
        return self.checks >= self.after


def test_a_preempted_warm_up_stops_before_the_next_layer(tiny_engine_model):
    """Lane 2 yields between decoder layers, not only between passes: the pass in flight
    is dropped, the passes before it are kept, and the next request goes on from them."""
    from completion.kv_session import ENCODE_CHUNK

    layers = tiny_engine_model.model.config.num_hidden_layers
    long_source = SOURCE * 12
    request = CompletionRequest(long_source, len(long_source), "python", "shapes.py", "repo")
    settings = EngineSettings(max_new_tokens=6, max_prompt_tokens=2048)
    engine = CompletionEngine(tiny_engine_model, settings)
    stop = _StopAfter(layers + 2)  # the second layer of the second pass
    done = engine.warm(request, stop, session_key="doc")
    assert not done["finished"] and stop.checks == layers + 2
    session = engine.kv.sessions.peek("doc")
    assert len(session.ids) == ENCODE_CHUNK and session.cache.get_seq_length() == ENCODE_CHUNK
    result = engine.complete(request, session_key="doc")
    assert result.kv["reused"] == ENCODE_CHUNK
    cold = CompletionEngine(tiny_engine_model, settings).complete(request, session_key="doc")
    assert result.text == cold.text


def test_a_summary_gives_the_model_back_within_a_layer(tiny_engine_model):
    """Background work (hover summaries) stops before the next decoder layer once a request
    waits, not at the end of its pass."""
    from completion.summarize import Summarizer, SummaryRequest

    layers = tiny_engine_model.model.config.num_hidden_layers
    checks = []

    def cancelled() -> bool:
        checks.append(1)
        return len(checks) > layers + 3  # inside the second pass

    summarizer = Summarizer(tiny_engine_model)
    request = SummaryRequest("Circle.area", "method", SOURCE)
    assert summarizer.summarize(request, cancelled) is None
    assert len(checks) == layers + 4  # one check per pass before it, one per layer run


def test_a_request_of_the_same_document_lets_the_warm_up_finish_its_pass(host):
    """The pass in flight encodes the prompt the request needs: the warm-up is not
    preempted mid-pass by its own document's request, only stopped at the pass's end."""
    started, release, seen = threading.Event(), threading.Event(), {}

    def warm_up(cancelled):
        started.set()
        release.wait(30)
        seen["preempted"], seen["stop"] = cancelled.preempted(), cancelled()
        return "pass done"

    warm = host.warm("a.py", warm_up)
    assert started.wait(10)
    request = host.submit("a.py", lambda cancelled: "suggestion")
    release.set()
    assert warm.future.result(timeout=30) == "pass done" and seen == {"preempted": False, "stop": True}
    assert request.future.result(timeout=30) == "suggestion"


def test_background_work_runs_last_and_yields_to_a_warm_up_between_layers(host):
    started, seen = threading.Event(), []

    def refresh(cancelled):
        started.set()
        while not cancelled.preempted():
            threading.Event().wait(0.005)
        seen.append(cancelled())
        return "stopped"

    release, order = hold(host), []
    queued = host.background("a.py", lambda cancelled: order.append("background"))
    host.warm("b.py", lambda cancelled: order.append("warm"))
    release.set()
    queued.future.result(timeout=30)
    assert order == ["warm", "background"]

    running = host.background("a.py", refresh)
    assert started.wait(10)
    host.warm("b.py", lambda cancelled: "warm")  # a hint: lane 2 beats lane 3
    assert running.future.result(timeout=30) == "stopped" and seen == [True]


def _far_text() -> tuple[str, int]:
    """A long file and a cursor mid-way through it."""
    long_source = SOURCE * 12
    return long_source, long_source.index("** 2", len(long_source) // 2) + 4


def _far_place(model):
    """(source, cursor, request, settings, engine): a place mid-way through a long file, an
    engine whose first window (256 tokens) is a quarter of its prompt budget."""
    long_source, cursor = _far_text()
    request = CompletionRequest(long_source, cursor, "python", "shapes.py", "repo")
    settings = EngineSettings(max_new_tokens=6, max_prompt_tokens=1024, first_window_tokens=256)
    return long_source, cursor, request, settings, CompletionEngine(model, settings)


def test_a_place_far_from_the_warm_session_answers_first_from_a_short_window(tiny_engine_model):
    """The first key at a place the session does not cover encodes only the window nearest
    the cursor; growing it (the whole prompt, in a side session) reuses that window, and the
    next request there is answered from the whole prompt, as a cold engine answers it."""
    long_source, cursor, request, settings, engine = _far_place(tiny_engine_model)
    first = engine.complete(request, session_key="doc")
    assert first.window == "short" and first.prompt_tokens <= 300 and first.kv["encoded"] == first.prompt_tokens
    grown = engine.grow(request, session_key="doc")
    assert grown["finished"] and grown["reused"] > 100 and grown["tokens"] > 900
    engine.memory.forget("doc")  # a request not typed into the first suggestion
    again = engine.complete(request, session_key="doc")
    assert again.window == "full" and again.kv["encoded"] <= 1
    cold = CompletionEngine(tiny_engine_model, replace(settings, first_window_tokens=0)).complete(request)
    assert cold.prompt_tokens == again.prompt_tokens


def test_keys_typed_while_the_whole_prompt_grows_reuse_the_window(tiny_engine_model):
    """A growth stopped after its first pass leaves the document's session the window's: the
    next key there is answered from the window, encoding only what changed; the next growth
    goes on from the passes already encoded."""
    long_source, cursor, request, settings, engine = _far_place(tiny_engine_model)
    first = engine.complete(request, session_key="doc")
    assert first.window == "short"
    passes = iter([False, True])  # one encoding pass, then stopped
    stopped = engine.grow(request, lambda: next(passes, True), session_key="doc")
    assert not stopped["finished"]
    engine.memory.forget("doc")
    typed = CompletionRequest(long_source[:cursor] + " " + long_source[cursor:], cursor + 1, "python",
                              "shapes.py", "repo")
    again = engine.complete(typed, session_key="doc")
    assert again.window == "short" and again.kv["encoded"] < 128  # the window, reused (but the edit's margin)
    resumed = engine.grow(typed, session_key="doc")
    assert resumed["finished"] and resumed["reused"] >= 256  # the first pass, kept
    after = engine.complete(typed, session_key="doc")
    assert after.window == "full" and after.kv["encoded"] <= 1


def test_a_warm_up_at_a_far_place_encodes_the_first_window_the_key_answers_from(tiny_engine_model):
    """Reading time goes into what the first key needs: at a place far from the warm session
    the warm-up encodes the first window, and the first key typed there reuses it."""
    long_source, cursor, request, settings, engine = _far_place(tiny_engine_model)
    warmed = engine.warm(request, session_key="doc")
    assert warmed["finished"] and warmed["window"] == "short" and warmed["tokens"] <= 300
    typed = CompletionRequest(long_source[:cursor] + " " + long_source[cursor:], cursor + 1, "python",
                              "shapes.py", "repo")
    first = engine.complete(typed, session_key="doc")
    assert first.window == "short" and first.kv["encoded"] < 128  # the warm window, reused (but the edit's margin)
    cold = CompletionEngine(tiny_engine_model, settings).complete(typed, session_key="doc")
    assert cold.window == "short" and cold.kv["encoded"] == cold.prompt_tokens > 200
    near = engine.warm(typed, session_key="doc")  # the session covers the place now
    assert near["window"] == "short" and near["encoded"] == 0


async def test_a_hint_at_a_far_place_warms_its_window_then_grows_the_whole_prompt(tmp_path, tiny_model_dir):
    """Through LSP: a cursor hint far from the warm session warms the first window, and the
    whole prompt of that place grows behind it without another hint."""
    client, _ = await start_server(tmp_path, tmp_path / "server.log",
                                   {"model": str(tiny_model_dir("qwen2.5-coder")), "dtype": "fp32",
                                    "contextTokens": 1024, "firstWindowTokens": 256})
    try:
        await wait_until_ready(client)
        long_source, cursor = _far_text()
        uri = open_document(client, tmp_path / "shapes.py", long_source)
        line = long_source.count("\n", 0, cursor)
        position = types.Position(line, cursor - (long_source.rfind("\n", 0, cursor) + 1))
        await client.text_document_document_highlight_async(
            types.DocumentHighlightParams(types.TextDocumentIdentifier(uri), position))
        state = await _status_until(client, lambda state: (state["warmUp"]["last"] or {}).get("tokens", 0) > 900)
        assert state["warmUp"]["last"]["finished"] and state["warmUp"]["last"]["window"] == "full"
        log = (tmp_path / "server.log").read_text()
        assert "first-window prompt" in log and "whole prompt" in log
    finally:
        await client.shutdown_session()


def test_a_warm_first_window_answers_where_the_whole_prompt_shares_its_start(tiny_engine_model):
    """A prompt a little over two windows (a short file: the header and the file's start in
    both prompts) still answers its first key from the warm window, not from a whole prompt
    that would encode most of itself again."""
    source = SOURCE * 3
    cursor = source.index("** 2", len(source) // 2) + 4
    settings = EngineSettings(max_new_tokens=6, max_prompt_tokens=1024, first_window_tokens=256)
    engine = CompletionEngine(tiny_engine_model, settings)
    request = CompletionRequest(source, cursor, "python", "shapes.py", "repo")
    warmed = engine.warm(request, session_key="doc")
    assert warmed["window"] == "short" and warmed["finished"]
    typed = CompletionRequest(source[:cursor] + " " + source[cursor:], cursor + 1, "python", "shapes.py", "repo")
    first = engine.complete(typed, session_key="doc")
    assert first.window == "short" and first.kv["encoded"] < 128
    whole = CompletionEngine(tiny_engine_model, replace(settings, first_window_tokens=0)).complete(typed)
    assert 512 < whole.prompt_tokens < 700  # the case: a whole prompt of a little over two windows
