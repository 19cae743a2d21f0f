"""The request path of a completion: the engine request for a place in an open document, run
in the engine host's lane 1 (ghost text and menu items of one keystroke share one run), the
warm-up of places the cursor rests at in lane 2, and the idle refresh after an answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, replace

from lsprotocol import types

from completion import Completion, CompletionRequest, Engine
from completion.stages import Stages
from completion.syntax import language_for

from .idle_refresh import IdleRefresh
from .positions import is_word_char, offset_at
from .protocol import DocumentSnapshot, at_arrival
from .settings import ServerSettings
from .warm_up import HINT_DELAY_S, WarmUp

logger = logging.getLogger(__name__)

CLI_SESSION = "codeassist:cli"  # the KV session and host key of the CLI's completions (never a URI)


def word_start(text: str, cursor: int) -> int:
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


class CompletionService:
    def __init__(self, server):
        self.server = server  # the CodeassistServer: its documents, settings, models and engine host
        self.warm_up = WarmUp(self._warm_at)
        self.idle_refresh = IdleRefresh(server.scheduler, lambda: server.models.engine)

    def prepare(self, uri: str, position: types.Position,
                document: DocumentSnapshot | None = None) -> PreparedRequest | None:
        """The engine request for `position` in the open document `uri` (as it was when the
        request arrived, or `document`); None (logged) when the document is unknown or the
        position is outside it."""
        server = self.server
        document = document or at_arrival()
        if document is None or document.uri != uri:
            logger.warning("completion for a document that is not open: %s", uri)
            return None
        text = document.text
        if server.too_large(uri, text):
            return None
        try:
            cursor = offset_at(text, position.line, position.character, server.position_encoding)
        except ValueError as error:
            logger.warning("completion at a bad position in %s: %s", uri, error)
            return None
        root = server.workspace.root_path
        request = CompletionRequest(text, cursor, language_for(document.path, document.language_id),
                                    path=_relative_path(root, document.path), repo_name=_repo_name(root))
        return PreparedRequest(uri, document.version, request, word_start(text, cursor), server.settings)

    async def complete(self, prepared: PreparedRequest, alternatives: int = 0) -> Completion | None:
        """Run `prepared` on the engine host (with up to `alternatives` other suggestions);
        None when superseded, cancelled, stale, or no model is ready."""
        engine = await self.server.models.current()
        if engine is None:
            logger.info("completion for %s while the model is %s", prepared.uri, self.server.models.status)
            return None
        if self._stale(prepared):
            return None
        self.idle_refresh.cancel(prepared.uri)
        self.warm_up.cancel()  # a request says where the cursor is: a pending guess is out of date

        submitted = time.perf_counter()

        def work(cancelled):
            stages = Stages(submitted)
            stages.lap("wait")  # behind other work on the engine host
            request = self._with_context(prepared)
            stages.lap("context")
            result = engine.complete(request, cancelled, session_key=prepared.uri,
                                     settings=prepared.settings.engine_settings(), alternatives=alternatives)
            return replace(result, stages={**stages.as_dict(), **result.stages})

        # Ghost text and menu items asked for one keystroke share one computation.
        identity = (prepared.version, prepared.request.cursor, prepared.settings, alternatives)
        job = self.server.scheduler.submit(prepared.uri, work, identity)
        try:
            result = await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            self.server.scheduler.cancel(job)
            logger.info("completion for %s cancelled by the client", prepared.uri)
            raise
        if result is None or self._stale(prepared):
            logger.info("completion for %s v%s superseded", prepared.uri, prepared.version)
            return None
        if result.window == "short":
            self._queue_warm_up(prepared, engine, whole_prompt=True)
        self.idle_refresh.after_completion(prepared.uri, engine, self.server.settings.kv_refresh_idle_ms)
        return result

    async def complete_text(self, request: CompletionRequest, settings: ServerSettings) -> Completion | None:
        """A completion of text that is no open document (the CLI's), in lane 1 like a
        keystroke, with one KV session for all of them; None while no model is ready."""
        engine = await self.server.models.current()
        if engine is None:
            return None

        submitted = time.perf_counter()

        def work(cancelled):
            stages = Stages(submitted)
            stages.lap("wait")
            result = engine.complete(request, cancelled, session_key=CLI_SESSION, settings=settings.engine_settings())
            return replace(result, stages={**stages.as_dict(), **result.stages})

        job = self.server.scheduler.submit(CLI_SESSION, work, (request.text, request.cursor, settings))
        return await asyncio.wrap_future(job.future)

    def forget(self, uri: str) -> None:
        """The document closed: nothing of it is refreshed later."""
        self.idle_refresh.cancel(uri)

    def hint_cursor(self, uri: str, position: types.Position, delay_s: float = HINT_DELAY_S) -> None:
        """The user's cursor rests at `position` in `uri`: warm that place up, debounced."""
        if self.server.settings.warm_up and self.server.models.engine is not None:
            self.warm_up.hint(uri, position, delay_s)

    def _with_context(self, prepared: PreparedRequest) -> CompletionRequest:
        """The request with repository snippets when its settings ask for them (on the host)."""
        if prepared.settings.repo_context:
            return self.server.context.add_to(prepared.request, prepared.uri)
        return prepared.request

    def _warm_at(self, uri: str, position: types.Position) -> None:
        """Queue the warm-up of `position` in `uri` on the engine host's lane 2."""
        engine, current = self.server.models.engine, self.server.workspace.text_documents.get(uri)
        if engine is None or current is None:
            return
        snapshot = DocumentSnapshot(uri, current.source, current.version, current.path, current.language_id)
        prepared = self.prepare(uri, position, snapshot)
        if prepared is not None:
            self._queue_warm_up(prepared, engine)

    def _queue_warm_up(self, prepared: PreparedRequest, engine: Engine, whole_prompt: bool = False) -> None:
        """Encode the prompt of `prepared`'s place in lane 2. `whole_prompt`: the place was
        answered from its first window; its whole prompt grows in a side session, so the keys
        typed meanwhile keep reusing the window's session and stop this between layers (it is
        not their session: another scheduler key)."""
        uri = prepared.uri
        encode = engine.grow if whole_prompt else engine.warm
        loop = asyncio.get_running_loop()

        def work(cancelled):
            if self._stale(prepared):
                return None
            result = encode(self._with_context(prepared), cancelled, session_key=uri,
                            settings=prepared.settings.engine_settings())
            self.warm_up.record(result)
            if result and result.get("finished") and result.get("window") == "short":
                # a far place warmed as its first window: the whole prompt grows behind it
                with contextlib.suppress(RuntimeError):  # the server closed meanwhile
                    loop.call_soon_threadsafe(self._queue_warm_up, prepared, engine, True)
            return result

        self.server.scheduler.warm(f"{uri}#whole-prompt" if whole_prompt else uri, work)

    def _stale(self, prepared: PreparedRequest) -> bool:
        """Whether the document was closed or changed since `prepared` was made."""
        document = self.server.workspace.text_documents.get(prepared.uri)
        return document is None or document.version != prepared.version


def _relative_path(root: str | None, path: str) -> str:
    if root and path.startswith(root.rstrip("/") + "/"):
        return path[len(root.rstrip("/")) + 1 :]
    return path.rsplit("/", 1)[-1]


def _repo_name(root: str | None) -> str | None:
    return root.rstrip("/").rsplit("/", 1)[-1] if root else None
