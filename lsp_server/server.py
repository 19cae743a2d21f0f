"""The language server object: settings, the model, the scheduler. Handlers live in handlers.py."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import importlib.metadata
import logging
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from completion import Completion, CompletionEngine, CompletionRequest, Engine, EngineSettings, load_model
from completion.remote_engine import open_remote_engine
from completion.summarize import Summarizer
from completion.syntax import language_for
from retrieval.files import read_text

from . import pygls_adapter
from .cli_requests import CliRequests
from .client import ClientChannel
from .hover import HoverProvider
from .index_summaries import IndexSummaries
from .positions import is_word_char, offset_at
from .repo_context import CompletionContext
from .scheduler import LatestWinsScheduler
from .search import WorkspaceSearch
from .settings import ServerSettings, merge_settings
from .transport import Transport
from .warm_up import HINT_DELAY_S, WarmUp
from .workspace_files import WorkspaceFiles

logger = logging.getLogger(__name__)

CLI_SESSION = "codeassist:cli"  # the KV session and host key of the CLI's completions (never a URI)


def _word_start(text: str, cursor: int) -> int:
    """Offset where the identifier that ends at `cursor` starts (runs on every keystroke)."""
    start = cursor
    while start > 0 and is_word_char(text[start - 1]):
        start -= 1
    return start


@dataclass(frozen=True)
class PreparedRequest:
    """A completion request tied to the document version it was made for."""

    uri: str
    version: int | None
    request: CompletionRequest
    word_start: int  # offset where the identifier under the cursor starts
    settings: ServerSettings  # as they were when the request arrived


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
                pygls_adapter.send_error_response(self, data["id"], error.to_response_error())
            raise


def _installed_version() -> str:
    """The package's version, told to the client at initialize (the CLI reads the same)."""
    try:
        return importlib.metadata.version("codeassist")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class CodeassistServer(LanguageServer):
    """The parts and who owns what: the model worker (`scheduler`) owns the engine's state,
    so every change to it from the event loop is queued there (`run_soon`); code search,
    hover summaries and completion context each get only what they read."""

    def __init__(self, settings: ServerSettings = ServerSettings()):
        super().__init__("codeassist", _installed_version(), protocol_cls=AnsweringProtocol)
        self.settings = settings  # replaced as a whole; a request keeps the ones it arrived with
        self.client = ClientChannel(self)
        self.scheduler = LatestWinsScheduler()
        self.engine: Engine | None = None
        self.model_status = "not loaded"  # loading | ready | failed
        self._loaded_key: tuple[str, ...] | None = None
        self._load_lock = threading.Lock()
        self._summarizer: Summarizer | None = None
        self.files = WorkspaceFiles(lambda: self.workspace)
        self.code_search = WorkspaceSearch(self.client, self.scheduler)
        self.hovers = HoverProvider(self.files, lambda: self.code_search.index, self.summarizer, self.scheduler)
        self.index_summaries = IndexSummaries(self.code_search, self.hovers, self.files, self.client)
        self.code_search.summaries = self.index_summaries
        self.cli_requests = CliRequests(self)
        self.context = CompletionContext(self.files, lambda: self.code_search.index)
        # Files are tokenized for the n-gram cache here, off the event loop and the worker.
        self._tokenizer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codeassist-ngrams")
        self._remembered_folders: set[Path] = set()
        self.oversized: set[str] = set()  # open documents over maxDocumentChars
        self._refresh_timers: dict[str, asyncio.TimerHandle] = {}  # by document URI
        self.transport = Transport(lambda: self.protocol)
        self.warm_up = WarmUp(self._warm_at)
        self._tasks: set[asyncio.Future] = set()  # started by `background`

    def tell_client(self, level: int, message: str) -> None:
        """Log `message` here and in the client's log (window/logMessage)."""
        self.client.tell(level, message)

    # --- transports (transport.py) ---------------------------------------------------
    def start_io(self, stdin=None, stdout=None) -> None:
        try:
            self.transport.serve_stdio(stdin, stdout)
        finally:
            self.shutdown()

    def start_tcp(self, host: str, port: int, token: str | None = None) -> None:
        """Serve one client at a time on host:port. With `token`, the client's initialize must
        carry it (initializationOptions.authToken), else the connection is closed."""
        self.transport.token = token
        try:
            self.transport.serve_tcp(host, port)
        finally:
            self.shutdown()

    # --- settings and the model ------------------------------------------------------
    def apply_settings(self, options: object) -> None:
        settings, problems = merge_settings(self.settings, options)
        for problem in problems:
            self.tell_client(logging.WARNING, problem)
        try:
            self._engine_settings(settings)  # checked here, so that every request's are valid
        except ValueError as error:
            self.tell_client(logging.WARNING, f"settings rejected: {error}")
            return
        self.settings = settings  # each request takes them along (`PreparedRequest.settings`)

    def background(self, work) -> None:
        """Run the coroutine `work` on the event loop, keeping a reference until it ends."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _engine_settings(settings: ServerSettings) -> EngineSettings:
        return EngineSettings(
            max_new_tokens=settings.max_new_tokens,
            time_budget_ms=settings.time_budget_ms,
            max_prompt_tokens=settings.context_tokens,
            first_window_tokens=settings.first_window_tokens,
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
        what = settings.model if settings.engine == "local" else f"the engine at {settings.engine}"
        progress = await self.client.progress(f"Loading {what}")
        start = time.perf_counter()
        try:
            engine = await asyncio.get_running_loop().run_in_executor(None, self._load, settings)
        except Exception as error:  # a bad model name must not take the server down
            self.model_status = "failed"
            failed = f"model {settings.model!r}" if settings.engine == "local" else what
            self.tell_client(logging.ERROR, f"codeassist: cannot load {failed}: {error}")
            message = "failed"
        else:
            if self._loaded_key != settings.model_key:
                # Settings changed while loading; the newer load owns the status.
                progress.end(f"{what}: replaced by a newer model setting")
                return
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
            self.index_summaries.resume()
            elapsed = time.perf_counter() - start
            loaded = getattr(engine, "loaded", None)
            where = f"{loaded.device} ({loaded.dtype_name})" if loaded else "a remote engine"
            self.tell_client(logging.INFO, f"codeassist: {what} ready on {where} in {elapsed:.1f} s")
            message = "ready"
        progress.end(message)

    def _load(self, settings: ServerSettings) -> Engine:
        with self._load_lock:
            if settings.engine != "local":
                api_key = os.environ.get(settings.engine_api_key_env) if settings.engine_api_key_env else None
                return open_remote_engine(settings.engine, settings.engine_model, api_key,
                                          self._engine_settings(settings))
            loaded = load_model(settings.model, device=settings.device, dtype=settings.dtype)
            draft = None
            if settings.draft_model:
                draft = load_model(settings.draft_model, device=settings.device, dtype=settings.dtype)
            return CompletionEngine(loaded, self._engine_settings(settings), draft=draft)

    def summarizer(self) -> Summarizer | None:
        """The summarizer of the loaded model; None while none is loaded."""
        loaded = getattr(self.engine, "loaded", None)  # a remote engine has no local model
        if loaded is None:
            return None
        if self._summarizer is None or self._summarizer.loaded is not loaded:
            self._summarizer = Summarizer(loaded)
        return self._summarizer

    async def watch_files(self) -> None:
        """Ask the client to report file changes in the workspace, when it can and the
        index is on (workspace/didChangeWatchedFiles)."""
        workspace = self.client_capabilities.workspace
        watched = workspace.did_change_watched_files if workspace else None
        if not self.settings.index_enabled or not (watched and watched.dynamic_registration):
            return
        options = types.DidChangeWatchedFilesRegistrationOptions(
            watchers=[types.FileSystemWatcher(glob_pattern="**/*")])
        registration = types.Registration(f"codeassist-watch-{uuid.uuid4().hex[:8]}",
                                          types.WORKSPACE_DID_CHANGE_WATCHED_FILES, options)
        try:
            await self.client_register_capability_async(types.RegistrationParams(registrations=[registration]))
        except Exception:
            logger.warning("client refused to watch files; re-indexing on save only", exc_info=True)

    # --- documents -------------------------------------------------------------------
    def remember_document(self, uri: str) -> None:
        """Give an open document's text, and once per folder its sibling files of the same
        kind, to the engine's repository n-gram cache (a draft source). Tokenized off the
        event loop; the cache itself changes on the model worker."""
        engine, document = self.engine, self.workspace.text_documents.get(uri)
        if engine is None or not engine.learns_from_files or document is None \
                or self.too_large(uri, document.source):
            return  # the documents open when the model is ready are added then
        self._tokenizer_thread.submit(self._remember_text, engine, uri, document.source)
        path = Path(document.path)
        inside = self.files.relative(uri) is not None  # siblings only from the workspace
        if inside and path.suffix and path.parent not in self._remembered_folders:
            self._remembered_folders.add(path.parent)
            self._tokenizer_thread.submit(self._remember_siblings, engine, path)

    def _remember_text(self, engine: Engine, key: str, text: str) -> None:
        ids = engine.encode([text])[0] if text else []
        self.scheduler.run_soon(lambda: engine.remember_tokens(key, ids))

    def _remember_siblings(self, engine: Engine, path: Path, limit: int = 16,
                           max_bytes: int = 256_000) -> None:
        """Files next to `path` with its extension, newest first."""
        try:
            root = self.files.root()
            siblings = sorted((p for p in path.parent.glob(f"*{path.suffix}") if p != path and not p.is_symlink()
                               and p.is_file() and p.stat().st_size <= max_bytes
                               and root is not None and p.resolve().is_relative_to(root.resolve())),
                              key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
            for sibling in siblings:
                text = read_text(sibling, max_bytes)
                if text is not None:
                    self._remember_text(engine, sibling.as_uri(), text)
        except OSError as error:
            logger.info("n-gram cache: could not read the files next to %s: %s", path, error)

    def too_large(self, uri: str, text: str) -> bool:
        """Whether the document is over `maxDocumentChars`: it stays in sync, but gets no
        completion, summaries, n-gram or index work (logged once per document)."""
        if len(text) <= self.settings.max_document_chars:
            self.oversized.discard(uri)
            return False
        if uri not in self.oversized:
            self.oversized.add(uri)
            logger.warning("%s has %d characters (maxDocumentChars %d): no model work for it",
                           uri, len(text), self.settings.max_document_chars)
        return True

    def close_document(self, uri: str) -> Future:
        """Stop the document's work and free what the engine and the context keep for it
        (on the model worker, after a running completion of it has stopped)."""
        self.cancel_refresh(uri)
        self.scheduler.cancel_key(uri)
        self.oversized.discard(uri)
        relative = self.files.relative(uri)
        if relative is not None:
            self.hovers.worker.drop_background(f"{relative}:")  # its queued summaries

        def forget() -> None:
            if self.engine is not None:
                self.engine.forget(uri)
            self.context.forget(uri)

        return self.scheduler.run_soon(forget)

    def close(self) -> None:
        self.warm_up.cancel()
        self.scheduler.close()
        self.index_summaries.stop()
        self.cli_requests.stop()
        self.code_search.close()
        self.hovers.close()
        self._tokenizer_thread.shutdown(wait=False, cancel_futures=True)

    @property
    def position_encoding(self) -> str:
        """The negotiated encoding as a plain string ("utf-16", "utf-8" or "utf-32")."""
        encoding = self.workspace.position_encoding
        return str(getattr(encoding, "value", encoding) or "utf-16")

    # --- completion ------------------------------------------------------------------
    def prepare(self, uri: str, position: types.Position,
                document: DocumentSnapshot | None = None) -> PreparedRequest | None:
        """The engine request for `position` in the open document `uri` (as it was when the
        request arrived, or `document`); None (logged) when the document is unknown or the
        position is outside it."""
        document = document or _AT_ARRIVAL.get()
        if document is None or document.uri != uri:
            logger.warning("completion for a document that is not open: %s", uri)
            return None
        text = document.text
        if self.too_large(uri, text):
            return None
        try:
            cursor = offset_at(text, position.line, position.character, self.position_encoding)
        except ValueError as error:
            logger.warning("completion at a bad position in %s: %s", uri, error)
            return None
        request = CompletionRequest(
            text, cursor, language_for(document.path, document.language_id),
            path=self._relative_path(document.path), repo_name=self._repo_name(),
        )
        return PreparedRequest(uri, document.version, request, _word_start(text, cursor), self.settings)

    async def complete(self, prepared: PreparedRequest, alternatives: int = 0) -> Completion | None:
        """Run `prepared` on the model worker (with up to `alternatives` other suggestions);
        None when superseded, cancelled, or stale.
        A request made while the model loads waits for it: the cursor gets its suggestion
        once the model is ready, unless the client has moved on (cancelled, or a newer text)."""
        while self.engine is None and self.model_status == "loading":
            await asyncio.sleep(0.1)
        engine = self.engine
        if engine is None:
            logger.info("completion for %s while the model is %s", prepared.uri, self.model_status)
            return None
        if self._stale(prepared):
            return None
        self.cancel_refresh(prepared.uri)
        self.warm_up.cancel()  # a request says where the cursor is: a pending guess is out of date
        def work(cancelled):
            return engine.complete(self._with_context(prepared), cancelled, session_key=prepared.uri,
                                   settings=self._engine_settings(prepared.settings), alternatives=alternatives)

        # Ghost text and menu items asked for one keystroke share one computation.
        identity = (prepared.version, prepared.request.cursor, prepared.settings, alternatives)
        job = self.scheduler.submit(prepared.uri, work, identity)
        try:
            result = await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            self.scheduler.cancel(job)
            logger.info("completion for %s cancelled by the client", prepared.uri)
            raise
        if result is None or self._stale(prepared):
            logger.info("completion for %s v%s superseded", prepared.uri, prepared.version)
            return None
        if result.window == "short":
            self._queue_warm_up(prepared, engine)  # grow it to the whole prompt, in lane 2
        self._refresh_when_idle(prepared.uri, engine)
        return result

    async def complete_text(self, request: CompletionRequest, settings: ServerSettings) -> Completion | None:
        """A completion of text that is no open document (the CLI's), in lane 1 like a
        keystroke, with one KV session for all of them; None while no model is ready."""
        while self.engine is None and self.model_status == "loading":
            await asyncio.sleep(0.1)
        engine = self.engine
        if engine is None:
            return None

        def work(cancelled):
            return engine.complete(request, cancelled, session_key=CLI_SESSION,
                                   settings=self._engine_settings(settings))

        job = self.scheduler.submit(CLI_SESSION, work, (request.text, request.cursor, settings))
        return await asyncio.wrap_future(job.future)

    def _with_context(self, prepared: PreparedRequest) -> CompletionRequest:
        """The request with repository snippets when its settings ask for them (on the host)."""
        if prepared.settings.repo_context:
            return self.context.add_to(prepared.request, prepared.uri)
        return prepared.request

    # --- warm-up (warm_up.py) ----------------------------------------------------------
    def hint_cursor(self, uri: str, position: types.Position, delay_s: float = HINT_DELAY_S) -> None:
        """The user's cursor rests at `position` in `uri`: warm that place up, debounced."""
        if self.settings.warm_up and self.engine is not None:
            self.warm_up.hint(uri, position, delay_s)

    def _warm_at(self, uri: str, position: types.Position) -> None:
        """Queue the warm-up of `position` in `uri` on the engine host's lane 2."""
        engine, current = self.engine, self.workspace.text_documents.get(uri)
        if engine is None or current is None:
            return
        snapshot = DocumentSnapshot(uri, current.source, current.version, current.path, current.language_id)
        prepared = self.prepare(uri, position, snapshot)
        if prepared is not None:
            self._queue_warm_up(prepared, engine)

    def _queue_warm_up(self, prepared: PreparedRequest, engine: Engine) -> None:
        uri = prepared.uri

        def work(cancelled):
            if self._stale(prepared):
                return None
            result = engine.warm(self._with_context(prepared), cancelled, session_key=uri,
                                 settings=self._engine_settings(prepared.settings))
            self.warm_up.record(result)
            return result

        self.scheduler.warm(uri, work)

    def _stale(self, prepared: PreparedRequest) -> bool:
        """Whether the document was closed or changed since `prepared` was made."""
        document = self.workspace.text_documents.get(prepared.uri)
        return document is None or document.version != prepared.version

    # --- KV refresh in idle time -----------------------------------------------------
    def _refresh_when_idle(self, uri: str, engine: Engine) -> None:
        """Once the user pauses after a completion, re-encode the document's prompt if its
        cache is approximate (re-rotated; checked then, after any warm-up grew it): the next
        keystroke then starts from exact states, and the engine's own refresh after many edits
        (a whole prompt encoded on a keystroke) does not happen while the user takes pauses."""
        delay_ms = self.settings.kv_refresh_idle_ms
        if delay_ms <= 0:
            return
        self.cancel_refresh(uri)
        loop = asyncio.get_running_loop()
        self._refresh_timers[uri] = loop.call_later(delay_ms / 1000, self._start_refresh, uri, engine)

    def _start_refresh(self, uri: str, engine: Engine) -> None:
        self._refresh_timers.pop(uri, None)
        if engine is not self.engine or not engine.needs_refresh(uri):
            return
        # The host's background lane: any request or warm-up stops it (between layers).
        self.scheduler.background(uri, lambda cancelled: engine.refresh(uri, cancelled))

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
