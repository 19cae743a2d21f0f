"""GGUF (ggml) weight block formats and their pure-torch dequantization.

A quantized weight matrix is stored row by row; each row is a run of fixed-size blocks
(32 or 256 weights each) holding small integers and per-block scales. This module names the
formats the packed kernels take and dequantizes them with torch ops: the reference the C++
and Triton kernels are tested against, and the path for prefill tiles and embedding rows.
Layouts follow ggml's `block_*` structs (ggml-common.h) and are written once, in FORMATS;
gguf-py's numpy `dequantize` is an independent oracle for them in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BlockFormat:
    """One block layout: its fields in byte order, as ggml's `block_*` struct declares them.
    This table is the only place a layout is written: the C++ kernels compile against the
    header `c_header()` writes from it, the Triton kernel and the torch reference read it."""

    name: str
    type_id: int  # ggml_type / gguf.GGMLQuantizationType value
    block_weights: int
    fields: tuple[tuple[str, int], ...]  # (field, bytes), in block order

    @property
    def block_bytes(self) -> int:
        return sum(size for _, size in self.fields)

    def offset(self, field: str) -> int:
        """The byte offset of `field` in a block."""
        at = 0
        for name, size in self.fields:
            if name == field:
                return at
            at += size
        raise KeyError(f"{self.name} blocks have no field {field!r}")

    def span(self, field: str) -> slice:
        start = self.offset(field)
        return slice(start, start + dict(self.fields)[field])


# d / dmin: fp16 scales; qs: low 4 bits (or int8 for Q8_0); qh: high bits; scales: per
# sub-block scales (6-bit packed for the K formats, int8 for Q6_K); ql: Q6_K's low 4 bits.
FORMATS = {f.name: f for f in (
    BlockFormat("F32", 0, 1, (("value", 4),)),
    BlockFormat("F16", 1, 1, (("value", 2),)),
    BlockFormat("Q4_0", 2, 32, (("d", 2), ("qs", 16))),
    BlockFormat("Q5_0", 6, 32, (("d", 2), ("qh", 4), ("qs", 16))),
    BlockFormat("Q8_0", 8, 32, (("d", 2), ("qs", 32))),
    BlockFormat("Q4_K", 12, 256, (("d", 2), ("dmin", 2), ("scales", 12), ("qs", 128))),
    BlockFormat("Q5_K", 13, 256, (("d", 2), ("dmin", 2), ("scales", 12), ("qh", 32), ("qs", 128))),
    BlockFormat("Q6_K", 14, 256, (("ql", 128), ("qh", 64), ("scales", 16), ("d", 2))),
)}
FORMATS_BY_ID = {f.type_id: f for f in FORMATS.values()}


def c_header() -> str:
    """FORMATS as C++ declarations: the `Format` ids, each layout's sizes and field offsets
    (`layout::Q6_K::d`), and `block_shape(format)`. The kernel build writes this header
    beside the library it compiles; it is never edited by hand."""
    lines = ["// Written by kernels/gguf_blocks.py (c_header) from its FORMATS table.", "#pragma once", "",
             "namespace codeassist {", "",
             "enum Format { " + ", ".join(f"{f.name} = {f.type_id}" for f in FORMATS.values()) + " };", "",
             "namespace layout {"]
    for f in FORMATS.values():
        offsets = "".join(f", {name} = {f.offset(name)}" for name, _ in f.fields)
        lines.append(f"struct {f.name} {{ static constexpr long kType = {f.type_id}, kWeights = {f.block_weights}, "
                     f"kBytes = {f.block_bytes}{offsets}; }};")
    lines += ["}  // namespace layout", "", "struct BlockShape { long weights, bytes; };", "",
              "inline BlockShape block_shape(int format) {", "    switch (format) {"]
    lines += [f"        case {f.name}: return {{layout::{f.name}::kWeights, layout::{f.name}::kBytes}};"
              for f in FORMATS.values()]
    lines += ["        default: return {0, 0};", "    }", "}", "", "}  // namespace codeassist", ""]
    return "\n".join(lines)


def block_format(name: str) -> BlockFormat:
    if name not in FORMATS:
        raise ValueError(f"unsupported GGUF weight format {name!r}; supported: {', '.join(FORMATS)}")
    return FORMATS[name]


def row_bytes(fmt: BlockFormat, in_features: int) -> int:
    if in_features % fmt.block_weights:
        raise ValueError(f"{fmt.name} rows hold multiples of {fmt.block_weights} weights, not {in_features}")
    return in_features // fmt.block_weights * fmt.block_bytes


def _field(blocks: torch.Tensor, fmt: str, field: str) -> torch.Tensor:
    """`field`'s bytes of every block (an (n, field bytes) uint8 view)."""
    return blocks[:, FORMATS[fmt].span(field)]


