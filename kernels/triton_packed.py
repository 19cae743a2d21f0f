"""Matmul of fp32 activations with GGUF-packed weights on the GPU, in Triton.

`out = x @ dequantize(data).T + bias`, with the dequantization fused into the loads: each
program takes BLOCK_N weight rows and BLOCK_M input rows and walks k in steps of 32 weights,
decoding that slice of every row's block in registers (the same float operations as
gguf_blocks.py) and reducing it against the inputs. Each output sums its 32-weight slices in
k order, whatever the number of rows, like the CPU kernel. `packed_matmul_reference` is the
pure-torch oracle of the same signature; the tests run the kernel on CPU tensors under
`TRITON_INTERPRET=1` (small shapes) and compare it with that oracle.

Launcher layers as in flash-attention's Triton rotary: jit kernel -> `packed_matmul`
(checks, contiguity, grid) -> PackedLinear.forward on CUDA tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .gguf_blocks import FORMATS, BlockFormat, dequantize, row_bytes

try:  # optional: only the GPU path and its tests need it (CUDA builds of torch bring it)
    import triton
    import triton.language as tl
except ImportError:  # the CPU product runs without triton
    triton = None

TRITON_FORMATS = ("Q4_0", "Q5_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
BLOCK_M, BLOCK_N = 4, 32


def packed_matmul_reference(x: torch.Tensor, data: torch.Tensor, fmt: BlockFormat, out_features: int,
                            bias: torch.Tensor | None = None) -> torch.Tensor:
    return F.linear(x.float(), dequantize(data, fmt, out_features, x.shape[-1]), bias)


def packed_matmul(x: torch.Tensor, data: torch.Tensor, fmt: BlockFormat, out_features: int,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """x: (rows, in_features); data: (out_features, row bytes) uint8 on the same device."""
    rows, in_features = x.shape
    if fmt.name not in TRITON_FORMATS:
        return packed_matmul_reference(x, data, fmt, out_features, bias)
    if tuple(data.shape) != (out_features, row_bytes(fmt, in_features)) or data.dtype != torch.uint8:
        raise ValueError(f"{fmt.name} data {tuple(data.shape)} does not hold rows of {in_features} weights")
    x = x.float().contiguous()
    data = data.contiguous()
    out = torch.empty(rows, out_features, dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(out_features, BLOCK_N), triton.cdiv(rows, BLOCK_M))
    _kernel()[grid](x, data, bias if bias is not None else out, out, rows, out_features, in_features,
                    data.shape[1], HAS_BIAS=bias is not None, FORMAT=fmt.type_id,
                    BLOCK_WEIGHTS=fmt.block_weights, BLOCK_BYTES=fmt.block_bytes, **field_offsets(fmt),
                    BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)
    return out


def field_offsets(fmt: BlockFormat) -> dict[str, int]:
    """The byte offsets of the fields the kernel reads, from gguf_blocks' table (0 where the
    format has no such field; Q6_K's low bits `ql` go as QS)."""
    fields = dict(fmt.fields)
    names = {"D": "d", "DMIN": "dmin", "SCALES": "scales", "QH": "qh", "QS": "ql" if "ql" in fields else "qs"}
    return {arg: fmt.offset(field) if field in fields else 0 for arg, field in names.items()}


def _kernel():
    if triton is None:
        raise RuntimeError("the packed GPU path needs triton (pip install triton)")
    return packed_matmul_kernel


