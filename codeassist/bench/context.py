"""`codeassist bench context`: repository context in FIM prompts, and hover summaries.

1. Accuracy: holes in standard-library package lines that call a function defined in
   another file of the package (context_set.py); exact match and edit similarity of the
   first suggested line, without and with repository context (same engine, same budgets),
   and llama-server /infill on the same GGUF given the same prefix and suffix window as the
   engine without context (stop at the newline). "call" holes start at the called name,
   "args" holes after its "(" (reported apart; llama-server answers the call holes).
2. Latency: typing traces (the expected line typed character by character at a hole, KV
   reuse on) without and with context; time to first token includes gathering the context.
3. Summaries: cold (generated) and cached latency, and a sample to read.
"""

from __future__ import annotations

import difflib
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model
from completion.summarize import Summarizer
from completion.summary_cache import SummaryCache
from retrieval import CodeIndex, IndexConfig
from retrieval.context import MIN_HIT_SCORE, RepoContext
from retrieval.definitions import DefinitionFinder

from .context_set import PACKAGES, QUICK_PACKAGES, Hole, argument_holes, copy_packages, find_holes
from .llama_server import infill, llama_server, llama_server_binary
from .report import BenchResult, machine_info

MODES = ("none", "context")
REPO_NAME = "cpython-stdlib"


def run_bench(args) -> BenchResult:
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    quick = args.quick
    packages = QUICK_PACKAGES if quick else PACKAGES
    per_package, traces, keystrokes = (6, 2, 10) if quick else (14, 4, 16)
    if args.keystrokes:
        keystrokes = args.keystrokes
    budget = int(args.contexts.split(",")[0]) if args.contexts else 384
    settings = EngineSettings(max_new_tokens=32, max_prompt_tokens=512, context_budget_tokens=budget,
                              speculative=False, time_budget_ms=30_000)
    engine = CompletionEngine(loaded, settings)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-context-", dir=args.out) as scratch:
        root = Path(scratch) / "stdlib"
        used = copy_packages(packages, root)
        index = CodeIndex(root, IndexConfig(index_dir=str(Path(scratch) / "index")))
        started = time.perf_counter()
        stats = index.update()
        index_s = time.perf_counter() - started
        finder = DefinitionFinder(root, index)
        holes = [h for package in used for h in find_holes(root, package, per_package)]
        arguments = argument_holes(holes)
        rows = _accuracy(engine, finder, holes + arguments)
        rows += _llama_accuracy(args, loaded.name, engine, holes, Path(args.out))
        typing_holes = sorted(holes, key=lambda h: -len(h.expected))[:traces]
        rows += _typing(engine, finder, typing_holes, keystrokes)
        callees = list(dict.fromkeys(h.callee for h in holes))[: 4 if quick else 10]
        rows += _summaries(loaded, finder, callees, Path(scratch) / "summaries.json")
    summary = _summary(rows, budget)
    summary.update(packages=",".join(used), holes=len(holes), args_holes=len(arguments),
                   index_chunks=stats.chunks, index_seconds=round(index_s, 1))
    columns = ["kind", "mode", "path", "line", "step", "exact", "edit_sim", "callee_in_context",
               "prompt_tokens", "context_tokens", "encoded", "ttft_ms", "total_ms"]
    print("summaries (a sample to read):")  # the command's own output, above its table
    for row in (r for r in rows if r["kind"] == "summary"):
        print(f"  {row['path']}:{row['line']} {row['signature']}\n    -> {row['summary']}")
    print()
    return BenchResult(summary, rows, columns, machine_info(loaded), _plot(rows))


def _request(hole: Hole, text: str, cursor: int) -> CompletionRequest:
    return CompletionRequest(text, cursor, "python", hole.path, REPO_NAME)


def _with_context(request: CompletionRequest, context: RepoContext | None, key: str,
                  finder: DefinitionFinder) -> tuple[CompletionRequest, float]:
    """(the request with snippets when `context`, ms spent gathering them)."""
    if context is None:
        return request, 0.0
    start = time.perf_counter()
    snippets = context.snippets(key, finder, request.path, request.text, request.cursor)
    return replace(request, context=snippets), (time.perf_counter() - start) * 1000


def _accuracy(engine: CompletionEngine, finder: DefinitionFinder, holes: list[Hole]) -> list[dict]:
    rows = []
    for number, hole in enumerate(holes):
        for mode in MODES:
            context = RepoContext() if mode == "context" else None
            request, gather_ms = _with_context(_request(hole, hole.text, hole.cursor), context,
                                               f"hole-{number}", finder)
            result = engine.complete(request)
            got = result.text.split("\n", 1)[0].rstrip()
            files, context_tokens = _selected(engine, request)
            rows.append({
                "kind": "hole" if hole.kind == "call" else "args_hole", "mode": mode,
                "path": hole.path, "line": hole.line,
                "exact": got.strip() == hole.expected.strip(),
                "edit_sim": difflib.SequenceMatcher(None, got.strip(), hole.expected.strip()).ratio(),
                "prompt_tokens": result.prompt_tokens,
                "context_tokens": context_tokens,
                "callee_in_context": _shows(files, hole.callee),
                "ttft_ms": gather_ms + result.prompt_ms,
                "total_ms": gather_ms + result.prompt_ms + result.decode_ms,
                "expected": hole.expected, "got": got, "callee": hole.callee,
            })
    return rows


