"""The session bench's peer: llama-server driven as the llama.vscode extension drives it.

Per key, llama.vscode sends `/infill` with the 256 lines above the cursor's line and the 64
below it (its `n_prefix`/`n_suffix` defaults), the line split at the cursor, `cache_prompt`
on, `n_predict` 128 and its time limits (`t_max_prompt_ms`, `t_max_predict_ms`: 500 ms
each); the server runs with the extension's recommended `--cache-reuse 256 -b 1024 -ub 1024`
(chunks of an earlier prompt that moved are shifted, not re-encoded). A newer key aborts the
request still open (the connection is closed; llama-server cancels the task and keeps what
its slot encoded). Left out: the extension's ring buffer of chunks from other places and
files (`input_extra`) and its prefetch after a shown suggestion; the server gets nothing
while the user reads.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from urllib.parse import urlsplit

N_PREFIX_LINES, N_SUFFIX_LINES = 256, 64
REQUEST = {"n_predict": 128, "t_max_prompt_ms": 500, "t_max_predict_ms": 500, "cache_prompt": True,
           "top_k": 1, "temperature": 0.0, "samplers": ["top_k"]}
SERVER_OPTIONS = ("--cache-reuse", "256", "-b", "1024", "-ub", "1024")


def infill_body(lines: list[str], number: int, column: int) -> dict:
    """llama.vscode's `/infill` body for the cursor at (`number`, `column`) of `lines`."""
    line = lines[number]
    prefix = "".join(each + "\n" for each in lines[max(0, number - N_PREFIX_LINES):number])
    suffix = "".join("\n" + each for each in lines[number + 1:number + 1 + N_SUFFIX_LINES])
    return {**REQUEST, "input_prefix": prefix, "prompt": line[:column], "input_suffix": line[column:] + suffix}


class InfillCall(threading.Thread):
    """One `/infill` request in flight: `text` and `at` (monotonic) once answered; `abort()`
    closes its connection as a client that moved on does (before it is sent: never sent)."""

    def __init__(self, url: str, body: dict, timeout_s: float):
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self._connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        self._body = json.dumps(body)
        self._lock = threading.Lock()
        self._aborted = False
        self.text: str | None = None
        self.at: float | None = None
        self.start()

    def run(self) -> None:
        try:
            with self._lock:
                if self._aborted:
                    return
                self._connection.connect()
            self._connection.request("POST", "/infill", self._body, {"Content-Type": "application/json"})
            content = json.load(self._connection.getresponse())["content"]
        except (OSError, ValueError, KeyError, http.client.HTTPException):
            return  # aborted, or no answer: not timed
        finally:
            self._connection.close()
        with self._lock:
            if not self._aborted:
                self.text, self.at = content, time.monotonic()

    def answered(self) -> bool:
        return self.at is not None

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            sock = self._connection.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
