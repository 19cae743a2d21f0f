"""`codeassist bench session`: the first key at a new place, as an editor session meets it,
through LSP against a real `codeassist serve` with the model given (default: the embedded
one), in three modes: the defaults (warm-up where the cursor rests, and a place far from the
warm session answered first from a short window), the warm-up alone, neither.

A whole real file (the standard library's `json/decoder.py`, code none of us wrote) is
open. Again and again: jump to another line, cut it at a point (the user is about to write
its rest), send the cursor hint an editor sends on arrival (`textDocument/documentHighlight`,
as VS Code does on every cursor move), read for `READ_S`, then type the line's next
characters at one key per `KEY_S`; each key sends the change and an inline completion
request and cancels the previous request when it is still open, as clients do. The modes
take turns jump by jump, each on its own copy of the file (its own KV session).

Per key: the latency of each answered request (cancelled ones are not timed). Per jump:
the first key's wait, from the key to the first suggestion of that place. Quality: the
share of answers whose first line is exactly the rest of the real line. Then the same visits
against llama-server, as the llama.vscode extension drives it (session_llama.py), after
codeassist's server has stopped.
"""

from __future__ import annotations

import random
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

from .llama_server import llama_server, llama_server_binary
from .lsp_process import LspProcess, notification, request
from .report import BenchResult, machine_info
from .session_llama import SERVER_OPTIONS, InfillCall, infill_body
from .soak import ANSWER_TIMEOUT_S, _Answers

SOURCE = Path("json") / "decoder.py"
READ_S = 1.5  # a person reads after moving the cursor
KEY_S = 0.15
KEYS = 8
MODES = {  # name -> the server settings it runs with
    "default": {"warmUp": True, "firstWindowTokens": 256},
    "warm_only": {"warmUp": True, "firstWindowTokens": 0},
    "neither": {"warmUp": False, "firstWindowTokens": 0},
}
LLAMA = "llama_server"  # the peer's rows (session_llama.py)


def run_bench(args) -> BenchResult:
    jumps = 3 if args.quick else 10
    text = (Path(sysconfig.get_paths()["stdlib"]) / SOURCE).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "json"
        root.mkdir()
        for mode in MODES:
            (root / f"decoder_{mode}.py").write_text(text, encoding="utf-8")
        server = LspProcess(Path(args.out).resolve() / "session-server.log",
                            ["--model", args.model, "--device", args.device, "--dtype", args.dtype])
        try:
            rows = _session(server, root, text, jumps)
        finally:
            server.close()  # before llama-server starts: never two engines on the cores
    rows += _llama_session(args, text, jumps)
    windows = _window_quality(args, 6 if args.quick else 24)
    machine = {**machine_info(), "model": args.model, "file": str(SOURCE), "jumps_per_mode": jumps,
               "read_s": READ_S, "key_s": KEY_S, "keys_per_jump": KEYS}
    return BenchResult({**_summary(rows), **windows}, rows,
                       ["mode", "jump", "key", "line", "ms", "first_key_ms", "completes"], machine, _plot(rows))


def _llama_session(args, text: str, jumps: int) -> list[dict]:
    """The same visits against llama-server, as the llama.vscode extension sends them (see
    session_llama.py); none where there is no llama-server binary or GGUF file (said)."""
    from completion.embedded import EMBEDDED_MODELS, ensure_gguf
    from completion.models import resolve_model

    model = resolve_model(args.model, args.device)
    binary = llama_server_binary(getattr(args, "llama_server", None))
    gguf = ensure_gguf(EMBEDDED_MODELS[model]) if model in EMBEDDED_MODELS else Path(model)
    if binary is None or gguf.suffix != ".gguf":
        print("bench session: no llama-server binary or GGUF file; its rows are skipped")
        return []
    lines = text.split("\n")
    rows: list[dict] = []
    start = time.monotonic()
    with llama_server(binary, gguf, Path(args.out).resolve() / "session-llama-server.log",
                      extra=SERVER_OPTIONS) as url:
        for jump, (number, cut) in enumerate(_places(lines, jumps)):
            _llama_visit(url, lines, number, cut, rows, jump)
    print(f"bench session: llama-server visits took {time.monotonic() - start:.0f} s")
    return rows


def _llama_visit(url: str, lines: list[str], number: int, cut: int, rows: list[dict], jump: int) -> None:
    """`_visit` for llama-server: read (it gets nothing meanwhile), then a request per key,
    each aborting the one still open."""
    time.sleep(READ_S)
    calls: list[tuple[InfillCall, int, float]] = []  # (call, typed, sent at)
    for typed in range(cut + 1, cut + KEYS + 1):
        if calls:
            calls[-1][0].abort()
        edited = [*lines[:number], lines[number][:typed], *lines[number + 1:]]
        calls.append((InfillCall(url, infill_body(edited, number, typed), ANSWER_TIMEOUT_S), typed, time.monotonic()))
        time.sleep(KEY_S)
    for call, _, _ in calls:
        call.join(ANSWER_TIMEOUT_S)
    answers = [(key, typed, sent_at, call.at, call.text) for key, (call, typed, sent_at) in enumerate(calls)
               if call.answered()]
    rows.extend(_answer_rows(LLAMA, jump, number, lines[number], calls[0][2], answers))


