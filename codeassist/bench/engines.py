"""`codeassist bench engines`: the same typing trace served by the local engine (the model
in this process, KV cache reused across keystrokes) and by a remote engine (llama-server on
the same GGUF file, same thread count, its prompt cache on), one keystroke at a time.

Per keystroke: time to the first token and to the whole suggestion, prompt tokens, and the
share of the prompt the engine reports as cached. Suggestions are not recycled on either
side (every keystroke asks the model), so the numbers are the engines'.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model
from completion.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, ensure_gguf
from completion.remote_engine import open_remote_engine

from .edits import build_traces, stdlib_source
from .llama_server import llama_server, llama_server_binary
from .report import BenchResult, machine_info

ENGINES = ("local", "remote")


def run_bench(args) -> BenchResult:
    keystrokes = args.keystrokes or (10 if args.quick else 30)
    context = int(args.contexts.split(",")[0]) if args.contexts else 1024
    settings = EngineSettings(max_new_tokens=16, time_budget_ms=120_000, max_prompt_tokens=context,
                              recycle_direct=False, token_healing=False)
    source_name, text = stdlib_source()
    start, states = build_traces(text, keystrokes)["typing"]
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    local = CompletionEngine(loaded, settings)
    if args.engine != "local":
        rows = _trace(local, open_remote_engine(args.engine, args.engine_model, None, settings),
                      start, states, source_name)
        reference = args.engine
    else:
        binary = llama_server_binary(args.llama_server)
        if binary is None:
            raise ValueError("no remote engine: give --engine URL, or build llama-server "
                             "(.ci/install_llama_server.sh) or name it with --llama-server")
        gguf = ensure_gguf(EMBEDDED_MODELS[DEFAULT_MODEL]) if args.model == DEFAULT_MODEL else Path(args.model)
        with tempfile.TemporaryDirectory() as scratch, \
                llama_server(binary, gguf, Path(scratch) / "llama-server.log") as url:
            rows = _trace(local, open_remote_engine(url, "", None, settings), start, states, source_name)
        reference = f"llama-server {binary}"
    machine = {**machine_info(loaded), "remote_engine": reference, "context_tokens": context}
    columns = ["step", "engine", "prompt_tokens", "cached", "ttft_ms", "total_ms", "tokens", "same_first_line"]
    return BenchResult(_summary(rows), rows, columns, machine, _plot(rows))


def _trace(local, remote, start, states, path: str) -> list[dict]:
    rows: list[dict] = []
    for name, engine in (("local", local), ("remote", remote)):
        engine.complete(_request(start, path), session_key="trace")  # warm: the session, the cache
        for step, state in enumerate(states):
            began = time.perf_counter()
            result = engine.complete(_request(state, path), session_key="trace")
            rows.append({"step": step, "engine": name, "prompt_tokens": result.prompt_tokens,
                         "cached": result.kv.get("cached", result.kv.get("reused")),
                         "ttft_ms": round(result.prompt_ms, 1),
                         "total_ms": round((time.perf_counter() - began) * 1000, 1),
                         "tokens": result.tokens, "stop_reason": result.stop_reason, "text": result.text})
    by_step = {(r["engine"], r["step"]): r["text"].split("\n")[0] for r in rows}
    for row in rows:
        row["same_first_line"] = by_step[("local", row["step"])] == by_step[("remote", row["step"])]
    return rows


def _request(state, path: str) -> CompletionRequest:
    return CompletionRequest(state.text, state.cursor, "python", path, "cpython-stdlib")


def _pct(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def _summary(rows: list[dict]) -> dict:
    summary: dict = {}
    for engine in ENGINES:
        mine = [r for r in rows if r["engine"] == engine]
        for key in ("ttft_ms", "total_ms"):
            summary[f"{engine}_{key.removesuffix('_ms')}_p50_ms"] = statistics.median(r[key] for r in mine)
            summary[f"{engine}_{key.removesuffix('_ms')}_p95_ms"] = _pct([r[key] for r in mine], 0.95)
    remote = [r for r in rows if r["engine"] == "remote" and r["cached"] is not None]
    if remote:
        summary["remote_prompt_cached_share"] = round(
            sum(r["cached"] for r in remote) / max(sum(r["prompt_tokens"] for r in remote), 1), 3)
    local = [r for r in rows if r["engine"] == "local"]
    summary["local_prompt_reused_share"] = round(
        sum(r["cached"] or 0 for r in local) / max(sum(r["prompt_tokens"] for r in local), 1), 3)
    summary["same_first_line_share"] = round(statistics.mean(r["same_first_line"] for r in local), 3)
    summary["keystrokes"] = len(local)
    return summary


def _plot(rows: list[dict]):
    def draw(figure) -> None:
        left, right = figure.subplots(1, 2)
        for engine, color in zip(ENGINES, ("tab:blue", "tab:orange")):
            mine = [r for r in rows if r["engine"] == engine]
            left.plot([r["step"] for r in mine], [r["ttft_ms"] for r in mine], "o-", color=color, label=engine)
            right.plot([r["step"] for r in mine], [r["total_ms"] for r in mine], "o-", color=color, label=engine)
        left.set(xlabel="keystroke", ylabel="ms", title="time to the first token")
        right.set(xlabel="keystroke", ylabel="ms", title="time to the whole suggestion")
        left.legend()
        right.legend()

    return draw
