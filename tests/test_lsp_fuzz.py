"""Random LSP sessions against the real `codeassist serve` process (a tiny model): documents
opened, edited and closed, completions, hovers, searches, cancels, configuration changes,
malformed params and out-of-range positions, in any order. Whatever hypothesis sends, the
server stays alive and answers every request exactly once.

CODEASSIST_FUZZ_EXAMPLES raises the number of sessions (a longer soak than CI's)."""

from __future__ import annotations

import itertools
import json
import os
import queue

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.raw_lsp import RawClient, frame, notification, request

EXAMPLES = int(os.environ.get("CODEASSIST_FUZZ_EXAMPLES", "100"))
ANSWER_TIMEOUT_S = 120

# Code-like text, with the characters that break naive offset arithmetic (astral, combining,
# CRLF) and lone surrogates (valid JSON, invalid UTF-16).
_ODD = st.sampled_from(["\r\n", "\t", "😀", "e\u0301", "\ud800", "\udfff", "\x00", "\u2028"])
TEXT = st.lists(st.one_of(st.text(alphabet="abcdefxyz_(): =+.\n    #\"'0123456789", max_size=30), _ODD),
                max_size=12).map("".join)
POSITION = st.fixed_dictionaries({"line": st.integers(-2, 60), "character": st.integers(-2, 200)})
JUNK = st.one_of(st.none(), st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
SETTING = st.fixed_dictionaries({}, optional={
    "maxNewTokens": st.one_of(st.integers(-5, 5000), JUNK), "contextTokens": st.one_of(st.integers(-5, 40_000), JUNK),
    "timeBudgetMs": st.one_of(st.floats(allow_nan=True), JUNK), "kvMode": st.one_of(st.sampled_from(["pie", "full", "x"]), JUNK),
    "maxDocumentChars": st.one_of(st.integers(-1, 10_000), JUNK), "speculative": st.one_of(st.booleans(), JUNK),
    "hoverSummaries": st.one_of(st.booleans(), JUNK), "maxLines": st.one_of(st.integers(-1, 50), JUNK)})

ACTION = st.one_of(
    st.tuples(st.just("open"), TEXT),
    st.tuples(st.just("change"), TEXT),  # full-text sync
    st.tuples(st.just("edit"), POSITION, POSITION, TEXT),  # a range edit, possibly out of range
    st.tuples(st.just("close")),
    st.tuples(st.sampled_from(["textDocument/completion", "textDocument/inlineCompletion",
                               "textDocument/hover"]), POSITION),
    st.tuples(st.just("cancel")),
    st.tuples(st.just("search"), st.lists(JUNK | st.text(max_size=20), max_size=3)),
    st.tuples(st.just("configure"), SETTING),
    st.tuples(st.just("malformed"), st.sampled_from(["textDocument/completion", "textDocument/hover",
                                                     "textDocument/inlineCompletion", "workspace/executeCommand"]),
              JUNK),
)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-workspace")
    raw = RawClient(tiny_model_dir("qwen2.5-coder"), root)
    raw.send(request(0, "initialize", {"processId": None, "rootUri": root.as_uri(), "capabilities": {},
                                       "initializationOptions": {"indexEnabled": False, "maxNewTokens": 4}}))
    assert "result" in raw.answer(0, timeout=ANSWER_TIMEOUT_S)
    raw.send(frame(b'{"jsonrpc":"2.0","method":"initialized","params":{}}'))
    raw.root, raw.ids, raw.documents = root, itertools.count(1), itertools.count()
    yield raw
    raw.close()


def _notify(server: RawClient, method: str, params) -> None:
    server.send(notification(method, params))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(actions=st.lists(ACTION, min_size=1, max_size=20))
def test_random_sessions_never_kill_or_silence_the_server(server, actions):
    uri = (server.root / f"doc{next(server.documents)}.py").as_uri()
    document = {"uri": uri}
    version, sent = 0, []

    def ask(method: str, params) -> None:
        msg_id = next(server.ids)
        server.send(request(msg_id, method, params))
        sent.append(msg_id)

    for action in actions:
        kind = action[0]
        version += 1
        if kind == "open":
            _notify(server, "textDocument/didOpen", {"textDocument": {
                "uri": uri, "languageId": "python", "version": version, "text": action[1]}})
        elif kind == "change":
            _notify(server, "textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                      "contentChanges": [{"text": action[1]}]})
        elif kind == "edit":
            _notify(server, "textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                      "contentChanges": [{"range": {"start": action[1], "end": action[2]},
                                                                          "text": action[3]}]})
        elif kind == "close":
            _notify(server, "textDocument/didClose", {"textDocument": document})
        elif kind == "cancel":
            if sent:
                _notify(server, "$/cancelRequest", {"id": sent[-1]})
        elif kind == "search":
            ask("workspace/executeCommand", {"command": "codeassist.search", "arguments": action[1]})
        elif kind == "configure":
            _notify(server, "workspace/didChangeConfiguration", {"settings": {"codeassist": action[1]}})
        elif kind == "malformed":
            ask(action[1], {"textDocument": action[2], "position": action[2]})
        else:
            ask(kind, {"textDocument": document, "position": action[1]})
    ask("workspace/executeCommand", {"command": "codeassist.status", "arguments": []})

    answers: dict[int, int] = {}
    while set(answers) != set(sent):
        try:
            message = server.messages.get(timeout=ANSWER_TIMEOUT_S)
        except queue.Empty:
            pytest.fail(f"no answer to {sorted(set(sent) - set(answers))} (server exit code "
                        f"{server.process.poll()}) after {actions!r}")
        if "method" not in message and message.get("id") in sent:
            answers[message["id"]] = answers.get(message["id"], 0) + 1
            assert "Traceback" not in json.dumps(message)
    assert server.process.poll() is None
    assert all(count == 1 for count in answers.values())
    # Reset what the session configured for the next one.
    _notify(server, "workspace/didChangeConfiguration", {"settings": {"codeassist": {"maxNewTokens": 4}}})
    _notify(server, "textDocument/didClose", {"textDocument": document})
