"""Completions from a real inference engine process: llama.cpp's llama-server serving the
embedded 0.5B GGUF (built by .ci/install_llama_server.sh), compared with the local engine."""

import json
import os
import socket
import threading
import time

import pytest
from lsprotocol import types

from codeassist.bench.llama_server import DEFAULT_BINARY, free_port, get_json, llama_server, llama_server_binary
from completion import CompletionEngine, CompletionRequest, EngineSettings
from completion.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, ensure_gguf
from completion.remote_engine import RemoteConfig, RemoteEngine, open_remote_engine
from completion.text_prompt import CHARS_PER_TOKEN, TextPrompter
from tests.lsp_helpers import open_document, start_server, status, wait_until_ready

API_KEY = "test-key-5b1e"  # the engine refuses requests without it

# Holes: a cursor inside small, ordinary functions.
HOLES = [
    ("geometry.py", "import math\n\n\ndef area_of_circle(radius):\n    return math.pi * <CURSOR>\n"),
    ("fib.py", "def fibonacci(n):\n    if n < 2:\n        return n\n    return <CURSOR>\n"),
    ("paths.py", "import os\n\n\ndef config_path(name):\n"
                 '    return os.path.join(os.path.expanduser("~"), <CURSOR>)\n'),
    ("stack.py", "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
                 "    def push(self, item):\n        self.items.<CURSOR>\n"),
    ("words.py", "def count_words(text):\n    counts = {}\n    for word in text.split():\n"
                 "        counts[word] = <CURSOR>\n    return counts\n"),
    ("io_utils.py", "import json\n\n\ndef load_config(path):\n    with open(path) as handle:\n"
                    "        return <CURSOR>\n"),
]


def _get(url: str) -> object:
    return get_json(url, API_KEY)


@pytest.fixture(scope="module")
def engine_server(tmp_path_factory):
    """A running llama-server on the embedded model's GGUF: (base URL, its log file)."""
    binary = llama_server_binary()
    if binary is None:
        pytest.skip(f"llama-server not built ({DEFAULT_BINARY} missing): run .ci/install_llama_server.sh")
    log = tmp_path_factory.mktemp("engine") / "llama-server.log"
    with llama_server(binary, ensure_gguf(EMBEDDED_MODELS[DEFAULT_MODEL]), log, api_key=API_KEY) as url:
        yield url, log


def _request(path: str, document: str) -> CompletionRequest:
    cursor = document.index("<CURSOR>")
    return CompletionRequest(document.replace("<CURSOR>", ""), cursor, "python", path, "demo")


@pytest.mark.embedded
def test_first_lines_match_the_local_engine(engine_server, embedded_loaded):
    url, _ = engine_server
    # Greedy on both sides; token healing constrains sampling, which the API cannot express.
    settings = EngineSettings(max_new_tokens=48, token_healing=False, time_budget_ms=60_000)
    remote = open_remote_engine(url, api_key=API_KEY, settings=settings)
    local = CompletionEngine(embedded_loaded, settings)
    assert remote.prompter.tokenizer is not None  # budgets in the served model's tokens
    same = []
    for path, document in HOLES:
        request = _request(path, document)
        want, got = local.complete(request), remote.complete(request)
        assert got.stop_reason not in ("engine_down", "cancelled"), remote.status()
        same.append(want.text.split("\n")[0] == got.text.split("\n")[0])
    # Two implementations of the same quantized weights (llama.cpp's kernels, ours) may part
    # at a near tie; the holes are chosen far from one. Most must agree exactly.
    assert sum(same) >= len(HOLES) - 1, same
    engine = remote.status()["engine"]
    assert engine["state"] == "up" and engine["errors"] == 0 and engine["requests"] == len(HOLES)
    assert "qwen2.5-coder" in engine["model"]


def test_cancel_mid_stream_stops_the_engine(engine_server):
    url, log = engine_server
    remote = open_remote_engine(url, "qwen2.5-coder-0.5b", API_KEY,
                                EngineSettings(max_new_tokens=400, max_lines=400, time_budget_ms=120_000))
    chunks = 0

    def cancel_after_three():
        nonlocal chunks
        chunks += 1
        return chunks > 3

    result = remote.complete(_request("stack.py", "class Stack:\n    <CURSOR>"), cancel_after_three)
    assert result.stop_reason == "cancelled" and result.text == "" and result.tokens == 4
    deadline = time.monotonic() + 5
    while any(slot.get("is_processing") for slot in _get(f"{url}/slots")):
        assert time.monotonic() < deadline, "the engine still generates after the stream closed"
        time.sleep(0.1)
    assert "cancel task" in log.read_text()  # llama-server: the request ended early


def test_prefix_cache_share_is_reported(engine_server):
    url, _ = engine_server
    remote = open_remote_engine(url, "qwen2.5-coder-0.5b", API_KEY, EngineSettings(time_budget_ms=60_000))
    first = remote.complete(_request("fib.py", HOLES[1][1]))
    again = remote.complete(_request("fib.py", HOLES[1][1]))
    assert again.kv["cached"] is not None and again.kv["cached"] >= again.prompt_tokens - 2
    assert first.prompt_tokens == again.prompt_tokens
    assert remote.status()["engine"]["promptCachedShare"] > 0.4


