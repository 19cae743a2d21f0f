"""The README's performance headlines, written from the stored runs in docs/benchmarks/*.json,
so they cannot drift from them: `python -m codeassist.bench.headlines` rewrites the part of
README.md between the markers; a test checks that the README holds what it would write."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BEGIN = "<!-- headlines: written by python -m codeassist.bench.headlines from docs/benchmarks/ -->"
END = "<!-- end of headlines -->"


def _summary(name: str) -> dict:
    return json.loads((ROOT / "docs" / "benchmarks" / f"{name}.json").read_text())["summary"]


def _grouped(value: float) -> str:
    return f"{value:,.0f}"


def headlines() -> str:
    engines, quality, decode, preemption = (_summary(n) for n in ("engines", "quality", "decode", "preemption"))
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
    ]
    return "\n".join([BEGIN, *lines, END])


def rewritten(readme: str) -> str:
    """`readme` with its headlines part replaced by what the stored runs say."""
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[:start] + headlines() + readme[end:]


def main() -> int:
    path = ROOT / "README.md"
    text = path.read_text()
    new = rewritten(text)
    if new != text:
        path.write_text(new)
        print("README.md: headlines rewritten from docs/benchmarks/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
