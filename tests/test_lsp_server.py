"""The language server end to end: the real `codeassist serve` process, a real LSP client."""

import asyncio
import json

import pytest
from lsprotocol import types

from lsp_server.positions import offset_at, position_of
from tests.lsp_helpers import (
    expected_text,
    open_document,
    send_raw,
    start_server,
    status,
    wait_for,
    wait_until_ready,
)

SOURCE = "import os\n\n\ndef join_home(name):\n    return os.path.join(\n"


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "demo_repo"
    (root / "pkg").mkdir(parents=True)
    return root


@pytest.fixture
async def server(workspace, tmp_path, tiny_model_dir):
    model = tiny_model_dir("qwen2.5-coder")
    log_file = tmp_path / "server.log"
    # No warm-up: these tests compare answers with a fresh in-process encode, and a warm-up
    # guess encoded first (didOpen's, after 1 s) would make the request's cache an approximate
    # reuse of it (test_warm_up.py tests the warm-up).
    client, result = await start_server(
        workspace, log_file, {"model": str(model), "device": "cpu", "dtype": "fp32", "warmUp": False}, encodings=[]
    )
    await wait_until_ready(client)
    yield client, result, model, log_file
    await client.shutdown_session()


def _inline(uri, line, character):
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri),
        position=types.Position(line, character),
        context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Automatic),
    )


def _change(uri, version, start, end, text):
    return types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(*start), types.Position(*end)), text=text)],
    )


async def test_capabilities_and_loading_progress(server):
    client, result, _, _ = server
    capabilities = result.capabilities
    assert capabilities.inline_completion_provider is not None
    assert capabilities.completion_provider is not None
    sync = capabilities.text_document_sync
    assert sync.change == types.TextDocumentSyncKind.Incremental and sync.open_close
    assert capabilities.position_encoding == types.PositionEncodingKind.Utf16
    kinds = [r.kind for reports in client.progress_reports.values() for r in reports]
    assert kinds[0] == "begin" and kinds[-1] == "end"
    info = await status(client)
    assert info["modelStatus"] == "ready" and info["dtype"] == "float32"
    assert set(info["speculation"]) == {"acceptance", "passMs"}


async def test_incremental_edits_then_inline_and_menu_completion(server, workspace):
    client, _, model, _ = server
    path = workspace / "pkg" / "paths.py"
    uri = open_document(client, path, SOURCE)
    # Type `home, ` inside the call, in two incremental edits.
    client.text_document_did_change(_change(uri, 2, (4, 24), (4, 24), "ho"))
    client.text_document_did_change(_change(uri, 3, (4, 26), (4, 26), "me, "))
    text = SOURCE.replace("join(\n", "join(home, \n")
    cursor = text.index("home, ") + len("home, ")
    want = expected_text(model, text, cursor, "pkg/paths.py", "demo_repo", time_budget_ms=5000)

    inline = await client.text_document_inline_completion_async(_inline(uri, 4, 30))
    got = inline.items[0].insert_text if inline.items else ""
    assert got == want
    if inline.items:
        assert inline.items[0].range == types.Range(types.Position(4, 30), types.Position(4, 30))

    menu = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(4, 30)))
    assert menu.is_incomplete
    if want:
        (item,) = menu.items
        assert item.text_edit.new_text == want  # no identifier right before the cursor
        assert item.text_edit.range.end == types.Position(4, 30)


async def test_open_documents_and_their_siblings_feed_the_ngram_cache(server, workspace):
    client, _, _, _ = server
    assert (await status(client))["ngramCacheTokens"] == 0
    (workspace / "pkg" / "sibling.py").write_text("def sibling_helper(x):\n    return x * 2\n" * 20)
    (workspace / "pkg" / "notes.txt").write_text("not python")
    open_document(client, workspace / "pkg" / "paths.py", SOURCE)
    for _ in range(100):  # siblings are read on a background thread
        tokens = (await status(client))["ngramCacheTokens"]
        if tokens > 200:
            break
        await asyncio.sleep(0.05)
    assert tokens > 200  # paths.py alone is far shorter than its sibling


