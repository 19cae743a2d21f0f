"""`codeassist bench memory`: the resident memory of `codeassist serve` (the embedded model)
while a client sends what it likes, phase by phase, against the documented ceiling.

Phases, one after the other on one server: the model loaded; many real documents opened and
completed once each, so that the KV sessions reach their budget (`kv_budget_mb`); a 20 MB
document (over `maxDocumentChars`: kept in sync, no model work) with completions and hovers
on it; a 5,000-function file hovered all over (the summary queue is bounded); a storm of
keystrokes with cancels; every document closed. RSS is sampled every half second.
"""

from __future__ import annotations

import sysconfig
import tempfile
import threading
import time
from pathlib import Path

from .lsp_process import LspProcess, notification, request
from .report import BenchResult, machine_info

ANSWER_TIMEOUT_S = 300.0
SAMPLE_EVERY_S = 0.5


class _Session:
    def __init__(self, server: LspProcess):
        self.server = server
        self.ids = iter(range(1, 1 << 30))
        self.version = 0

    def ask(self, method: str, params, wait: bool = True) -> int:
        msg_id = next(self.ids)
        self.server.send(request(msg_id, method, params))
        if wait:
            self.server.answer(msg_id, ANSWER_TIMEOUT_S)
        return msg_id

    def tell(self, method: str, params) -> None:
        self.server.send(notification(method, params))

    def open(self, path: Path, text: str) -> str:
        self.version += 1
        uri = path.as_uri()
        self.tell("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python",
                                                            "version": self.version, "text": text}})
        return uri

    def at_end(self, uri: str, text: str, method: str = "textDocument/inlineCompletion", wait: bool = True) -> int:
        lines = text.split("\n")
        params = {"textDocument": {"uri": uri}, "position": {"line": len(lines) - 1, "character": len(lines[-1])}}
        if method == "textDocument/inlineCompletion":
            params["context"] = {"triggerKind": 2}
        return self.ask(method, params, wait)


def run_bench(args) -> BenchResult:
    documents = 8 if args.quick else 40
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "workspace"
        root.mkdir()
        server = LspProcess(Path(args.out).resolve() / "memory-server.log",
                            ["--model", args.model, "--device", args.device, "--dtype", args.dtype])
        samples: list[dict] = []
        phases: list[dict] = []
        stop = threading.Event()
        start = time.monotonic()
        sampler = threading.Thread(target=server.sample_rss, args=(start, SAMPLE_EVERY_S, samples, stop),
                               daemon=True)
        try:
            session = _Session(server)
            session.ask("initialize", {"processId": None, "rootUri": root.as_uri(), "capabilities": {},
                                       "initializationOptions": {"indexEnabled": False}})
            session.tell("initialized", {})
            sampler.start()
            _wait_until_ready(session)
            _phase(phases, "model loaded", server, start)
            _many_documents(session, root, stdlib, documents)
            _phase(phases, f"{documents} documents completed", server, start)
            _huge_document(session, root)
            _phase(phases, "20 MB document", server, start)
            _many_functions(session, root)
            _phase(phases, "5,000-function file hovered", server, start)
            _storm(session, root, stdlib)
            _phase(phases, "500-keystroke storm", server, start)
            for path in root.iterdir():
                session.tell("textDocument/didClose", {"textDocument": {"uri": path.as_uri()}})
            session.ask("workspace/executeCommand", {"command": "codeassist.status", "arguments": []})
            time.sleep(2)
            _phase(phases, "all closed", server, start)
        finally:
            stop.set()
            server.close()
    summary = {"rss_mb_after_load": phases[0]["rss_mb"], "rss_mb_max": max(s["rss_mb"] for s in samples),
               "rss_mb_end": phases[-1]["rss_mb"]}
    machine = {**machine_info(), "model": args.model, "documents": documents}
    return BenchResult(summary, phases, ["phase", "t_s", "rss_mb"], machine,
                       lambda figure: _plot(figure, samples, phases))


def _wait_until_ready(session: _Session) -> None:
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while time.monotonic() < deadline:
        msg_id = session.ask("workspace/executeCommand", {"command": "codeassist.status", "arguments": []},
                             wait=False)
        if session.server.answer(msg_id, ANSWER_TIMEOUT_S)["result"]["modelStatus"] == "ready":
            return
        time.sleep(0.5)
    raise RuntimeError("the model did not load")


def _many_documents(session: _Session, root: Path, stdlib: Path, count: int) -> None:
    """Real modules of 6-60 KB, each opened and completed at its end once (a KV session each)."""
    sources = sorted(p for p in stdlib.glob("*.py") if 6_000 < p.stat().st_size < 60_000)[:count]
    for source in sources:
        text = source.read_text(encoding="utf-8", errors="replace")
        text = text[: len(text) // 2]  # mid-file: there is code after the cursor in real edits
        uri = session.open(root / source.name, text)
        session.at_end(uri, text)


def _huge_document(session: _Session, root: Path) -> None:
    line = "value = compute(alpha, beta, gamma)  # a long generated line of code\n"
    text = line * (20_000_000 // len(line))
    uri = session.open(root / "generated.py", text)
    for method in ("textDocument/inlineCompletion", "textDocument/hover", "textDocument/completion"):
        session.at_end(uri, text, method)


def _many_functions(session: _Session, root: Path) -> None:
    text = "".join(f"def function_{n}(x):\n    return x + {n}\n\n\n" for n in range(5000))
    uri = session.open(root / "functions.py", text)
    for n in range(0, 5000, 250):  # hover 20 of them, as a user scrolling through (each waits for its summary up to summaryBudgetMs)
        session.ask("textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 4 * n, "character": 6}})


def _storm(session: _Session, root: Path, stdlib: Path) -> None:
    text = (stdlib / "json" / "decoder.py").read_text(encoding="utf-8")
    base = text[: len(text) // 2]
    uri = session.open(root / "decoder.py", base)
    open_request = None
    for n in range(500):
        current = base + "x" * (n % 40)
        session.version += 1
        session.tell("textDocument/didChange", {"textDocument": {"uri": uri, "version": session.version},
                                                "contentChanges": [{"text": current}]})
        if open_request is not None:
            session.tell("$/cancelRequest", {"id": open_request})
        open_request = session.at_end(uri, current, wait=False)
        time.sleep(0.02)
    session.server.answer(open_request, ANSWER_TIMEOUT_S)


def _phase(phases: list[dict], name: str, server: LspProcess, start: float) -> None:
    phases.append({"phase": name, "t_s": round(time.monotonic() - start, 1), "rss_mb": round(server.rss_mb(), 1)})
    print(f"{phases[-1]['t_s']:>7} s  {name}: {phases[-1]['rss_mb']} MB", flush=True)


def _plot(figure, samples: list[dict], phases: list[dict]) -> None:
    axes = figure.subplots()
    axes.plot([s["t_s"] for s in samples], [s["rss_mb"] for s in samples], color="tab:blue")
    for phase in phases:
        axes.axvline(phase["t_s"], color="gray", linewidth=0.6)
        axes.annotate(phase["phase"], (phase["t_s"], phase["rss_mb"]), fontsize=7, rotation=90,
                      va="bottom", ha="right")
    axes.set_xlabel("seconds")
    axes.set_ylabel("codeassist serve RSS (MB)")
    axes.set_title("Memory under hostile input (embedded model)")