def _llama_accuracy(args, model: str, engine: CompletionEngine, holes: list[Hole], out: Path) -> list[dict]:
    """llama-server's first line at each call hole, from the window the engine's prompt holds
    without context; none where there is no llama-server binary (said on stderr)."""
    from completion.embedded import EMBEDDED_MODELS, ensure_gguf

    binary = llama_server_binary(getattr(args, "llama_server", None))
    gguf = ensure_gguf(EMBEDDED_MODELS[model]) if model in EMBEDDED_MODELS else Path(model)
    if binary is None or gguf.suffix != ".gguf":
        print("bench context: no llama-server binary or GGUF file; its rows are skipped")
        return []
    rows = []
    with llama_server(binary, gguf, out / "context-llama-server.log") as url:
        for hole in holes:
            prefix, suffix = _window(engine, hole.text[: hole.cursor], hole.text[hole.cursor :])
            content, ms = infill(url, prefix, suffix, engine.settings.max_new_tokens, 600, stop=["\n"])
            got = content.split("\n", 1)[0].rstrip()
            rows.append({
                "kind": "hole", "mode": "llama-server", "path": hole.path, "line": hole.line,
                "exact": got.strip() == hole.expected.strip(),
                "edit_sim": difflib.SequenceMatcher(None, got.strip(), hole.expected.strip()).ratio(),
                "ttft_ms": None, "total_ms": ms, "expected": hole.expected, "got": got, "callee": hole.callee,
            })
    return rows


def _window(engine: CompletionEngine, prefix: str, suffix: str) -> tuple[str, str]:
    """The prefix and suffix text the engine's FIM prompt keeps (no repository header)."""
    from completion.prompt import PromptBudget, build_fim_prompt

    budget = PromptBudget(engine.settings.max_prompt_tokens, engine.settings.suffix_share)
    ids = build_fim_prompt(engine.fim, engine.encode, prefix, suffix, budget).ids
    start = ids.index(engine.fim.suffix_id)  # [prefix marker, prefix, suffix marker, suffix, middle marker]
    return engine.decode(ids[1:start]), engine.decode(ids[start + 1 : -1])


def _selected(engine: CompletionEngine, request: CompletionRequest):
    """(the snippets the prompt shows, their tokens)."""
    from completion.context import select_context

    return select_context(request.context, engine.encode, engine.settings.context_budget_tokens)


def _shows(files, callee: str) -> bool:
    """Whether the snippets show the callee ("path:qualified.name") by a def or class line."""
    path, name = callee.split(":", 1)
    name = name.rsplit(".", 1)[-1]
    return any(f.path == path and any(line.lstrip().startswith((f"def {name}(", f"class {name}(",
                                                                   f"class {name}:"))
                                      for line in f.content.split("\n")) for f in files)


def _typing(engine: CompletionEngine, finder: DefinitionFinder, holes: list[Hole],
            keystrokes: int) -> list[dict]:
    """Type each hole's expected line one character at a time, KV reuse on (`pie`)."""
    rows = []
    full_settings = engine.settings
    engine.settings = replace(full_settings, max_new_tokens=4)  # only the first token matters
    for number, hole in enumerate(holes):
        for mode in MODES:
            key = f"typing-{number}-{mode}"
            context = RepoContext() if mode == "context" else None
            for step in range(min(keystrokes, len(hole.expected)) + 1):
                typed = hole.expected[:step]
                text = hole.text[: hole.cursor] + typed + hole.text[hole.cursor:]
                request, gather_ms = _with_context(_request(hole, text, hole.cursor + step),
                                                   context, key, finder)
                result = engine.complete(request, session_key=key)
                rows.append({
                    "kind": "typing", "mode": mode, "path": hole.path, "line": hole.line,
                    "step": step, "prompt_tokens": result.prompt_tokens,
                    "encoded": result.kv.get("encoded"), "ttft_ms": gather_ms + result.prompt_ms,
                    "total_ms": gather_ms + result.prompt_ms + result.decode_ms,
                })
            engine.forget(key)
    engine.settings = full_settings
    return rows


