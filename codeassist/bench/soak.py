"""`codeassist bench soak --minutes N`: a long editing session through LSP against a real
`codeassist serve` process with the embedded model, as an editor drives it.

The workspace is a scratch copy of a standard-library package (code search on). Over and
over: open one of its files, cut the end of a line of code and type it back a character at a
time; each keystroke sends the change and an inline completion request, cancelling the
previous request when it is still open (as editors do); every tenth keystroke also hovers a
name. Latency of every answered request (keystroke to answer), errors (must be 0), and the
server's resident memory sampled every two seconds.
"""

from __future__ import annotations

import queue
import random
import shutil
import statistics
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

from .lsp_process import LspProcess, notification, request
from .report import BenchResult, machine_info

PACKAGE = "json"
SAMPLE_EVERY_S = 2.0
ANSWER_TIMEOUT_S = 300.0


def run_bench(args) -> BenchResult:
    minutes = args.minutes or (1.0 if args.quick else 10.0)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / PACKAGE
        shutil.copytree(Path(sysconfig.get_paths()["stdlib"]) / PACKAGE, root,
                        ignore=shutil.ignore_patterns("__pycache__"))
        server = LspProcess(Path(args.out).resolve() / "soak-server.log",
                            ["--model", args.model, "--device", args.device, "--dtype", args.dtype])
        try:
            requests, memory = _session(server, root, minutes * 60)
        finally:
            server.close()
    machine = {**machine_info(), "model": args.model, "minutes": minutes}
    return BenchResult(_summary(requests, memory), requests, ["t_s", "kind", "ms", "error"], machine,
                       _plot(requests, memory))


def _session(server: LspProcess, root: Path, seconds: float) -> tuple[list[dict], list[dict]]:
    ids = iter(range(1, 1 << 30))
    server.send(request(0, "initialize", {"processId": None, "rootUri": root.as_uri(), "capabilities": {}}))
    server.answer(0, ANSWER_TIMEOUT_S)
    server.send(notification("initialized", {}))
    server.wait_until_ready(ids, ANSWER_TIMEOUT_S)  # the model loads in the background: no keystrokes before
    memory: list[dict] = []
    stop = threading.Event()
    start = time.monotonic()
    sampler = threading.Thread(target=server.sample_rss, args=(start, SAMPLE_EVERY_S, memory, stop),
                               daemon=True)
    sampler.start()
    rows: list[dict] = []
    tracker = _Answers(server, start, rows)
    generator = random.Random(0)
    files = sorted(root.glob("*.py"))
    version = 0
    try:
        while time.monotonic() - start < seconds:
            path = files[generator.randrange(len(files))]
            text = path.read_text(encoding="utf-8")
            uri = path.as_uri()
            version += 1
            server.send(notification("textDocument/didOpen", {"textDocument": {
                "uri": uri, "languageId": "python", "version": version, "text": text}}))
            for _ in range(3):  # three lines per visit
                if time.monotonic() - start >= seconds:
                    break
                version = _retype_a_line(server, uri, text, generator, ids, tracker, version)
            server.send(notification("textDocument/didClose", {"textDocument": {"uri": uri}}))
        tracker.wait_all()
    finally:
        stop.set()
        sampler.join()
    return rows, memory


