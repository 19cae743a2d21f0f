"""Where a running server answers searches of its workspace, and how the CLI asks it.

A server that holds a folder's index (and its encoder, loaded) listens on 127.0.0.1 and
writes its port and a random token to CODEASSIST_HOME/servers/NAME-HASH.json, readable by
the user only. `codeassist search` reads that file and asks the server instead of loading
the encoder and the index itself. A request is one JSON line {"token", "command",
"arguments"}; the answer one JSON line {"result": ...} or {"error": "..."}. Standard library
only: the CLI's fast path imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_LINE = 1 << 20  # bytes of one request or answer line


def endpoint_path(home: Path, root: Path) -> Path:
    root = root.resolve()
    digest = hashlib.sha1(str(root).encode("utf-8")).hexdigest()[:12]
    return home / "servers" / f"{root.name}-{digest}.json"


def endpoint_above(home: Path, path: Path) -> Path | None:
    """The endpoint file of the nearest folder holding `path` that a server serves."""
    for folder in path.resolve().parents:
        candidate = endpoint_path(home, folder)
        if candidate.exists():
            return candidate
    return None


def write_endpoint(path: Path, port: int, token: str) -> None:
    """Create the endpoint file (replacing one left by a server that is gone), user-only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump({"pid": os.getpid(), "port": port, "token": token}, out)
    os.replace(temporary, path)


def remove_endpoint(path: Path, token: str) -> None:
    """Remove the endpoint file if it is still this server's (another may have replaced it)."""
    try:
        if json.loads(path.read_text()).get("token") == token:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


class NoServer(Exception):
    """No running server answered: search in this process."""


def ask(path: Path, command: str, arguments: dict, timeout_s: float = 60.0):
    """The running server's answer to `command`; NoServer when there is none to ask (no
    file, not reachable, not ready); ValueError with the server's message for a bad request."""
    try:
        if path.stat().st_mode & 0o077:
            raise NoServer(f"{path} is readable by other users")
        endpoint = json.loads(path.read_text())
        port, token = int(endpoint["port"]), str(endpoint["token"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise NoServer(f"no endpoint file: {error}") from None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as connection:
            connection.settimeout(timeout_s)
            request = {"token": token, "command": command, "arguments": arguments}
            connection.sendall(json.dumps(request).encode("utf-8") + b"\n")
            answer = json.loads(_read_line(connection))
    except (OSError, ValueError) as error:
        raise NoServer(f"the server at port {port} did not answer: {error}") from None
    if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
        raise NoServer("the server's answer has neither result nor error")
    if answer.get("unavailable"):
        raise NoServer(answer["error"])
    if "error" in answer:
        raise ValueError(answer["error"])
    return answer["result"]


def _read_line(connection: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        part = connection.recv(65536)
        if not part:
            break
        data += part
        if len(data) > MAX_LINE:
            raise ValueError("answer too long")
    return data
