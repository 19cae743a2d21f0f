"""The real `codeassist serve` process fed raw bytes: framing errors, bodies that are not
JSON-RPC, requests it must refuse. It never goes deaf, never dies, answers every request."""

import json
import subprocess
import sys

import pytest

from lsp_server.framing import BufferedByteReader, parse_body, read_messages
from tests.raw_lsp import RawClient
from tests.raw_lsp import frame as _frame
from tests.raw_lsp import request as _request

DEEP = 100_000


@pytest.fixture
def client(tiny_model_dir, tmp_path):
    raw = RawClient(tiny_model_dir("qwen2.5-coder"), tmp_path)
    raw.send(_request(1, "initialize", {"processId": None, "rootUri": tmp_path.as_uri(), "capabilities": {},
                                        "initializationOptions": {"indexEnabled": False}}))
    assert "result" in raw.answer(1)
    raw.send(_frame(b'{"jsonrpc":"2.0","method":"initialized","params":{}}'))
    yield raw
    if raw.process.poll() is None:
        raw.process.kill()
    raw.process.wait(10)


def _status(client: RawClient, msg_id: int) -> dict:
    client.send(_request(msg_id, "workspace/executeCommand", {"command": "codeassist.status", "arguments": []}))
    return client.answer(msg_id)


BAD_FRAMES = {
    "wrong length then garbage": b"Content-Length: 12\r\n\r\n{\"jsonrpc\":\"2.0\"}}}}}}}\r\n",
    "lower-case header": None,  # valid: answered (below)
    "LF-only line ends": None,
    "no space after the colon": None,
    "negative length": b"Content-Length: -5\r\n\r\n",
    "NUL bytes before a header": None,
    "a length of a terabyte": b"Content-Length: 1000000000000\r\n\r\n",
    "a line that is not a header": b"hello there\r\n",
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_framing_errors_never_silence_the_server(client, case):
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "workspace/executeCommand",
                       "params": {"command": "codeassist.status", "arguments": []}}).encode()
    variants = {
        "lower-case header": b"content-length: %d\r\n\r\n" % len(body) + body,
        "LF-only line ends": b"Content-Length: %d\n\n" % len(body) + body,
        "no space after the colon": b"Content-Length:%d\r\n\r\n" % len(body) + body,
        "NUL bytes before a header": b"\x00\x00" + b"Content-Length: %d\r\n\r\n" % len(body) + body,
    }
    if case in variants:  # tolerated forms: the request itself is answered
        client.send(variants[case])
        assert "result" in client.answer(7)
    else:
        client.send(BAD_FRAMES[case])
        assert "result" in _status(client, 8)  # the next well-formed message is answered
    assert client.process.poll() is None


@pytest.mark.parametrize("body, code", [
    (b'{"jsonrpc":"2.0","id":3,"method":"shutdo', -32700),  # truncated
    (b'{"jsonrpc":"2.0","id":3,"method":"\xff\xfe"}', -32700),  # not UTF-8
    (b"[" * DEEP + b"]" * DEEP, -32700),  # nested past the parser's depth
    (b'[{"jsonrpc":"2.0","id":3,"method":"shutdown"}]', -32600),  # a batch
    (b'{"id":3,"method":"shutdown"}', -32600),  # no "jsonrpc"
    (b'{"jsonrpc":"1.0","id":3,"method":"shutdown"}', -32600),
    (b'{"jsonrpc":"2.0","id":3}', -32600),  # neither a request nor a response
])
def test_bodies_that_are_not_json_rpc_get_the_json_rpc_error(client, body, code):
    client.send(_frame(body))
    error = client.messages.get(timeout=30)
    while "method" in error:
        error = client.messages.get(timeout=30)
    assert error["error"]["code"] == code
    assert "Traceback" not in json.dumps(error)
    assert "result" in _status(client, 9)


def test_a_second_initialize_is_refused(client, tmp_path):
    other = tmp_path / "elsewhere"
    client.send(_request(2, "initialize", {"processId": None, "rootUri": other.as_uri(), "capabilities": {}}))
    assert client.answer(2)["error"]["code"] == -32600
    assert "result" in _status(client, 3)


def test_requests_after_shutdown_are_refused_and_exit_says_how_it_ended(client):
    client.send(_request(2, "shutdown"))
    assert client.answer(2).get("error") is None
    client.send(_request(3, "textDocument/hover", {
        "textDocument": {"uri": "file:///x.py"}, "position": {"line": 0, "character": 0}}))
    assert client.answer(3)["error"]["code"] == -32600
    client.send(_frame(b'{"jsonrpc":"2.0","method":"exit"}'))
    assert client.process.wait(30) == 0


def test_exit_without_shutdown_exits_with_1(client):
    client.send(_frame(b'{"jsonrpc":"2.0","method":"exit"}'))
    assert client.process.wait(30) == 1


