"""Masked attention over grouped key/value heads without copying the cache (CPU).

transformers' "sdpa" attention hands grouped heads straight to torch only when no mask is
given (CUDA's fast kernels need that). Every pass over more than one new token, such as a
speculative verify pass, carries a mask, so each layer first copies its whole cached keys and
values once per query head: 7x for Qwen2.5-Coder-0.5B (14 query heads, 2 key/value heads).
torch's CPU kernel takes a mask and grouped heads together (`enable_gqa`). Measured on the
project's CPU, 800 cached tokens: a 4-token pass takes ~26 ms outside the linear layers this
way, ~62 ms with the copies. The outputs agree with transformers' path to float rounding
(tests/test_attention.py).

A single query row (a decode step) is two batched matrix products and a softmax over the
grouped heads (`_one_row`): ~80 us a layer over 512 cached tokens, against ~130-200 us for
torch's flash-attention kernel, whose setup dominates at one row. Where the model was given
the compiled kernels (kernels/cpu/layers.cpp `attend_rows`), single rows and verify rows take
one call a layer instead, with the same row-by-row property.

Passes over a few new tokens (speculative verify passes, up to ROWWISE_MAX_ROWS rows) go one
query row at a time instead, each over the cache entries its mask allows, through the very
call a single-token decode step makes. Softmax and the value sum then see the same numbers in
the same order as in plain decoding, so a verify pass reproduces single-token steps bit for
bit. The batched kernel rounds differently; with fp32 weights that rarely changed a token,
but int8-quantized activations (the packed path) turn a last-bit difference into a different
rounding step: in a quick bench run, speculative output differed from plain greedy on 1 hole
in 6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from kernels.cpu_gemm import SmallBatchGemm

NAME = "codeassist_grouped_sdpa"
ROWWISE_MAX_ROWS = 32  # verify passes: at most the draft limit + 1 rows


def grouped_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                         value: torch.Tensor, attention_mask: torch.Tensor | None, dropout: float = 0.0,
                         scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    grouped = query.shape[1] != key.shape[1]
    plain = query.device.type == "cpu" and kwargs.get("position_bias") is None and dropout == 0.0
    if plain and attention_mask is None and query.shape[0] == 1 and query.shape[2] == 1 and not kwargs.get("sliding_window"):
        return _by_rows(module, query, key, value, None, scaling), None
    if plain and attention_mask is not None and query.shape[0] == 1 and 1 < query.shape[2] <= ROWWISE_MAX_ROWS:
        allowed = allowed_keys(attention_mask)
        if allowed is not None and allowed.shape == (query.shape[2], key.shape[2]):
            return _by_rows(module, query, key, value, allowed, scaling), None
    if attention_mask is None or not grouped or not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                         scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def _by_rows(module, query, key, value, allowed: torch.Tensor | None, scaling) -> torch.Tensor:
    """Each query row over its allowed keys (all keys where `allowed` is None), as a
    single-token step computes it: the module's compiled `row_attention` where it takes the
    tensors, else torch one row at a time. Returns (batch, rows, heads, dim)."""
    kernel = getattr(module, "row_attention", None)
    if kernel is not None and kernel.takes_attention(query, key, value):
        return kernel.attend_rows(query, key, value, allowed, query.shape[-1] ** -0.5 if scaling is None else scaling)
    if allowed is None:
        return _one_row(query, key, value, scaling).transpose(1, 2)
    return _rowwise(query, key, value, allowed, scaling)


def allowed_keys(mask: torch.Tensor) -> torch.Tensor | None:
    """(rows, keys) booleans from a bool or additive mask shared by all heads; None when the
    mask holds anything but allowed / disallowed (then the batched path runs)."""
    if mask.dim() != 4 or mask.shape[0] != 1 or mask.shape[1] != 1:
        return None
    if mask.dtype == torch.bool:
        return mask[0, 0]
    allowed = mask[0, 0] == 0
    if not torch.all(allowed | (mask[0, 0] <= torch.finfo(mask.dtype).min / 2)):
        return None
    return allowed


def _rowwise(query, key, value, allowed, scaling) -> torch.Tensor:
    """Attention of each query row over its allowed keys, as a single-token step computes it.
    Rows that see a prefix of the cache (every row of a chain draft) take a slice of it, a
    view like the decode step's cache; tree rows gather their keys."""
    rows = query.shape[2]
    counts = allowed.sum(-1)
    prefix = (allowed == (torch.arange(allowed.shape[-1]) < counts[:, None])).all(-1).tolist()
    out = torch.empty(1, rows, query.shape[1], value.shape[-1], dtype=query.dtype)
    for row, count in enumerate(counts.tolist()):
        if prefix[row]:
            keys, values = key[:, :, :count], value[:, :, :count]
        else:
            keep = allowed[row].nonzero().squeeze(-1)
            keys, values = key.index_select(2, keep), value.index_select(2, keep)
        out[:, row] = _one_row(query[:, :, row:row + 1], keys, values, scaling)[:, :, 0]
    return out


def _one_row(query, key, value, scaling) -> torch.Tensor:
    """Attention of one query row (batch 1): query (1, heads, 1, dim) over key/value
    (1, kv_heads, keys, dim); returns (1, heads, 1, dim). Query heads are grouped onto their
    key/value head as rows of one matrix product, so the cache is never repeated."""
    kv_heads, dim = key.shape[1], query.shape[-1]
    scale = dim ** -0.5 if scaling is None else scaling
    grouped = query.reshape(kv_heads, -1, dim)
    scores = torch.bmm(grouped, key[0].transpose(1, 2)).mul_(scale)
    out = torch.bmm(torch.softmax(scores, dim=-1), value[0])
    return out.reshape(1, -1, 1, value.shape[-1])


def use_grouped_sdpa(model, kernel: SmallBatchGemm | None = None) -> bool:
    """Switch a CPU model that uses "sdpa" attention to the grouped variant; whether it did.
    With `kernel`, single rows and verify rows take its `attend_rows` (one call a layer)."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    for module in model.modules():
        if hasattr(module, "q_proj") and hasattr(module, "head_dim"):
            module.row_attention = kernel
    AttentionInterface.register(NAME, grouped_sdpa_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the same masks as "sdpa"
    model.set_attn_implementation(NAME)
    return True
