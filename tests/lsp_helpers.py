"""Start the real `codeassist serve` process and drive it with pytest-lsp's client."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from lsprotocol import types
from pytest_lsp import client_capabilities
from pytest_lsp.client import make_test_lsp_client

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model
from lsp_server.settings import ServerSettings


async def start_server(root: Path, log_file: Path, options: dict, encodings=None, client_spec="neovim"):
    client = make_test_lsp_client()
    await client.start_io(sys.executable, "-m", "codeassist", "serve", "--log-file", str(log_file))
    capabilities = client_capabilities(client_spec)
    if encodings is not None:  # [] = a client that offers none: the server must use utf-16
        capabilities.general = types.GeneralClientCapabilities(position_encodings=encodings or None)
    result = await client.initialize_session(
        types.InitializeParams(
            capabilities=capabilities,
            root_uri=root.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name=root.name)],
            # Code search has its own tests (test_lsp_search.py): off unless asked for.
            initialization_options={"indexEnabled": False, **options},
        )
    )
    return client, result


async def send_raw(client, msg_id: int, method: str, params) -> object:
    """Send a request exactly as given (e.g. malformed params the typed client would refuse)."""
    future = asyncio.get_running_loop().create_future()
    client.protocol._request_futures[msg_id] = future  # the client resolves it by id
    body = json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    client.protocol.writer.write(f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    return await asyncio.wait_for(future, 30)


async def wait_for(predicate, timeout: float = 120.0, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_until_ready(client, timeout: float = 300.0):
    def ready():
        return any("ready on" in m.message for m in client.log_messages)

    await wait_for(ready, timeout, "the model to load")


async def status(client) -> dict:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="codeassist.status", arguments=[])
    )


def open_document(client, path: Path, text: str, language: str = "python", version: int = 1) -> str:
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, language, version, text))
    )
    return uri


def expected_text(model_dir: Path, text: str, cursor: int, path: str, repo: str, **settings) -> str:
    """What the engine answers in this process for the same request (the oracle)."""
    return expected_completion(model_dir, text, cursor, path, repo, **settings).text


def expected_completion(model_dir: Path, text: str, cursor: int, path: str, repo: str, alternatives: int = 0,
                        **settings):
    """The engine's whole answer in this process, with up to `alternatives` others (the
    server's token limit unless `settings` name one)."""
    settings.setdefault("max_new_tokens", ServerSettings.max_new_tokens)
    engine = CompletionEngine(load_model(str(model_dir), device="cpu", dtype="fp32"),
                              EngineSettings(**settings))
    return engine.complete(CompletionRequest(text, cursor, "python", path, repo), alternatives=alternatives)
