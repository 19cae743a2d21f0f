"""LSP handlers: each converts params to an engine request and the result back to LSP."""

from __future__ import annotations

import logging
import time

from lsprotocol import types

from .positions import position_of
from .server import CodeassistServer, PreparedRequest
from .settings import ServerSettings

logger = logging.getLogger(__name__)


def build_server(settings: ServerSettings = ServerSettings()) -> CodeassistServer:
    server = CodeassistServer(settings)

    @server.feature(types.INITIALIZE)
    def initialize(ls: CodeassistServer, params: types.InitializeParams) -> None:
        ls.apply_settings(params.initialization_options)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: CodeassistServer, params: types.InitializedParams) -> None:
        await ls.ensure_model()  # in the background: requests meanwhile get empty answers

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: CodeassistServer, params) -> None:
        ls.apply_settings(params.settings)
        await ls.ensure_model()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: CodeassistServer, params: types.DidOpenTextDocumentParams) -> None:
        logger.info("opened %s (%s)", params.text_document.uri, params.text_document.language_id)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: CodeassistServer, params: types.DidCloseTextDocumentParams) -> None:
        logger.info("closed %s", params.text_document.uri)
        if ls.engine is not None:
            ls.engine.forget(params.text_document.uri)  # free its KV session

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: CodeassistServer, params: types.DidSaveTextDocumentParams) -> None:
        logger.debug("saved %s", params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: CodeassistServer, params: types.InlineCompletionParams):
        if not ls.settings.inline_completion:
            return None
        prepared, text = await _suggest(ls, params.text_document.uri, params.position)
        if not text:
            return types.InlineCompletionList(items=[])
        here = types.Range(params.position, params.position)
        return types.InlineCompletionList(items=[types.InlineCompletionItem(text, range=here)])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
    async def completion(ls: CodeassistServer, params: types.CompletionParams):
        if not ls.settings.completion:
            return None
        prepared, text = await _suggest(ls, params.text_document.uri, params.position)
        if not text:
            return types.CompletionList(is_incomplete=True, items=[])
        return types.CompletionList(is_incomplete=True, items=[_completion_item(ls, prepared, text)])

    @server.command("codeassist.status")
    def status(ls: CodeassistServer, *args) -> dict:
        engine = ls.engine
        return {
            "model": ls.settings.model,
            "modelStatus": ls.model_status,
            "device": str(engine.loaded.device) if engine else None,
            "dtype": engine.loaded.dtype_name if engine else None,
            "maxConcurrentGenerations": ls.scheduler.max_concurrent,
            "positionEncoding": ls.position_encoding,
        }

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: CodeassistServer, params: None) -> None:
        ls.scheduler.close()

    return server


async def _suggest(ls: CodeassistServer, uri: str, position: types.Position):
    """(prepared request, suggestion text or "") for `position` in `uri`; logs timings."""
    start = time.perf_counter()
    prepared = ls.prepare(uri, position)
    if prepared is None:
        return None, ""
    result = await ls.complete(prepared)
    text = result.text if result is not None else ""
    logger.info(
        "request %s v%s %d:%d -> %d chars in %.0f ms (%s)", uri, prepared.version, position.line,
        position.character, len(text), (time.perf_counter() - start) * 1000,
        result.stop_reason if result else "none",
    )
    return prepared, text


def _completion_item(ls: CodeassistServer, prepared: PreparedRequest, text: str):
    """One menu item: the identifier being typed plus the suggestion, as a text edit, so
    clients that filter by the word before the cursor keep it."""
    document_text = prepared.request.text
    encoding = ls.position_encoding
    start = types.Position(*position_of(document_text, prepared.word_start, encoding))
    end = types.Position(*position_of(document_text, prepared.request.cursor, encoding))
    typed = document_text[prepared.word_start : prepared.request.cursor]
    new_text = typed + text
    label = new_text.strip().split("\n", 1)[0][:80] or new_text[:80]
    return types.CompletionItem(
        label=label,
        kind=types.CompletionItemKind.Snippet,
        detail="codeassist",
        documentation=types.MarkupContent(types.MarkupKind.Markdown, f"```\n{new_text}\n```"),
        filter_text=new_text,
        sort_text="0",
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(types.Range(start, end), new_text),
        data={"version": prepared.version},
    )