async def test_menu_item_replaces_the_word_being_typed(server, workspace):
    client, _, model, _ = server
    text = "def area(radius):\n    return 3.14 * rad"
    uri = open_document(client, workspace / "pkg" / "area.py", text)
    want = expected_text(model, text, len(text), "pkg/area.py", "demo_repo", time_budget_ms=5000)
    menu = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(1, 21)))
    if want:
        (item,) = menu.items
        assert item.text_edit.range.start == types.Position(1, 18)
        assert item.text_edit.new_text == "rad" + want and item.filter_text.startswith("rad")


async def test_utf16_positions_with_emoji_and_cjk(server, workspace):
    client, _, model, _ = server
    text = 's = "🙂你好🙂"; t = len(s) + '
    uri = open_document(client, workspace / "pkg" / "u.py", text)
    character = len(text.encode("utf-16-le")) // 2
    assert character == len(text) + 2  # each emoji is two UTF-16 units
    want = expected_text(model, text, len(text), "pkg/u.py", "demo_repo", time_budget_ms=5000)
    inline = await client.text_document_inline_completion_async(_inline(uri, 0, character))
    assert (inline.items[0].insert_text if inline.items else "") == want
    # A position inside the surrogate pair of an emoji is refused, not guessed.
    split = await client.text_document_inline_completion_async(_inline(uri, 0, 6))
    assert split.items in ([], ())


async def test_bad_requests_get_empty_answers_and_log_lines(server, workspace):
    client, _, _, log_file = server
    uri = open_document(client, workspace / "pkg" / "b.py", "x = 1\n")
    unknown = await client.text_document_inline_completion_async(
        _inline((workspace / "nope.py").as_uri(), 0, 0))
    assert unknown.items in ([], ())
    past_line = await client.text_document_inline_completion_async(_inline(uri, 0, 99))
    assert past_line.items in ([], ())
    past_doc = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(40, 0)))
    assert past_doc.items in ([], ())
    with pytest.raises(Exception) as error:  # a JSON-RPC error, not a crash
        await send_raw(client, 9001, "textDocument/inlineCompletion",
                       {"textDocument": {"uri": uri}, "position": "top"})
    assert getattr(error.value, "code", None) == -32602  # Invalid Params
    assert (await status(client))["modelStatus"] == "ready"
    log = log_file.read_text()
    assert "not open" in log and "past the end of line 0" in log and "line 40 is out of range" in log


async def test_cancel_request(server, workspace):
    client, _, _, log_file = server
    uri = open_document(client, workspace / "pkg" / "c.py", SOURCE)
    params = _inline(uri, 4, 24)
    # The request and its cancellation in one write: the server reads both before the
    # request's handler starts, so the answer is the cancellation error, never a result.
    future = asyncio.get_running_loop().create_future()
    client.protocol._request_futures[4242] = future
    request = json.dumps({"jsonrpc": "2.0", "id": 4242, "method": "textDocument/inlineCompletion",
                          "params": client.protocol._converter.unstructure(params)})
    cancel = json.dumps({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 4242}})
    client.protocol.writer.write(b"".join(f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
                                          for body in (request, cancel)))
    with pytest.raises(Exception) as cancelled:
        await asyncio.wait_for(future, 30)
    assert getattr(cancelled.value, "code", None) == types.LSPErrorCodes.RequestCancelled
    after = await client.text_document_inline_completion_async(params)
    assert isinstance(after, types.InlineCompletionList)  # the server goes on answering


async def test_configuration_changes(server, workspace):
    client, _, model, _ = server
    text = "def f(values):\n    return sum("
    uri = open_document(client, workspace / "pkg" / "cfg.py", text)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"codeassist": {"maxNewTokens": 1, "colour": "blue"}}))
    await wait_for(lambda: any("unknown setting 'colour'" in m.message for m in client.log_messages),
                   30, "the unknown-setting warning")
    want = expected_text(model, text, len(text), "pkg/cfg.py", "demo_repo", max_new_tokens=1,
                         time_budget_ms=5000)
    inline = await client.text_document_inline_completion_async(_inline(uri, 1, 15))
    assert (inline.items[0].insert_text if inline.items else "") == want
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"inlineCompletion": False}))  # applied in message order: before the next request
    assert await client.text_document_inline_completion_async(_inline(uri, 1, 15)) is None


