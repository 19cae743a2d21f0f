"""docs/benchmarks.md's tables, written from the stored runs (docs/benchmarks/*.json) by
`python -m codeassist.bench.headlines`. Tables inside a list item are indented by two spaces."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stored(name: str) -> dict:
    return json.loads((ROOT / "docs" / "benchmarks" / f"{name}.json").read_text())


def _indented(lines: list[str]) -> str:
    return "\n".join(f"  {line}" if line else "" for line in lines)


def _share(value: float) -> str:
    """0.65 -> "0.65", 0.575 -> "0.575", 0 -> "0.0"."""
    return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0.0"


QUALITY_KINDS = {"single_line": "single lines", "multi_line": "blocks of 2-4 lines", "random_span": "random spans"}


QUALITY_RUNS = (("0.5B", "quality"), ("1.5B", "quality_1.5b"))  # (model, stored run)


def quality_table() -> str:
    lines = ["| model | holes | codeassist as delivered | codeassist first line | llama-server | "
             "p50 codeassist / llama-server |", "|---|---|---:|---:|---:|---:|"]
    for size, name in QUALITY_RUNS:
        if not (ROOT / "docs" / "benchmarks" / f"{name}.json").is_file():
            continue
        run = stored(name)
        summary, rows = run["summary"], run["rows"]
        for kind, label in QUALITY_KINDS.items():
            holes = len({r["hole"] for r in rows if r["kind"] == kind.replace("_", "-") and r["engine"] == "codeassist"})
            ours, theirs = summary[f"{kind}_codeassist_passes"], summary[f"{kind}_llama_server_passes"]
            delivered = f"**{_share(ours)}**" if ours > theirs else _share(ours)
            lines.append(f"| {size} | {holes} {label} | {delivered} | "
                         f"{_share(summary[f'{kind}_codeassist_first_line_passes'])} | {_share(theirs)} | "
                         f"{summary[f'{kind}_codeassist_p50_ms'] / 1000:.1f} s / "
                         f"{summary[f'{kind}_llama_server_p50_ms'] / 1000:.1f} s |")
    return _indented(lines)


def _decode_table(name: str) -> str:
    """Tokens/s per model and path; prefill sizes the stored run measured, with the share of
    the machine's int8 peak where it has one."""
    run = stored(name)
    sizes = [n for n in (128, 512, 2048) if any(f"prefill_{n}_tok_s" in r for r in run["rows"])]
    lines = ["| model | path | " + " | ".join(f"prefill {n}" for n in sizes) + " | decode (after 512) |",
             "|---|---|" + "---:|" * (len(sizes) + 1)]
    for r in run["rows"]:
        size = r["model"].rsplit("-", 1)[-1]
        stem = f"{size}_{r['path'].replace('.', '')}"
        cells = []
        for n in sizes:
            share = run["summary"].get(f"prefill_{n}_int8_peak_share_{stem}")
            cells.append(f"{r[f'prefill_{n}_tok_s']:.1f}" + (f" ({share:.0%} of peak)" if share else ""))
        lines.append(f"| {size.upper()} | {r['path']} | {' | '.join(cells)} | {r['decode_tok_s']:.1f} |")
    return _indented(lines)


def decode_table() -> str:
    return _decode_table("decode")


def decode_avx2_table() -> str:
    return _decode_table("decode_avx2")


def _edits_table(name: str) -> str:
    run = stored(name)
    summary = run["summary"]
    contexts = sorted({r["context"] for r in run["rows"]})
    lines = ["| prompt tokens | full | prefix | pie | pie speed-up (p50) |", "|---:|---:|---:|---:|---:|"]
    for context in contexts:
        cells = [f"{summary[f'{mode}_{context}_typing_ttft_p50_ms'] / 1000:.2f} / "
                 f"{summary[f'{mode}_{context}_typing_ttft_p95_ms'] / 1000:.2f} s" for mode in ("full", "prefix", "pie")]
        lines.append(f"| {context} | {' | '.join(cells)} | "
                     f"{summary[f'ttft_speedup_pie_vs_full_typing_{context}']:.0f}x |")
    return _indented(lines)


def edits_table() -> str:
    return _edits_table("edits")


def edits_packed_table() -> str:
    return _edits_table("edits_packed")


def speculative_table() -> str:
    summary = stored("speculative")["summary"]

    def speedup(config: str, trace: str) -> str:
        value = summary.get(f"speedup_vs_greedy_{config}_{trace}")
        if value is None:
            return "-" if config == "recycle" else ""
        return f"**{value:.2f}x**" if config == "all" else f"{value:.2f}x"

    lines = ["| trace | all sources | recycle | prompt | repo | transformers' prompt lookup |",
             "|---|---:|---:|---:|---:|---:|"]
    for trace, label in (("fresh", "fresh holes"), ("editing", "editing")):
        cells = [speedup(config, trace) for config in ("all", "recycle", "prompt", "repo", "hf_prompt_lookup")]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return _indented(lines)


