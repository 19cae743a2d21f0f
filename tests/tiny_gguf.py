"""Tiny GGUF models written the way llama.cpp's converter writes them: a random-weight
transformers model, its tensors renamed, Q/K rows permuted for llama, quantized by gguf-py.
`expected_model` is the same model with every weight replaced by its dequantized value, the
oracle a packed model must reproduce."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

# transformers name inside a layer -> (GGUF short name, block format)
LAYER_TENSORS = {
    "self_attn.q_proj": ("attn_q", "Q8_0"), "self_attn.k_proj": ("attn_k", "Q5_0"),
    "self_attn.v_proj": ("attn_v", "Q4_0"), "self_attn.o_proj": ("attn_output", "Q8_0"),
    "mlp.gate_proj": ("ffn_gate", "Q5_0"), "mlp.up_proj": ("ffn_up", "Q4_0"), "mlp.down_proj": ("ffn_down", "Q8_0"),
    "input_layernorm": ("attn_norm", "F32"), "post_attention_layernorm": ("ffn_norm", "F32"),
}


def tiny_config(architecture: str, tied: bool = False):
    common = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  rms_norm_eps=1e-6, tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    if architecture == "qwen2":
        return Qwen2ForCausalLM, Qwen2Config(**common, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return LlamaForCausalLM, LlamaConfig(**common, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def _converter_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf `permute` of Q/K rows."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_gguf(architecture: str, path: Path, seed: int = 0, tied: bool = False):
    """Write a tiny model of `architecture` to `path`; returns the expected (dequantized) model."""
    model_class, config = tiny_config(architecture, tied)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    state = {}

    def put(gguf_name: str, hf_name: str, fmt: str, permute_heads: int | None = None):
        weight = model.state_dict()[hf_name].float().numpy()
        rows = _converter_permute(weight, permute_heads) if permute_heads else weight
        qtype = getattr(gguf.GGMLQuantizationType, fmt)
        data = gguf.quants.quantize(rows, qtype) if fmt != "F32" else rows
        writer.add_tensor(gguf_name, data, raw_dtype=qtype)
        # The oracle: the rows dequantized by gguf-py, in transformers' order (quantization is
        # row by row, so quantizing before or after the permutation gives the same rows).
        if fmt != "F32":
            weight = gguf.quants.dequantize(gguf.quants.quantize(weight, qtype), qtype).reshape(weight.shape)
        state[hf_name] = torch.from_numpy(np.array(weight, dtype=np.float32))

    put("token_embd.weight", "model.embed_tokens.weight", "Q8_0")
    put("output_norm.weight", "model.norm.weight", "F32")
    if not tied:
        put("output.weight", "lm_head.weight", "Q5_0")
    for index in range(config.num_hidden_layers):
        for hf_name, (short, fmt) in LAYER_TENSORS.items():
            heads = None
            if architecture == "llama" and short in ("attn_q", "attn_k"):
                heads = config.num_attention_heads if short == "attn_q" else config.num_key_value_heads
            put(f"blk.{index}.{short}.weight", f"model.layers.{index}.{hf_name}.weight", fmt, heads)
            bias = f"model.layers.{index}.{hf_name}.bias"
            if bias in model.state_dict():
                put(f"blk.{index}.{short}.bias", bias, "F32")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    model.load_state_dict(state, strict=False)
    if tied:
        model.tie_weights()
    return model
