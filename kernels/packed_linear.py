"""Linear and embedding layers over GGUF-packed weights, kept packed in memory.

`PackedLinear` multiplies fp32 activations with the packed rows:
- up to MAX_ROWS rows (decode and verify passes): the C++ kernels of kernels/cpu/ (AVX-512
  and AVX2 builds: activations quantized to int8 per block against the packed blocks;
  portable build: four weight rows dequantized at a time into cache), which sums every
  output in the same order whatever the row count (verify passes reproduce single-token
  passes bit for bit);
- more rows (prefill): tiles of weight rows are dequantized to fp32 and fed to a GEMM
  (`large_batch_linear`: oneDNN on AVX-512 CPUs, else torch's default), fastest there;
- on CUDA tensors: the Triton kernel of triton_packed.py (tested under TRITON_INTERPRET=1 on
  CPU, not measured on a GPU);
- without a compiled kernel: the torch reference of gguf_blocks.py, tile by tile.
`PackedEmbedding` dequantizes only the rows of the tokens looked up.
"""

from __future__ import annotations

import torch

from . import gguf_blocks
from .cpu_gemm import MAX_ROWS, SmallBatchGemm
from .cpu_linear import large_batch_linear

TILE_FLOATS = 1 << 20  # a dequantized prefill tile: 4 MB, in cache while the GEMM reads it


class PackedLinear(torch.nn.Module):
    def __init__(self, data: torch.Tensor, fmt: gguf_blocks.BlockFormat, in_features: int,
                 bias: torch.Tensor | None = None, gemm: SmallBatchGemm | None = None):
        super().__init__()
        out_features = data.shape[0]
        if tuple(data.shape) != (out_features, gguf_blocks.row_bytes(fmt, in_features)) or data.dtype != torch.uint8:
            raise ValueError(f"{fmt.name} data {tuple(data.shape)} does not hold rows of {in_features} weights")
        self.fmt, self.in_features, self.out_features = fmt, in_features, out_features
        # Plain attributes, not buffers: a decode step calls ~170 of these layers and a buffer
        # lookup goes through nn.Module.__getattr__. The model is built on its device.
        self.data, self.bias, self.gemm = data, bias, gemm
        self.kernel_takes = gemm is not None and in_features % 8 == 0 and data.is_contiguous() and not data.is_cuda

    def extra_repr(self) -> str:
        return f"{self.fmt.name}, in_features={self.in_features}, out_features={self.out_features}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if self.kernel_takes and 1 <= rows <= MAX_ROWS and x.dtype == torch.float32:
            # the decode/verify path: as few tensor operations as possible around the kernel
            out = torch.empty(*x.shape[:-1], self.out_features)
            self.gemm.packed_into(out, x.reshape(rows, self.in_features).contiguous(), self.data,
                                  self.fmt.type_id, self.bias)
            return out
        flat = x.reshape(rows, self.in_features).float().contiguous()
        if flat.is_cuda:
            from .triton_packed import packed_matmul

            out = packed_matmul(flat, self.data, self.fmt, self.out_features, self.bias)
        else:
            out = self._by_tiles(flat)
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def dequantized(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows [start, stop) of the weight as fp32."""
        stop = self.out_features if stop is None else stop
        rows = self.data[start:stop]
        if self.gemm is not None:
            return self.gemm.dequantize(rows, self.fmt, stop - start, self.in_features)
        return gguf_blocks.dequantize(rows, self.fmt, stop - start, self.in_features)

    def _by_tiles(self, flat: torch.Tensor) -> torch.Tensor:
        out = torch.empty(flat.shape[0], self.out_features, dtype=torch.float32)
        step = max(8, TILE_FLOATS // self.in_features)
        for start in range(0, self.out_features, step):
            stop = min(start + step, self.out_features)
            bias = None if self.bias is None else self.bias[start:stop]
            out[:, start:stop] = large_batch_linear(flat, self.dequantized(start, stop), bias)
        return out


class PackedEmbedding(torch.nn.Module):
    def __init__(self, data: torch.Tensor, fmt: gguf_blocks.BlockFormat, embedding_dim: int,
                 gemm: SmallBatchGemm | None = None):
        super().__init__()
        self.fmt, self.embedding_dim, self.num_embeddings = fmt, embedding_dim, data.shape[0]
        gguf_blocks.row_bytes(fmt, embedding_dim)  # validates the row length
        self.data, self.gemm = data, gemm
        # The compiled dequantization where it takes the rows: the torch reference's numbers
        # in one call instead of a dozen tensor operations per decode step.
        self.kernel_takes = gemm is not None and embedding_dim % 8 == 0 and data.is_contiguous() and not data.is_cuda

    def extra_repr(self) -> str:
        return f"{self.fmt.name}, {self.num_embeddings}, {self.embedding_dim}"

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        unique, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
        packed = self.data[unique.to(self.data.device)].contiguous()
        if self.kernel_takes:
            rows = self.gemm.dequantize(packed, self.fmt, len(unique), self.embedding_dim)
        else:
            rows = gguf_blocks.dequantize(packed, self.fmt, len(unique), self.embedding_dim)
        return rows[inverse].reshape(*ids.shape, self.embedding_dim)
