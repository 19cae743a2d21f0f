"""How bytes reach the server: stdio, or TCP with a token; one framed body at a time is
checked (framing.parse_body, the token, a second initialize) and handed to pygls.

A TCP connection becomes the session only with a valid `initialize` (carrying the token
when one is set), sent within SESSION_DEADLINE_S of connecting. Before that it is a
stranger: it may not hold the session, block the real client, or end the server by closing.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import sys
import threading
from collections.abc import Awaitable, Callable

from pygls.io_ import StdoutWriter
from pygls.protocol import LanguageServerProtocol

from . import pygls_adapter
from .framing import PARSE_ERROR, BufferedByteReader, frame, parse_body, read_message, read_messages

logger = logging.getLogger(__name__)

SESSION_DEADLINE_S = 10.0  # a TCP client sends its initialize within this


class Transport:
    """Reads messages for `protocol` and decides which connection is the session."""

    def __init__(self, protocol: Callable[[], LanguageServerProtocol], token: str | None = None):
        self._protocol = protocol
        self.token = token
        self.stop_event = threading.Event()
        self._initialize_seen = False
        self._session_writer: asyncio.StreamWriter | None = None

    # --- stdio -----------------------------------------------------------------------
    def serve_stdio(self, stdin=None, stdout=None) -> None:
        stdin = stdin or sys.stdin.buffer
        read_some = getattr(stdin, "read1", stdin.read)
        self._protocol().set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        self._run(lambda: read_messages(
            BufferedByteReader(lambda n: asyncio.get_running_loop().run_in_executor(None, read_some, n)),
            self.deliver, self.stop_event.is_set))

    # --- TCP -------------------------------------------------------------------------
    def serve_tcp(self, host: str, port: int) -> None:
        """Serve one session at a time on host:port; it ends the server when it closes."""
        listening: asyncio.Server | None = None

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            incoming = BufferedByteReader(reader.read)
            try:
                if not await self._open_session(incoming, writer):
                    return
                await read_messages(incoming, self.deliver, self.stop_event.is_set)
            except ConnectionError as error:
                logger.info("the TCP connection ended: %s", error)
            finally:
                writer.close()
                if self._session_writer is writer:
                    logger.info("the TCP client disconnected: shutting down")
                    self.stop_event.set()
                    listening.close()

        async def serve() -> None:
            nonlocal listening
            listening = await asyncio.start_server(connection, host, port)
            logger.info("listening on %s:%d", host, port)  # clients (and tests) may connect from here on
            async with listening:
                try:
                    await listening.serve_forever()
                except asyncio.CancelledError:
                    pass

        self._run(serve)

    async def _open_session(self, incoming: BufferedByteReader, writer: asyncio.StreamWriter) -> bool:
        """Whether this connection became the session: its first message, read within the
        deadline, is a valid initialize, and no other connection holds the session."""
        if self._session_writer is not None:
            logger.warning("refused a second TCP client while one is connected")
            return False
        try:
            body = await asyncio.wait_for(read_message(incoming), SESSION_DEADLINE_S)
        except asyncio.TimeoutError:
            logger.warning("a TCP connection sent no initialize within %.0f s: closed", SESSION_DEADLINE_S)
            return False
        if body is None:
            logger.info("a TCP connection closed before its initialize")
            return False
        refusal = self._session_refusal(body)
        if refusal is None and self._session_writer is not None:
            refusal = "another client holds the session"
        if refusal is not None:
            logger.warning("TCP connection refused: %s", refusal)
            msg_id = _request_id(body)
            writer.write(frame({"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32600, "message": refusal}}))
            await writer.drain()
            return False
        self._session_writer = writer
        self._protocol().set_writer(writer)
        self.deliver(body)
        return True

    def _session_refusal(self, body: bytes) -> str | None:
        """Why `body` cannot open a session (None: it can)."""
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):
            return "the first message must be initialize"
        if not isinstance(message, dict) or message.get("method") != "initialize":
            return "the first message must be initialize"
        return self._token_refusal(_token_of(message))

    # --- every message ---------------------------------------------------------------
    def deliver(self, body: bytes) -> bool:
        """One framed body: checked, then handed to pygls; anything wrong is answered,
        never dropped. False when the body is not JSON (the reader resynchronises)."""
        protocol = self._protocol()
        message, error = parse_body(body, lambda msg_id: pygls_adapter.is_pending_request(protocol, msg_id),
                                    pygls_adapter.is_shut_down(protocol))
        if error is None and message.get("method") == "initialize":
            error = self._check_initialize(message)
        if error is not None:
            logger.warning("LSP input refused: %s", error["error"]["message"])
            if message is None or "id" in message:  # requests, and bodies that do not parse
                pygls_adapter.send_raw(protocol, error)
            return error["error"]["code"] != PARSE_ERROR
        if "method" in message:
            message.setdefault("params", None)  # optional in JSON-RPC; pygls' types require the key
        try:
            protocol.handle_message(protocol.structure_message(message))
        except Exception:  # malformed params are answered by the protocol
            logger.warning("could not handle a %s message", message.get("method", "response"), exc_info=True)
        return True

    def _check_initialize(self, message: dict) -> dict | None:
        """The error for an initialize that must be refused, else None (and the token is
        taken out of the options)."""
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        options = params.get("initializationOptions")
        given = options.pop("authToken", None) if isinstance(options, dict) else None
        if self._initialize_seen:
            refusal = "initialize was already received: the workspace is fixed for this session"
        else:
            refusal = self._token_refusal(given)
        if refusal is not None:
            return {"jsonrpc": "2.0", "id": message.get("id"), "error": {"code": -32600, "message": refusal}}
        self._initialize_seen = True
        return None

    def _token_refusal(self, given: object) -> str | None:
        if self.token and not (isinstance(given, str)  # bytes: any text compares safely
                               and hmac.compare_digest(given.encode(), self.token.encode())):
            return "initializationOptions.authToken is missing or wrong"
        return None

    # --- the event loop --------------------------------------------------------------
    def _run(self, main: Callable[[], Awaitable[None]]) -> None:
        """Run `main` until the input ends or `exit`; SystemExit carries exit's code."""
        exit_code = 0
        try:
            asyncio.run(main())
        except BrokenPipeError:
            logger.error("the connection to the client is lost; shutting down")
        except KeyboardInterrupt:
            pass
        except SystemExit as exiting:  # the `exit` notification: 1 without `shutdown` before it
            exit_code = exiting.code or 0
        if exit_code:
            raise SystemExit(exit_code)


def _token_of(message: dict) -> object:
    params = message.get("params")
    options = params.get("initializationOptions") if isinstance(params, dict) else None
    return options.get("authToken") if isinstance(options, dict) else None


def _request_id(body: bytes) -> object:
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    msg_id = message.get("id") if isinstance(message, dict) else None
    return msg_id if isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool) else None
