"""Numeric kernels: RoPE re-rotation of cached keys; small-batch CPU linear layers over fp32
or GGUF-packed weights (kernels/cpu/, packed_linear.py); GGUF block formats and their torch
dequantization (gguf_blocks.py); the packed matmul for CUDA in Triton (triton_packed.py,
imported only when used; tested under TRITON_INTERPRET=1 on CPU, not measured on a GPU). Each kernel has a torch reference the tests compare it with.

Note: transformers probes for an unrelated hub library that is also imported as `kernels`.
It reads the version of the distribution that owns this name (codeassist, far below the
range it accepts), so it never takes this package for that library; tests/test_layout.py
proves it. Keep this module free of heavy imports: the probe may import it.
"""

__all__ = ["rotate_keys", "use_small_batch_linear"]


def __getattr__(name: str):
    # lazy: importing torch here would slow the probe down
    if name == "rotate_keys":
        from .rope import rotate_keys

        return rotate_keys
    if name == "use_small_batch_linear":
        from .cpu_linear import use_small_batch_linear

        return use_small_batch_linear
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")