def test_typing_into_a_remote_suggestion_recycles_its_rest(engine_server):
    url, _ = engine_server
    remote = open_remote_engine(url, "qwen2.5-coder-0.5b", API_KEY, EngineSettings(time_budget_ms=60_000))
    request = _request("fib.py", HOLES[1][1])
    first = remote.complete(request, session_key="fib")
    assert len(first.text) > 3
    typed = request.text[: request.cursor] + first.text[:3] + request.text[request.cursor :]
    again = remote.complete(CompletionRequest(typed, request.cursor + 3, "python", "fib.py", "demo"),
                            session_key="fib")
    assert again.stop_reason == "recycled" and again.text == first.text[3:]
    assert remote.status()["engine"]["requests"] == 1  # no second request to the engine


def test_a_wrong_api_key_is_an_error_status_not_a_crash(engine_server):
    url, _ = engine_server
    remote = open_remote_engine(url, "qwen2.5-coder-0.5b", "wrong-key", EngineSettings())
    result = remote.complete(_request("fib.py", HOLES[1][1]))
    assert result.stop_reason == "engine_down" and result.text == ""
    engine = remote.status()["engine"]
    assert engine["state"] == "down" and "401" in engine["lastError"]
    assert "wrong-key" not in json.dumps(remote.status())


def _closing_listener():
    """A loopback socket whose connections are accepted, counted and closed at once."""
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[int] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # closed
                return
            connections.append(1)
            connection.close()

    threading.Thread(target=accept, daemon=True).start()
    return listener, connections


def test_a_down_engine_answers_empty_at_once_and_recovers(engine_server):
    url, _ = engine_server
    broken, connections = _closing_listener()  # accepts and hangs up: no engine answers there
    remote = RemoteEngine(RemoteConfig(f"http://127.0.0.1:{broken.getsockname()[1]}", api_key=API_KEY),
                          TextPrompter("qwen2.5-coder"), EngineSettings())
    first = remote.complete(_request("fib.py", HOLES[1][1]))
    tried = len(connections)
    assert first.stop_reason == "engine_down" and first.text == "" and tried >= 1
    resting = remote.complete(_request("fib.py", HOLES[1][1]))
    assert resting.stop_reason == "engine_down" and len(connections) == tried  # at once: not even a connection
    broken.close()
    assert remote.status()["engine"]["errors"] == 2 and remote.status()["engine"]["lastError"]
    remote.config = RemoteConfig(url, api_key=API_KEY)  # the engine is back (another address)
    remote._down_until = 0.0
    assert remote.complete(_request("fib.py", HOLES[1][1])).stop_reason != "engine_down"
    assert remote.status()["engine"]["state"] == "up"


def test_character_budgets_without_the_family_tokenizer():
    prompter = TextPrompter("starcoder")  # no local tokenizer files of that family
    settings = EngineSettings(max_prompt_tokens=64, context_budget_tokens=0)
    text = "".join(f"line_{i} = {i}\n" for i in range(500))
    prompt = prompter.build(CompletionRequest(text, len(text) // 2, "python", "big.py", "demo"), settings)
    assert prompt.tokens <= 64 * CHARS_PER_TOKEN
    assert prompt.text.startswith("<fim_prefix>")  # no other files' snippets: plain FIM
    assert prompt.text.index("<fim_suffix>") < prompt.text.index("<fim_middle>")
    assert prompt.text.endswith("<fim_middle>") and "<|endoftext|>" in prompt.stops


@pytest.mark.embedded
async def test_serve_with_an_engine_url(engine_server, tmp_path, embedded_loaded):
    url, _ = engine_server
    root = tmp_path / "repo"
    root.mkdir()
    os.environ["CODEASSIST_ENGINE_API_KEY"] = API_KEY  # the server inherits it: the default variable
    log_file = tmp_path / "server.log"
    client, _ = await start_server(root, log_file, {
        "engine": url, "tokenHealing": False,
        "repoContext": False, "timeBudgetMs": 60_000}, encodings=[])
    try:
        await wait_until_ready(client)
        path, document = HOLES[0]
        request = _request(path, document)
        uri = open_document(client, root / path, request.text)
        line = request.text[: request.cursor].count("\n")
        column = request.cursor - (request.text.rfind("\n", 0, request.cursor) + 1)
        answer = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, column),
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Automatic)))
        local = CompletionEngine(embedded_loaded, EngineSettings(token_healing=False, time_budget_ms=60_000))
        want = local.complete(CompletionRequest(request.text, request.cursor, "python", path, root.name))
        assert answer.items and answer.items[0].insert_text.split("\n")[0] == want.text.split("\n")[0]
        info = await status(client)
        assert info["engine"]["state"] == "up" and info["engine"]["url"] == url
        assert info["device"] is None and info["summaries"]["generated"] == 0
    finally:
        await client.shutdown_session()
        del os.environ["CODEASSIST_ENGINE_API_KEY"]
    assert API_KEY not in log_file.read_text()


async def test_serve_with_a_down_engine_reports_it(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    url = f"http://127.0.0.1:{free_port()}"
    client, _ = await start_server(root, tmp_path / "server.log",
                                   {"engine": url, "engineModel": "qwen2.5-coder-0.5b"}, encodings=[])
    try:
        await wait_until_ready(client)
        uri = open_document(client, root / "a.py", "def f(x):\n    return ")
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(1, 11),
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Automatic))
        for _ in range(2):
            answer = await client.text_document_inline_completion_async(params)
            assert list(answer.items) == []
        info = await status(client)
        assert info["modelStatus"] == "ready"  # the server is fine; the engine is not
        assert info["engine"]["state"] == "down" and "refused" in info["engine"]["lastError"]
    finally:
        await client.shutdown_session()
