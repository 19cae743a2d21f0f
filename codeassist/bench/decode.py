"""`codeassist bench decode`: the cost of one model pass, packed GGUF weights against the fp32
path and llama.cpp on the same file, threads and machine, in one run.

Rows, per model and path:
- prefill tokens/s over 128, 512 and 2048 tokens of real code (a fresh cache, one pass),
  and the share of the machine's int8 peak its linear layers reach (their multiply-adds per
  token times tokens/s, over the peak the kernel library measures for its own int8 product
  step on all threads: `SmallBatchGemm.int8_peak`; attention not counted);
- decode tokens/s: greedy steps one token at a time after a 512-token prompt (median step),
  in ROUNDS rounds (the median is reported);
- for llama.cpp, `llama-bench` on the same GGUF (pp128, pp512, pp2048, and tg64 at depth 512 once
  after each decode round of the packed path: a shared machine's speed drifts, and both
  sides then see the same drifts), found through `--llama-bench PATH` or
  `$CODEASSIST_LLAMA_BENCH` (the column is skipped, with a message, when absent).
Then, for the default model: greedy completions of the speculative bench's holes on the
packed path against the fp32 path (the share with the same text), speculative decoding
against plain greedy on the packed path (identical share and tokens/s; the engine's n-gram
cache holds the hole's sibling modules, as the server fills it for an open document; the
speculative runs alternate with llama-bench decode runs and are compared with them), the
time from an empty CODEASSIST_HOME to the first suggestion (`codeassist complete` in a fresh
process), and the resident memory of `codeassist serve` once its model is loaded.
Written as `decode.json` from an AVX-512 machine, `decode_<isa>.json` from another kernel
build's (the stored runs of both kinds of machine are kept).
"""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model
from completion.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, ensure_gguf, is_installed
from completion.growing_cache import growing_cache

from .report import BenchResult, machine_info
from .speculative import _holes, _source_files, open_folder

PROMPTS = (128, 512, 2048)
DEPTH = 512  # decode steps run after a prompt of this many tokens
ROUNDS = 5  # decode measurements alternating with llama-bench's (the median is reported)
SPECULATIVE_ROUNDS = 3  # speculative engine runs over the holes, each between llama-bench runs


def run_bench(args) -> BenchResult:
    quick = args.quick
    models = [m for m in (DEFAULT_MODEL, "qwen2.5-coder-1.5b") if is_installed(EMBEDDED_MODELS[m])]
    rows: list[dict] = []
    llama_bench = _llama_bench_binary(args)
    rounds = 1 if quick else ROUNDS
    for model in models:
        llama = _llama_prefill(llama_bench, model, repeats=1 if quick else 3) if llama_bench else None
        paths = ["packed", "fp32"] if model == DEFAULT_MODEL else ["packed"]  # fp32 1.5B: 6 GB, ~2 tok/s
        for path in paths:
            # The packed path's decode alternates with llama.cpp's, round by round.
            rival = llama_bench if llama and path == "packed" else None
            row, theirs = _pass_speed(model, path, repeats=1 if quick else 3, steps=24 if quick else 48,
                                      rounds=rounds, llama_bench=rival)
            if theirs and all(theirs):
                llama["decode_tok_s"] = round(statistics.median(theirs), 2)
                llama["decode_rounds"] = [round(r, 2) for r in theirs]
                row["decode_vs_llamacpp"] = round(
                    statistics.median(a / b for a, b in zip(row["decode_rounds"], theirs)), 2)
            rows.append(row)
        if llama:
            rows.append(llama)
    peak = _int8_peak()
    summary = _speed_summary(rows, peak)
    summary.update(_exactness(quick, llama_bench))
    summary["first_suggestion_s_fresh_home"] = _first_suggestion_s()
    summary["serve_rss_mb_after_load"] = _serve_rss_mb()
    columns = ["model", "path", *(f"prefill_{n}_tok_s" for n in PROMPTS), "decode_tok_s", "load_s"]
    machine = machine_info()
    machine["kernel_isa"] = _kernel_isa()
    name = "decode" if machine["kernel_isa"] == "avx512" else f"decode_{machine['kernel_isa']}"
    return BenchResult(summary, rows, columns, machine, _plot(rows), name)


def _code_tokens(tokenizer, count: int) -> torch.Tensor:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted((stdlib / "json").glob("*.py")))
    ids = tokenizer(text * 4, return_tensors="pt").input_ids[:, :count]
    if ids.shape[1] < count:
        raise ValueError(f"need {count} tokens of code, found {ids.shape[1]}")
    return ids


