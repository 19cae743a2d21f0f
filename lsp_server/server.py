"""The language server object: settings, the model, the scheduler. Handlers live in handlers.py."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from codeassist import __version__
from completion import Completion, CompletionEngine, CompletionRequest, EngineSettings, load_model
from completion.syntax import language_for

from .hover import CodeInsight
from .positions import offset_at
from .scheduler import LatestWinsScheduler
from .search import WorkspaceSearch
from .settings import ServerSettings, merge_settings

logger = logging.getLogger(__name__)

def _word_start(text: str, cursor: int) -> int:
    """Offset where the identifier that ends at `cursor` starts (runs on every keystroke)."""
    start = cursor
    while start > 0 and _is_word_char(text[start - 1]):
        start -= 1
    return start


def _is_word_char(char: str) -> bool:
    return char in "_$" or (char.isascii() and char.isalnum())


@dataclass(frozen=True)
class PreparedRequest:
    """A completion request tied to the document version it was made for."""

    uri: str
    version: int | None
    request: CompletionRequest
    word_start: int  # offset where the identifier under the cursor starts


@dataclass(frozen=True)
class DocumentSnapshot:
    """A document as it was when a request arrived."""

    uri: str
    text: str
    version: int | None
    path: str
    language_id: str | None


# Set for each request as it is read, before later messages are: an async handler starts
# only after the didChange notifications queued behind its request were applied, and the
# request's position refers to the text before them.
_AT_ARRIVAL: contextvars.ContextVar[DocumentSnapshot | None] = contextvars.ContextVar(
    "document_at_arrival", default=None
)


class AnsweringProtocol(LanguageServerProtocol):
    """Two fixes to pygls' protocol. It logs a request whose params do not parse and never
    answers it, so the client waits forever: answer with the JSON-RPC error (-32602).
    And it runs async handlers after later messages: snapshot the request's document first."""

    def _handle_request(self, msg_id, method_name, params):
        _AT_ARRIVAL.set(self._snapshot(params))
        super()._handle_request(msg_id, method_name, params)

    def _snapshot(self, params) -> DocumentSnapshot | None:
        uri = getattr(getattr(params, "text_document", None), "uri", None)
        try:
            document = self.workspace.text_documents.get(uri) if uri else None
        except RuntimeError:  # no workspace before initialize
            return None
        if document is None:
            return None
        return DocumentSnapshot(uri, document.source, document.version, document.path,
                                document.language_id)

    def structure_message(self, data):
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            if isinstance(data, dict) and "id" in data and "method" in data:
                logger.warning("malformed %s request %s answered with %s",
                               data.get("method"), data["id"], type(error).__name__)
                self._send_response(data["id"], error=error.to_response_error())
            raise


