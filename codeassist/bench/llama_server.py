"""Start llama.cpp's llama-server on a GGUF file: the reference engine of the benches and
the remote-engine tests. It is not part of the project: .ci/install_llama_server.sh builds it
outside the repository."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

TOOLS = Path(os.environ.get("CODEASSIST_TOOLS", Path.home() / ".cache" / "codeassist-tools"))
DEFAULT_BINARY = TOOLS / "llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server"


def llama_server_binary(explicit: str | None = None) -> Path | None:
    """`explicit`, else $CODEASSIST_LLAMA_SERVER, else where the install script puts it."""
    path = Path(explicit or os.environ.get("CODEASSIST_LLAMA_SERVER") or DEFAULT_BINARY)
    return path if path.is_file() else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str, api_key: str | None = None) -> object:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
        return json.load(response)


def infill(url: str, prefix: str, suffix: str, n_predict: int, timeout_s: float, **options) -> tuple[str, float]:
    """llama-server's greedy `/infill` at the cursor between `prefix` and `suffix` (prompt
    cache on; `options`: e.g. stop, n_indent): (its text, ms)."""
    body = {"input_prefix": prefix, "input_suffix": suffix, "n_predict": n_predict, "top_k": 1,
            "temperature": 0.0, "cache_prompt": True, **options}
    sent = time.perf_counter()
    call = urllib.request.Request(f"{url}/infill", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(call, timeout=timeout_s) as response:
        content = json.load(response)["content"]
    return content, (time.perf_counter() - sent) * 1000


@contextmanager
def llama_server(binary: Path, gguf: Path, log: Path, threads: int = 2, api_key: str | None = None,
                 extra: tuple[str, ...] = ()):
    """A running llama-server on loopback (one slot, prompt cache on; `extra`: more of its
    options); yields its base URL."""
    port = free_port()
    command = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
               "-t", str(threads), "-c", "4096", "-np", "1", "--no-webui", *extra]
    if api_key:
        command += ["--api-key", api_key]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if get_json(f"{url}/health", api_key).get("status") == "ok":
                    break
            except OSError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"llama-server exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("llama-server did not become healthy in 120 s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