def _pass_speed(model: str, path: str, repeats: int, steps: int, rounds: int,
                llama_bench: str | None) -> tuple[dict, list[float | None]]:
    """Prefill and decode speed of one path, and llama.cpp's decode tokens/s per round. Decode
    is measured in `rounds` rounds; with `llama_bench`, each round is followed by one
    llama-bench decode run, so both see the same drifts of a shared machine's speed."""
    loaded = load_model(model, dtype=path)
    ids = _code_tokens(loaded.tokenizer, max(PROMPTS))
    row = {"model": model, "path": path, "load_s": round(loaded.load_ms / 1000, 1),
           "linear_macs_per_token": linear_macs_per_token(loaded.model.config)}
    with torch.inference_mode():
        loaded.model(input_ids=ids[:, :16], use_cache=True, logits_to_keep=1)  # warm-up, untimed
        for count in PROMPTS:
            times = []
            for _ in range(repeats):
                began = time.perf_counter()
                loaded.model(input_ids=ids[:, :count], cache=growing_cache(loaded.model.config), use_cache=True,
                             logits_to_keep=1)
                times.append(time.perf_counter() - began)
            row[f"prefill_{count}_tok_s"] = round(count / statistics.median(times), 1)
        ours, theirs = [], []
        for _ in range(rounds):
            ours.append(_decode_speed(loaded.model, ids, steps))
            if llama_bench:
                theirs.append(_llama_decode(llama_bench, model))
    row["decode_tok_s"] = round(statistics.median(ours), 2)
    row["decode_rounds"] = [round(r, 2) for r in ours]
    del loaded
    gc.collect()
    return row, theirs


def _decode_speed(model, ids: torch.Tensor, steps: int) -> float:
    """Greedy steps one token at a time after a DEPTH-token prompt: tokens/s of the median step."""
    cache = growing_cache(model.config)
    out = model(input_ids=ids[:, :DEPTH], cache=cache, use_cache=True, logits_to_keep=1)
    token = out.logits[:, -1:].argmax(-1)
    times = []
    for _ in range(steps):
        began = time.perf_counter()
        out = model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1:].argmax(-1)
        times.append(time.perf_counter() - began)
    return 1 / statistics.median(times)


def _llama_bench_binary(args) -> str | None:
    found = getattr(args, "llama_bench", None) or os.environ.get("CODEASSIST_LLAMA_BENCH")
    if found and Path(found).is_file():
        return found
    why = f"not found: {found}" if found else "give --llama-bench PATH or set CODEASSIST_LLAMA_BENCH"
    print(f"bench decode: no llama-bench ({why}); the llama.cpp rows are skipped", file=sys.stderr)
    return None