class CodeassistServer(LanguageServer):
    def __init__(self, settings: ServerSettings = ServerSettings()):
        super().__init__("codeassist", __version__, protocol_cls=AnsweringProtocol)
        self.settings = settings
        self.scheduler = LatestWinsScheduler()
        self.engine: CompletionEngine | None = None
        self.model_status = "not loaded"  # loading | ready | failed
        self._loaded_key: tuple[str, str, str] | None = None
        self._load_lock = threading.Lock()
        self.code_search = WorkspaceSearch(self)
        self._remembered_folders: set[Path] = set()
        self.insight = CodeInsight(self)  # hover summaries, repository context
        self._refresh_timers: dict[str, asyncio.TimerHandle] = {}  # by document URI

    # --- messages to the client -------------------------------------------------------
    def tell_client(self, level: int, message: str) -> None:
        """Log `message` here and in the client's log (window/logMessage)."""
        logger.log(level, message)
        kind = {
            logging.ERROR: types.MessageType.Error, logging.WARNING: types.MessageType.Warning,
        }.get(level, types.MessageType.Info)
        try:
            self.window_log_message(types.LogMessageParams(type=kind, message=message))
        except Exception:  # no client connected (e.g. during shutdown)
            logger.debug("could not forward a log message", exc_info=True)

    # --- settings and the model ------------------------------------------------------
    def apply_settings(self, options: object) -> None:
        settings, problems = merge_settings(self.settings, options)
        for problem in problems:
            self.tell_client(logging.WARNING, problem)
        try:
            engine_settings = self._engine_settings(settings)
        except ValueError as error:
            self.tell_client(logging.WARNING, f"settings rejected: {error}")
            return
        self.settings = settings
        if self.engine is not None:
            self.engine.settings = engine_settings

    @staticmethod
    def _engine_settings(settings: ServerSettings) -> EngineSettings:
        return EngineSettings(
            max_new_tokens=settings.max_new_tokens,
            time_budget_ms=settings.time_budget_ms,
            max_prompt_tokens=settings.context_tokens,
            context_budget_tokens=settings.repo_context_tokens,
            kv_mode=settings.kv_mode,
            speculative=settings.speculative,
            draft_sources=tuple(name.strip() for name in settings.draft_sources.split(",") if name.strip()),
            max_draft_tokens=settings.max_draft_tokens,
            token_healing=settings.token_healing,
        )

    async def ensure_model(self) -> None:
        """Load (or reload) the model the settings name, off the event loop, with $/progress."""
        if self._loaded_key == self.settings.model_key and self.model_status in ("ready", "loading"):
            return
        settings = self.settings
        self._loaded_key = settings.model_key
        self.model_status = "loading"
        token = f"codeassist-load-{uuid.uuid4().hex[:8]}"
        progress = await self._begin_progress(token, f"Loading {settings.model}")
        start = time.perf_counter()
        try:
            engine = await asyncio.get_running_loop().run_in_executor(None, self._load, settings)
        except Exception as error:  # a bad model name must not take the server down
            self.model_status = "failed"
            self.tell_client(logging.ERROR, f"codeassist: cannot load model {settings.model!r}: {error}")
            message = "failed"
        else:
            if self._loaded_key != settings.model_key:
                return  # settings changed while loading; the newer load owns the status
            self.engine = engine
            # The model, tokenizer and vocabulary are ~540k long-lived objects: a full garbage
            # collection scanning them paused a request for ~175 ms every few completions. Frozen
            # only now that a previous engine is dropped, so that its objects are collected
            # instead of frozen with the new ones.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.model_status = "ready"
            self._remembered_folders.clear()
            for uri in list(self.workspace.text_documents):
                self.remember_document(uri)
            elapsed = time.perf_counter() - start
            self.tell_client(
                logging.INFO,
                f"codeassist: {settings.model} ready on {engine.loaded.device} "
                f"({engine.loaded.dtype_name}) in {elapsed:.1f} s",
            )
            message = "ready"
        if progress:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))

    def _load(self, settings: ServerSettings) -> CompletionEngine:
        with self._load_lock:
            loaded = load_model(settings.model, device=settings.device, dtype=settings.dtype)
            draft = None
            if settings.draft_model:
                draft = load_model(settings.draft_model, device=settings.device, dtype=settings.dtype)
            return CompletionEngine(loaded, self._engine_settings(settings), draft=draft)

    async def _begin_progress(self, token: str, title: str) -> bool:
        capabilities = self.client_capabilities.window
        if capabilities is None or not capabilities.work_done_progress:
            return False
        try:
            await self.work_done_progress.create_async(token)
        except Exception:
            logger.warning("client refused a progress token", exc_info=True)
            return False
        self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title))
        return True

    def remember_document(self, uri: str) -> None:
        """Give the document's text, and once per folder its sibling files of the same kind, to
        the engine's repository n-gram cache (a draft source)."""
        engine = self.engine
        if engine is None:
            return  # the documents open when the model is ready are added then
        document = self.workspace.get_text_document(uri)
        engine.remember_text(uri, document.source)
        folder = Path(document.path).parent
        if uri.startswith("file:") and Path(document.path).suffix and folder not in self._remembered_folders:
            self._remembered_folders.add(folder)
            threading.Thread(target=_remember_siblings, args=(engine, Path(document.path)),
                             name="codeassist-ngrams", daemon=True).start()

    @property
    def position_encoding(self) -> str:
        """The negotiated encoding as a plain string ("utf-16", "utf-8" or "utf-32")."""
        encoding = self.workspace.position_encoding
        return str(getattr(encoding, "value", encoding) or "utf-16")

    # --- completion ------------------------------------------------------------------
    def prepare(self, uri: str, position: types.Position) -> PreparedRequest | None:
        """The engine request for `position` in the open document `uri`; None (logged) when
        the document is unknown or the position is outside it."""
        document = _AT_ARRIVAL.get()
        if document is None or document.uri != uri:
            logger.warning("completion for a document that is not open: %s", uri)
            return None
        text = document.text
        try:
            cursor = offset_at(text, position.line, position.character, self.position_encoding)
        except ValueError as error:
            logger.warning("completion at a bad position in %s: %s", uri, error)
            return None
        request = CompletionRequest(
            text, cursor, language_for(document.path, document.language_id),
            path=self._relative_path(document.path), repo_name=self._repo_name(),
        )
        return PreparedRequest(uri, document.version, request, _word_start(text, cursor))

    async def complete(self, prepared: PreparedRequest) -> Completion | None:
        """Run `prepared` on the model worker; None when superseded, cancelled, or stale."""
        engine = self.engine
        if engine is None:
            logger.info("completion for %s while the model is %s", prepared.uri, self.model_status)
            return None
        self.cancel_refresh(prepared.uri)
        job = self.scheduler.submit(
            prepared.uri,
            lambda cancelled: engine.complete(self.insight.with_context(prepared), cancelled,
                                              session_key=prepared.uri),
        )
        try:
            result = await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            self.scheduler.cancel(job)
            logger.info("completion for %s cancelled by the client", prepared.uri)
            raise
        document = self.workspace.text_documents.get(prepared.uri)
        if result is None or document is None or document.version != prepared.version:
            logger.info("completion for %s v%s superseded", prepared.uri, prepared.version)
            return None
        self._refresh_when_idle(prepared.uri, engine)
        return result

    # --- KV refresh in idle time -----------------------------------------------------
    def _refresh_when_idle(self, uri: str, engine: CompletionEngine) -> None:
        """After a completion that reused an approximate (re-rotated) cache, re-encode the
        document's prompt once the user pauses: the next keystroke then starts from exact
        states, and the engine's own refresh after many edits (a whole prompt encoded on a
        keystroke) does not happen while the user takes pauses."""
        delay_ms = self.settings.kv_refresh_idle_ms
        if delay_ms <= 0 or not engine.needs_refresh(uri):
            return
        self.cancel_refresh(uri)
        loop = asyncio.get_running_loop()
        self._refresh_timers[uri] = loop.call_later(delay_ms / 1000, self._start_refresh, uri, engine)

    def _start_refresh(self, uri: str, engine: CompletionEngine) -> None:
        self._refresh_timers.pop(uri, None)
        if engine is not self.engine:
            return
        # Under the document's key: its next completion stops the refresh (latest wins);
        # any other waiting request stops it too, between two chunks.
        self.scheduler.submit(uri, lambda cancelled: engine.refresh(
            uri, lambda: cancelled() or self.scheduler.waiting()))

    def cancel_refresh(self, uri: str) -> None:
        timer = self._refresh_timers.pop(uri, None)
        if timer is not None:
            timer.cancel()

    def _root(self) -> str | None:
        return self.workspace.root_path

    def _relative_path(self, path: str) -> str:
        root = self._root()
        if root and path.startswith(root.rstrip("/") + "/"):
            return path[len(root.rstrip("/")) + 1 :]
        return path.rsplit("/", 1)[-1]

    def _repo_name(self) -> str | None:
        root = self._root()
        return root.rstrip("/").rsplit("/", 1)[-1] if root else None


def _remember_siblings(engine: CompletionEngine, path: Path, limit: int = 16,
                       max_bytes: int = 256_000) -> None:
    """Files next to `path` with its extension, newest first, into the n-gram cache."""
    try:
        siblings = sorted((p for p in path.parent.glob(f"*{path.suffix}") if p != path and p.is_file()
                           and p.stat().st_size <= max_bytes),
                          key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
        for sibling in siblings:
            engine.remember_text(sibling.as_uri(), sibling.read_text(encoding="utf-8", errors="replace"))
    except OSError as error:
        logger.info("n-gram cache: could not read the files next to %s: %s", path, error)