def search_tables() -> str:
    """docs/benchmarks.md's search tables: rankings, summaries by coverage, the member margin."""
    run = stored("search")
    rows, summary = run["rows"], run["summary"]
    out = [f"{summary['queries']} docstring queries (classes, functions, methods) over {summary['chunks']:,} chunks"
           f" of {summary['files']} standard-library modules, encoder {summary['encoder']}:", "",
           "| ranking | MRR@10 | Recall@1 | Recall@10 | MRR@10 of class queries | of function queries |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["measure"] == "quality":
            out.append(f"| {r['mode']} ({r['variant']}) | {r['mrr_at_10']:.3f} | {r['recall_at_1']:.3f} | "
                       f"{r['recall_at_10']:.3f} | {_or_dash(r.get('class_mrr_at_10'))} | {_or_dash(r.get('function_mrr_at_10'))} |")
    margins = [r for r in rows if r["measure"] == "member margin"]
    if margins:
        out += ["", "A class's best method put above it when within the margin (hybrid; stdlib: the whole index"
                " without summaries; the projects' summarized parts with every summary):", "",
                "| corpus | margin | MRR@10 | of class queries | of function queries |", "|---|---:|---:|---:|---:|"]
        out += [f"| {r.get('project', 'stdlib, whole')} | {r['margin']:.2f} | {r['mrr_at_10']:.3f} | "
                f"{_or_dash(r['class_mrr_at_10'])} | {_or_dash(r['function_mrr_at_10'])} |" for r in margins]
    summarized = [r for r in rows if r["measure"] == "summaries"]
    if summarized:
        out += ["", "With the model's summaries (MRR@10; part of each project, every definition summarized, then a"
                " random share kept; blend weight w):", "",
                "| project | chunks | queries | coverage | w | BM25 | dense | hybrid |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        cells: dict[tuple, dict] = {}
        for r in summarized:
            cells.setdefault((r["project"], r["coverage"], r["weight"]), {})[r["mode"]] = r
        bm25 = {(r["project"], r["coverage"]): r for r in summarized if r["mode"] == "bm25"}
        for (project, coverage, weight), modes in cells.items():
            first = next(iter(modes.values()))
            out.append(f"| {project} | {first['chunks']} | {first['queries']} | {coverage:.0%} | {weight} | "
                       f"{bm25[(project, coverage)]['mrr_at_10']:.3f} | {modes['dense']['mrr_at_10']:.3f} | "
                       f"{modes['hybrid']['mrr_at_10']:.3f} |")
    latency = {(r["chunks"], r["index"]): r for r in rows if r["measure"] == "latency"}
    cli = {r["variant"]: r for r in rows if r["measure"] == "cli latency"}
    out += ["", f"Index build {summary['index_chunks_per_s']} chunks/s; a query (encoding, BM25, faiss on one"
            " thread, fusion) p50/p95 " + ", ".join(
                f"{chunks // 1000}k chunks {kind} {r['p50_ms']:.0f}/{r['p95_ms']:.0f} ms"
                for (chunks, kind), r in latency.items())
            + f"; re-indexing one changed file {summary['reindex_one_file_ms']:.0f} ms."]
    if cli:
        out.append("`codeassist search` from a shell, p50/p95: " + ", ".join(
            f"{variant} {r['p50_ms'] / 1000:.2f}/{r['p95_ms'] / 1000:.2f} s" for variant, r in cli.items()) + ".")
    return "\n".join(out)


def _or_dash(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def context_table() -> str:
    """docs/search.md's repository-context table: first lines of real-package holes without and
    with context, and llama-server's on the same holes."""
    run = stored("context")
    summary, rows = run["summary"], run["rows"]

    def exact(kind: str, mode: str) -> str:
        mine = [r for r in rows if r["kind"] == kind and r["mode"] == mode]
        if not mine:
            return ""
        hits = sum(r["exact"] for r in mine)
        return f"{hits / len(mine):.3f} ({hits}/{len(mine)})"

    def similarity(kind: str, mode: str) -> str:
        mine = [r for r in rows if r["kind"] == kind and r["mode"] == mode]
        return f"{sum(r['edit_sim'] for r in mine) / len(mine):.3f}" if mine else ""

    def seconds(key: str) -> str:
        value = summary.get(key)
        return f"{value / 1000:.1f} s" if value is not None else ""

    modes = ("none", "context", "llama-server")
    lines = ["| | without context | with context | llama-server |", "|---|---|---|---|"]
    for label, kind, measure in (("exact match, call holes (first line)", "hole", exact),
                                 ("edit similarity, call holes", "hole", similarity),
                                 ("exact match, argument holes", "args_hole", exact),
                                 ("edit similarity, argument holes", "args_hole", similarity)):
        lines.append(f"| {label} | " + " | ".join(measure(kind, mode) for mode in modes) + " |")
    lines.append(f"| time to first token, typing trace (p50, KV reuse on) | "
                 f"{summary['ttft_p50_ms_typing_without_context']:.0f} ms | "
                 f"{summary['ttft_p50_ms_typing_with_context']:.0f} ms | |")
    lines.append(f"| whole answer, cold prompt (p50) | {seconds('total_p50_ms_cold_without_context')} | "
                 f"{seconds('total_p50_ms_cold_with_context')} | {seconds('total_p50_ms_llama_server')} |")
    return "\n".join(lines)
