"""Who may set what: a client (an editor, or a repository's settings it forwards) cannot make
the server send a secret, and numbers it sends are range-checked. The engine here is a real
HTTP server on loopback that records what reaches it."""

import http.server
import threading

import pytest

from completion.remote_engine import RemoteConfig
from lsp_server.settings import ServerSettings, merge_settings
from codeassist.bench.lsp_process import LspProcess, frame, notification, request

SECRET = "s3cret-value-7d41"


class _RecordingEngine(http.server.BaseHTTPRequestHandler):
    """Answers /v1/models with one model; records each request's path and headers."""

    seen: list[tuple[str, dict]] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.seen.append((self.path, dict(self.headers)))
        body = b'{"data": [{"id": "qwen2.5-coder-0.5b"}]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def engine():
    _RecordingEngine.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingEngine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _RecordingEngine.seen
    server.shutdown()


def _serve(tmp_path, monkeypatch, serve_args: list[str], options: dict) -> LspProcess:
    monkeypatch.setenv("SECRET_X", SECRET)
    monkeypatch.delenv("CODEASSIST_ENGINE_API_KEY", raising=False)
    raw = LspProcess(tmp_path / "server.log", serve_args)
    raw.send(request(1, "initialize", {"processId": None, "rootUri": tmp_path.as_uri(), "capabilities": {},
                                       "initializationOptions": {"indexEnabled": False, **options}}))
    assert "result" in raw.answer(1)
    raw.send(frame(b'{"jsonrpc":"2.0","method":"initialized","params":{}}'))
    return raw


def _models_request(seen, raw: LspProcess, timeout_s: float = 60) -> dict:
    import time

    deadline = time.monotonic() + timeout_s
    while not any(path.endswith("/v1/models") for path, _ in seen):
        assert time.monotonic() < deadline and raw.process.poll() is None, "the engine was never asked"
        time.sleep(0.1)
    return next(headers for path, headers in seen if path.endswith("/v1/models"))


def test_a_client_cannot_choose_which_secret_the_server_sends(engine, tmp_path, monkeypatch):
    url, seen = engine
    raw = _serve(tmp_path, monkeypatch, [], {"engine": url, "engineApiKeyEnv": "SECRET_X"})
    try:
        headers = _models_request(seen, raw)
        assert "Authorization" not in headers and SECRET not in str(headers)
        raw.send(notification("workspace/didChangeConfiguration",
                              {"settings": {"engine": url + "/v1", "engine_api_key_env": "SECRET_X"}}))
        raw.send(request(3, "workspace/executeCommand", {"command": "codeassist.status", "arguments": []}))
        assert "result" in raw.answer(3)
        assert all(SECRET not in str(headers) for _, headers in seen)
    finally:
        raw.close()
    log = (tmp_path / "server.log").read_text()
    assert "unknown setting 'engineApiKeyEnv' ignored" in log and SECRET not in log


def test_the_key_named_on_the_command_line_reaches_a_loopback_engine(engine, tmp_path, monkeypatch):
    url, seen = engine
    raw = _serve(tmp_path, monkeypatch, ["--engine-api-key-env", "SECRET_X"], {"engine": url})
    try:
        assert _models_request(seen, raw)["Authorization"] == f"Bearer {SECRET}"
    finally:
        raw.close()


def test_a_key_never_goes_over_plain_http_to_another_host():
    with pytest.raises(ValueError, match="plain http to 10.1.2.3"):
        RemoteConfig("http://10.1.2.3:8080", api_key="k")
    with pytest.raises(ValueError, match="plain http to engines.example.com"):
        RemoteConfig("http://engines.example.com/v1", api_key="k")
    RemoteConfig("https://engines.example.com/v1", api_key="k")
    RemoteConfig("http://10.1.2.3:8080")  # no key: nothing secret to leak
    for loopback in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
        RemoteConfig(loopback, api_key="k")


@pytest.mark.parametrize("key, value", [
    ("timeBudgetMs", float("nan")), ("timeBudgetMs", float("inf")), ("timeBudgetMs", -1),
    ("kvRefreshIdleMs", float("-inf")), ("kvRefreshIdleMs", -5), ("summaryBudgetMs", float("nan")),
    ("summaryBudgetMs", -0.5), ("maxDocumentChars", -1), ("maxDocumentChars", 0),
    ("maxNewTokens", float("inf")), ("maxDraftTokens", 0),
])
def test_numbers_out_of_range_are_refused_with_one_message_each(key, value):
    settings, problems = merge_settings(ServerSettings(), {key: value, "maxNewTokens": 9} if key != "maxNewTokens"
                                        else {key: value})
    assert len(problems) == 1 and key in problems[0], problems
    assert getattr(settings, "max_document_chars") == ServerSettings().max_document_chars
    if key != "maxNewTokens":
        assert settings.max_new_tokens == 9  # the other settings still apply


def test_the_key_variable_is_not_a_client_setting_in_any_spelling():
    for key in ("engineApiKeyEnv", "engine_api_key_env"):
        settings, problems = merge_settings(ServerSettings(), {key: "SECRET_X"})
        assert settings.engine_api_key_env == "CODEASSIST_ENGINE_API_KEY" and "unknown setting" in problems[0]