def _answer_rows(mode: str, jump: int, number: int, line: str, first_sent: float,
                 answers: list[tuple[int, int, float, float, str]]) -> list[dict]:
    """The rows of one visit's answered keys, given as (key index, characters typed, sent at,
    answered at, text); `first_sent`: when the visit's first key was sent."""
    rows = []
    for order, (key, typed, sent_at, at, text) in enumerate(answers):
        suggestion = text.split("\n", 1)[0]
        rows.append({"mode": mode, "jump": jump, "key": key + 1, "line": number + 1,
                     "ms": round((at - sent_at) * 1000, 1),
                     # the user's wait at this place: from the first key to its first suggestion
                     "first_key_ms": round((at - first_sent) * 1000, 1) if order == 0 else None,
                     "completes": bool(suggestion) and suggestion.rstrip() == line[typed:].rstrip()})
    return rows


def _window_quality(args, holes: int) -> dict:
    """What answering from the first window costs: on `holes` line ends cut in standard
    library modules (in-process engine, default settings otherwise), the share of first
    lines that are exactly the rest of the real line, from the whole prompt and from a
    256-token window; and how often the two agree."""
    from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    generator = random.Random(11)
    sources = [stdlib / name for name in ("json/decoder.py", "textwrap.py", "shlex.py", "fnmatch.py",
                                          "bisect.py", "heapq.py")]
    results = {"full": 0, "window": 0, "agree": 0}
    for number in range(holes):
        path = sources[number % len(sources)]
        lines = path.read_text(encoding="utf-8").split("\n")
        (line, cut), = _places(lines, 1, generator)
        text = _with_line(lines, line, lines[line][:cut])
        cursor = sum(len(each) + 1 for each in lines[:line]) + cut
        request = CompletionRequest(text, cursor, "python", path.name, "stdlib")
        want = lines[line][cut:].rstrip()
        firsts = {}
        for name, window in (("full", 0), ("window", 256)):
            settings = EngineSettings(max_prompt_tokens=1024, first_window_tokens=window, time_budget_ms=10_000)
            answer = CompletionEngine(loaded, settings).complete(request, session_key="hole")
            firsts[name] = answer.text.split("\n", 1)[0].rstrip()
            results[name] += firsts[name] == want
        results["agree"] += firsts["full"] == firsts["window"]
    return {"window_holes": holes, "window_full_prompt_exact_share": round(results["full"] / holes, 3),
            "window_256_exact_share": round(results["window"] / holes, 3),
            "window_256_same_first_line_share": round(results["agree"] / holes, 3)}


def _session(server: LspProcess, root: Path, text: str, jumps: int) -> list[dict]:
    ids = iter(range(1, 1 << 30))
    server.send(request(0, "initialize", {"processId": None, "rootUri": root.as_uri(), "capabilities": {},
                                          "initializationOptions": {"indexEnabled": False}}))
    server.answer(0, ANSWER_TIMEOUT_S)
    server.send(notification("initialized", {}))
    server.wait_until_ready(ids, ANSWER_TIMEOUT_S)
    uris = {mode: (root / f"decoder_{mode}.py").as_uri() for mode in MODES}
    for mode, uri in uris.items():
        server.send(notification("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": text}}))
    lines = text.split("\n")
    places = _places(lines, jumps)
    start = time.monotonic()
    rows: list[dict] = []
    versions = dict.fromkeys(MODES, 1)
    names = list(MODES)
    for jump, (number, cut) in enumerate(places):
        for mode in names[jump % len(names):] + names[:jump % len(names)]:  # each goes first in turn
            server.send(notification("workspace/didChangeConfiguration", {"settings": MODES[mode]}))
            versions[mode] = _visit(server, uris[mode], lines, number, cut, versions[mode], ids, start, rows,
                                    mode, jump)
    return rows


def _places(lines: list[str], count: int, generator: random.Random | None = None) -> list[tuple[int, int]]:
    """`count` (line, cut column) pairs, spread over the file: code lines with room for the
    keys, cut after their first few characters."""
    candidates = [n for n, line in enumerate(lines)
                  if len(line.strip()) >= KEYS + 12 and not line.strip().startswith(("#", '"', "'"))]
    generator = generator or random.Random(7)
    chosen = sorted(generator.sample(candidates, min(count, len(candidates))))
    generator.shuffle(chosen)  # jumps go back and forth through the file
    places = []
    for number in chosen:
        line = lines[number]
        indent = len(line) - len(line.lstrip())
        places.append((number, generator.randrange(indent + 2, len(line) - KEYS - 2)))
    return places


