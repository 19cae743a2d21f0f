"""Numbers in the docs written from the stored runs in docs/benchmarks/*.json, so they cannot
drift from them: the README's performance headlines and the tables of docs/benchmarks.md
(doc_tables.py). `python -m codeassist.bench.headlines` rewrites each part between its
markers; a test checks that the files hold what it would write."""

from __future__ import annotations

import sys

from . import doc_tables

ROOT = doc_tables.ROOT



def begin(part: str) -> str:
    return f"<!-- {part}: written by python -m codeassist.bench.headlines from docs/benchmarks/ -->"


def end(part: str) -> str:
    return f"<!-- end of {part} -->"


def _summary(name: str) -> dict:
    return doc_tables.stored(name)["summary"]


def _holes(name: str, kind: str) -> int:
    return len({r["hole"] for r in doc_tables.stored(name)["rows"] if r["kind"] == kind})


def _grouped(value: float) -> str:
    return f"{value:,.0f}"


def headlines() -> str:
    engines, quality, quality_large, decode, preemption, search = (
        _summary(n) for n in ("engines", "quality", "quality_1.5b", "decode", "preemption", "search"))
    lines = [
        f"- Typing through a document (`bench engines`, 0.5B, AVX2 machine): a whole suggestion p50"
        f" {_grouped(engines['local_total_p50_ms'])} ms, llama-server {_grouped(engines['remote_total_p50_ms'])} ms;"
        f" {engines['local_prompt_reused_share']:.1%} of each prompt reused from the KV cache.",
        f"- Suggestions checked by running HumanEval's tests (`bench quality`, 0.5B, first-generation EPYC):"
        f" single-line holes pass {quality['single_line_codeassist_passes']:.2f} as delivered, llama-server /infill"
        f" {quality['single_line_llama_server_passes']:.2f}; p50"
        f" {quality['single_line_codeassist_p50_ms'] / 1000:.1f} s and"
        f" {quality['single_line_llama_server_p50_ms'] / 1000:.1f} s per fresh document; blocks of 2-4 lines"
        f" {quality['multi_line_codeassist_passes']:.2f} and {quality['multi_line_llama_server_passes']:.2f},"
        f" random spans {quality['random_span_codeassist_passes']:.2f} and"
        f" {quality['random_span_llama_server_passes']:.2f}. The 1.5B"
        f" ({_holes('quality_1.5b', 'single-line')} single lines, half as many of each other kind):"
        f" {quality_large['single_line_codeassist_passes']:.2f} and"
        f" {quality_large['single_line_llama_server_passes']:.2f},"
        f" {quality_large['multi_line_codeassist_passes']:.2f} and {quality_large['multi_line_llama_server_passes']:.2f},"
        f" {quality_large['random_span_codeassist_passes']:.2f} and"
        f" {quality_large['random_span_llama_server_passes']:.2f}.",
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


PARTS = {
    "README.md": {"headlines": headlines},
    "docs/benchmarks.md": {
        "quality table": doc_tables.quality_table, "decode table": doc_tables.decode_table,
        "decode avx2 table": doc_tables.decode_avx2_table,
        "edits table": doc_tables.edits_table, "packed edits table": doc_tables.edits_packed_table,
        "speculative table": doc_tables.speculative_table, "search tables": doc_tables.search_tables,
    },
    "docs/search.md": {"context table": doc_tables.context_table},
}


def rewritten(text: str, parts: dict) -> str:
    """`text` with each of its generated parts replaced by what the stored runs say (the end
    marker indented as the begin marker is, so that a part inside a list item stays in it)."""
    for part, write in parts.items():
        start, stop = text.index(begin(part)), text.index(end(part)) + len(end(part))
        indent = text[text.rfind("\n", 0, start) + 1:start]
        text = text[:start] + "\n".join([begin(part), write(), indent + end(part)]) + text[stop:]
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
