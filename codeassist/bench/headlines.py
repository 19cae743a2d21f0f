"""Numbers in the docs written from the stored runs in docs/benchmarks/*.json, so they cannot
drift from them: the README's performance headlines and the search tables of
docs/benchmarks.md. `python -m codeassist.bench.headlines` rewrites each part between its
markers; a test checks that the files hold what it would write."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def begin(part: str) -> str:
    return f"<!-- {part}: written by python -m codeassist.bench.headlines from docs/benchmarks/ -->"


def end(part: str) -> str:
    return f"<!-- end of {part} -->"


def _stored(name: str) -> dict:
    return json.loads((ROOT / "docs" / "benchmarks" / f"{name}.json").read_text())


def _summary(name: str) -> dict:
    return _stored(name)["summary"]


def _grouped(value: float) -> str:
    return f"{value:,.0f}"


def headlines() -> str:
    engines, quality, decode, preemption, search = (
        _summary(n) for n in ("engines", "quality", "decode", "preemption", "search"))
    lines = [
        f"- Typing through a document (`bench engines`, 0.5B, AVX2 machine): a whole suggestion p50"
        f" {_grouped(engines['local_total_p50_ms'])} ms, llama-server {_grouped(engines['remote_total_p50_ms'])} ms;"
        f" {engines['local_prompt_reused_share']:.1%} of each prompt reused from the KV cache.",
        f"- Suggestions checked by running HumanEval's tests (`bench quality`, 0.5B, first-generation EPYC):"
        f" single-line holes pass {quality['single_line_codeassist_passes']:.2f} as delivered, llama-server /infill"
        f" {quality['single_line_llama_server_passes']:.2f}; p50"
        f" {quality['single_line_codeassist_p50_ms'] / 1000:.1f} s and"
        f" {quality['single_line_llama_server_p50_ms'] / 1000:.1f} s per fresh document.",
        f"- Decode (`bench decode`, AVX-512 Zen 5): 0.5B {decode['decode_tok_s_0.5b_packed']:.1f} tokens/s packed,"
        f" llama.cpp {decode['decode_tok_s_0.5b_llamacpp']:.1f}; 1.5B {decode['decode_tok_s_1.5b_packed']:.1f} and"
        f" {decode['decode_tok_s_1.5b_llamacpp']:.1f}. Prompt encoding 0.5B"
        f" {decode['prefill_512_tok_s_0.5b_packed']:.0f} tokens/s at 512 tokens, llama.cpp"
        f" {decode['prefill_512_tok_s_0.5b_llamacpp']:.0f}.",
        f"- Background work never holds a request long (`bench preemption`): a request waits at most"
        f" {max(preemption['summaries_wait_max_ms'], preemption['index_wait_max_ms']):.0f} ms behind hover"
        f" summaries or index batches.",
        f"- Code search (`bench search`, docstring queries over code without docstrings): hybrid MRR@10"
        f" {search['mrr_at_10_hybrid']:.2f} on {search['chunks']:,} stdlib chunks; with the model's summaries"
        f" {search['mrr_at_10_hybrid_with_summaries_stdlib']:.2f} vs"
        f" {search['mrr_at_10_hybrid_without_summaries_stdlib']:.2f} without (a stdlib part,"
        f" {search['summaries_stdlib_queries']} queries),"
        f" {search['mrr_at_10_hybrid_with_summaries_huggingface_hub']:.2f} vs"
        f" {search['mrr_at_10_hybrid_without_summaries_huggingface_hub']:.2f} (a huggingface_hub part,"
        f" {search['summaries_huggingface_hub_queries']} queries, never tuned on);"
        f" `codeassist search` p50 {search['cli_search_p50_s_through_a_server']:.1f} s with a server running,"
        f" {search['cli_search_p50_s_in_the_process']:.1f} s without.",
    ]
    return "\n".join(lines)


def search_tables() -> str:
    """docs/benchmarks.md's search tables: rankings, summaries by coverage, the member margin."""
    stored = _stored("search")
    rows, summary = stored["rows"], stored["summary"]
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


PARTS = {"README.md": {"headlines": headlines}, "docs/benchmarks.md": {"search tables": search_tables}}


def rewritten(text: str, parts: dict) -> str:
    """`text` with each of its generated parts replaced by what the stored runs say."""
    for part, write in parts.items():
        start, stop = text.index(begin(part)), text.index(end(part)) + len(end(part))
        text = text[:start] + "\n".join([begin(part), write(), end(part)]) + text[stop:]
    return text


def main() -> int:
    for name, parts in PARTS.items():
        path = ROOT / name
        text = path.read_text()
        new = rewritten(text, parts)
        if new != text:
            path.write_text(new)
            print(f"{name}: rewritten from docs/benchmarks/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
