"""One kernel call per decoder layer for the decode and verify passes of a packed model on CPU.

With the lean forwards (lean_forward.py), a decode step of Qwen2.5-Coder-0.5B still spent
~3 ms of ~20 ms on the project's CPU in Python and small torch calls around its ~170 kernel
calls (py-spy). `decoder_layer_rows` (kernels/cpu/layers.cpp) runs a whole layer in one call:
the calls the lean forward makes, in the same order, with the new keys and values written
straight into the growing cache's buffers, so its outputs are bit for bit the lean forward's.
It takes a pass of one sequence over at most ROWWISE_MAX_ROWS new tokens whose cache layer is
a `GrowingLayer`, with the mask a pass over several tokens carries; anything else goes the
lean way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kernels.cpu_gemm import DecoderLayerWeights, PackedMatrix, SmallBatchGemm, is_plain_fp32
from kernels.packed_linear import PackedLinear

from .attention import ROWWISE_MAX_ROWS, allowed_keys
from .growing_cache import GrowingLayer

# (hidden_states, attention_mask, position_embeddings, cache) -> the output, or None: not taken
FusedForward = Callable[..., "torch.Tensor | None"]


class LastMask:
    """The allowed keys of the last mask seen: a pass hands every layer the same mask."""

    def __init__(self):
        self.mask, self.allowed = None, None

    def allowed_keys(self, mask: torch.Tensor) -> torch.Tensor | None:
        if mask is not self.mask:
            self.mask, self.allowed = mask, allowed_keys(mask)
        return self.allowed


def fused_layer_forward(layer, gemm: SmallBatchGemm, masks: LastMask) -> FusedForward | None:
    """forward(hidden_states, attention_mask, position_embeddings, cache) -> the layer's output,
    or None where the call is not one the kernel takes; None where the layer never is."""
    attention, mlp = layer.self_attn, layer.mlp
    config, dim = attention.config, attention.head_dim
    heads, kv_heads, hidden = config.num_attention_heads, config.num_key_value_heads, config.hidden_size
    linears = (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj,
               mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    norms = (layer.input_layernorm, layer.post_attention_layernorm)
    if not _takes_layer(linears, norms, config, attention, hidden, heads, kv_heads, dim):
        return None
    q, k, v, o, gate, up, down = linears
    weights = DecoderLayerWeights(
        norm_in=norms[0].weight.data_ptr(), norm_post=norms[1].weight.data_ptr(), eps=norms[0].variance_epsilon,
        scale=attention.scaling, hidden=hidden, intermediate=gate.out_features, heads=heads, kv_heads=kv_heads,
        head_dim=dim, **{name: _matrix(linear) for name, linear in zip(("q", "k", "v", "o", "gate", "up", "down"),
                                                                       linears)})
    # The weights point into the layer's own tensors, which live as long as the layer whose
    # forward this becomes.
    index = attention.layer_idx

    def forward(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, position_embeddings: tuple,
                cache) -> torch.Tensor | None:
        batch, rows, width = hidden_states.shape
        layers = getattr(cache, "layers", None)
        # Exactly a GrowingLayer: a subclass may keep its entries some other way.
        if (batch != 1 or rows > ROWWISE_MAX_ROWS or not is_plain_fp32(hidden_states) or layers is None
                or index >= len(layers) or type(layers[index]) is not GrowingLayer):
            return None
        cos, sin = position_embeddings
        if not (is_plain_fp32(cos) and is_plain_fp32(sin) and cos.numel() == sin.numel() == rows * dim):
            return None
        cached = layers[index]
        allowed = None
        if attention_mask is not None:
            allowed = masks.allowed_keys(attention_mask)
            if allowed is None or allowed.shape != (rows, cached.get_seq_length() + rows):
                return None
        elif rows > 1:
            return None
        like = hidden_states.new_empty((1, kv_heads, rows, dim))  # the new entries' shape
        keys, values, length = cached.reserve(like, like)
        out = gemm.decoder_layer(weights, hidden_states.view(rows, width), cos, sin, keys, values, length, allowed)
        cached.commit(length + rows)
        return out.view(1, rows, width)

    return forward


def _takes_layer(linears, norms, config, attention, hidden: int, heads: int, kv_heads: int, dim: int) -> bool:
    """A Qwen2/Llama layer the kernel computes as transformers does: packed projections of the
    expected shapes, RMS norms with one epsilon, SiLU, no sliding window."""
    if not all(isinstance(linear, PackedLinear) and linear.kernel_takes for linear in linears):
        return False
    q, k, v, o, gate, up, down = linears
    shapes = ((q.in_features, q.out_features) == (hidden, heads * dim)
              and (k.in_features, k.out_features) == (v.in_features, v.out_features) == (hidden, kv_heads * dim)
              and (o.in_features, o.out_features) == (heads * dim, hidden)
              and gate.in_features == up.in_features == hidden and gate.out_features == up.out_features
              and (down.in_features, down.out_features) == (gate.out_features, hidden))
    norms_plain = all(is_plain_fp32(norm.weight) and norm.weight.shape == (hidden,) for norm in norms)
    return (shapes and norms_plain and norms[0].variance_epsilon == norms[1].variance_epsilon
            and getattr(config, "hidden_act", None) == "silu" and not getattr(attention, "sliding_window", None)
            and hidden % 8 == 0 and gate.out_features % 8 == 0 and dim % 8 == 0 and 8 <= dim <= 512
            and heads % kv_heads == 0
            and all(linear.bias is None or is_plain_fp32(linear.bias) for linear in linears))


def _matrix(linear: PackedLinear) -> PackedMatrix:
    bias = linear.bias.data_ptr() if linear.bias is not None else None
    return PackedMatrix(data=linear.data.data_ptr(), bias=bias, format=linear.fmt.type_id, rows=linear.out_features)
