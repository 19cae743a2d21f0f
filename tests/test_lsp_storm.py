"""A storm of 1,000 keystrokes against the real `codeassist serve` process (a tiny model),
each asking for an inline completion and every third cancelling the request before it:
every request is answered once, never more than one generation runs, the resident memory
stays flat after warm-up, and the last answer is for the last text."""

from __future__ import annotations

import time

from tests.raw_lsp import RawClient, notification, request

KEYSTROKES = 1000
WARM_UP = 200
RSS_GROWTH_LIMIT_MB = 64


def _notify(client: RawClient, method: str, params) -> None:
    client.send(notification(method, params))


def _status(client: RawClient, msg_id: int) -> dict:
    client.send(request(msg_id, "workspace/executeCommand", {"command": "codeassist.status", "arguments": []}))
    return client.answer(msg_id, timeout=120)["result"]


def test_a_thousand_keystrokes_with_cancels(tiny_model_dir, tmp_path):
    client = RawClient(tiny_model_dir("qwen2.5-coder"), tmp_path)
    try:
        client.send(request(0, "initialize", {"processId": None, "rootUri": tmp_path.as_uri(), "capabilities": {},
                                              "initializationOptions": {"indexEnabled": False, "maxNewTokens": 4}}))
        assert "result" in client.answer(0, timeout=120)
        _notify(client, "initialized", {})
        deadline = time.monotonic() + 120
        while _status(client, 1)["modelStatus"] != "ready":
            assert time.monotonic() < deadline, "the tiny model did not load"
            time.sleep(0.2)
        uri = (tmp_path / "storm.py").as_uri()
        text = "def total(values):\n    result = 0\n    for value in values:\n        result += "
        _notify(client, "textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": 0, "text": text}})
        typed = "value * 2 + offset - 1\n        "
        sent, warm_rss = [], None
        for key in range(KEYSTROKES):
            text += typed[key % len(typed)]
            lines = text.split("\n")
            _notify(client, "textDocument/didChange", {"textDocument": {"uri": uri, "version": key + 1},
                                                      "contentChanges": [{"text": text}]})
            msg_id = 100 + key
            client.send(request(msg_id, "textDocument/inlineCompletion", {
                "textDocument": {"uri": uri}, "context": {"triggerKind": 2},
                "position": {"line": len(lines) - 1, "character": len(lines[-1])}}))
            sent.append(msg_id)
            if key % 3 == 2:
                _notify(client, "$/cancelRequest", {"id": msg_id - 1})
            if key == WARM_UP:
                warm_rss = client.rss_mb()
        answers: dict[int, dict] = {}
        while len(answers) < len(sent):
            message = client.messages.get(timeout=120)
            if "method" not in message and message.get("id") in sent:
                assert message["id"] not in answers, "answered twice"
                answers[message["id"]] = message
        status = _status(client, 2)
        final_rss = client.rss_mb()
    finally:
        client.close()
    assert status["maxConcurrentGenerations"] == 1
    assert final_rss - warm_rss < RSS_GROWTH_LIMIT_MB, (warm_rss, final_rss)
    last = answers[sent[-1]]
    assert "error" not in last  # the newest request is never superseded
    lines = text.split("\n")
    for item in last["result"] if isinstance(last["result"], list) else last["result"]["items"]:
        start = item["range"]["start"] if item.get("range") else {"line": len(lines) - 1, "character": len(lines[-1])}
        assert start == {"line": len(lines) - 1, "character": len(lines[-1])}  # at the final cursor