def _half(blocks: torch.Tensor, fmt: str, field: str) -> torch.Tensor:
    """The fp16 `field` of every block, as an (n, 1) float32 column."""
    return _field(blocks, fmt, field).contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q = qs.to(torch.int32)
    return q & 0xF, q >> 4


def _bits(data: torch.Tensor, count: int) -> torch.Tensor:
    """Bits 0..count-1 of each row's little-endian bytes, as an (n, count) int32 0/1 tensor."""
    shifts = torch.arange(8, dtype=torch.int32)
    bits = (data.to(torch.int32).unsqueeze(-1) >> shifts) & 1
    return bits.reshape(data.shape[0], -1)[:, :count]


def _q4_0(b: torch.Tensor) -> torch.Tensor:
    low, high = _nibbles(_field(b, "Q4_0", "qs"))
    return _half(b, "Q4_0", "d") * (torch.cat([low, high], 1) - 8).float()


def _q5_0(b: torch.Tensor) -> torch.Tensor:
    low, high = _nibbles(_field(b, "Q5_0", "qs"))
    q = torch.cat([low, high], 1) | (_bits(_field(b, "Q5_0", "qh"), 32) << 4)
    return _half(b, "Q5_0", "d") * (q - 16).float()


def _q8_0(b: torch.Tensor) -> torch.Tensor:
    return _half(b, "Q8_0", "d") * _field(b, "Q8_0", "qs").contiguous().view(torch.int8).float()


def _k_scales(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The eight 6-bit (scale, min) pairs packed into 12 bytes (ggml's get_scale_min_k4)."""
    s = scales.to(torch.int32)
    low_sc, low_min = s[:, 0:4] & 63, s[:, 4:8] & 63
    high_sc = (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)
    high_min = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return torch.cat([low_sc, high_sc], 1).float(), torch.cat([low_min, high_min], 1).float()


def _k_sub_blocks(b: torch.Tensor, fmt: str, q: torch.Tensor) -> torch.Tensor:
    """Q4_K / Q5_K: weight = d * scale_j * q - dmin * min_j over eight sub-blocks of 32."""
    sc, mn = _k_scales(_field(b, fmt, "scales"))
    d, dmin = _half(b, fmt, "d"), _half(b, fmt, "dmin")
    q = q.reshape(-1, 8, 32).float()
    return ((d * sc).unsqueeze(-1) * q - (dmin * mn).unsqueeze(-1)).reshape(-1, 256)


def _chunk_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """128 bytes -> 256 values: each 32-byte chunk gives its low nibbles, then its high ones."""
    low, high = _nibbles(qs.reshape(-1, 4, 32))
    return torch.stack([low, high], 2).reshape(-1, 256)


def _q4_k(b: torch.Tensor) -> torch.Tensor:
    return _k_sub_blocks(b, "Q4_K", _chunk_nibbles(_field(b, "Q4_K", "qs")))


def _q5_k(b: torch.Tensor) -> torch.Tensor:
    qh = _field(b, "Q5_K", "qh").to(torch.int32)  # bit j of byte l: high bit of weight 32 * j + l
    high = torch.stack([(qh >> j) & 1 for j in range(8)], 1).reshape(-1, 256)
    return _k_sub_blocks(b, "Q5_K", _chunk_nibbles(_field(b, "Q5_K", "qs")) | (high << 4))


def _q6_k(b: torch.Tensor) -> torch.Tensor:
    ql = _field(b, "Q6_K", "ql").to(torch.int32).reshape(-1, 2, 64)
    qh = _field(b, "Q6_K", "qh").to(torch.int32).reshape(-1, 2, 32)
    scales = _field(b, "Q6_K", "scales").contiguous().view(torch.int8).float().reshape(-1, 2, 8)
    d = _half(b, "Q6_K", "d").unsqueeze(-1)
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
