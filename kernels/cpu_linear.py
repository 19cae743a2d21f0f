"""fp32 linear layers on CPU: the AVX2 kernel of kernels/cpu/ or oneDNN for small batches,
oneDNN or the default GEMM for large ones.

Decoding feeds 1 to ~32 rows through every linear layer. On the project's CPU (AVX2, MKL)
PyTorch's default fp32 GEMM is slow for 2-32 rows: Qwen2.5-Coder-0.5B's 151,936 x 896 output
head takes 33 ms for one row and ~100 ms for 4-16 rows, oneDNN's `_linear_pointwise` 22 ms
and ~40-50 ms, the AVX2 kernel 22 ms and 29 ms (4 rows). A whole forward of the 0.5B over
4 tokens and an 800-token cache: oneDNN 200-253 ms, the kernel (with grouped attention,
completion/attention.py) ~130 ms, against ~95 ms for one token. The
kernel also sums every output in the same order whatever the row count, so verify passes
reproduce single-token passes bit for bit in these layers. Larger batches (prefill) take
`large_batch_linear`: oneDNN on AVX-512 CPUs, else the default GEMM (as fast or faster on the
AVX2 CPU). Results agree with `F.linear` to float
rounding (tests/test_cpu_linear.py).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from . import cpu_gemm

logger = logging.getLogger(__name__)

MAX_ROWS = cpu_gemm.MAX_ROWS  # above this `large_batch_linear` is used


def onednn_linear_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def takes_onednn(x: torch.Tensor, weight: torch.Tensor, max_rows: int = MAX_ROWS) -> bool:
    """Whether `small_batch_linear` sends this input through the small-batch paths."""
    return _fp32_inference(x, weight) and 0 < _rows(x) <= max_rows


def _fp32_inference(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """fp32 CPU tensors outside a recorded graph. A model's parameters keep `requires_grad`
    under `torch.inference_mode()`: only a graph that is being recorded (grad mode on and
    something requiring grad) needs autograd's path."""
    recording = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32 and not recording


def _rows(x: torch.Tensor) -> int:
    return x.numel() // x.shape[-1] if x.shape[-1] else 0


def small_batch_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       max_rows: int = MAX_ROWS, gemm: cpu_gemm.SmallBatchGemm | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`; fp32 CPU inputs of at most `max_rows` rows go through `gemm`
    where it takes the shape, else through oneDNN; more rows through `large_batch_linear`."""
    rows = _rows(x)
    if rows == 0 or not _fp32_inference(x, weight):
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1])
    if rows > max_rows:
        out = large_batch_linear(flat, weight, bias)
    elif gemm is not None and gemm.takes(rows, weight):
        out = gemm(flat.contiguous(), weight, bias)
    else:
        out = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, "none", [], "")
    return out.reshape(*x.shape[:-1], weight.shape[0])


@functools.cache
def onednn_for_large_batches() -> bool:
    """Whether many-row fp32 products (prefill) go through oneDNN rather than torch's default
    BLAS. On AVX-512 CPUs oneDNN uses AVX-512 whoever made the CPU, while MKL keeps AVX2 on
    AMD's: a 512 x 896 by 896 x 4864 product took 27 ms with F.linear and 12 ms with oneDNN
    on the project's AVX-512 EPYC."""
    return onednn_linear_available() and cpu_gemm.cpu_supports("avx512")


def large_batch_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` for 2-D fp32 CPU inputs of many rows (prefill tiles)."""
    if onednn_for_large_batches() and x.dtype == weight.dtype == torch.float32 and not torch.is_grad_enabled():
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def use_small_batch_linear(model: torch.nn.Module, max_rows: int = MAX_ROWS,
                           build_dir: Path | None = None) -> int:
    """Route the fp32 CPU linear layers of `model` through `small_batch_linear`; returns how
    many layers were routed (0 where oneDNN is unavailable). `build_dir`: where the AVX2
    kernel is compiled and cached (None: oneDNN only)."""
    if not onednn_linear_available():
        logger.info("oneDNN linear unavailable: keeping the default GEMM")
        return 0
    # The portable build is for packed weights; fp32 layers without AVX2 keep oneDNN.
    gemm = cpu_gemm.load(Path(build_dir)) if build_dir is not None and cpu_gemm.cpu_supports_avx2() else None
    routed = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.forward = _routed_forward(module, max_rows, gemm)
            routed += 1
    logger.info("%d linear layers take the %s small-batch path", routed, "AVX2" if gemm else "oneDNN")
    return routed


def _routed_forward(module: torch.nn.Linear, max_rows: int, gemm: cpu_gemm.SmallBatchGemm | None):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return small_batch_linear(x, module.weight, module.bias, max_rows, gemm)

    return forward
