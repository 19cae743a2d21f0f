"""`codeassist serve` in a child process, spoken to in raw LSP: bytes in, parsed messages out
(the soak bench drives it; tests use it to send what a typed client would refuse)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path


def frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def request(msg_id, method: str, params=None) -> bytes:
    return frame(json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}).encode())


def notification(method: str, params=None) -> bytes:
    return frame(json.dumps({"jsonrpc": "2.0", "method": method, "params": params}).encode())


class LspProcess:
    """A server started with `serve_args` after `codeassist serve`; every message it writes
    lands in `messages`, read by a thread."""

    def __init__(self, log_file: Path, serve_args: list[str]):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "codeassist", "serve", "--log-file", str(log_file), *serve_args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.messages: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.process.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    return
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                if line in (b"\r\n", b"\n"):
                    break
            self.messages.put(json.loads(out.read(length)))

    def send(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def answer(self, msg_id, timeout: float = 60.0) -> dict:
        """The response to `msg_id` (other messages are dropped)."""
        while True:
            message = self.messages.get(timeout=timeout)
            if "method" not in message and message.get("id") == msg_id:
                return message

    def wait_until_ready(self, ids, timeout_s: float = 300.0) -> None:
        """Ask for the status (request ids from `ids`) until the model is loaded."""
        began = time.monotonic()
        while True:
            msg_id = next(ids)
            self.send(request(msg_id, "workspace/executeCommand", {"command": "codeassist.status", "arguments": []}))
            if self.answer(msg_id, timeout_s)["result"]["modelStatus"] == "ready":
                return
            if time.monotonic() - began > timeout_s:
                raise RuntimeError("the model did not load")
            time.sleep(0.5)

    def sample_rss(self, start: float, every_s: float, samples: list[dict], stop: threading.Event) -> None:
        """Append {"t_s", "rss_mb"} to `samples` every `every_s` until `stop` (run on a thread)."""
        while not stop.wait(every_s):
            try:
                samples.append({"t_s": round(time.monotonic() - start, 1), "rss_mb": round(self.rss_mb(), 1)})
            except OSError:  # the process is gone
                return

    def rss_mb(self) -> float:
        """The server's resident memory (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise OSError("no VmRSS line")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
