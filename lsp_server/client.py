"""What the server tells the client: log messages and $/progress, callable from any thread."""

from __future__ import annotations

import asyncio
import logging
import uuid

from lsprotocol import types
from pygls.lsp.server import LanguageServer

logger = logging.getLogger(__name__)

_MESSAGE_TYPES = {logging.ERROR: types.MessageType.Error, logging.WARNING: types.MessageType.Warning}


class Progress:
    """One $/progress token; a no-op where the client does not take progress."""

    def __init__(self, channel: ClientChannel | None, token: str):
        self._channel, self._token = channel, token

    def report(self, message: str, percentage: int | None = None) -> None:
        """From any thread."""
        if self._channel is not None:
            value = types.WorkDoneProgressReport(message=message, percentage=percentage)
            self._channel.call_soon(self._channel.server.work_done_progress.report, self._token, value)

    def end(self, message: str) -> None:
        if self._channel is not None:
            value = types.WorkDoneProgressEnd(message=message)
            self._channel.call_soon(self._channel.server.work_done_progress.end, self._token, value)
            self._channel = None  # ended once


class ClientChannel:
    def __init__(self, server: LanguageServer):
        self.server = server
        self._loop: asyncio.AbstractEventLoop | None = None

    def tell(self, level: int, message: str) -> None:
        """Log `message` here and in the client's log (window/logMessage)."""
        logger.log(level, message)
        params = types.LogMessageParams(type=_MESSAGE_TYPES.get(level, types.MessageType.Info), message=message)
        self.call_soon(self.server.window_log_message, params)

    async def progress(self, title: str) -> Progress:
        """A begun progress token, when the client takes them."""
        self._loop = asyncio.get_running_loop()  # where other threads' reports are sent
        capabilities = self.server.client_capabilities.window
        if capabilities is None or not capabilities.work_done_progress:
            return Progress(None, "")
        token = f"codeassist-{uuid.uuid4().hex[:8]}"
        try:
            await self.server.work_done_progress.create_async(token)
        except Exception:
            logger.warning("client refused a progress token", exc_info=True)
            return Progress(None, token)
        self.server.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title))
        return Progress(self, token)

    def call_soon(self, send, *args) -> None:
        """Send on the event loop (pygls writes are not thread-safe)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            self._loop = running
        try:
            if running is not None or self._loop is None:
                send(*args)
            else:
                self._loop.call_soon_threadsafe(send, *args)
        except Exception:  # no client connected (e.g. during shutdown)
            logger.debug("could not send to the client", exc_info=True)
