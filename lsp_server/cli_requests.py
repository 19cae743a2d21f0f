"""What `codeassist search` and `codeassist complete` ask a running server of their folder
for (through local_endpoint.py): a search of its index, a completion with its loaded model.
The CLI then skips loading the encoder, the index or the model itself. A request the server
cannot answer as the CLI would (another model, another index, nothing loaded yet) is
declined, and the CLI does the work in its own process."""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import replace

from completion import CompletionRequest
from completion.home import codeassist_home

from .local_endpoint import LocalEndpoint, Unavailable

logger = logging.getLogger(__name__)

COMPLETE_TIMEOUT_S = 600.0


class CliRequests:
    def __init__(self, server):
        self._server = server  # a CodeassistServer
        self._endpoint: LocalEndpoint | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """(On the event loop, once the workspace root is known.)"""
        root = self._server.files.root()
        if root is None or self._endpoint is not None:
            return
        self._loop = asyncio.get_running_loop()
        try:
            endpoint = LocalEndpoint(codeassist_home(), root, self.answer)
            endpoint.start()
        except OSError as error:  # the CLI then loads what it needs itself
            logger.warning("no endpoint for the CLI: %s", error)
            return
        self._endpoint = endpoint

    def stop(self) -> None:
        if self._endpoint is not None:
            self._endpoint.stop()
            self._endpoint = None

    def answer(self, command: str, arguments: dict):
        """(On an endpoint thread.)"""
        if command == "search":
            return self._server.code_search.answer_cli(arguments)
        if command == "complete":
            future = asyncio.run_coroutine_threadsafe(self._complete(arguments), self._loop)
            return future.result(COMPLETE_TIMEOUT_S)
        raise ValueError(f"unknown command {command!r}")

    async def _complete(self, arguments: dict) -> dict:
        from completion.models import resolve_model  # "auto" on both sides: compare what runs

        server = self._server
        settings = server.settings
        device = arguments.get("device")
        wanted = (resolve_model(arguments.get("model"), device if isinstance(device, str) else "auto"), device,
                  arguments.get("dtype"))
        if settings.engine != "local" or wanted != (resolve_model(settings.model, settings.device),
                                                    settings.device, settings.dtype):
            raise Unavailable("the server runs another model")
        text, cursor = arguments.get("text"), arguments.get("cursor")
        if not isinstance(text, str) or not isinstance(cursor, int) or not 0 <= cursor <= len(text):
            raise ValueError("complete needs text and a cursor offset within it")
        try:
            settings = replace(settings, max_new_tokens=int(arguments.get("max_tokens", settings.max_new_tokens)),
                               context_tokens=int(arguments.get("context_tokens", settings.context_tokens)),
                               time_budget_ms=float(arguments.get("time_budget_ms") or math.inf))
            request = CompletionRequest(text, cursor, arguments.get("language"),
                                        path=str(arguments.get("path", "")), repo_name=str(arguments.get("repo_name", "")))
        except (TypeError, ValueError) as error:
            raise ValueError(f"bad complete arguments: {error}") from None
        result = await server.completions.complete_text(request, settings)
        if result is None:
            raise Unavailable(f"the model is {server.models.status}")
        loaded = getattr(server.engine, "loaded", None)
        return {**{name: getattr(result, name) for name in ("text", "tokens", "prompt_tokens", "prompt_ms",
                                                            "decode_ms", "stop_reason", "multiline", "model")},
                "stages_ms": result.stages,
                "device": str(loaded.device) if loaded else None, "dtype": loaded.dtype_name if loaded else None}
