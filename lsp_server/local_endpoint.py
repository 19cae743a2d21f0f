"""The server's end of retrieval/search_endpoint.py: searches of its workspace for the CLI,
on 127.0.0.1, each request carrying the token of the endpoint file (compared in constant
time; a request without it is closed unanswered and logged)."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path

from retrieval.search_endpoint import MAX_LINE, endpoint_path, remove_endpoint, write_endpoint

logger = logging.getLogger(__name__)

Answer = Callable[[str, dict], object]  # (command, arguments) -> result; ValueError: bad request


class Unavailable(Exception):
    """The server cannot answer now (index not ready, another index): the CLI searches itself."""


class LocalEndpoint:
    def __init__(self, home: Path, root: Path, answer: Answer):
        self.path = endpoint_path(home, root)
        self._token = secrets.token_urlsafe(32)
        self._answer = answer
        self._server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> None:
        endpoint = self

        class Handler(socketserver.StreamRequestHandler):
            timeout = 30.0

            def handle(self) -> None:
                endpoint._handle(self.rfile, self.wfile)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="codeassist-cli-endpoint", daemon=True).start()
        self._server = server
        write_endpoint(self.path, server.server_address[1], self._token)
        logger.info("CLI endpoint on 127.0.0.1:%d (%s)", server.server_address[1], self.path)

    def stop(self) -> None:
        if self._server is not None:
            remove_endpoint(self.path, self._token)
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handle(self, rfile, wfile) -> None:
        try:
            request = json.loads(rfile.readline(MAX_LINE))
            token = request.get("token") if isinstance(request, dict) else None
        except (OSError, ValueError):
            logger.info("CLI endpoint: an unreadable request")
            return
        if not isinstance(token, str) or not hmac.compare_digest(token, self._token):
            logger.warning("CLI endpoint: a request without the right token was refused")
            return
        command, arguments = request.get("command"), request.get("arguments")
        try:
            if not isinstance(command, str) or not isinstance(arguments, dict):
                raise ValueError("a request needs a command and an arguments object")
            answer = {"result": self._answer(command, arguments)}
        except Unavailable as error:
            answer = {"error": str(error), "unavailable": True}
        except ValueError as error:
            answer = {"error": str(error)}
        except Exception as error:  # the endpoint outlives any request
            logger.exception("CLI endpoint: %s failed", command)
            answer = {"error": f"{type(error).__name__} in the server", "unavailable": True}
        try:
            wfile.write(json.dumps(answer).encode("utf-8") + b"\n")
        except OSError:
            pass