def test_duplicate_ids_are_refused():
    pending = {5}
    message, error = parse_body(b'{"jsonrpc":"2.0","id":5,"method":"shutdown"}', pending.__contains__, False)
    assert message is None and error["error"]["code"] == -32600 and error["id"] == 5
    message, error = parse_body(b'{"jsonrpc":"2.0","id":6,"method":"shutdown"}', pending.__contains__, False)
    assert error is None and message["id"] == 6


async def test_the_reader_resynchronises_on_the_next_header():
    body = b'{"jsonrpc":"2.0","method":"a"}'
    stream = (b"garbage\r\n" + b"Content-Length: 3\r\n\r\n{}}" + b"junk" + _frame(body)
              + b"Content-Length: 99999999999\r\n\r\n" + b"x" * 5000 + b"\r\n" + _frame(body))
    chunks = [stream[i: i + 7] for i in range(0, len(stream), 7)]

    async def read_some(count):
        return chunks.pop(0) if chunks else b""

    delivered = []
    await read_messages(BufferedByteReader(read_some), delivered.append, lambda: False)
    assert delivered == [b"{}}", body, body]


class TcpClient:
    def __init__(self, port: int):
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self, msg_id):
        """The response to `msg_id`; None when the server closed the connection."""
        while True:
            length = None
            while True:
                line = self.file.readline()
                if not line:
                    return None
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                if line in (b"\r\n", b"\n"):
                    break
            message = json.loads(self.file.read(length))
            if "method" not in message and message.get("id") == msg_id:
                return message

    def close(self) -> None:
        self.file.close()  # the socket's descriptor stays open while its file is
        self.sock.close()


@pytest.fixture
def tcp_server(tiny_model_dir, tmp_path):
    from codeassist.bench.llama_server import free_port

    port, token_file = free_port(), tmp_path / "serve.token"
    process = subprocess.Popen(
        [sys.executable, "-m", "codeassist", "serve", "--tcp", "--port", str(port), "--token-file",
         str(token_file), "--log-file", str(tmp_path / "server.log"), "--model",
         str(tiny_model_dir("qwen2.5-coder")), "--device", "cpu", "--dtype", "fp32"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import time

    deadline = time.monotonic() + 60
    while not token_file.exists() or not (tmp_path / "server.log").exists() \
            or "listening on 127.0.0.1" not in (tmp_path / "server.log").read_text():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    yield port, token_file.read_text().strip(), process
    process.kill()
    process.wait(10)


def _initialize(client: TcpClient, root, token=None) -> dict | None:
    options = {"indexEnabled": False, **({"authToken": token} if token else {})}
    client.send(_request(1, "initialize", {"processId": None, "rootUri": root.as_uri(), "capabilities": {},
                                           "initializationOptions": options}))
    return client.answer(1)


def test_tcp_needs_the_token_and_serves_one_client(tcp_server, tmp_path):
    port, token, process = tcp_server
    assert (tmp_path / "serve.token").stat().st_mode & 0o077 == 0
    intruder = TcpClient(port)
    refused = _initialize(intruder, tmp_path)
    assert refused["error"]["code"] == -32600 and intruder.answer(99) is None  # and closed
    owner = TcpClient(port)
    assert "result" in _initialize(owner, tmp_path, token)
    second = TcpClient(port)  # while the owner is connected: closed at once
    assert second.answer(1) is None
    second.close()
    owner.send(_request(5, "workspace/executeCommand", {"command": "codeassist.status", "arguments": []}))
    assert "result" in owner.answer(5)  # the owner's session survived the others
    assert process.poll() is None
    owner.close()
    assert process.wait(30) == 0


def _status_request(msg_id: int) -> bytes:
    return _request(msg_id, "workspace/executeCommand", {"command": "codeassist.status", "arguments": []})


@pytest.mark.parametrize("case", ["short body", "glued stray header", "body glued to a header"])
def test_a_bad_frame_never_makes_the_server_deaf(client, case):
    """A Content-Length larger than its body swallows the start of the next message; a
    header without its line end is glued to the next one. Every later request is answered."""
    good = _status_request(30)
    body = good.split(b"\r\n\r\n", 1)[1]
    broken = {
        "short body": b"Content-Length: %d\r\n\r\n" % (len(body) + 25) + body,
        "glued stray header": b"X-Trace: 1" + good,
        "body glued to a header": b"Content-Length: 20\r\n\r\n" + b'{"jsonrpc": "2.0"}' + good,
    }[case]
    client.send(broken)
    for msg_id in range(31, 51):
        client.send(_status_request(msg_id))
    for msg_id in range(31, 51):
        assert "result" in client.answer(msg_id, timeout=30), msg_id


def test_an_unknown_method_is_method_not_found(client, tmp_path):
    client.send(_frame(b'{"jsonrpc":"2.0","id":39,"method":"noSuchMethod"}'))  # params are optional
    client.send(_request(40, "codeassist/noSuchMethod", {}))
    for msg_id in (39, 40):
        answer = client.answer(msg_id)
        assert answer["error"]["code"] == -32601
        assert "Traceback" not in json.dumps(answer)
    client.send(_frame(b'{"jsonrpc":"2.0","method":"codeassist/noSuchNotification","params":{}}'))
    assert "result" in _status(client, 41)
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def _messages(count: int) -> list[bytes]:
    return [json.dumps({"jsonrpc": "2.0", "method": f"m{number}", "params": {"n": number}}).encode()
            for number in range(count)]


def _parses(body: bytes) -> bool:
    try:
        json.loads(body)
        return True
    except ValueError:
        return False


from hypothesis import given, settings as hypothesis_settings, strategies as st  # noqa: E402


@hypothesis_settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=60), cut=st.integers(min_value=0, max_value=40),
       glue=st.booleans(), split=st.integers(min_value=1, max_value=13))
