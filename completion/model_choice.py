"""Which embedded model `--model auto` (the default) runs on this machine, and why.

The rule follows what was measured (docs/benchmarks.md): on CPUs a new place costs a whole
prompt, and the 1.5B encodes prompts about 3x slower than the 0.5B, so its first key at a
fresh place misses the session targets on every CPU measured (2-core Zen 1, Zen 4, Zen 5);
on a CUDA GPU prompts cost milliseconds for either model, and the 1.5B doubles the share of
held-out holes answered right. A model named explicitly is never second-guessed. The rule
is pure; completion/models.py applies it to this machine's device (`choose_for_device`,
`resolve_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .embedded import DEFAULT_MODEL, EMBEDDED_MODELS, is_installed

AUTO = "auto"
LARGE_MODEL = "qwen2.5-coder-1.5b"
# The 1.5B packed (Q4_K_M, 1.1 GB) or in bf16 (3.1 GB) plus KV caches and a second model's
# room: below this much free GPU memory the 0.5B is the safer choice.
_LARGE_GPU_FREE_BYTES = 4 << 30


@dataclass(frozen=True)
class ModelChoice:
    name: str
    reason: str


def choose_model(device_type: str, gpu_free_bytes: int = 0, large_installed: bool | None = None) -> ModelChoice:
    """The embedded model for a machine whose resolved device is `device_type` ("cpu",
    "cuda", "mps"), with `gpu_free_bytes` free on a CUDA device."""
    if large_installed is None:
        large_installed = is_installed(EMBEDDED_MODELS[LARGE_MODEL])
    if device_type != "cuda":
        where = "Apple GPU (not measured)" if device_type == "mps" else "CPU"
        return ModelChoice(DEFAULT_MODEL, f"{where}: the 1.5B encodes a new place's prompt ~3x slower than "
                           "the 0.5B and misses the first-key targets on every CPU measured")
    if gpu_free_bytes < _LARGE_GPU_FREE_BYTES:
        return ModelChoice(DEFAULT_MODEL, f"CUDA GPU with {gpu_free_bytes / 2**30:.1f} GiB free: the 1.5B "
                           f"wants {_LARGE_GPU_FREE_BYTES >> 30} GiB")
    if not large_installed:
        return ModelChoice(DEFAULT_MODEL, f"CUDA GPU: the 1.5B would run here but is not installed "
                           f"({EMBEDDED_MODELS[LARGE_MODEL].install_hint})")
    return ModelChoice(LARGE_MODEL, "CUDA GPU: prompts cost milliseconds for either model, and the 1.5B "
                       "answers about twice as many held-out holes right")
