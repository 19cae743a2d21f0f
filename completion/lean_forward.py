"""Leaner forwards for the norms and attention blocks of a packed model on CPU.

Outside its matmuls, a decode step of Qwen2.5-Coder-0.5B spent ~24 ms in small torch calls
on the project's CPU: RMS norm (seven tensor operations, ~65 us a call, 49 calls) and the
rotary embedding (~80 us a layer) among the largest. These forwards do the same arithmetic in
one kernel call each (kernels/cpu/layers.cpp) for fp32 CPU tensors of one sequence, and hand
anything else to transformers' own code. Each decoder layer calls its parts' forwards
directly, without nn.Module's call machinery. The arithmetic is otherwise transformers'
Qwen2/Llama decoder layer: norm, projections, rotary embedding, cache update, the model's
attention function, output projection, residual, norm, gated MLP, residual.
"""

from __future__ import annotations

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, eager_attention_forward

from kernels.cpu_gemm import SmallBatchGemm, is_plain_fp32

from .fused_layer import LastMask, fused_layer_forward


def use_lean_forwards(model: torch.nn.Module, gemm: SmallBatchGemm) -> None:
    """Give the decoder layers and RMS norms of `model` the lean forwards (the norms first:
    a layer binds its norms' forwards when it is given its own); layers of packed weights
    also get the one-call forward of fused_layer.py for decode and verify passes."""
    for module in model.modules():
        if hasattr(module, "variance_epsilon") and isinstance(getattr(module, "weight", None), torch.Tensor):
            module.forward = _norm_forward(module, gemm)
    masks = LastMask()
    for module in model.modules():
        if _is_decoder_layer(module):
            module.forward = _layer_forward(module, gemm, masks)


def _is_decoder_layer(module) -> bool:
    attention, mlp = getattr(module, "self_attn", None), getattr(module, "mlp", None)
    return (all(hasattr(attention, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling"))
            and all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn"))
            and hasattr(module, "input_layernorm") and hasattr(module, "post_attention_layernorm"))


def _norm_forward(module, gemm: SmallBatchGemm):
    original, weight, eps = module.forward, module.weight, module.variance_epsilon
    takes_weight = is_plain_fp32(weight) and weight.dim() == 1 and weight.numel() % 8 == 0

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        if takes_weight and is_plain_fp32(hidden_states) and hidden_states.shape[-1] == weight.numel():
            return gemm.rms_norm(hidden_states, weight, eps)
        return original(hidden_states)

    return forward


def _layer_forward(layer, gemm: SmallBatchGemm, masks: LastMask):
    """transformers' Qwen2/Llama decoder layer, calling the forwards of its parts directly
    (each nn.Module call costs a few microseconds; a decode step makes ~300), or the whole
    layer in one kernel call where fused_layer.py takes the pass."""
    fused = fused_layer_forward(layer, gemm, masks)
    attend = _attention_forward(layer.self_attn, gemm)
    norm_in, norm_post = layer.input_layernorm.forward, layer.post_attention_layernorm.forward
    mlp = layer.mlp
    gate, up, down, act = mlp.gate_proj.forward, mlp.up_proj.forward, mlp.down_proj.forward, mlp.act_fn
    # SiLU in the kernel library where it applies: the fused forward computes it there too.
    silu_kernel = getattr(layer.self_attn.config, "hidden_act", None) == "silu"

    def gated(normed: torch.Tensor) -> torch.Tensor:
        gates, ups = gate(normed), up(normed)
        if silu_kernel and gates.shape == ups.shape and gates.numel() % 8 == 0 and is_plain_fp32(gates) \
                and is_plain_fp32(ups):
            return gemm.silu_mul(gates, ups)
        return act(gates).mul_(ups)

    def forward(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, position_ids=None,
                cache=None, use_cache: bool = False, position_embeddings=None, **kwargs) -> torch.Tensor:
        if fused is not None and position_embeddings is not None:
            out = fused(hidden_states, attention_mask, position_embeddings, cache)
            if out is not None:
                return out
        attended, _ = attend(norm_in(hidden_states), position_embeddings, attention_mask, cache=cache,
                             position_ids=position_ids, use_cache=use_cache, **kwargs)
        hidden_states = attended.add_(hidden_states)  # the residual (a fresh tensor: added in place)
        return down(gated(norm_post(hidden_states))).add_(hidden_states)

    return forward


def _attention_forward(module, gemm: SmallBatchGemm):
    config, dim = module.config, module.head_dim
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    window = {"sliding_window": module.sliding_window} if hasattr(module, "sliding_window") else {}
    q_proj, k_proj, v_proj, o_proj = (module.q_proj.forward, module.k_proj.forward, module.v_proj.forward,
                                      module.o_proj.forward)

    def forward(hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                attention_mask: torch.Tensor | None, cache=None, **kwargs):
        batch, length = hidden_states.shape[:2]
        query, key, value = q_proj(hidden_states), k_proj(hidden_states), v_proj(hidden_states)
        cos, sin = position_embeddings
        rotate_here = batch == 1 and all(map(is_plain_fp32, (query, key, cos, sin)))
        if rotate_here:
            gemm.rope_(query, cos, sin, heads)
            gemm.rope_(key, cos, sin, kv_heads)
        query = query.view(batch, length, heads, dim).transpose(1, 2)
        key = key.view(batch, length, kv_heads, dim).transpose(1, 2)
        value = value.view(batch, length, kv_heads, dim).transpose(1, 2)
        if not rotate_here:
            query, key = apply_rotary_pos_emb(query, key, cos, sin)
        if cache is not None:
            key, value = cache.update(key, value, module.layer_idx, kwargs=kwargs)
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)
        out, weights = attend(module, query, key, value, attention_mask, dropout=0.0, scaling=module.scaling,
                              **window, **kwargs)
        return o_proj(out.reshape(batch, length, -1).contiguous()), weights

    return forward
