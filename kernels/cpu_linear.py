"""Small-batch linear layers on CPU through oneDNN.

Decoding feeds 1 to ~32 rows through every linear layer. On the project's CPU (AVX2, MKL)
PyTorch's default fp32 GEMM is slow for 2-32 rows: Qwen2.5-Coder-0.5B's 151,936 x 896 output
head takes 33 ms for one row and ~100 ms for 4-16 rows, oneDNN's `_linear_pointwise` 22 ms
and ~40 ms. A whole forward over a 600-token cache, measured on that CPU with 2 threads,
drops from 133 to 111 ms for one token and from 243-349 ms to ~175 ms for 2-4 tokens (8 tokens:
280 -> 210 ms), the sizes of speculative verify passes. Larger batches (prefill) keep the
default GEMM, which is as fast or faster there. The results agree with `F.linear` to float
rounding (tests/test_cpu_linear.py).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

MAX_ROWS = 64  # above this the default GEMM is used (measured: prefill is not faster in oneDNN)


def onednn_linear_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def takes_onednn(x: torch.Tensor, weight: torch.Tensor, max_rows: int = MAX_ROWS) -> bool:
    """Whether `small_batch_linear` sends this input through oneDNN. A model's parameters keep
    `requires_grad` under `torch.inference_mode()`: only a graph that is being recorded (grad
    mode on and something requiring grad) needs autograd's path."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    recording = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and 0 < rows <= max_rows and not recording)


def small_batch_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       max_rows: int = MAX_ROWS) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, through oneDNN for fp32 CPU inputs of at most `max_rows` rows."""
    if not takes_onednn(x, weight, max_rows):
        return F.linear(x, weight, bias)
    rows = x.numel() // x.shape[-1]
    out = torch.ops.mkldnn._linear_pointwise(x.reshape(rows, x.shape[-1]), weight, bias, "none", [], "")
    return out.reshape(*x.shape[:-1], weight.shape[0])


def use_small_batch_linear(model: torch.nn.Module, max_rows: int = MAX_ROWS) -> int:
    """Route the fp32 CPU linear layers of `model` through `small_batch_linear`; returns how
    many layers were routed (0 where oneDNN is unavailable)."""
    if not onednn_linear_available():
        logger.info("oneDNN linear unavailable: keeping the default GEMM")
        return 0
    routed = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.forward = _routed_forward(module, max_rows)
            routed += 1
    return routed


def _routed_forward(module: torch.nn.Linear, max_rows: int):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return small_batch_linear(x, module.weight, module.bias, max_rows)

    return forward