if triton is not None:
    Q4_0, Q5_0, Q8_0, Q4_K, Q5_K = (tl.constexpr(FORMATS[name].type_id) for name in TRITON_FORMATS[:5])

    @triton.jit
    def half_at(ptr):
        low = tl.load(ptr).to(tl.uint16)
        high = tl.load(ptr + 1).to(tl.uint16)
        return (low | (high << 8)).to(tl.float16, bitcast=True).to(tl.float32)

    @triton.jit
    def k_scale_min(scales, j):
        """The 6-bit (scale, min) of sub-block j of Q4_K / Q5_K (ggml's get_scale_min_k4)."""
        low = j < 4
        a = tl.load(scales + j).to(tl.int32)
        b = tl.load(scales + j + 4).to(tl.int32)
        early = tl.load(scales + tl.where(low, j, j - 4)).to(tl.int32)
        scale = tl.where(low, a & 63, (b & 0xF) | ((early >> 6) << 4))
        minimum = tl.where(low, b & 63, (b >> 4) | ((a >> 6) << 4))
        return scale.to(tl.float32), minimum.to(tl.float32)

    @triton.jit
    def slice32(blocks, column, FORMAT: tl.constexpr, BLOCK_WEIGHTS: tl.constexpr, BLOCK_BYTES: tl.constexpr,
                D: tl.constexpr, DMIN: tl.constexpr, SCALES: tl.constexpr, QH: tl.constexpr, QS: tl.constexpr):
        """Weights [column, column + 32) of each row whose block starts are `blocks` (BLOCK_N
        pointers for block 0): a (BLOCK_N, 32) float tile. D ... QS: the fields' byte offsets."""
        lane = tl.arange(0, 32)
        base = blocks + (column // BLOCK_WEIGHTS) * BLOCK_BYTES  # (BLOCK_N,) pointers
        if FORMAT == Q8_0:
            q = tl.load(base[:, None] + QS + lane[None, :]).to(tl.int8, bitcast=True).to(tl.float32)
            w = half_at(base + D)[:, None] * q
        elif FORMAT == Q4_0 or FORMAT == Q5_0:
            byte = tl.load(base[:, None] + QS + (lane[None, :] % 16)).to(tl.int32)
            q = tl.where(lane[None, :] < 16, byte & 0xF, byte >> 4)
            if FORMAT == Q5_0:
                bits = tl.load(base[:, None] + QH + lane[None, :] // 8).to(tl.int32)
                q = (q | (((bits >> (lane[None, :] % 8)) & 1) << 4)) - 16
            else:
                q = q - 8
            w = half_at(base + D)[:, None] * q.to(tl.float32)
        elif FORMAT == Q4_K or FORMAT == Q5_K:
            j = (column % 256) // 32
            byte = tl.load(base[:, None] + QS + (j // 2) * 32 + lane[None, :]).to(tl.int32)
            q = tl.where(j % 2 == 0, byte & 0xF, byte >> 4)
            if FORMAT == Q5_K:
                high = tl.load(base[:, None] + QH + lane[None, :]).to(tl.int32)
                q = q | (((high >> j) & 1) << 4)
            scale, minimum = k_scale_min(base[:, None] + SCALES, j)
            w = (half_at(base + D)[:, None] * scale) * q.to(tl.float32) - half_at(base + DMIN)[:, None] * minimum
        else:  # Q6_K
            g = (column % 256) // 32
            half = g // 4
            part = g % 4
            low_byte = tl.load(base[:, None] + QS + 64 * half + (part % 2) * 32 + lane[None, :]).to(tl.int32)
            low = tl.where(part < 2, low_byte & 0xF, low_byte >> 4)
            high = (tl.load(base[:, None] + QH + 32 * half + lane[None, :]).to(tl.int32) >> (2 * part)) & 3
            q = ((low | (high << 4)) - 32).to(tl.float32)
            sc = tl.load(base[:, None] + SCALES + 8 * half + 2 * part + lane[None, :] // 16).to(tl.int8, bitcast=True)
            w = (half_at(base + D)[:, None] * sc.to(tl.float32)) * q
        return w

    @triton.jit
    def packed_matmul_kernel(x_ptr, data_ptr, bias_ptr, out_ptr, M, N, K, ROW_BYTES,
                             HAS_BIAS: tl.constexpr, FORMAT: tl.constexpr, BLOCK_WEIGHTS: tl.constexpr,
                             BLOCK_BYTES: tl.constexpr, D: tl.constexpr, DMIN: tl.constexpr, SCALES: tl.constexpr,
                             QH: tl.constexpr, QS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        rows_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rows_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
        safe_n = tl.minimum(rows_n, N - 1)  # rows past the end repeat the last; never stored
        safe_m = tl.minimum(rows_m, M - 1)
        blocks = data_ptr + safe_n.to(tl.int64) * ROW_BYTES
        lane = tl.arange(0, 32)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for column in range(0, K, 32):
            w = slice32(blocks, column, FORMAT, BLOCK_WEIGHTS, BLOCK_BYTES, D, DMIN, SCALES, QH, QS)  # (BLOCK_N, 32)
            xs = tl.load(x_ptr + safe_m[:, None].to(tl.int64) * K + column + lane[None, :])  # (BLOCK_M, 32)
            acc += tl.sum(xs[:, None, :] * w[None, :, :], axis=2)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + safe_n)[None, :]
        mask = (rows_m[:, None] < M) & (rows_n[None, :] < N)
        tl.store(out_ptr + rows_m[:, None].to(tl.int64) * N + rows_n[None, :], acc, mask=mask)

