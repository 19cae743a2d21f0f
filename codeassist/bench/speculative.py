"""`codeassist bench speculative`: decode speed of each draft source against plain greedy.

Holes are cut in modules of standard-library packages on this machine: at the start of a
statement line inside a function (the line removed, the cursor after its indentation) and
mid-line (the rest of the line removed, the cursor after `=` or `(`). The other modules of the
same package fill the repository n-gram cache. The editing trace takes a hole's plain
suggestion and types it up to the end of its first word, then into and to the end of its
middle word: every state is completed again (the previous suggestion is what the recycle
source drafts from).

Every configuration runs on the same prompts with full re-encoding (`kv_mode=full`), so the
prompt phase is identical and only decoding differs. Speed is decode tokens per second
(tokens after the first, over the decode time); "identical" compares the whole suggestion
and its token count with plain greedy. Baselines in the same run: transformers' `generate`
with `prompt_lookup_num_tokens` (and with `assistant_model` when a draft model is given),
asked for the same number of tokens, timed as generate(N) - generate(1).
"""

from __future__ import annotations

import gc
import random
import re
import statistics
import sysconfig
import time
from pathlib import Path

import torch

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model

from .report import BenchResult, machine_info

PACKAGES = ("json", "email", "http", "logging", "importlib", "concurrent/futures", "urllib", "xml/dom")


