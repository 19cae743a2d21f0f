"""The language server object: the wiring of its parts, settings, documents' admission and
lifetime. Handlers live in handlers.py; the request path in completions.py; the model's
lifecycle in model_host.py; transports in transport.py."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import uuid
from concurrent.futures import Future

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from completion import Engine

from .cli_requests import CliRequests
from .client import ClientChannel
from .completions import CompletionService
from .hover import HoverProvider
from .index_summaries import IndexSummaries
from .model_host import ModelHost
from .ngram_feed import NgramFeed
from .protocol import AnsweringProtocol
from .repo_context import CompletionContext
from .scheduler import LatestWinsScheduler
from .search import WorkspaceSearch
from .settings import ServerSettings, merge_settings
from .transport import Transport
from .workspace_files import WorkspaceFiles

logger = logging.getLogger(__name__)


def _installed_version() -> str:
    """The package's version, told to the client at initialize (the CLI reads the same)."""
    try:
        return importlib.metadata.version("codeassist")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class CodeassistServer(LanguageServer):
    """The parts and who owns what: the engine host (`scheduler`) owns the engine's state, so
    every change to it from the event loop is queued there (`run_soon`); `models` decides
    which engine that is; code search, hover summaries and completion context each get only
    what they read."""

    def __init__(self, settings: ServerSettings = ServerSettings()):
        super().__init__("codeassist", _installed_version(), protocol_cls=AnsweringProtocol)
        self.settings = settings  # replaced as a whole; a request keeps the ones it arrived with
        self.client = ClientChannel(self)
        self.scheduler = LatestWinsScheduler()
        self.models = ModelHost(self.client, self._model_ready)
        self.files = WorkspaceFiles(lambda: self.workspace)
        self.ngrams = NgramFeed(self.files, self.scheduler)
        self.code_search = WorkspaceSearch(self.client, self.scheduler)
        self.hovers = HoverProvider(self.files, lambda: self.code_search.index, self.models.summarizer, self.scheduler)
        self.index_summaries = IndexSummaries(self.code_search, self.hovers, self.files, self.client)
        self.code_search.summaries = self.index_summaries
        self.context = CompletionContext(self.files, lambda: self.code_search.index)
        self.completions = CompletionService(self)
        self.cli_requests = CliRequests(self)
        self.oversized: set[str] = set()  # open documents over maxDocumentChars
        self.transport = Transport(lambda: self.protocol)
        self._tasks: set[asyncio.Future] = set()  # started by `background`

    @property
    def engine(self) -> Engine | None:
        return self.models.engine

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
            settings.engine_settings()  # checked here, so that every request's are valid
        except ValueError as error:
            self.tell_client(logging.WARNING, f"settings rejected: {error}")
            return
        self.settings = settings  # each request takes them along (`PreparedRequest.settings`)

    def background(self, work) -> None:
        """Run the coroutine `work` on the event loop, keeping a reference until it ends."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ensure_model(self) -> None:
        """Load (or reload) the model the settings name, off the event loop, with $/progress."""
        await self.models.ensure(self.settings)

    def _model_ready(self, engine: Engine) -> None:
        self.ngrams.new_engine()
        for uri in list(self.workspace.text_documents):
            self.remember_document(uri)
        self.index_summaries.resume()

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
        """Give an open document (and its folder's files) to the engine's repository n-gram
        cache, a draft source; the documents open when the model is ready are given then."""
        engine, document = self.models.engine, self.workspace.text_documents.get(uri)
        if engine is not None and document is not None and not self.too_large(uri, document.source):
            self.ngrams.give(engine, uri, document.source, document.path)

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
        (on the engine host, after a running completion of it has stopped)."""
        self.completions.forget(uri)
        self.scheduler.cancel_key(uri)
        self.oversized.discard(uri)
        relative = self.files.relative(uri)
        if relative is not None:
            self.hovers.worker.drop_background(f"{relative}:")  # its queued summaries

        def forget() -> None:
            if self.models.engine is not None:
                self.models.engine.forget(uri)
            self.context.forget(uri)

        return self.scheduler.run_soon(forget)

    def close(self) -> None:
        self.completions.warm_up.cancel()
        self.scheduler.close()
        self.index_summaries.stop()
        self.cli_requests.stop()
        self.code_search.close()
        self.hovers.close()
        self.ngrams.close()

    @property
    def position_encoding(self) -> str:
        """The negotiated encoding as a plain string ("utf-16", "utf-8" or "utf-32")."""
        encoding = self.workspace.position_encoding
        return str(getattr(encoding, "value", encoding) or "utf-16")