async def test_approximate_kv_cache_refreshed_when_the_user_pauses(server, workspace):
    client, _, _, _ = server
    # The whole prompt from the first request on (no first window growing behind it), so
    # the edit below finds one session to reuse.
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"kvRefreshIdleMs": 300, "firstWindowTokens": 0, "warmUp": False}))
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(30)) + "value = f3("
    uri = open_document(client, workspace / "pkg" / "idle.py", text)
    line, character = position_of(text, len(text))
    await client.text_document_inline_completion_async(_inline(uri, line, character))
    # A line inserted far above: the cache is reused re-rotated, approximate until refreshed.
    client.text_document_did_change(_change(uri, 2, (0, 0), (0, 0), "# header\n"))
    await client.text_document_inline_completion_async(_inline(uri, line + 1, character))
    deadline = asyncio.get_running_loop().time() + 60
    while (sessions := (await status(client))["kvSessions"])["refreshed"] < 1:
        assert asyncio.get_running_loop().time() < deadline, sessions
        await asyncio.sleep(0.1)
    assert sessions["approximate"] == 0 and sessions["documents"] >= 1


async def test_burst_of_edits_latest_wins(server, workspace):
    client, _, model, _ = server
    text = "def total(items):\n    return "
    uri = open_document(client, workspace / "pkg" / "burst.py", text)
    pending = []
    for version in range(2, 202):
        line, character = position_of(text, len(text))
        client.text_document_did_change(_change(uri, version, (line, character), (line, character), "x"))
        text += "x"
        line, character = position_of(text, len(text))
        # Sent now, between the edits (the *_async helpers only send once awaited).
        pending.append(asyncio.wrap_future(
            client.text_document_inline_completion(_inline(uri, line, character))))
    answers = await asyncio.wait_for(asyncio.gather(*pending), 300)
    assert len(answers) == 200 and all(a is not None for a in answers)
    want = expected_text(model, text, len(text), "pkg/burst.py", "demo_repo", time_budget_ms=5000)
    last = answers[-1]
    assert (last.items[0].insert_text if last.items else "") == want
    served = sum(1 for a in answers if a.items)
    assert served < 200  # superseded requests were answered empty, not computed
    assert (await status(client))["maxConcurrentGenerations"] == 1


async def test_utf8_negotiated_when_the_client_offers_only_utf8(workspace, tmp_path, tiny_model_dir):
    model = tiny_model_dir("qwen2.5-coder")
    client, result = await start_server(
        workspace, tmp_path / "s.log", {"model": str(model), "dtype": "fp32"}, encodings=["utf-8"]
    )
    try:
        assert result.capabilities.position_encoding == types.PositionEncodingKind.Utf8
        await wait_until_ready(client)
        text = "é = '你好' + "
        uri = open_document(client, workspace / "pkg" / "u8.py", text)
        want = expected_text(model, text, len(text), "pkg/u8.py", "demo_repo", time_budget_ms=5000)
        inline = await client.text_document_inline_completion_async(
            _inline(uri, 0, len(text.encode("utf-8"))))
        assert (inline.items[0].insert_text if inline.items else "") == want
    finally:
        await client.shutdown_session()


async def test_bad_model_setting_keeps_the_server_alive(workspace, tmp_path):
    client, _ = await start_server(workspace, tmp_path / "s.log", {"model": "no-such-model"})
    try:
        await wait_for(lambda: any("cannot load model" in m.message for m in client.log_messages),
                       60, "the load error")
        uri = open_document(client, workspace / "pkg" / "m.py", "x = ")
        assert (await client.text_document_inline_completion_async(_inline(uri, 0, 4))).items in ([], ())
        assert (await status(client))["modelStatus"] == "failed"
    finally:
        await client.shutdown_session()