def _run_llama_bench(binary: str, model: str, *options: str) -> list[dict] | None:
    gguf = ensure_gguf(EMBEDDED_MODELS[model])
    argv = [binary, "-m", str(gguf), "-t", str(torch.get_num_threads()), "-o", "json", *options]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        print(f"bench decode: llama-bench failed: {result.stderr[-500:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout)


def _llama_prefill(binary: str, model: str, repeats: int) -> dict | None:
    """llama.cpp's row: prefill from llama-bench (pp512, pp2048); its decode is added by the
    packed path's rounds."""
    tests = _run_llama_bench(binary, model, "-r", str(repeats), "-p", ",".join(map(str, PROMPTS)), "-n", "0")
    if tests is None:
        return None
    row = {"model": model, "path": "llama.cpp", "load_s": None}
    for test in tests:
        row[f"prefill_{test['n_prompt']}_tok_s"] = round(test["avg_ts"], 1)
    return row


def _llama_decode(binary: str, model: str) -> float | None:
    """llama-bench tg64 at depth DEPTH, one run: tokens/s."""
    tests = _run_llama_bench(binary, model, "-r", "1", "-p", "0", "-n", "64", "-d", str(DEPTH))
    return tests[0]["avg_ts"] if tests else None


def linear_macs_per_token(config) -> int:
    """Multiply-adds of a decoder's linear layers per token (q, k, v, o, gate, up, down)."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    key_value = config.num_key_value_heads * head_dim
    return layers * (2 * hidden * hidden + 2 * hidden * key_value + 3 * hidden * config.intermediate_size)


def _int8_peak() -> float:
    """The kernel library's int8 multiply-adds per second on torch's threads (0: no int8 build)."""
    from completion.home import codeassist_home
    from kernels import cpu_gemm

    gemm = cpu_gemm.load(codeassist_home() / "kernels")
    return gemm.int8_peak() if gemm is not None else 0.0


def _speed_summary(rows: list[dict], peak: float) -> dict:
    summary = {"int8_peak_gmacs": round(peak / 1e9, 1)}
    macs = {row["model"]: row["linear_macs_per_token"] for row in rows if row.get("linear_macs_per_token")}
    for row in rows:
        size = row["model"].removeprefix("qwen2.5-coder-")
        stem = f"{size}_{row['path'].replace('.', '')}"
        for key in ("decode_tok_s", *(f"prefill_{n}_tok_s" for n in PROMPTS)):
            if row.get(key) is not None:
                summary[f"{key}_{stem}"] = row[key]
        for count in PROMPTS:
            speed = row.get(f"prefill_{count}_tok_s")
            if speed and peak and row["model"] in macs:
                summary[f"prefill_{count}_int8_peak_share_{stem}"] = round(speed * macs[row["model"]] / peak, 3)
    for size in ("0.5b", "1.5b"):
        for count in PROMPTS:
            packed, llama = (summary.get(f"prefill_{count}_tok_s_{size}_{p}") for p in ("packed", "llamacpp"))
            if packed and llama:
                summary[f"prefill_{count}_packed_vs_llamacpp_{size}"] = round(packed / llama, 2)
    for size in ("0.5b", "1.5b"):
        packed, fp32, llama = (summary.get(f"decode_tok_s_{size}_{p}") for p in ("packed", "fp32", "llamacpp"))
        if packed and fp32:
            summary[f"decode_packed_vs_fp32_{size}"] = round(packed / fp32, 2)
        if packed and llama:
            summary[f"decode_packed_vs_llamacpp_{size}"] = round(packed / llama, 2)
    for row in rows:
        if "decode_vs_llamacpp" in row:  # the median of the rounds' ratios
            summary[f"decode_packed_vs_llamacpp_rounds_{row['model'].removeprefix('qwen2.5-coder-')}"] = \
                row["decode_vs_llamacpp"]
    return summary


def _exactness(quick: bool, llama_bench: str | None) -> dict:
    """Greedy texts packed vs fp32; speculative vs plain greedy on the packed path. The
    speculative engine runs in rounds (a fresh engine each: nothing learnt in one round helps
    the next), each between two llama-bench decode runs: its speed is compared with
    llama.cpp's at the same time of a shared machine's drifting speed."""
    rng = random.Random(0)
    work = [(path, siblings, hole) for path, siblings in _source_files(quick)
            for hole in _holes(path.read_text(encoding="utf-8"), 3 if quick else 6, rng)]
    loaded = load_model(DEFAULT_MODEL, dtype="fp32")
    fp32_texts, fp32_speed = _engine_run(loaded, work, speculative=False)
    del loaded
    gc.collect()
    loaded = load_model(DEFAULT_MODEL, dtype="packed")
    packed_texts, packed_speed = _engine_run(loaded, work, speculative=False)
    rounds = _speculative_rounds(loaded, work, 1 if quick else SPECULATIVE_ROUNDS, llama_bench)
    del loaded
    gc.collect()
    result = {"holes": len(work),
              "greedy_identical_packed_vs_fp32": _same_share(packed_texts, fp32_texts),
              "speculative_identical_to_greedy_packed": _same_share(
                  [text for r in rounds for text in r["texts"]], packed_texts * len(rounds)),
              "engine_decode_tok_s_fp32_plain": fp32_speed,
              "engine_decode_tok_s_packed_plain": packed_speed,
              "engine_decode_tok_s_packed_speculative": statistics.median(r["tok_s"] for r in rounds),
              "engine_speculative_rounds_tok_s": [r["tok_s"] for r in rounds]}
    if all(r["llama_tok_s"] for r in rounds):
        result["engine_speculative_rounds_llamacpp_tok_s"] = [r["llama_tok_s"] for r in rounds]
        result["engine_speculative_vs_llamacpp_0.5b"] = round(
            statistics.median(r["tok_s"] / r["llama_tok_s"] for r in rounds), 2)
    return result


def _same_share(texts: list[str], others: list[str]) -> float:
    return round(statistics.mean(a == b for a, b in zip(texts, others, strict=True)), 3)


def _engine_run(loaded, work, **overrides) -> tuple[list[str], float]:
    """A fresh engine completes every hole: (texts, decode tokens/s after the first token)."""
    engine = CompletionEngine(loaded, EngineSettings(max_new_tokens=48, max_prompt_tokens=1024, kv_mode="full",
                                                     time_budget_ms=600_000, **overrides))
    texts, tokens, decode_ms = [], 0, 0.0
    for file, siblings, (text, cursor, _) in work:
        open_folder(engine, siblings)
        result = engine.complete(CompletionRequest(text, cursor, "python", file.name))
        texts.append(result.text)
        if result.tokens > 1:
            tokens, decode_ms = tokens + result.tokens - 1, decode_ms + result.decode_ms
    return texts, round(tokens / decode_ms * 1000, 2) if decode_ms else 0.0


def _speculative_rounds(loaded, work, rounds: int, llama_bench: str | None) -> list[dict]:
    """Speculative engine runs, each between two llama-bench decode runs (shared by
    neighbouring rounds); llama_tok_s: the mean of the two."""
    results = []
    before = _llama_decode(llama_bench, DEFAULT_MODEL) if llama_bench else None
    for _ in range(rounds):
        texts, tok_s = _engine_run(loaded, work)
        after = _llama_decode(llama_bench, DEFAULT_MODEL) if llama_bench else None
        llama = round((before + after) / 2, 2) if before and after else None
        results.append({"texts": texts, "tok_s": tok_s, "llama_tok_s": llama})
        before = after
    return results


def _first_suggestion_s() -> float:
    """`codeassist complete` in a fresh process with an empty CODEASSIST_HOME."""
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "circle.py"
        source.write_text("import math\n\n\ndef circumference(radius):\n    return \n")
        env = {**os.environ, "CODEASSIST_HOME": str(Path(scratch) / "home")}
        began = time.perf_counter()
        subprocess.run([_console_script(), "complete", f"{source}:5:12"], env=env, check=True,
                       capture_output=True, timeout=900)
        return round(time.perf_counter() - began, 1)


def _serve_rss_mb() -> float | None:
    """Resident memory of `codeassist serve` (stdio) once its model is ready and has answered
    a completion (every weight page read from the memory-mapped file)."""
    process = subprocess.Popen([_console_script(), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    try:
        _send(process, 1, "initialize", {"processId": os.getpid(), "rootUri": None, "capabilities": {}})
        _reply(process, 1)
        _send(process, None, "initialized", {})
        for attempt in range(600):
            _send(process, 100 + attempt, "workspace/executeCommand", {"command": "codeassist.status"})
            if _reply(process, 100 + attempt).get("modelStatus") == "ready":
                break
            time.sleep(1)
        else:
            return None
        uri, text = "file:///tmp/codeassist-bench/circle.py", "import math\n\n\ndef area(radius):\n    return "
        _send(process, None, "textDocument/didOpen",
              {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}})
        _send(process, 2, "textDocument/completion",
              {"textDocument": {"uri": uri}, "position": {"line": 4, "character": 11}})
        _reply(process, 2)
        return round(_rss_kb(process.pid) / 1024, 1)
    finally:
        process.kill()
        process.wait()


def _send(process, request_id, method: str, params) -> None:
    message = {"jsonrpc": "2.0", "method": method, "params": params}
    if request_id is not None:
        message["id"] = request_id
    _write(process, message)


def _write(process, message: dict) -> None:
    body = json.dumps(message).encode()
    process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    process.stdin.flush()


def _reply(process, request_id) -> dict:
    """The result of `request_id`, skipping notifications and server requests."""
    while True:
        length = None
        while (line := process.stdout.readline().strip()):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        message = json.loads(process.stdout.read(length))
        if message.get("id") == request_id and "method" not in message:
            result = message.get("result")
            return result if isinstance(result, dict) else {}
        if "method" in message and "id" in message:  # a request from the server: answer it
            _write(process, {"jsonrpc": "2.0", "id": message["id"], "result": None})


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _console_script() -> str:
    """The `codeassist` script beside the running interpreter (a venv need not be activated)."""
    beside = Path(sys.executable).with_name("codeassist")
    return str(beside) if beside.exists() else shutil.which("codeassist") or "codeassist"


def _kernel_isa() -> str:
    from kernels import cpu_gemm

    return cpu_gemm.best_isa()


def _plot(rows: list[dict]):
    def draw(figure) -> None:
        axes = figure.subplots(1, 2)
        labels = [f"{r['model'].removeprefix('qwen2.5-coder-')}\n{r['path']}" for r in rows]
        colors = ["tab:blue" if r["path"] == "packed" else "grey" if r["path"] == "fp32" else "tab:orange"
                  for r in rows]
        axes[0].bar(labels, [r.get("decode_tok_s") or 0 for r in rows], color=colors)
        axes[0].set(ylabel="tokens/s", title=f"greedy decode after {DEPTH} tokens")
        width = 0.8 / len(PROMPTS)
        for offset, count in zip((width * (i - (len(PROMPTS) - 1) / 2) for i in range(len(PROMPTS))), PROMPTS):
            axes[1].bar([i + offset for i in range(len(rows))], [r.get(f"prefill_{count}_tok_s") or 0 for r in rows],
                        width, label=f"{count} tokens")
        axes[1].set_xticks(range(len(rows)), labels)
        axes[1].set(ylabel="tokens/s", title="prefill")
        axes[1].legend()

    return draw
