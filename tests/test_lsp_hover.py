"""Hover summaries and repository context end to end: the real server process with a tiny
model and code search on a small multi-file workspace."""

import asyncio

import pytest
from lsprotocol import types

from tests.lsp_helpers import open_document, start_server, status, wait_until_ready
from tests.test_context import FILES


@pytest.fixture
async def workspace_server(tmp_path, tiny_model_dir):
    root = tmp_path / "demo_repo"
    for path, text in FILES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    options = {"model": str(tiny_model_dir("qwen2.5-coder")), "device": "cpu", "dtype": "fp32",
               "indexEnabled": True, "indexLocation": "workspace", "summaryBudgetMs": 120_000, "maxNewTokens": 4}
    log_file = tmp_path / "server.log"
    client, result = await start_server(root, log_file, options)
    await wait_until_ready(client)
    deadline = asyncio.get_running_loop().time() + 120
    while (await status(client))["indexStatus"] != "ready":
        assert asyncio.get_running_loop().time() < deadline, "the index never got ready"
        await asyncio.sleep(0.2)
    yield client, result, root, log_file
    await client.shutdown_session()


def _hover(uri, line, character):
    return types.HoverParams(types.TextDocumentIdentifier(uri), types.Position(line, character))


async def test_hover_on_a_call_site_gives_signature_docstring_and_a_cached_summary(workspace_server):
    client, result, root, _ = workspace_server
    assert result.capabilities.hover_provider
    uri = open_document(client, root / "pkg" / "app.py", FILES["pkg/app.py"])
    first = await client.text_document_hover_async(_hover(uri, 5, 14))  # on `circle_area(r)`
    markdown = first.contents.value
    assert markdown.startswith("```python\ndef circle_area(radius)\n```")
    assert "Area of a circle." in markdown and "pkg/geometry.py:4" in markdown
    summary = markdown.split("**Summary:** ", 1)[1].split("\n\n", 1)[0]
    assert summary.strip()
    before = (await status(client))["summaries"]
    second = await client.text_document_hover_async(_hover(uri, 5, 14))
    after = (await status(client))["summaries"]
    assert second.contents.value == markdown
    assert after["hits"] == before["hits"] + 1  # served from the cache
    assert (root / ".codeassist" / "index" / "summaries.json").exists()  # persisted by the index


async def test_hover_on_a_definition_a_class_and_bad_positions(workspace_server):
    client, _, root, _ = workspace_server
    uri = open_document(client, root / "pkg" / "app.py", FILES["pkg/app.py"])
    own = await client.text_document_hover_async(_hover(uri, 4, 5))  # `def report(r):`
    assert own.contents.value.startswith("```python\ndef report(r)\n```")
    box = await client.text_document_hover_async(_hover(uri, 6, 20))  # `geometry.Box()`
    assert box.contents.value.startswith("```python\nclass Box\n```")
    assert await client.text_document_hover_async(_hover(uri, 3, 0)) is None  # blank line
    assert await client.text_document_hover_async(_hover(uri, 500, 0)) is None
    other = (root / "pkg" / "closed.py").as_uri()
    assert await client.text_document_hover_async(_hover(other, 0, 0)) is None
    assert (await status(client))["modelStatus"] == "ready"


async def test_completion_prompt_gets_the_other_files_definitions(workspace_server):
    client, _, root, log_file = workspace_server
    uri = open_document(client, root / "pkg" / "app.py", FILES["pkg/app.py"])
    await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(7, 4),
        context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked)))
    log = log_file.read_text()
    assert "repository context for pkg/app.py in report:" in log
    assert "from ['pkg/geometry.py']" in log
