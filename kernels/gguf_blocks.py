"""GGUF (ggml) weight block formats and their pure-torch dequantization.

A quantized weight matrix is stored row by row; each row is a run of fixed-size blocks
(32 or 256 weights each) holding small integers and per-block scales. This module names the
formats the packed kernels take and dequantizes them with torch ops: the reference the C++
and Triton kernels are tested against, and the path for prefill tiles and embedding rows.
Layouts follow ggml's `block_*` structs (ggml-common.h); gguf-py's numpy `dequantize` is an
independent oracle for them in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BlockFormat:
    name: str
    type_id: int  # ggml_type / gguf.GGMLQuantizationType value
    block_weights: int
    block_bytes: int


FORMATS = {f.name: f for f in (
    BlockFormat("F32", 0, 1, 4),
    BlockFormat("F16", 1, 1, 2),
    BlockFormat("Q4_0", 2, 32, 18),
    BlockFormat("Q5_0", 6, 32, 22),
    BlockFormat("Q8_0", 8, 32, 34),
    BlockFormat("Q4_K", 12, 256, 144),
    BlockFormat("Q5_K", 13, 256, 176),
    BlockFormat("Q6_K", 14, 256, 210),
)}
FORMATS_BY_ID = {f.type_id: f for f in FORMATS.values()}


def block_format(name: str) -> BlockFormat:
    if name not in FORMATS:
        raise ValueError(f"unsupported GGUF weight format {name!r}; supported: {', '.join(FORMATS)}")
    return FORMATS[name]


def row_bytes(fmt: BlockFormat, in_features: int) -> int:
    if in_features % fmt.block_weights:
        raise ValueError(f"{fmt.name} rows hold multiples of {fmt.block_weights} weights, not {in_features}")
    return in_features // fmt.block_weights * fmt.block_bytes


def _half(blocks: torch.Tensor, offset: int) -> torch.Tensor:
    """The fp16 at byte `offset` of every block, as an (n, 1) float32 column."""
    return blocks[:, offset:offset + 2].contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q = qs.to(torch.int32)
    return q & 0xF, q >> 4


def _bits(data: torch.Tensor, count: int) -> torch.Tensor:
    """Bits 0..count-1 of each row's little-endian bytes, as an (n, count) int32 0/1 tensor."""
    shifts = torch.arange(8, dtype=torch.int32)
    bits = (data.to(torch.int32).unsqueeze(-1) >> shifts) & 1
    return bits.reshape(data.shape[0], -1)[:, :count]


def _q4_0(b: torch.Tensor) -> torch.Tensor:
    low, high = _nibbles(b[:, 2:18])
    return _half(b, 0) * (torch.cat([low, high], 1) - 8).float()


def _q5_0(b: torch.Tensor) -> torch.Tensor:
    low, high = _nibbles(b[:, 6:22])
    q = torch.cat([low, high], 1) | (_bits(b[:, 2:6], 32) << 4)
    return _half(b, 0) * (q - 16).float()


def _q8_0(b: torch.Tensor) -> torch.Tensor:
    return _half(b, 0) * b[:, 2:34].contiguous().view(torch.int8).float()


def _k_scales(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The eight 6-bit (scale, min) pairs packed into 12 bytes (ggml's get_scale_min_k4)."""
    s = scales.to(torch.int32)
    low_sc, low_min = s[:, 0:4] & 63, s[:, 4:8] & 63
    high_sc = (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)
    high_min = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return torch.cat([low_sc, high_sc], 1).float(), torch.cat([low_min, high_min], 1).float()


def _k_sub_blocks(b: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Q4_K / Q5_K: weight = d * scale_j * q - dmin * min_j over eight sub-blocks of 32."""
    sc, mn = _k_scales(b[:, 4:16])
    d, dmin = _half(b, 0), _half(b, 2)
    q = q.reshape(-1, 8, 32).float()
    return ((d * sc).unsqueeze(-1) * q - (dmin * mn).unsqueeze(-1)).reshape(-1, 256)


def _chunk_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """128 bytes -> 256 values: each 32-byte chunk gives its low nibbles, then its high ones."""
    low, high = _nibbles(qs.reshape(-1, 4, 32))
    return torch.stack([low, high], 2).reshape(-1, 256)


def _q4_k(b: torch.Tensor) -> torch.Tensor:
    return _k_sub_blocks(b, _chunk_nibbles(b[:, 16:144]))


def _q5_k(b: torch.Tensor) -> torch.Tensor:
    qh = b[:, 16:48].to(torch.int32)  # bit j of byte l: high bit of weight 32 * j + l
    high = torch.stack([(qh >> j) & 1 for j in range(8)], 1).reshape(-1, 256)
    return _k_sub_blocks(b, _chunk_nibbles(b[:, 48:176]) | (high << 4))


def _q6_k(b: torch.Tensor) -> torch.Tensor:
    ql = b[:, 0:128].to(torch.int32).reshape(-1, 2, 64)
    qh = b[:, 128:192].to(torch.int32).reshape(-1, 2, 32)
    scales = b[:, 192:208].contiguous().view(torch.int8).float().reshape(-1, 2, 8)
    d = _half(b, 208).unsqueeze(-1)
    parts = [  # each half of 128 weights: four runs of 32
        (ql[..., 0:32] & 0xF) | ((qh & 3) << 4),
        (ql[..., 32:64] & 0xF) | (((qh >> 2) & 3) << 4),
        (ql[..., 0:32] >> 4) | (((qh >> 4) & 3) << 4),
        (ql[..., 32:64] >> 4) | (((qh >> 6) & 3) << 4),
    ]
    q = (torch.stack(parts, 2) - 32).float().reshape(-1, 2, 8, 16)  # 16-weight groups
    return (d.unsqueeze(-1) * scales.unsqueeze(-1) * q).reshape(-1, 256)


_DEQUANTIZE = {"Q4_0": _q4_0, "Q5_0": _q5_0, "Q8_0": _q8_0, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}


def dequantize(data: torch.Tensor, fmt: BlockFormat, out_features: int, in_features: int) -> torch.Tensor:
    """uint8 `data` of shape (out_features, row_bytes) -> float32 (out_features, in_features)."""
    expected = (out_features, row_bytes(fmt, in_features))
    if tuple(data.shape) != expected or data.dtype != torch.uint8:
        raise ValueError(f"{fmt.name} data of shape {tuple(data.shape)} ({data.dtype}), expected {expected} uint8")
    if fmt.name == "F32":
        return data.contiguous().view(torch.float32).clone()
    if fmt.name == "F16":
        return data.contiguous().view(torch.float16).float()
    blocks = data.reshape(-1, fmt.block_bytes)
    return _DEQUANTIZE[fmt.name](blocks).reshape(out_features, in_features)
