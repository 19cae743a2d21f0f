"""Load a causal LM and its tokenizer: embedded name, GGUF file, local directory or hub id."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .embedded import DEFAULT_MODEL, EMBEDDED_MODELS, ModelUnavailableError, ensure_cached, ensure_gguf
from .home import codeassist_home
from .model_choice import AUTO, ModelChoice, choose_model

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
# "packed": a GGUF model's quantized weights as they are (fp32 activations); what "auto"
# picks on CPU where the model is a GGUF file of a packed architecture (completion/gguf_model.py).
DTYPES = {"auto": None, "packed": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class LoadedModel:
    name: str
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any  # a transformers tokenizer
    device: torch.device
    dtype: torch.dtype  # of activations and KV caches
    load_ms: float
    packed: bool = False  # weights kept GGUF-packed (dtype is then float32)

    @property
    def dtype_name(self) -> str:
        """"packed", "float32", "bfloat16", ...: for logs and reports."""
        return "packed" if self.packed else _dtype_name(self.dtype)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def resolve_device(device: str = "auto") -> torch.device:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def choose_for_device(device: str | torch.device = "auto") -> ModelChoice:
    """The embedded model `--model auto` runs with `device` on this machine, and why."""
    resolved = device if isinstance(device, torch.device) else resolve_device(device)
    free = 0
    if resolved.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(resolved)
        except (RuntimeError, AssertionError):  # no usable CUDA (a CPU build asserts): no room
            free = 0
    return choose_model(resolved.type, free)


def resolve_model(spec: str, device: str = "auto") -> str:
    """`spec` itself, or for "auto" the embedded model this machine runs by default."""
    return choose_for_device(device).name if spec == AUTO else spec


def _cpu_has_bf16() -> bool:
    """bf16 beats fp32 only where the CPU computes it natively (avx512_bf16 / AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The dtype of an unpacked model (the conversion path)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if dtype == "packed":
        return torch.float32
    if DTYPES[dtype] is not None:
        return DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if _cpu_has_bf16() else torch.float32


def _source(spec: str, dtype: torch.dtype) -> tuple[Path | str, dict]:
    """Map a model spec to a from_pretrained location and its extra keyword arguments."""
    if spec in EMBEDDED_MODELS:
        return ensure_cached(EMBEDDED_MODELS[spec], _dtype_name(dtype)), {}
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelUnavailableError(f"GGUF file not found: {path}")
        return path.parent, {"gguf_file": path.name}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(f"{path} is not a model directory (no config.json)")
        return path, {}
    if spec.count("/") == 1 and not path.exists():
        return spec, {}  # a hub id: served from the local HF cache when offline
    raise ModelUnavailableError(
        f"unknown model {spec!r}: give auto, an embedded name ({', '.join(EMBEDDED_MODELS)}), "
        "a .gguf file, a local model directory or a hub id (owner/name)"
    )


def _gguf_file(spec: str) -> Path | None:
    """The GGUF file behind `spec` (an embedded name or a .gguf path), else None."""
    if spec in EMBEDDED_MODELS:
        return ensure_gguf(EMBEDDED_MODELS[spec])
    path = Path(spec).expanduser()
    return path if path.suffix == ".gguf" and path.is_file() else None


def load_model(spec: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load `spec` for inference ("auto": the embedded model this machine runs best,
    completion/model_choice.py). Never runs remote code, never unpickles weights.

    GGUF models run packed on CPU ("auto") or wherever "packed" is asked for; other
    formats, other dtypes and architectures without a packed path load through transformers.
    """
    from .gguf_model import PackedUnsupported

    start = time.perf_counter()
    torch_device = resolve_device(device)
    if spec == AUTO:
        choice = choose_for_device(torch_device)
        logger.info("model auto: %s (%s)", choice.name, choice.reason)
        spec = choice.name
    resolve_dtype(dtype, torch_device)  # validates the name
    wants_packed = dtype == "packed" or (dtype == "auto" and torch_device.type == "cpu")
    gguf = _gguf_file(spec) if wants_packed else None
    if gguf is not None:
        try:
            return _load_packed(spec, gguf, torch_device, start)
        except PackedUnsupported as reason:
            if dtype == "packed":
                raise ModelUnavailableError(f"cannot run {spec!r} packed: {reason}") from reason
            logger.info("%s runs unpacked (fp32): %s", spec, reason)
    elif dtype == "packed":
        raise ModelUnavailableError(f"cannot run {spec!r} packed: only GGUF files (and embedded models) can be")
    return _load_unpacked(spec, torch_device, resolve_dtype(dtype, torch_device), start)


def load_tokenizer(spec: str):
    """The tokenizer of `spec` without its weights (a remote engine's prompt budgets). Local
    files only: an embedded name, a .gguf file or a model folder."""
    from transformers import AutoTokenizer

    gguf = _gguf_file(spec)
    try:
        if gguf is not None:
            from .gguf_file import read_gguf
            from .gguf_model import packed_config, packed_tokenizer

            return packed_tokenizer(gguf, packed_config(read_gguf(gguf)))
        return AutoTokenizer.from_pretrained(spec, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ModelUnavailableError(f"cannot load the tokenizer of {spec!r}: {error}") from error


def _load_packed(spec: str, gguf: Path, device: torch.device, start: float) -> LoadedModel:
    from kernels import cpu_gemm

    from .gguf_file import GGUFError, read_gguf
    from .gguf_model import build_packed_model, packed_config, packed_tokenizer

    with ThreadPoolExecutor(1) as pool:
        # A first run compiles the kernel (seconds, in a subprocess): meanwhile read the file.
        building = pool.submit(cpu_gemm.load, codeassist_home() / "kernels") if device.type == "cpu" else None
        try:
            parsed = read_gguf(gguf)
            config = packed_config(parsed)
            tokenizer = packed_tokenizer(gguf, config)
            gemm = building.result() if building else None
            model = build_packed_model(parsed, config, gemm, device)
        except (GGUFError, OSError) as error:
            raise ModelUnavailableError(f"cannot load model {spec!r}: {error}") from error
    if device.type == "cpu":
        from .attention import use_grouped_sdpa

        use_grouped_sdpa(model, gemm)
    load_ms = (time.perf_counter() - start) * 1000
    kernel = f"{gemm.isa} kernel" if gemm else "torch reference" if device.type == "cpu" else "Triton"
    logger.info("loaded %s packed (%s) on %s in %.0f ms", spec, kernel, device, load_ms)
    return LoadedModel(spec, model, tokenizer, device, torch.float32, load_ms, packed=True)


def _load_unpacked(spec: str, torch_device: torch.device, torch_dtype: torch.dtype, start: float) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, extra = _source(spec, torch_dtype)
    # safetensors only, except that a GGUF file is its own (non-pickle) format.
    common = dict(trust_remote_code=False, **extra)
    weights = {} if "gguf_file" in extra else {"use_safetensors": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **common)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype, **common, **weights)
    except (OSError, ValueError) as error:
        raise ModelUnavailableError(f"cannot load model {spec!r}: {error}") from error
    model.to(torch_device).eval().requires_grad_(False)  # inference only: no autograd bookkeeping
    if torch_device.type == "cpu":
        from .attention import use_grouped_sdpa

        use_grouped_sdpa(model)  # verify passes stop copying the cache once per query head
    if torch_device.type == "cpu" and torch_dtype == torch.float32:
        from kernels import use_small_batch_linear

        # verify passes over 2-8 tokens load each weight once (kernels/cpu_linear.py)
        use_small_batch_linear(model, build_dir=codeassist_home() / "kernels")
    load_ms = (time.perf_counter() - start) * 1000
    logger.info("loaded %s on %s as %s in %.0f ms", spec, torch_device, torch_dtype, load_ms)
    return LoadedModel(spec, model, tokenizer, torch_device, torch_dtype, load_ms)
