"""The model worker is the one owner of the engine's state: changes from the event loop while
a completion runs land after it, and a request keeps the settings it started with."""

import threading
from dataclasses import replace

import pytest
from lsprotocol import types

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model
from lsp_server.server import CodeassistServer
from tests.lsp_helpers import start_server, wait_for, wait_until_ready
from tests.tiny_models import force_next_token

ITERATIONS = 1000


@pytest.fixture(scope="module")
def forced_engine(tiny_model_dir):
    """A tiny engine that writes `b` forever (stopped by the token limit)."""
    loaded = load_model(str(tiny_model_dir("qwen2.5-coder")), device="cpu", dtype="fp32")
    engine = CompletionEngine(loaded, EngineSettings(max_new_tokens=12, time_budget_ms=60_000,
                                                     speculative=True, draft_sources=("prompt", "repo")))
    force_next_token(loaded.model, engine.encode(["b"])[0][0])
    return engine


@pytest.fixture
def server(forced_engine):
    server = CodeassistServer()
    server.models.engine = forced_engine
    yield server
    server.close()


def _running_completion(server, engine, uri: str, request: CompletionRequest):
    """Submit a completion of `uri`; returns (job, event set once it is decoding)."""
    decoding = threading.Event()

    def work(cancelled):
        def check():
            decoding.set()
            return cancelled()

        return engine.complete(request, check, session_key=uri)

    return server.scheduler.submit(uri, work), decoding


def test_close_during_a_running_completion_frees_its_session(server, forced_engine):
    request = CompletionRequest("x = ", 4, "python")
    for index in range(ITERATIONS):
        uri = f"file:///doc{index % 7}.py"
        job, decoding = _running_completion(server, forced_engine, uri, request)
        assert decoding.wait(30)
        server.close_document(uri).result(timeout=30)
        job.future.result(timeout=30)
        # The completion stored its KV session and suggestion when it stopped; the close,
        # queued behind it, freed them.
        assert uri not in forced_engine.kv.sessions, f"iteration {index}"
        assert forced_engine.memory.recall(uri, request).last is None
    assert forced_engine.kv_status()["documents"] == 0


def test_ngram_updates_from_other_threads_land_on_the_worker(server, forced_engine):
    request = CompletionRequest("total = values\n", 15, "python")
    owners: set[str] = set()
    add = forced_engine.repo_ngrams.add

    def recording_add(key, ids):
        owners.add(threading.current_thread().name)
        add(key, ids)

    forced_engine.repo_ngrams.add = recording_add
    try:
        for index in range(ITERATIONS // 10):
            job, decoding = _running_completion(server, forced_engine, "file:///a.py", request)
            decoding.wait(30)
            for file in range(10):
                server.ngrams._remember_text(forced_engine, f"file:///f{file}.py", f"values = {index}\n" * 50)
            job.future.result(timeout=30)
        # Background jobs run in the order they were queued: this one runs after the feed's.
        server.scheduler.background("barrier", lambda cancelled: None).future.result(timeout=30)
    finally:
        del forced_engine.repo_ngrams.add
    assert owners == {"model-worker"}
    assert len(forced_engine.repo_ngrams) == 10


def test_a_request_keeps_the_settings_it_started_with(forced_engine):
    settings = forced_engine.settings
    request = CompletionRequest("x = ", 4, "python")
    steps = 0

    def swap_midway():
        nonlocal steps
        steps += 1
        if steps == 3:  # a settings change arrives while the request decodes
            forced_engine.settings = replace(settings, max_new_tokens=4)
        return False

    try:
        result = forced_engine.complete(request, swap_midway)
        again = forced_engine.complete(request)
    finally:
        forced_engine.settings = settings
    assert result.tokens == settings.max_new_tokens and result.stop_reason == "max_tokens"
    assert again.tokens == 4  # the next request reads the new ones


async def test_a_model_load_replaced_by_a_settings_change_ends_its_progress(tmp_path, tiny_model_dir):
    root = tmp_path / "repo"
    root.mkdir()
    first, second = tiny_model_dir("qwen2.5-coder"), tiny_model_dir("deepseek-coder")
    client, _ = await start_server(root, tmp_path / "server.log",
                                   {"model": str(first), "device": "cpu", "dtype": "fp32"}, encodings=[])

    def loading_began() -> bool:  # the change must find the first load running
        return any(getattr(r, "title", "") and "Loading" in r.title
                   for reports in client.progress_reports.values() for r in reports)

    try:
        await wait_for(loading_began, 60, "the first model load to begin")
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"codeassist": {"model": str(second)}}))
        await wait_until_ready(client)

        def loads() -> dict:
            return {token: [r.kind for r in reports] for token, reports in client.progress_reports.items()
                    if any(getattr(r, "title", "") and "Loading" in r.title for r in reports)}

        # Both loads' progress ends (the replaced one's too); wait for the reports to arrive.
        await wait_for(lambda: len(loads()) == 2 and all(k[-1] == "end" for k in loads().values()), 30,
                       "both loads' progress to end")
        assert all(k[0] == "begin" for k in loads().values()), loads()
    finally:
        await client.shutdown_session()
