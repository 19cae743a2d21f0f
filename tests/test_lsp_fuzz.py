"""Random LSP sessions against the real `codeassist serve` process (a tiny model): documents
opened, edited and closed, completions, hovers, searches, cancels, configuration changes,
malformed params and out-of-range positions, in any order. Whatever hypothesis sends, the
server stays alive, answers every request exactly once, and holds the text the client holds
(checked through `codeassist.documentState` after each session with valid edits).

CODEASSIST_FUZZ_EXAMPLES raises the number of sessions (a longer soak than CI's)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import queue
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.raw_lsp import RawClient, frame, notification, request

EXAMPLES = int(os.environ.get("CODEASSIST_FUZZ_EXAMPLES", "100"))
ANSWER_TIMEOUT_S = 120

# Code-like text, with the characters that break naive offset arithmetic (astral, combining,
# CRLF) and lone surrogates (valid JSON, invalid UTF-16).
_ODD = st.sampled_from(["\r\n", "\r", "\t", "😀", "e\u0301", "\ud800", "\udfff", "\x00", "\u2028", "\x0c"])
TEXT = st.lists(st.one_of(st.text(alphabet="abcdefxyz_(): =+.\n    #\"'0123456789", max_size=30), _ODD),
                max_size=12).map("".join)
POSITION = st.one_of(  # mostly inside small documents, sometimes anywhere
    st.fixed_dictionaries({"line": st.integers(0, 4), "character": st.integers(0, 12)}),
    st.fixed_dictionaries({"line": st.integers(-2, 60), "character": st.integers(-2, 200)}))
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


def _client_edit(text: str | None, start: dict, end: dict, new: str) -> str | None:
    """The client's text after a range edit as the LSP defines it (UTF-16 characters, lines
    ended by \\n, \\r\\n or \\r, a character past the line's end meaning its end); None for
    a range no client sends (the server's text is then not checked)."""
    if text is None:
        return None
    starts, ends, i = [0], [], 0
    while i < len(text):
        if text[i] in "\r\n":
            ends.append(i)
            i += 2 if text.startswith("\r\n", i) else 1
            starts.append(i)
        else:
            i += 1
    ends.append(len(text))

    def offset(position: dict) -> int | None:
        line, character = position["line"], position["character"]
        if not 0 <= line < len(starts) or character < 0:
            return None
        at, units = starts[line], 0
        while at < ends[line] and units < character:
            units += 2 if ord(text[at]) > 0xFFFF else 1
            at += 1
        return None if units > character else at  # > : inside a surrogate pair

    first, last = offset(start), offset(end)
    if first is None or last is None or first > last:
        return None
    return text[:first] + new + text[last:]


def _wire(text: str) -> str:
    """`text` as the server reads it from JSON (two lone surrogates in a row make one pair)."""
    return json.loads(json.dumps(text))


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
    held: str | None = None  # the client's text while the document is open and known
    opened = False

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
            held, opened = _wire(action[1]), True
        elif kind == "change":
            _notify(server, "textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                      "contentChanges": [{"text": action[1]}]})
            held = _wire(action[1]) if opened else None
        elif kind == "edit":
            _notify(server, "textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                      "contentChanges": [{"range": {"start": action[1], "end": action[2]},
                                                                          "text": action[3]}]})
            held = _client_edit(held, action[1], action[2], _wire(action[3]))
        elif kind == "close":
            _notify(server, "textDocument/didClose", {"textDocument": document})
            held, opened = None, False
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
    ask("workspace/executeCommand", {"command": "codeassist.documentState", "arguments": [uri]})
    state_id = sent[-1]

    answers: dict[int, int] = {}
    state = None
    while set(answers) != set(sent):
        try:
            message = server.messages.get(timeout=ANSWER_TIMEOUT_S)
        except queue.Empty:
            pytest.fail(f"no answer to {sorted(set(sent) - set(answers))} (server exit code "
                        f"{server.process.poll()}) after {actions!r}")
        if "method" not in message and message.get("id") in sent:
            answers[message["id"]] = answers.get(message["id"], 0) + 1
            assert "Traceback" not in json.dumps(message)
            if message["id"] == state_id:
                state = message.get("result")
    assert server.process.poll() is None
    assert all(count == 1 for count in answers.values())
    if held is not None:
        assert state is not None and state["length"] == len(held), (state, held, actions)
        assert state["sha256"] == hashlib.sha256(held.encode("utf-8", "surrogatepass")).hexdigest(), actions
    # Reset what the session configured for the next one.
    _notify(server, "workspace/didChangeConfiguration", {"settings": {"codeassist": {"maxNewTokens": 4}}})
    _notify(server, "textDocument/didClose", {"textDocument": document})


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_random_edits_leave_the_server_with_the_clients_text(server, data):
    """Valid incremental edits only (positions inside the text, lines of every kind of break):
    the server's text must be the client's, byte for byte."""
    uri = (server.root / f"edited{next(server.documents)}.py").as_uri()
    held = _wire(data.draw(TEXT, label="opened"))
    _notify(server, "textDocument/didOpen", {"textDocument": {
        "uri": uri, "languageId": "python", "version": 1, "text": held}})
    version = 1
    for _ in range(data.draw(st.integers(1, 8), label="edits")):
        lines = held.count("\r\n") + len(re.findall(r"\r(?!\n)|(?<!\r)\n", held)) + 1
        start, end = ({"line": data.draw(st.integers(0, lines - 1)), "character": data.draw(st.integers(0, 12))}
                      for _ in range(2))
        new = data.draw(TEXT, label="inserted")
        edited = _client_edit(held, start, end, _wire(new))
        if edited is None:
            continue
        version += 1
        _notify(server, "textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                  "contentChanges": [{"range": {"start": start, "end": end},
                                                                      "text": new}]})
        held = edited
    msg_id = next(server.ids)
    server.send(request(msg_id, "workspace/executeCommand",
                        {"command": "codeassist.documentState", "arguments": [uri]}))
    state = server.answer(msg_id, timeout=ANSWER_TIMEOUT_S)["result"]
    _notify(server, "textDocument/didClose", {"textDocument": {"uri": uri}})
    assert state["version"] == version and state["length"] == len(held), (state, held)
    assert state["sha256"] == hashlib.sha256(held.encode("utf-8", "surrogatepass")).hexdigest(), held