def _source_files(quick: bool) -> list[tuple[Path, list[Path]]]:
    """(module to cut holes in, the other modules of its package)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    chosen = []
    for package in PACKAGES[: 2 if quick else 6]:
        files = sorted(p for p in (stdlib / package).glob("*.py") if p.stat().st_size > 4000)
        if len(files) >= 2:
            target = max(files, key=lambda p: p.stat().st_size)
            chosen.append((target, [p for p in files if p != target]))
    if not chosen:
        raise ValueError(f"no standard-library packages found under {stdlib}")
    return chosen


def open_folder(engine: CompletionEngine, siblings: list[Path]) -> None:
    """Each hole starts with its own repository: the n-gram caches hold the hole's sibling
    modules (what the server gives them for an open document's folder), no past suggestions."""
    engine.repo_ngrams = type(engine.repo_ngrams)(engine.settings.repo_cache_tokens)
    engine.past_ngrams = type(engine.past_ngrams)(engine.settings.repo_cache_tokens)
    for sibling in siblings:
        engine.remember_text(str(sibling), sibling.read_text(encoding="utf-8", errors="replace"))


def _holes(text: str, count: int, rng: random.Random) -> list[tuple[str, int, str]]:
    """(document with a hole, cursor, kind) for line-start and mid-line holes."""
    lines = text.split("\n")
    statements = [i for i, line in enumerate(lines)
                  if line.startswith("        ") and len(line.strip()) > 20
                  and not line.strip().startswith(("#", '"', "'", "@"))]
    rng.shuffle(statements)
    holes = []
    for index in statements[:count]:
        line = lines[index]
        indent = len(line) - len(line.lstrip())
        cut = None
        if len(holes) % 2:  # mid-line: after the first "=" or "(" past the indentation
            cut = next((i + 1 for i, c in enumerate(line) if i > indent and c in "=("), None)
        kind = "mid_line" if cut else "line_start"
        cut = cut or indent
        before = "\n".join(lines[:index] + [line[:cut]])
        after = "\n".join([""] + lines[index + 1 :])
        holes.append((before + after, len(before), kind))
    return holes


def _typing_states(text: str, cursor: int, suggestion: str) -> list[tuple[str, int]]:
    """The user types the suggestion up to the end of its first word, into the middle of the
    word at its middle, then to that word's end (mid-word states need token healing: the
    typed characters end inside one of the suggestion's tokens)."""
    words = list(re.finditer(r"\w+", suggestion))
    middle = next((w for w in words if w.end() >= len(suggestion) // 2), None)
    marks = [words[0].end() if words else 0]
    if middle is not None:
        marks += [(middle.start() + middle.end()) // 2, middle.end()]
    marks = sorted({m for m in marks if 0 < m < len(suggestion)})
    return [(text[:cursor] + suggestion[:m] + text[cursor:], cursor + m) for m in marks]


def _configs(draft: bool) -> dict[str, dict]:
    configs = {
        "plain": dict(speculative=False),
        "prompt": dict(draft_sources=("prompt",)),
        "repo": dict(draft_sources=("repo",)),
        "recycle": dict(draft_sources=("recycle",), recycle_direct=False),
        "all": dict(draft_sources=("recycle", "prompt", "repo", "model"), recycle_direct=False),
        # The product default: typed into the suggestion -> its rest, no model call.
        "recycle_direct": dict(draft_sources=("recycle",), recycle_direct=True),
    }
    if draft:
        configs["model"] = dict(draft_sources=("model",))
    return configs


# Per trace, the configurations reported. On fresh holes there is no previous suggestion yet:
# "recycle" and "recycle_direct" run there (as plain decoding) only to see the suggestion.
REPORTED = {"fresh": ("plain", "prompt", "repo", "model", "all"),
            "editing": ("plain", "recycle", "prompt", "repo", "model", "all")}


def run_bench(args) -> BenchResult:
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    draft = load_model(args.draft_model, device=args.device, dtype=args.dtype) if args.draft_model else None
    quick = args.quick
    rows = run(loaded, draft, quick, holes_per_file=2 if quick else 3,
               max_new_tokens=32 if quick else 48, context=512 if quick else 1024)
    summary = summarize(rows, draft is not None)
    columns = ["trace", "file", "hole", "config", "tokens", "decode_ms", "tokens_per_s",
               "verify_steps", "accepted_per_step", "identical"]
    machine = machine_info(loaded)
    if draft is not None:
        machine["draft_model"] = draft.name
    return BenchResult(summary, rows, columns, machine, plot(rows))


def run(loaded, draft, quick: bool, holes_per_file: int, max_new_tokens: int, context: int) -> list[dict]:
    from tqdm import tqdm

    rng = random.Random(0)
    configs = _configs(draft is not None)
    files = _source_files(quick)
    engines = {}
    for name, overrides in configs.items():
        settings = EngineSettings(max_new_tokens=max_new_tokens, max_prompt_tokens=context, kv_mode="full",
                                  time_budget_ms=600_000, **overrides)
        engines[name] = CompletionEngine(loaded, settings, draft=draft if name in ("all", "model") else None)
    rows: list[dict] = []
    work = [(path, siblings, hole) for path, siblings in files
            for hole in _holes(path.read_text(encoding="utf-8"), holes_per_file, rng)]
    # A process's first passes are slow (allocation, kernel choice, CUDA start-up): one untimed
    # completion per engine first, or plain greedy's first row carries them.
    warm_up = "def add(a, b):\n    return "
    for engine in engines.values():
        engine.complete(CompletionRequest(warm_up, len(warm_up), "python", "warm-up"), session_key="warm-up")
        engine.forget("warm-up")
    gc.collect()
    gc.freeze()  # as the server does: no full collection over the model's objects mid-request
    bar = tqdm(total=len(work), desc="bench speculative", unit="hole")
    for path, siblings, (text, cursor, kind) in work:
        for engine in engines.values():
            open_folder(engine, siblings)
        label = f"{path.parent.name}/{path.name}"
        # A new prompt's first completion pays allocations the next ones reuse (on a GPU about
        # twice the time per step): prime them untimed, or the first configuration pays.
        engines["plain"].complete(CompletionRequest(text, cursor, "python", label))
        plain = _measure(rows, engines, "fresh", label, kind, text, cursor)
        _baselines(rows, loaded, draft, engines["plain"], "fresh", label, kind, text, cursor, plain)
        for typed_text, typed_cursor in _typing_states(text, cursor, plain.text):
            _measure(rows, engines, "editing", label, kind, typed_text, typed_cursor)
        for engine in engines.values():
            engine.forget("doc")
        bar.update()
    bar.close()
    return rows


def _measure(rows, engines, trace, label, kind, text, cursor):
    """Complete one state with every configuration; returns plain's result."""
    request = CompletionRequest(text, cursor, "python", label)
    plain = None
    for name, engine in engines.items():
        result = engine.complete(request, session_key="doc")
        plain = plain or result
        steps = result.spec.get("verify_steps", max(result.tokens - 1, 0))
        accepted = result.spec.get("accepted", 0)
        rows.append({
            "trace": trace, "file": label, "hole": kind, "config": name, "tokens": result.tokens,
            "decode_ms": round(result.decode_ms, 1), "tokens_per_s": _rate(result.tokens, result.decode_ms),
            "verify_steps": steps, "accepted_per_step": round(accepted / steps, 2) if steps else 0.0,
            # The direct answer has no tokens of its own: compare its text only.
            "identical": result.text == plain.text and (result.tokens == plain.tokens or name == "recycle_direct"),
            "stop_reason": result.stop_reason, "accepted_by_source": result.spec.get("accepted_by_source", {}),
            "text": result.text,
        })
    return plain


def _baselines(rows, loaded, draft, plain_engine, trace, label, kind, text, cursor, plain):
    """transformers' generate on the same prompt, for the same number of tokens."""
    if plain.tokens < 2:
        return
    prompt = plain_engine.build_prompt(CompletionRequest(text, cursor, "python", label)).ids
    inputs = torch.tensor([prompt], device=loaded.device)
    stop = sorted(plain_engine.fim.stop_ids)
    common = dict(do_sample=False, eos_token_id=stop, pad_token_id=stop[0],
                  attention_mask=torch.ones_like(inputs))
    variants = {"hf_greedy": {}, "hf_prompt_lookup": dict(prompt_lookup_num_tokens=10)}
    if draft is not None:
        variants["hf_assistant"] = dict(assistant_model=draft.model)
    reference = None
    for name, extra in variants.items():
        with torch.inference_mode():
            began = time.perf_counter()
            loaded.model.generate(inputs, max_new_tokens=1, **common, **extra)
            first = time.perf_counter() - began
            began = time.perf_counter()
            out = loaded.model.generate(inputs, max_new_tokens=plain.tokens, **common, **extra)
            total = time.perf_counter() - began
        ids = out[0, len(prompt):].tolist()
        reference = reference or ids
        decode_ms = max(total - first, 1e-6) * 1000
        rows.append({"trace": trace, "file": label, "hole": kind, "config": name, "tokens": len(ids),
                     "decode_ms": round(decode_ms, 1), "tokens_per_s": _rate(len(ids), decode_ms),
                     "verify_steps": None, "accepted_per_step": None, "identical": ids == reference})


def _rate(tokens: int, decode_ms: float) -> float | None:
    return round((tokens - 1) / decode_ms * 1000, 2) if tokens > 1 and decode_ms > 0 else None


def _speed(rows, trace, config) -> float | None:
    """Decode tokens per second over all of a configuration's requests (total tokens / total time)."""
    chosen = [r for r in rows if r["trace"] == trace and r["config"] == config and r["tokens"] > 1]
    time_s = sum(r["decode_ms"] for r in chosen) / 1000
    return round(sum(r["tokens"] - 1 for r in chosen) / time_s, 2) if time_s else None


def summarize(rows: list[dict], with_draft: bool) -> dict:
    summary: dict = {}
    baselines = ["hf_greedy", "hf_prompt_lookup"] + (["hf_assistant"] if with_draft else [])
    for trace in ("fresh", "editing"):
        plain = _speed(rows, trace, "plain")
        for config in [*REPORTED[trace], *baselines]:
            speed = _speed(rows, trace, config)
            if speed is None:
                continue
            summary[f"tokens_per_s_{config}_{trace}"] = speed
            if plain and config != "plain":
                summary[f"speedup_vs_greedy_{config}_{trace}"] = round(speed / plain, 2)
            steps = [r for r in rows if r["trace"] == trace and r["config"] == config and r["verify_steps"]]
            if steps and config not in ("plain",) and not config.startswith("hf_"):
                accepted = sum(r["accepted_per_step"] * r["verify_steps"] for r in steps)
                summary[f"mean_accepted_per_step_{config}_{trace}"] = round(accepted / sum(r["verify_steps"] for r in steps), 2)
    lookup = summary.get("tokens_per_s_hf_prompt_lookup_fresh")
    if lookup:
        summary["speedup_vs_hf_prompt_lookup_all_fresh"] = round(summary["tokens_per_s_all_fresh"] / lookup, 2)
    ours = [r for r in rows if r["config"] in REPORTED[r["trace"]]]
    summary["identical_fraction"] = round(statistics.mean(r["identical"] for r in ours), 4)
    direct = [r for r in rows if r["config"] == "recycle_direct" and r["trace"] == "editing"]
    if direct:
        summary["recycle_direct_answered_fraction"] = round(
            statistics.mean(r["stop_reason"] == "recycled" for r in direct), 3)
        summary["recycle_direct_agrees_with_greedy"] = round(statistics.mean(r["identical"] for r in direct), 3)
    summary["requests"] = len([r for r in rows if r["config"] == "plain"])
    return summary


def plot(rows: list[dict]):
    def draw(figure) -> None:
        axes = figure.subplots(1, 2)
        for axis, trace in zip(axes, ("fresh", "editing")):
            configs = [c for c in dict.fromkeys(r["config"] for r in rows if r["trace"] == trace)
                       if (c in REPORTED[trace] or c.startswith("hf_")) and _speed(rows, trace, c)]
            speeds = [_speed(rows, trace, c) for c in configs]
            axis.bar(configs, speeds, color=["grey" if c == "plain" or c.startswith("hf_") else "tab:blue"
                                             for c in configs])
            axis.set(ylabel="decode tokens/s", title=f"{trace} holes" if trace == "fresh" else "typing into the suggestion")
            axis.tick_params(axis="x", rotation=30)

    return draw
