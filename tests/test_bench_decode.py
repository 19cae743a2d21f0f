"""bench decode's arithmetic: the linear layers' multiply-adds per token and the summary's
shares of the int8 peak and ratios to llama.cpp."""

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from codeassist.bench.decode import PROMPTS, _speed_summary, linear_macs_per_token


def test_linear_macs_per_token_counts_the_decoder_layers_weights():
    config = Qwen2Config(vocab_size=64, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                         num_attention_heads=6, num_key_value_heads=2)
    model = Qwen2ForCausalLM(config)
    weights = sum(module.weight.numel() for module in model.model.layers.modules()
                  if isinstance(module, torch.nn.Linear))
    assert linear_macs_per_token(config) == weights


def test_summary_has_peak_shares_and_ratios_per_prompt_size():
    rows = [{"model": "qwen2.5-coder-0.5b", "path": "packed", "linear_macs_per_token": 1_000_000,
             **{f"prefill_{n}_tok_s": 100.0 for n in PROMPTS}, "decode_tok_s": 20.0},
            {"model": "qwen2.5-coder-0.5b", "path": "llama.cpp", **{f"prefill_{n}_tok_s": 50.0 for n in PROMPTS}}]
    summary = _speed_summary(rows, peak=1e9)
    for count in PROMPTS:
        assert summary[f"prefill_{count}_int8_peak_share_0.5b_packed"] == 0.1
        assert summary[f"prefill_{count}_int8_peak_share_0.5b_llamacpp"] == 0.05
        assert summary[f"prefill_{count}_packed_vs_llamacpp_0.5b"] == 2.0
    assert summary["int8_peak_gmacs"] == 1.0
