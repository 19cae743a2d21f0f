"""Code search over LSP end to end: background indexing with progress, the codeassist.search
command, workspace/symbol, re-indexing on didSave and on watched-file events."""

import asyncio
import json
import sys

import pytest
from lsprotocol import types

from completion.home import codeassist_home
from retrieval import store
from retrieval.search_endpoint import endpoint_path
from tests.lsp_helpers import open_document, start_server, status
from tests.retrieval_helpers import write_repo


@pytest.fixture
async def indexed(tmp_path, tiny_model_dir):
    root = write_repo(tmp_path / "search_repo")
    options = {"model": str(tiny_model_dir("qwen2.5-coder")), "device": "cpu", "dtype": "fp32",
               "indexEnabled": True, "indexLocation": "workspace", "indexSummaries": True}
    client, result = await start_server(root, tmp_path / "server.log", options)

    async def index_ready():
        return (await status(client))["indexStatus"] == "ready"

    await _eventually(index_ready, "the workspace index")
    yield client, result, root
    await client.shutdown_session()


async def _eventually(check, what, timeout=120.0):
    """Await `check()` (which sends requests) until it is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _search(client, query, k=5):
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="codeassist.search", arguments=[{"query": query, "k": k}]))


async def test_background_index_then_search_command(indexed):
    client, result, root = indexed
    assert "codeassist.search" in result.capabilities.execute_command_provider.commands
    assert result.capabilities.workspace_symbol_provider
    titles = [r.title for reports in client.progress_reports.values() for r in reports
              if r.kind == "begin"]
    assert "Indexing workspace" in titles
    hits = await _search(client, "area of a circle from its radius", k=3)
    assert len(hits) == 3
    best = hits[0]
    assert best["symbol"] == "Circle.area"
    assert best["uri"] == (root / "geometry" / "shapes.py").as_uri()
    assert best["range"]["start"] == {"line": 7, "character": 0}  # 0-based: line 8 in the file
    assert "math.pi" in best["snippet"]


async def test_workspace_symbol_names_first(indexed):
    client, _, root = indexed
    symbols = await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="perimeter"))
    assert symbols[0].name == "perimeter_of_square"
    assert symbols[0].kind == types.SymbolKind.Function
    assert symbols[0].location.uri == (root / "geometry" / "shapes.py").as_uri()
    methods = await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="area"))
    assert methods[0].name == "area" and methods[0].container_name == "Circle"


async def test_reindex_on_save_and_on_watched_file_changes(indexed):
    client, _, root = indexed
    path = root / "web" / "app.ts"
    path.write_text(path.read_text() + "\nexport function slugifyTitle(title: string) {\n"
                    "  return title.toLowerCase();\n}\n")
    client.text_document_did_save(types.DidSaveTextDocumentParams(
        types.TextDocumentIdentifier(path.as_uri())))

    async def found_new():
        return any(h["symbol"] == "slugifyTitle" for h in await _search(client, "slugify title"))

    await _eventually(found_new, "the saved file to be re-indexed")
    gone = root / "net" / "http.go"
    gone.unlink()
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(
        changes=[types.FileEvent(gone.as_uri(), types.FileChangeType.Deleted)]))

    async def removed():
        return all(h["symbol"] != "ParseHeader" for h in await _search(client, "parse header line"))

    await _eventually(removed, "the deleted file to leave the index")


async def test_bad_search_arguments_get_a_clear_error(indexed):
    client, _, _ = indexed
    for arguments, message in ([{"query": "", "k": 3}], "empty"), ([{"query": "x", "k": 0}], "within 1..200"), (
            [42], "expected arguments"):
        with pytest.raises(Exception, match=message):
            await client.workspace_execute_command_async(
                types.ExecuteCommandParams(command="codeassist.search", arguments=arguments))
    assert (await status(client))["indexStatus"] == "ready"  # still serving


def _stored_summaries(root) -> dict[str, tuple[str, str]]:
    """qualified name -> (code, summary) of the summarized chunks in the index on disk."""
    snapshot = store.load(root / ".codeassist" / "index")
    return {c.qualified_name: (c.text, s) for c, s in zip(snapshot.chunks, snapshot.summaries) if s}


async def test_definitions_are_summarized_into_the_index_and_again_after_an_edit(indexed):
    client, _, root = indexed

    async def all_summarized():
        state = (await status(client))["indexSummaries"]
        return state["state"] == "done" and state["summarized"] == state["definitions"]

    await _eventually(all_summarized, "a summary of every definition")
    assert (await status(client))["indexSummaries"]["definitions"] == 6
    titles = [r.title for reports in client.progress_reports.values() for r in reports if r.kind == "begin"]
    assert "Summarizing definitions" in titles
    assert set(_stored_summaries(root)) == {"Circle", "Circle.__init__", "Circle.area", "perimeter_of_square",
                                           "ParseHeader", "renderPage"}
    # The summaries a hover shows are the ones in the index (one cache).
    path = root / "geometry" / "shapes.py"
    uri = open_document(client, path, path.read_text())
    hover = await client.text_document_hover_async(types.HoverParams(
        types.TextDocumentIdentifier(uri), types.Position(11, 10)))  # on `perimeter_of_square`
    assert f"**Summary:** {_stored_summaries(root)['perimeter_of_square'][1]}" in hover.contents.value

    edited = path.read_text().replace("return 4 * side", "return side + side + side + side")
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(version=2, uri=uri),
        [types.TextDocumentContentChangeWholeDocument(edited)]))
    path.write_text(edited)
    client.text_document_did_save(types.DidSaveTextDocumentParams(types.TextDocumentIdentifier(uri)))

    async def edited_summarized():
        code, _ = _stored_summaries(root).get("perimeter_of_square", ("", ""))
        return "side + side" in code and await all_summarized()

    await _eventually(edited_summarized, "the edited definition's new summary")


async def _cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "codeassist", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


async def test_the_cli_searches_through_the_running_server(indexed):
    client, _, root = indexed
    query = ("search", "area of a circle from its radius", "--dir", str(root), "--in-workspace", "--json", "--k", "3")
    code, out, err = await _cli(*query)
    assert code == 0 and "answered by the running codeassist server" in err, err
    through_server = json.loads(out)
    assert through_server[0]["symbol"] == "Circle.area" and through_server[0]["line"] == 8
    code, out, err = await _cli(*query, "--no-server")
    assert code == 0 and "answered by" not in err
    assert [r["symbol"] for r in json.loads(out)] == [r["symbol"] for r in through_server]
    # Another index than the server's: searched in the CLI's own process.
    code, out, err = await _cli(*query[:-3], "--index-dir", str(root / "elsewhere"), "--json")
    assert code == 0 and "answered by" not in err
    # A bad request gets the server's message; a request without the token gets nothing.
    code, _, err = await _cli("search", " ", "--dir", str(root), "--in-workspace")
    assert code != 0 and "empty" in err
    endpoint = json.loads(endpoint_path(codeassist_home(), root).read_text())
    reader, writer = await asyncio.open_connection("127.0.0.1", endpoint["port"])
    writer.write(json.dumps({"token": "guess", "command": "search", "arguments": {"query": "x"}}).encode() + b"\n")
    assert await reader.read() == b""
    writer.close()


async def test_the_cli_completes_through_the_running_server(indexed, tiny_model_dir):
    _, _, root = indexed
    model = ("--model", str(tiny_model_dir("qwen2.5-coder")), "--device", "cpu")
    location = (f"{root / 'geometry' / 'shapes.py'}:13:12", "--json", "--max-tokens", "4")
    code, out, err = await _cli("complete", *location, *model, "--dtype", "fp32")
    assert code == 0 and "answered by the running codeassist server" in err, err
    served = json.loads(out)
    assert served["server"] is True and served["timings"]["load_ms"] is None and served["tokens"] >= 1
    assert list(served["timings"]["stages_ms"])[:3] == ["wait", "plan", "prompt"]
    code, out, err = await _cli("complete", *location, *model, "--dtype", "fp32", "--no-server")
    assert code == 0 and "answered by" not in err
    assert json.loads(out)["text"] == served["text"]  # greedy: the same text either way
    # Another model than the server's: loaded in the CLI's process.
    code, out, err = await _cli("complete", *location, *model, "--dtype", "bf16")
    assert code == 0 and "answered by" not in err and json.loads(out)["server"] is False