def _visit(server, uri, lines, number, cut, version, ids, start, rows, mode, jump) -> int:
    """Jump to (number, cut), read, type KEYS characters; rows for every answered key."""
    line = lines[number]
    tracker = _Answers(server, start, [])
    version += 1
    server.send(notification("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                      "contentChanges": [{"text": _with_line(lines, number, line[:cut])}]}))
    hint = next(ids)
    tracker.sent(hint, "highlight")
    server.send(request(hint, "textDocument/documentHighlight", {"textDocument": {"uri": uri},
                                                               "position": {"line": number, "character": cut}}))
    time.sleep(READ_S)
    keys: list[tuple[int, int, float]] = []  # (request id, typed, sent at)
    for typed in range(cut + 1, cut + KEYS + 1):
        version += 1
        server.send(notification("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                          "contentChanges": [{"text": _with_line(lines, number, line[:typed])}]}))
        if keys and not tracker.answered(keys[-1][0]):
            server.send(notification("$/cancelRequest", {"id": keys[-1][0]}))
        msg_id = next(ids)
        tracker.sent(msg_id, "inline")
        keys.append((msg_id, typed, time.monotonic()))
        server.send(request(msg_id, "textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": number, "character": typed},
            "context": {"triggerKind": 2}}))
        time.sleep(KEY_S)
    tracker.wait(keys[-1][0])
    answers = {row["id"]: row for row in tracker.answers}
    rows.extend(_answer_rows(mode, jump, number, line, keys[0][2], [
        (key, typed, sent_at, answers[msg_id]["at"], answers[msg_id]["text"])
        for key, (msg_id, typed, sent_at) in enumerate(keys) if msg_id in answers]))
    # Back to the real text: the next visit starts from the file as it was.
    version += 1
    server.send(notification("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                      "contentChanges": [{"text": "\n".join(lines)}]}))
    return version


def _with_line(lines: list[str], number: int, new: str) -> str:
    return "\n".join([*lines[:number], new, *lines[number + 1:]])


def _summary(rows: list[dict]) -> dict:
    summary: dict = {}
    for mode in [*MODES, LLAMA]:
        times = sorted(r["ms"] for r in rows if r["mode"] == mode)
        firsts = sorted(r["first_key_ms"] for r in rows if r["mode"] == mode and r["first_key_ms"] is not None)
        if not times:
            continue
        summary[f"{mode}_answered_keys"] = len(times)
        summary[f"{mode}_key_p50_ms"] = round(statistics.median(times), 1)
        summary[f"{mode}_key_p95_ms"] = round(times[min(len(times) - 1, int(0.95 * len(times)))], 1)
        summary[f"{mode}_first_key_p50_ms"] = round(statistics.median(firsts), 1) if firsts else None
        summary[f"{mode}_first_key_max_ms"] = max(firsts) if firsts else None
        summary[f"{mode}_completes_line_share"] = round(
            sum(r["completes"] for r in rows if r["mode"] == mode) / len(times), 3)
    for baseline in ("neither", LLAMA):
        base = summary.get(f"{baseline}_first_key_p50_ms")
        for mode in ("default", "warm_only"):
            if base and summary.get(f"{mode}_first_key_p50_ms") is not None:
                summary[f"first_key_{mode}_over_{baseline}"] = round(summary[f"{mode}_first_key_p50_ms"] / base, 3)
    return summary


def _plot(rows: list[dict]):
    def draw(figure):
        keys, firsts = figure.subplots(1, 2)
        colours = ("tab:blue", "tab:green", "tab:orange", "tab:red")
        for offset, (mode, colour) in enumerate(zip([*MODES, LLAMA], colours)):
            mine = [r for r in rows if r["mode"] == mode]
            keys.scatter([r["key"] + 0.15 * (offset - 1.5) for r in mine], [r["ms"] for r in mine],
                         s=10, color=colour, label=mode)
            points = [(r["jump"], r["first_key_ms"]) for r in mine if r["first_key_ms"] is not None]
            if points:
                firsts.plot(*zip(*points), "o-", color=colour, label=mode)
        keys.set_xlabel("key after the jump")
        keys.set_ylabel("request to answer (ms)")
        keys.set_yscale("log")
        keys.legend()
        keys.set_title("every answered key")
        firsts.set_xlabel("jump")
        firsts.set_ylabel("first key to first suggestion (ms)")
        firsts.set_yscale("log")
        firsts.legend()
        firsts.set_title("the first key at a new place")

    return draw