async def test_the_reader_answers_every_valid_message_after_garbage_or_a_short_body(garbage, cut, glue, split):
    """Garbage, a truncated body (its Content-Length says more than it holds) or a header
    glued to the text before it, between valid messages: every later message arrives."""
    before, after = _messages(3)[:1], _messages(8)[3:]
    broken_body = b'{"jsonrpc":"2.0","method":"broken","params":{}}'
    kept = broken_body[: max(len(broken_body) - cut, 0)]
    broken = b"Content-Length: %d\r\n\r\n" % len(broken_body) + kept if cut else garbage
    stream = b"".join(_frame(body) for body in before) + broken
    if glue:
        stream += b"X-Stray: header"  # a header without its line end, glued to the next
    stream += b"".join(_frame(body) for body in after)
    chunks = [stream[i: i + split] for i in range(0, len(stream), split)]

    async def read_some(count):
        return chunks.pop(0) if chunks else b""

    delivered = []

    def deliver(body: bytes) -> bool:
        delivered.append(body)
        return _parses(body)

    await read_messages(BufferedByteReader(read_some), deliver, lambda: False)
    assert delivered[: len(before)] == before
    assert delivered[-len(after):] == after


def test_exit_ends_the_process_even_with_a_worker_stuck(tmp_path):
    """What `codeassist serve` does after its transport ends: a thread blocked for good (a
    read that never returns) does not keep the process alive past the grace period."""
    import time

    script = ("import threading, sys\n"
              "from codeassist.cli import exit_within\n"
              "threading.Thread(target=threading.Event().wait).start()\n"  # never ends, not a daemon
              "exit_within(1.0, 3)\n"
              "sys.exit(3)\n")
    start = time.monotonic()
    process = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert process.returncode == 3 and time.monotonic() - start < 30


def test_shutdown_and_exit_end_the_server_with_a_fifo_for_an_ignore_file(tiny_model_dir, tmp_path):
    import os
    import time

    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "mod.py").write_text("def f():\n    return 1\n")
    os.mkfifo(workspace / ".gitignore")
    raw = RawClient(tiny_model_dir("qwen2.5-coder"), tmp_path)
    try:
        raw.send(_request(1, "initialize", {"processId": None, "rootUri": workspace.as_uri(), "capabilities": {}}))
        assert "result" in raw.answer(1)
        raw.send(_frame(b'{"jsonrpc":"2.0","method":"initialized","params":{}}'))
        deadline, msg_id = time.monotonic() + 120, 2
        while (state := _status(raw, msg_id)["result"]["indexStatus"]) != "ready":
            assert state in ("off", "indexing") and time.monotonic() < deadline, state
            msg_id += 1
            time.sleep(0.5)
        raw.send(_request(1000, "shutdown"))
        assert raw.answer(1000, timeout=30).get("error") is None
        raw.send(_frame(b'{"jsonrpc":"2.0","method":"exit"}'))
        assert raw.process.wait(30) == 0
    finally:
        raw.close()


def test_a_tcp_connection_without_initialize_changes_nothing(tcp_server, tmp_path, monkeypatch):
    port, token, process = tcp_server
    import socket
    import time

    socket.create_connection(("127.0.0.1", port), timeout=30).close()  # connects, sends nothing
    idle = TcpClient(port)  # holds a connection open without a byte
    owner = TcpClient(port)  # the real client is served while the idle one waits
    assert "result" in _initialize(owner, tmp_path, token)
    idle.close()  # a stranger closing does not end the session
    log, deadline = tmp_path / "server.log", time.monotonic() + 30
    while log.read_text().count("a TCP connection closed before its initialize") < 2:  # both strangers seen
        assert time.monotonic() < deadline
        time.sleep(0.05)
    owner.send(_status_request(6))
    assert "result" in owner.answer(6)
    assert process.poll() is None
    owner.close()
    assert process.wait(30) == 0


def test_a_tcp_connection_that_stays_silent_is_closed_after_the_deadline(tcp_server):
    import time

    from lsp_server.transport import SESSION_DEADLINE_S

    port, _, process = tcp_server
    silent = TcpClient(port)
    start = time.monotonic()
    assert silent.answer(1) is None  # closed by the server
    assert SESSION_DEADLINE_S - 1 < time.monotonic() - start < SESSION_DEADLINE_S + 20
    assert process.poll() is None
