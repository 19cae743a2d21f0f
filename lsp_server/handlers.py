"""LSP handlers: each converts params to an engine request and the result back to LSP."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from retrieval.search import validate

from . import pygls_adapter
from .documents import LspWorkspace
from .positions import offset_at, position_of
from .completions import PreparedRequest
from .server import CodeassistServer
from .settings import ServerSettings
from .warm_up import CURSOR_NOTIFICATION, OPEN_DELAY_S, identifier_occurrences

ALTERNATIVES = 2  # other suggestions on an explicit inline completion request (3 in all)

logger = logging.getLogger(__name__)


def build_server(settings: ServerSettings = ServerSettings()) -> CodeassistServer:
    server = CodeassistServer(settings)

    @server.feature(types.INITIALIZE)
    def initialize(ls: CodeassistServer, params: types.InitializeParams) -> None:
        # pygls has just made the (still empty) workspace: its documents must count lines as
        # the client does (documents.py).
        pygls_adapter.replace_workspace(ls.protocol, LspWorkspace.like(ls.workspace))
        ls.apply_settings(params.initialization_options)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: CodeassistServer, params: types.InitializedParams) -> None:
        # Both in the background: requests meanwhile get empty answers.
        ls.cli_requests.start()
        await asyncio.gather(ls.ensure_model(), ls.code_search.start(ls.settings, ls.workspace.root_path),
                             ls.watch_files())

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: CodeassistServer, params) -> None:
        # Applied at once, in message order: the messages after it see the new settings.
        ls.apply_settings(params.settings)
        ls.background(asyncio.gather(ls.ensure_model(), ls.code_search.start(ls.settings, ls.workspace.root_path)))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    async def did_open(ls: CodeassistServer, params: types.DidOpenTextDocumentParams) -> None:
        document = params.text_document
        logger.info("opened %s (%s)", document.uri, document.language_id)
        if ls.too_large(document.uri, document.text):
            return
        ls.remember_document(document.uri)  # draft source: repository n-grams
        # Where the cursor is comes next (documentHighlight, the cursor notification); until
        # then the top of the file is the best guess.
        ls.completions.hint_cursor(document.uri, types.Position(0, 0), OPEN_DELAY_S)
        # Hover summaries, made when the model idles (parsing the file is off the event loop).
        await asyncio.get_running_loop().run_in_executor(None, ls.hovers.precompute, document.uri,
                                                         document.text, ls.settings)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: CodeassistServer, params: types.DidCloseTextDocumentParams) -> None:
        logger.info("closed %s", params.text_document.uri)
        ls.close_document(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: CodeassistServer, params: types.DidSaveTextDocumentParams) -> None:
        logger.debug("saved %s", params.text_document.uri)
        ls.remember_document(params.text_document.uri)
        ls.code_search.files_changed([params.text_document.uri])

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls: CodeassistServer, params: types.DidChangeWatchedFilesParams):
        ls.code_search.files_changed([change.uri for change in params.changes])

    @server.command("codeassist.search")
    async def search(ls: CodeassistServer, *args) -> list[dict]:
        try:
            query, k = _search_arguments(args)
            hits = await ls.code_search.search(query, k)
        except ValueError as error:
            raise JsonRpcInvalidParams(message=f"codeassist.search: {error}") from None
        return [_search_result(ls, hit) for hit in hits]

    @server.feature(types.WORKSPACE_SYMBOL)
    async def workspace_symbol(ls: CodeassistServer, params: types.WorkspaceSymbolParams):
        hits = await ls.code_search.symbols(params.query) if params.query.strip() else []
        return [ls.code_search.symbol(hit) for hit in hits]

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_HIGHLIGHT)
    def document_highlight(ls: CodeassistServer, params: types.DocumentHighlightParams):
        """The identifier's occurrences in the document; the position is where the cursor
        rests (VS Code asks on every cursor move), so that place is warmed up."""
        uri = params.text_document.uri
        document = ls.workspace.text_documents.get(uri)
        if document is None or ls.too_large(uri, document.source):
            return []
        ls.completions.hint_cursor(uri, params.position)
        text, encoding = document.source, ls.position_encoding
        try:
            cursor = offset_at(text, params.position.line, params.position.character, encoding)
        except ValueError as error:
            logger.info("documentHighlight at a bad position in %s: %s", uri, error)
            return []
        return [types.DocumentHighlight(types.Range(types.Position(*position_of(text, start, encoding)),
                                                    types.Position(*position_of(text, end, encoding))),
                                        types.DocumentHighlightKind.Text)
                for start, end in identifier_occurrences(text, cursor)]

    @server.feature(CURSOR_NOTIFICATION)
    def cursor_moved(ls: CodeassistServer, params) -> None:
        """Our clients' cursor moves: {"textDocument": {"uri"}, "position": {"line", "character"}}."""
        try:
            uri, line, character = (params.textDocument.uri, params.position.line, params.position.character)
        except AttributeError:
            logger.info("%s without textDocument.uri and position ignored", CURSOR_NOTIFICATION)
            return
        if isinstance(uri, str) and isinstance(line, int) and isinstance(character, int) and line >= 0 <= character:
            ls.completions.hint_cursor(uri, types.Position(line, character))

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(ls: CodeassistServer, params: types.HoverParams) -> types.Hover | None:
        document = ls.workspace.text_documents.get(params.text_document.uri)
        if document is not None and ls.too_large(document.uri, document.source):
            return None
        return await ls.hovers.hover(params.text_document.uri, params.position, ls.position_encoding,
                                     ls.settings)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: CodeassistServer, params: types.InlineCompletionParams):
        if not ls.settings.inline_completion:
            return None
        # Asked for explicitly (a key, not typing): other suggestions too, to cycle through.
        invoked = params.context is not None and \
            params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        prepared, texts = await _suggest(ls, params.text_document.uri, params.position,
                                         ALTERNATIVES if invoked else 0)
        here = types.Range(params.position, params.position)
        return types.InlineCompletionList(items=[types.InlineCompletionItem(text, range=here) for text in texts])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
    async def completion(ls: CodeassistServer, params: types.CompletionParams):
        if not ls.settings.completion:
            return None
        prepared, texts = await _suggest(ls, params.text_document.uri, params.position)
        if not texts:
            return types.CompletionList(is_incomplete=True, items=[])
        return types.CompletionList(is_incomplete=True, items=[_completion_item(ls, prepared, texts[0])])

    @server.command("codeassist.status")
    def status(ls: CodeassistServer, *args) -> dict:
        engine = ls.engine
        info = {
            "model": ls.settings.model if ls.settings.engine == "local" else ls.settings.engine_model or None,
            "modelStatus": ls.models.status,
            "engine": "local" if ls.settings.engine == "local" else {"url": ls.settings.engine},
            "device": None, "dtype": None, "ngramCacheTokens": 0, "kvSessions": None, "speculation": None,
            "maxConcurrentGenerations": ls.scheduler.max_concurrent,
            "positionEncoding": ls.position_encoding,
            "indexStatus": ls.code_search.status,
            "oversizedDocuments": len(ls.oversized),
            "summaries": ls.hovers.stats(),
            "indexSummaries": ls.index_summaries.status(),
            "warmUp": ls.completions.warm_up.status(),
        }
        if engine is not None:
            info.update(engine.status())
        return info

    @server.command("codeassist.documentState")
    def document_state(ls: CodeassistServer, *args) -> dict | None:
        """What the server holds for an open document (`[uri]`): its version, length and the
        SHA-256 of its UTF-8 text, so a client can check that both hold the same text."""
        uri = args[0].get("uri") if len(args) == 1 and isinstance(args[0], dict) else args[0] if args else None
        if not isinstance(uri, str):
            raise JsonRpcInvalidParams('expected arguments ["file:///..."]')
        document = ls.workspace.text_documents.get(uri)
        if document is None:
            return None
        text = document.source
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        return {"uri": uri, "version": document.version, "length": len(text), "sha256": digest}

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: CodeassistServer, params: None) -> None:
        ls.close()

    return server


