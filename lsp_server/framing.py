"""Reading LSP messages from a byte stream, robustly.

pygls' reader matches `Content-Length: N\\r\\n` exactly and otherwise waits for a header it
never gets: one malformed header left the server deaf. This reader takes header names in
any case, LF or CRLF line ends and any spacing; skips what is not a header until the next
`Content-Length`, wherever it starts in a line or inside a body that does not parse
(resynchronising after garbage, glued headers and short bodies); refuses a
length it cannot trust (negative, not a number, over MAX_MESSAGE_BYTES) with a log line;
and answers what is not a JSON-RPC message as JSON-RPC says: -32700 for a body that does
not parse (id null), -32600 for one that is not a request or notification, a duplicate id,
or a request after `shutdown`. Messages that pass go to pygls' protocol unchanged.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a 20 MB document in one didOpen still fits
MAX_HEADER_LINE = 8 * 1024
_SKIP_CHUNK = 1 << 20
_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*(-?[0-9]+)[ \t]*$", re.IGNORECASE)
_HEADER = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*[ \t]*:")
_HEADER_NAME = b"content-length"
_HEADER_ANYWHERE = re.compile(rb"content-length[ \t]*:", re.IGNORECASE)
PARSE_ERROR, INVALID_REQUEST = -32700, -32600


class ByteReader(Protocol):
    def readline(self, limit: int) -> Awaitable[bytes]: ...

    def read(self, count: int) -> Awaitable[bytes]: ...

    def unread(self, data: bytes) -> None: ...


async def read_messages(reader: ByteReader, deliver: Callable[[bytes], bool],
                        stopped: Callable[[], bool]) -> None:
    """Read framed bodies and `deliver` each one, until end of stream or `stopped()`.
    `deliver` returns False for a body that is not JSON: a Content-Length shorter than the
    body it announced swallows the start of the next message, so the reader resynchronises
    on the first header inside that body."""
    while not stopped():
        body = await read_message(reader)
        if body is None:
            return
        if deliver(body) is False:
            _resynchronise(reader, body)


async def read_message(reader: ByteReader) -> bytes | None:
    """The next framed body, skipping what is not a frame; None at the end of the stream."""
    length: int | None = None
    while True:
        line = await reader.readline(MAX_HEADER_LINE)
        if not line:
            return None
        if not line.endswith(b"\n") and len(line) >= MAX_HEADER_LINE:
            logger.warning("LSP input: a header line longer than %d bytes skipped", MAX_HEADER_LINE)
            length = None
            continue
        stripped = line.strip(b"\r\n \t")
        if not stripped:
            if length is None:
                continue  # a blank line outside a header block
            return await _body(reader, length)
        found = _LENGTH.search(stripped)
        if found is not None:
            # Wherever it starts: a body without a final newline, or a stray header without
            # its line end, is glued to the next header.
            if found.start():
                logger.warning("LSP input: %d bytes before a Content-Length header skipped", found.start())
            length = _valid_length(found.group(1))
        elif not _HEADER.match(stripped):
            logger.warning("LSP input: a line that is not a header skipped (%d bytes)", len(line))
            length = None
        # Other headers (Content-Type) are accepted and ignored.


def _resynchronise(reader: ByteReader, body: bytes) -> None:
    """Put back what follows the first Content-Length header inside a broken `body` (or the
    start of one that the body cut off at its end)."""
    found = _HEADER_ANYWHERE.search(body, 1)
    start = found.start() if found is not None else _cut_header_start(body)
    if start is not None:
        logger.warning("LSP input: a header %d bytes into a broken body; reading on from there", start)
        reader.unread(body[start:])


def _cut_header_start(body: bytes) -> int | None:
    """Where a `Content-Length` header cut off at the end of `body` starts, if one is."""
    tail = body[-len(_HEADER_NAME):].lower()
    for size in range(min(len(tail), len(_HEADER_NAME)), 0, -1):
        if tail.endswith(_HEADER_NAME[:size]):
            return len(body) - size
    return None


def _valid_length(text: bytes) -> int | None:
    length = int(text)
    if length < 0 or length > MAX_MESSAGE_BYTES:
        logger.warning("LSP input: Content-Length %d refused (0..%d); waiting for the next header",
                       length, MAX_MESSAGE_BYTES)
        return None
    return length


async def _body(reader: ByteReader, length: int) -> bytes | None:
    """`length` bytes, or None at the end of the stream."""
    parts, missing = [], length
    while missing:
        part = await reader.read(min(missing, _SKIP_CHUNK))
        if not part:
            logger.warning("LSP input: the stream ended %d bytes into a %d-byte body", length - missing, length)
            return None
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


def parse_body(body: bytes, pending: Callable[[Any], bool],
               shut_down: bool) -> tuple[dict | None, dict | None]:
    """(the message to hand on, or None; the error response to send, or None)."""
    try:
        message = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return None, _error(None, PARSE_ERROR, "Parse error: the body is not UTF-8")
    except (ValueError, RecursionError) as error:
        return None, _error(None, PARSE_ERROR, f"Parse error: {type(error).__name__}")
    if not isinstance(message, dict):
        kind = "a batch (LSP has none)" if isinstance(message, list) else "not an object"
        return None, _error(None, INVALID_REQUEST, f"Invalid Request: {kind}")
    msg_id = message.get("id")
    has_id = "id" in message and (isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool))
    reply_id = msg_id if has_id else None
    if message.get("jsonrpc") != "2.0":
        return None, _error(reply_id, INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
    if "method" in message:
        if not isinstance(message["method"], str):
            return None, _error(reply_id, INVALID_REQUEST, "Invalid Request: the method must be a string")
        if "id" in message and not has_id:
            return None, _error(None, INVALID_REQUEST, "Invalid Request: an id must be a number or a string")
        if not has_id:
            return message, None  # a notification
        if pending(msg_id):
            return None, _error(msg_id, INVALID_REQUEST, f"Invalid Request: id {msg_id!r} is still in use")
        if shut_down and message["method"] != "exit":
            return None, _error(msg_id, INVALID_REQUEST, "Invalid Request: the server is shut down")
        return message, None
    if "result" in message or "error" in message:
        return message, None  # a response to a request of ours
    return None, _error(reply_id, INVALID_REQUEST, "Invalid Request: no method")


def _error(msg_id: Any, code: int, message: str) -> dict:
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


def frame(message: dict) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


class BufferedByteReader:
    """`ByteReader` over a function returning the next bytes available (b"" at the end)."""

    def __init__(self, read_some: Callable[[int], Awaitable[bytes]], chunk: int = 65536):
        self._read_some, self._chunk = read_some, chunk
        self._buffer = bytearray()

    async def readline(self, limit: int) -> bytes:
        """A line with its end; at most `limit` bytes (then without its end); b"" at the end."""
        while True:
            end = self._buffer.find(b"\n", 0, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self._buffer) >= limit:
                return self._take(limit)
            more = await self._read_some(self._chunk)
            if not more:
                return self._take(len(self._buffer))
            self._buffer += more

    async def read(self, count: int) -> bytes:
        """At most `count` bytes (b"" at the end)."""
        if not self._buffer:
            more = await self._read_some(count)
            if len(more) <= count:
                return more
            self._buffer += more
        return self._take(min(count, len(self._buffer)))

    def unread(self, data: bytes) -> None:
        """Make `data` the next bytes read."""
        self._buffer[:0] = data

    def _take(self, count: int) -> bytes:
        taken = bytes(self._buffer[:count])
        del self._buffer[:count]
        return taken