def _retype_a_line(server, uri, text, generator, ids, tracker, version) -> int:
    lines = text.split("\n")
    candidates = [n for n, line in enumerate(lines) if len(line.strip()) > 12 and not line.strip().startswith("#")]
    number = generator.choice(candidates)
    line = lines[number]
    cut = generator.randrange(len(line) - len(line.lstrip()) + 2, len(line) - 2)
    open_request = None
    for typed in range(cut, len(line) + 1):
        current = "\n".join([*lines[:number], line[:typed], *lines[number + 1:]])
        version += 1
        server.send(notification("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                          "contentChanges": [{"text": current}]}))
        if open_request is not None and not tracker.answered(open_request):
            server.send(notification("$/cancelRequest", {"id": open_request}))
        open_request = next(ids)
        position = {"line": number, "character": typed}
        tracker.sent(open_request, "inline")
        server.send(request(open_request, "textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": position, "context": {"triggerKind": 2}}))
        if typed % 10 == 0:
            hover = next(ids)
            tracker.sent(hover, "hover")
            server.send(request(hover, "textDocument/hover", {"textDocument": {"uri": uri},
                                                            "position": {"line": number, "character": max(typed - 3, 0)}}))
        time.sleep(generator.uniform(0.05, 0.25))  # typing speed
    tracker.wait(open_request)  # the user pauses at the end of the line: the last suggestion
    return version


class _Answers:
    """Requests in flight and the latency of each answer (a cancelled one is not timed)."""

    def __init__(self, server: LspProcess, start: float, rows: list[dict]):
        self.server, self.start, self.rows = server, start, rows
        self.pending: dict[int, tuple[str, float]] = {}
        self.answers: list[dict] = []  # {"id", "at" (monotonic), "text" of an inline answer}

    def sent(self, msg_id: int, kind: str) -> None:
        self._drain(0)
        self.pending[msg_id] = (kind, time.monotonic())

    def answered(self, msg_id: int) -> bool:
        self._drain(0)
        return msg_id not in self.pending

    def wait(self, msg_id: int) -> None:
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while msg_id in self.pending and time.monotonic() < deadline:
            self._drain(0.1)

    def wait_all(self) -> None:
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while self.pending and time.monotonic() < deadline:
            self._drain(0.1)
        for msg_id, (kind, _) in self.pending.items():
            self.rows.append({"t_s": round(time.monotonic() - self.start, 2), "kind": kind, "ms": None,
                              "error": f"no answer to request {msg_id}"})

    def _drain(self, timeout: float) -> None:
        while True:
            try:
                message = self.server.messages.get(timeout=timeout)
            except queue.Empty:
                return
            timeout = 0
            if "method" in message or message.get("id") not in self.pending:
                continue
            kind, sent_at = self.pending.pop(message["id"])
            error = message.get("error")
            if error and error.get("code") == -32800:  # cancelled by us: not an error, not timed
                continue
            now = time.monotonic()
            self.rows.append({"t_s": round(sent_at - self.start, 2), "kind": kind,
                              "ms": round((now - sent_at) * 1000, 1),
                              "error": error.get("message") if error else None})
            self.answers.append({"id": message["id"], "at": now, "text": _inline_text(message.get("result"))})


def _inline_text(result) -> str:
    """The first item's text of an inline completion answer ("" for anything else)."""
    items = result.get("items") if isinstance(result, dict) else result
    if isinstance(items, list) and items and isinstance(items[0], dict):
        text = items[0].get("insertText")
        return text if isinstance(text, str) else ""
    return ""


def _summary(rows: list[dict], memory: list[dict]) -> dict:
    summary: dict = {"requests": len(rows), "errors": sum(1 for r in rows if r["error"])}
    for kind in ("inline", "hover"):
        times = sorted(r["ms"] for r in rows if r["kind"] == kind and r["ms"] is not None)
        if times:
            summary[f"{kind}_answered"] = len(times)
            summary[f"{kind}_p50_ms"] = round(statistics.median(times), 1)
            summary[f"{kind}_p99_ms"] = round(times[min(len(times) - 1, int(0.99 * len(times)))], 1)
    if memory:
        summary["rss_mb_start"] = memory[0]["rss_mb"]
        warm = memory[len(memory) // 5:]  # after warm-up: the last four fifths
        summary["rss_mb_after_warm_up"] = warm[0]["rss_mb"]
        summary["rss_mb_end"] = memory[-1]["rss_mb"]
        summary["rss_mb_max"] = max(m["rss_mb"] for m in memory)
        if len(warm) > 1 and warm[-1]["t_s"] > warm[0]["t_s"]:
            slope = (warm[-1]["rss_mb"] - warm[0]["rss_mb"]) / (warm[-1]["t_s"] - warm[0]["t_s"]) * 60
            summary["rss_mb_per_minute_after_warm_up"] = round(slope, 2)
    return summary


def _plot(rows: list[dict], memory: list[dict]):
    def draw(figure):
        latency, rss = figure.subplots(1, 2)
        for kind, colour in (("inline", "tab:blue"), ("hover", "tab:orange")):
            points = [(r["t_s"], r["ms"]) for r in rows if r["kind"] == kind and r["ms"] is not None]
            if points:
                latency.scatter(*zip(*points), s=6, color=colour, label=kind)
        latency.set_xlabel("session time (s)")
        latency.set_ylabel("keystroke to answer (ms)")
        latency.set_yscale("log")
        latency.legend()
        latency.set_title("latency of answered requests")
        if memory:
            rss.plot([m["t_s"] for m in memory], [m["rss_mb"] for m in memory], color="tab:green")
        rss.set_xlabel("session time (s)")
        rss.set_ylabel("codeassist serve RSS (MB)")
        rss.set_ylim(bottom=0)
        rss.set_title("resident memory")

    return draw