async def _suggest(ls: CodeassistServer, uri: str, position: types.Position, alternatives: int = 0):
    """(prepared request, the suggestions: the engine's first, then up to `alternatives`
    others; none when there is nothing to suggest) for `position` in `uri`; logs timings."""
    start = time.perf_counter()
    prepared = ls.completions.prepare(uri, position)
    if prepared is None:
        return None, []
    result = await ls.completions.complete(prepared, alternatives)
    texts = [t for t in (result.text, *result.alternatives) if t] if result is not None else []
    logger.info(
        "request %s v%s %d:%d -> %d suggestions, %d chars in %.0f ms (%s; ms: %s)", uri, prepared.version,
        position.line, position.character, len(texts), len(texts[0]) if texts else 0,
        (time.perf_counter() - start) * 1000, result.stop_reason if result else "none",
        " ".join(f"{stage} {ms:.0f}" for stage, ms in result.stages.items()) if result else "-",
    )
    return prepared, texts


def _search_arguments(args) -> tuple[str, int]:
    """(query, k) from `[{"query": ..., "k": ...}]` or `["query", k]`."""
    if len(args) == 1 and isinstance(args[0], dict):
        query, k = args[0].get("query"), args[0].get("k", 10)
    elif args and isinstance(args[0], str):
        query, k = args[0], args[1] if len(args) > 1 else 10
    else:
        raise ValueError('expected arguments [{"query": str, "k": int}]')
    if not isinstance(query, str) or not isinstance(k, int) or isinstance(k, bool):
        raise ValueError(f"query must be a string and k an integer, got {query!r}, {k!r}")
    validate(query, k)
    return query, k


def _search_result(ls: CodeassistServer, hit) -> dict:
    """A JSON location (0-based lines, whole lines) with what was found there."""
    location = ls.code_search.location(hit)
    start, end = location.range.start, location.range.end
    return {
        "uri": location.uri,
        "range": {"start": {"line": start.line, "character": 0},
                  "end": {"line": end.line, "character": 0}},
        "symbol": hit.qualified_name, "kind": hit.kind, "score": hit.score, "snippet": hit.snippet,
    }


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