def test_position_conversions():
    text = "a🙂b\n你好x\r\nlast"
    assert offset_at(text, 0, 3, "utf-16") == 2  # after the emoji
    assert offset_at(text, 0, 5, "utf-8") == 2
    assert offset_at(text, 0, 2, "utf-32") == 2
    assert offset_at(text, 1, 3, "utf-16") == text.index("x") + 1
    assert offset_at(text, 2, 4, "utf-16") == len(text)
    for bad in [(0, 2, "utf-16"), (0, 9, "utf-16"), (3, 0, "utf-16"), (1, 4, "utf-16")]:
        with pytest.raises(ValueError):
            offset_at(text, *bad)
    assert position_of(text, 2, "utf-16") == (0, 3)
    assert position_of(text, text.index("x"), "utf-8") == (1, 6)
    # Only \n, \r\n and \r end lines (LSP); a form feed or U+2028 does not.
    odd = "a\x0cb\rc\u2028d\r\ne"
    assert offset_at(odd, 1, 3) == odd.index("d") + 1 and offset_at(odd, 2, 1) == len(odd)
    assert position_of(odd, odd.index("d"), "utf-16") == (1, 2) and position_of(odd, len(odd)) == (2, 1)


async def test_the_server_holds_the_clients_text_across_odd_line_breaks(server, workspace):
    """Edits below a form feed, U+2028 or a lone \r land where the client put them."""
    import hashlib

    client, _, _, _ = server
    text = "def f():\x0c\n    return 1\u2028 + 2\rx = 3\r\ny = 4\n"
    uri = open_document(client, workspace / "pkg" / "odd.py", text)
    client.text_document_did_change(_change(uri, 2, (1, 4), (1, 10), "yield"))  # "return" -> "yield"
    client.text_document_did_change(_change(uri, 3, (2, 0), (2, 1), "z"))  # x -> z
    want = "def f():\x0c\n    yield 1\u2028 + 2\rz = 3\r\ny = 4\n"
    state = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="codeassist.documentState", arguments=[uri]))
    assert state["version"] == 3 and state["length"] == len(want)
    assert state["sha256"] == hashlib.sha256(want.encode()).hexdigest()


@pytest.mark.embedded
async def test_embedded_model_over_lsp_without_blocking_initialize(workspace, tmp_path, embedded_loaded):
    # embedded_loaded made sure the safetensors cache exists; the server loads it itself.
    client, result = await start_server(workspace, tmp_path / "e.log", {}, encodings=[])
    try:
        assert result.capabilities.inline_completion_provider is not None
        text = "import math\n\n\ndef area_of_circle(radius):\n    return math.pi * "
        uri = open_document(client, workspace / "pkg" / "circle.py", text)
        early_status = (await status(client))["modelStatus"]
        # Asked while the model loads, answered once it is ready (the user typed there).
        early = await client.text_document_inline_completion_async(_inline(uri, 4, 21))
        assert early_status == "loading"
        assert any("ready on" in m.message for m in client.log_messages)
        inline = await client.text_document_inline_completion_async(_inline(uri, 4, 21))
        (item,) = inline.items
        assert item.insert_text.strip() and "\n" not in item.insert_text
        assert "radius" in item.insert_text
        assert early.items[0].insert_text == item.insert_text
    finally:
        await client.shutdown_session()


async def test_documents_over_the_size_limit_get_no_model_work(server, workspace):
    client, _, _, log_file = server
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"maxDocumentChars": 2000}))
    big = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(200))  # ~6,000 chars
    uri = open_document(client, workspace / "pkg" / "big.py", big)
    line, character = position_of(big, len(big))
    inline = await client.text_document_inline_completion_async(_inline(uri, line, character))
    assert inline is None or list(inline.items) == []
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(0, 5)))
    assert hover is None
    info = await status(client)
    assert info["oversizedDocuments"] == 1 and info["summaries"]["queued"] == 0
    assert "maxDocumentChars 2000" in log_file.read_text()
    small = open_document(client, workspace / "pkg" / "small.py", SOURCE)
    answer = await client.text_document_inline_completion_async(_inline(small, 4, 24))
    assert isinstance(answer, types.InlineCompletionList)  # other documents are served


async def test_an_explicit_request_offers_alternatives(server, workspace):
    client, _, _, _ = server
    uri = open_document(client, workspace / "pkg" / "alternatives.py", SOURCE)
    typing = await client.text_document_inline_completion_async(_inline(uri, 4, 24))
    invoked = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(4, 24),
        context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked)))
    texts = [item.insert_text for item in invoked.items]
    assert len(typing.items) <= 1 and 1 < len(texts) <= 3
    assert len(set(texts)) == len(texts) and all(texts)
    if typing.items:
        assert texts[0] == typing.items[0].insert_text  # the first is what typing gets