def _summaries(loaded, finder: DefinitionFinder, callees: list[str], cache_path: Path) -> list[dict]:
    summarizer, cache = Summarizer(loaded), SummaryCache(cache_path)
    rows = []
    for callee in callees:
        path, name = callee.split(":", 1)
        definition = next((d for d in finder.definitions_of(path) if d.qualified_name == name), None)
        if definition is None:
            continue
        request = finder.summary_request(definition)
        key = request.key(loaded.name)
        start = time.perf_counter()
        summary = summarizer.summarize(request)
        cold_ms = (time.perf_counter() - start) * 1000
        cache.put(key, summary.text)
        start = time.perf_counter()
        cached = cache.get(key)
        cached_ms = (time.perf_counter() - start) * 1000
        rows.append({"kind": "summary", "mode": "cold", "path": path, "line": definition.start_line,
                     "total_ms": cold_ms, "prompt_tokens": summary.prompt_tokens,
                     "symbol": definition.qualified_name, "signature": definition.signature,
                     "summary": summary.text, "cached_ms": cached_ms, "cache_ok": cached == summary.text})
    return rows


def _p50(values) -> float:
    values = list(values)
    return round(statistics.median(values), 1) if values else float("nan")


def _summary(rows: list[dict], budget: int) -> dict:
    summary: dict = {"context_budget_tokens": budget}
    for mode in MODES:
        holes = [r for r in rows if r["kind"] == "hole" and r["mode"] == mode]
        label = "with_context" if mode == "context" else "without_context"
        summary[f"exact_match_{label}"] = round(sum(r["exact"] for r in holes) / max(len(holes), 1), 3)
        summary[f"edit_similarity_{label}"] = round(
            sum(r["edit_sim"] for r in holes) / max(len(holes), 1), 3)
        summary[f"ttft_p50_ms_cold_{label}"] = _p50(r["ttft_ms"] for r in holes)
        typing = [r for r in rows if r["kind"] == "typing" and r["mode"] == mode and r["step"] > 0]
        summary[f"ttft_p50_ms_typing_{label}"] = _p50(r["ttft_ms"] for r in typing)
        summary[f"encoded_p50_typing_{label}"] = _p50(r["encoded"] for r in typing)
    for mode in MODES:
        holes = [r for r in rows if r["kind"] == "args_hole" and r["mode"] == mode]
        label = "with_context" if mode == "context" else "without_context"
        summary[f"args_exact_match_{label}"] = round(
            sum(r["exact"] for r in holes) / max(len(holes), 1), 3)
        summary[f"args_edit_similarity_{label}"] = round(
            sum(r["edit_sim"] for r in holes) / max(len(holes), 1), 3)
    llama = [r for r in rows if r["kind"] == "hole" and r["mode"] == "llama-server"]
    if llama:
        summary["exact_match_llama_server"] = round(sum(r["exact"] for r in llama) / len(llama), 3)
        summary["edit_similarity_llama_server"] = round(sum(r["edit_sim"] for r in llama) / len(llama), 3)
        summary["total_p50_ms_llama_server"] = _p50(r["total_ms"] for r in llama)
    for mode in MODES:
        holes = [r for r in rows if r["kind"] == "hole" and r["mode"] == mode]
        summary[f"total_p50_ms_cold_{'with_context' if mode == 'context' else 'without_context'}"] = \
            _p50(r["total_ms"] for r in holes)
    summary["min_hit_score"] = MIN_HIT_SCORE
    with_context = [r for r in rows if r["kind"] == "hole" and r["mode"] == "context"]
    summary["context_tokens_p50"] = _p50(r["context_tokens"] for r in with_context)
    summary["callee_in_context"] = round(
        sum(r["callee_in_context"] for r in with_context) / max(len(with_context), 1), 3)
    summary["exact_match_gain"] = round(summary["exact_match_with_context"]
                                        - summary["exact_match_without_context"], 3)
    summary["args_exact_match_gain"] = round(summary["args_exact_match_with_context"]
                                             - summary["args_exact_match_without_context"], 3)
    summary["ttft_ratio_context_vs_none"] = round(
        summary["ttft_p50_ms_typing_with_context"] / summary["ttft_p50_ms_typing_without_context"], 3)
    summaries = [r for r in rows if r["kind"] == "summary"]
    summary["summary_cold_ms_p50"] = _p50(r["total_ms"] for r in summaries)
    summary["summary_cached_ms_p50"] = round(statistics.median(r["cached_ms"] for r in summaries), 4) \
        if summaries else float("nan")
    return summary


def _plot(rows: list[dict]):
    def draw(figure) -> None:
        left, right = figure.subplots(1, 2)
        for mode in (*MODES, "llama-server"):
            holes = [r for r in rows if r["kind"] == "hole" and r["mode"] == mode]
            if not holes:
                continue
            left.bar([f"{mode}\nexact", f"{mode}\nedit sim"],
                     [sum(r["exact"] for r in holes) / len(holes), sum(r["edit_sim"] for r in holes) / len(holes)])
        for mode in MODES:
            typing = [r for r in rows if r["kind"] == "typing" and r["mode"] == mode]
            right.plot(range(len(typing)), [r["ttft_ms"] for r in typing], marker=".", label=mode)
        left.set_title("first line of the hole")
        right.set_title("typing trace: time to first token (ms)")
        right.set_xlabel("keystroke (all traces)")
        right.legend()

    return draw
