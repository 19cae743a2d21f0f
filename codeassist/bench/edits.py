"""`codeassist bench edits`: replay edit traces on real source files, for each KV reuse mode.

Traces, on a standard-library module, around a line inside a function in the middle of it:
typing that line character by character; inserting a line far above the cursor; deleting a
block above it; renaming an identifier in several places; moving the cursor to another
function. Every mode sees the same states; `full` (recompute everything) is the reference
for fidelity.
"""

from __future__ import annotations

import difflib
import re
import statistics
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model

from .report import BenchResult, machine_info

MODES = ("full", "prefix", "pie")
SOURCE_MODULES = ("argparse.py", "typing.py", "pathlib/__init__.py", "pathlib.py")


@dataclass(frozen=True)
class State:
    text: str
    cursor: int


def stdlib_source() -> tuple[str, str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in SOURCE_MODULES:
        if (stdlib / name).is_file():
            return name, (stdlib / name).read_text(encoding="utf-8")
    raise ValueError(f"none of {SOURCE_MODULES} found in {stdlib}")


def _code_lines(lines: list[str]) -> list[int]:
    """Indices of plain statement lines inside functions (no comments, strings, decorators)."""
    found = []
    for index, line in enumerate(lines):
        body = line.strip()
        if (line.startswith("        ") and len(body) >= 24 and not body.startswith(("#", '"', "'", "@"))
                and not body.endswith((":", ",", "(", "\\")) and "=" in body):
            found.append(index)
    return found


def _offset(lines: list[str], line: int, column: int = 0) -> int:
    return sum(len(l) + 1 for l in lines[:line]) + column


def build_traces(text: str, keystrokes: int) -> dict[str, tuple[State, list[State]]]:
    """trace name -> (the state the session starts from, the states measured after it)."""
    lines = text.split("\n")
    candidates = _code_lines(lines)
    target = next(i for i in candidates if i > len(lines) // 2)
    indent = len(lines[target]) - len(lines[target].lstrip())
    typed_line = lines[target][indent:]
    base_lines = lines[:target] + [" " * indent] + lines[target + 1 :]
    base = State("\n".join(base_lines), _offset(base_lines, target, indent))

    typing = []
    for count in range(1, min(keystrokes, len(typed_line)) + 1):
        typed = base_lines[:target] + [" " * indent + typed_line[:count]] + base_lines[target + 1 :]
        typing.append(State("\n".join(typed), _offset(typed, target, indent + count)))

    inserted = base_lines[: target - 20] + ["# a note added far above the cursor"] + base_lines[target - 20 :]
    insert = State("\n".join(inserted), _offset(inserted, target + 1, indent))

    deleted = base_lines[: target - 12] + base_lines[target - 7 :]
    delete = State("\n".join(deleted), _offset(deleted, target - 5, indent))

    window = "\n".join(base_lines[target - 40 : target])
    names = [w for w in re.findall(r"\b[a-z_][a-z0-9_]{3,}\b", window) if w not in {"self", "return", "None"}]
    name = max(set(names), key=lambda w: (names.count(w), w))
    pattern = re.compile(rf"\b{re.escape(name)}\b")
    renamed_lines = [pattern.sub(name + "_renamed", l) if target - 40 <= i < target + 10 else l
                     for i, l in enumerate(base_lines)]
    rename = State("\n".join(renamed_lines), _offset(renamed_lines, target, indent))

    other = next((i for i in candidates if i > target + 150), candidates[0])
    other_indent = len(lines[other]) - len(lines[other].lstrip())
    move = State(base.text, _offset(base_lines, other, other_indent))
    return {
        "typing": (base, typing),
        "insert_far_above": (base, [insert]),
        "delete_block": (base, [delete]),
        "rename_identifier": (base, [rename]),
        "move_cursor": (base, [move]),
    }


def run(loaded, quick: bool, contexts: list[int] | None = None,
        keystrokes: int | None = None, margin: int | None = None) -> tuple[dict, list[dict]]:
    from tqdm import tqdm

    contexts = contexts or ([2048] if quick else [512, 1024, 2048, 4096])
    keystrokes = keystrokes or (5 if quick else 12)
    source_name, text = stdlib_source()
    traces = build_traces(text, keystrokes)
    rows: list[dict] = []
    steps = sum(len(states) + 1 for _, states in traces.values()) * len(MODES) * len(contexts)
    bar = tqdm(total=steps, desc="bench edits", unit="req")
    for context in contexts:
        engines = {
            mode: CompletionEngine(loaded, EngineSettings(
                max_new_tokens=8 if quick else 16, time_budget_ms=120_000,
                max_prompt_tokens=context, kv_mode=mode,
                # Typed into the last suggestion, the direct answer skips the prompt: every
                # mode would look as fast. This bench measures the prompt.
                recycle_direct=False,
                reencode_margin=EngineSettings.reencode_margin if margin is None else margin))
            for mode in MODES
        }
        for trace, (start, states) in traces.items():
            reference: list = []
            for mode, engine in engines.items():
                key = f"{trace}-{context}"
                engine.complete(_request(start, source_name), session_key=key)  # warm the session
                bar.update()
                for step, state in enumerate(states):
                    began = time.perf_counter()
                    result = engine.complete(_request(state, source_name), session_key=key)
                    total_ms = (time.perf_counter() - began) * 1000
                    bar.update()
                    if mode == "full":
                        reference.append(result)
                    ref = reference[step]
                    rows.append({
                        "context": context, "trace": trace, "step": step, "mode": mode,
                        "prompt_tokens": result.prompt_tokens, "encoded": result.kv["encoded"],
                        "reused": result.kv["reused"], "rotated": result.kv["rotated"],
                        "ttft_ms": round(result.prompt_ms, 1), "total_ms": round(total_ms, 1),
                        "tokens": result.tokens,
                        "first_token_agrees": result.first_token == ref.first_token,
                        "exact_match": result.text == ref.text,
                        "edit_similarity": round(difflib.SequenceMatcher(None, result.text, ref.text).ratio(), 3),
                        "text": result.text,
                    })
                engine.forget(key)
    bar.close()
    return summarize(rows, contexts), rows


def run_bench(args) -> BenchResult:
    """`codeassist bench edits`: the CLI's entry point."""
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    contexts = [int(c) for c in args.contexts.split(",")] if args.contexts else None
    summary, rows = run(loaded, args.quick, contexts, args.keystrokes, args.margin)
    columns = ["context", "trace", "step", "mode", "prompt_tokens", "encoded", "rotated",
               "ttft_ms", "total_ms", "first_token_agrees", "exact_match"]
    used = sorted({r["context"] for r in rows})
    return BenchResult(summary, rows, columns, machine_info(loaded), plot(rows, used))


def _request(state: State, path: str) -> CompletionRequest:
    return CompletionRequest(state.text, state.cursor, "python", path, "cpython-stdlib")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarize(rows: list[dict], contexts: list[int]) -> dict:
    summary: dict = {}
    for context in contexts:
        for mode in MODES:
            typing = [r for r in rows if r["context"] == context and r["mode"] == mode and r["trace"] == "typing"]
            every = [r for r in rows if r["context"] == context and r["mode"] == mode]
            if not typing:
                continue
            prefix = f"{mode}_{context}"
            summary[f"{prefix}_typing_ttft_p50_ms"] = statistics.median(r["ttft_ms"] for r in typing)
            summary[f"{prefix}_typing_ttft_p95_ms"] = _pct([r["ttft_ms"] for r in typing], 0.95)
            summary[f"{prefix}_typing_total_p50_ms"] = statistics.median(r["total_ms"] for r in typing)
            summary[f"{prefix}_typing_total_p95_ms"] = _pct([r["total_ms"] for r in typing], 0.95)
            summary[f"{prefix}_mean_encoded_tokens"] = round(statistics.mean(r["encoded"] for r in every), 1)
        full = summary.get(f"full_{context}_typing_ttft_p50_ms")
        pie = summary.get(f"pie_{context}_typing_ttft_p50_ms")
        if full and pie:
            summary[f"ttft_speedup_pie_vs_full_typing_{context}"] = round(full / pie, 2)
    for mode in ("prefix", "pie"):
        chosen = [r for r in rows if r["mode"] == mode]
        summary[f"{mode}_exact_match_vs_full"] = round(statistics.mean(r["exact_match"] for r in chosen), 3)
        summary[f"{mode}_first_token_agreement"] = round(statistics.mean(r["first_token_agrees"] for r in chosen), 3)
        summary[f"{mode}_edit_similarity"] = round(statistics.mean(r["edit_similarity"] for r in chosen), 3)
    return summary


def plot(rows: list[dict], contexts: list[int]):
    def draw(figure) -> None:
        left, right = figure.subplots(1, 2)
        for mode in MODES:
            ttft = [statistics.median(r["ttft_ms"] for r in rows if r["mode"] == mode
                                      and r["context"] == c and r["trace"] == "typing") for c in contexts]
            encoded = [statistics.mean(r["encoded"] for r in rows if r["mode"] == mode and r["context"] == c)
                       for c in contexts]
            left.plot(contexts, ttft, marker="o", label=mode)
            right.plot(contexts, encoded, marker="o", label=mode)
        left.set(xscale="log", yscale="log", xlabel="prompt tokens", ylabel="time to first token, p50 (ms)",
                 title="typing trace")
        right.set(xscale="log", yscale="log", xlabel="prompt tokens", ylabel="tokens encoded per request",
                  title="all traces")
        for axis in (left, right):
            axis.minorticks_off()
            axis.set_xticks(contexts, [str(c) for c in contexts])
            axis.legend()

    return draw
