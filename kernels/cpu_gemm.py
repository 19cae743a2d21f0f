"""Build and load the AVX2 small-batch GEMM (cpu_gemm.cpp) with the system C++ compiler.

The library is compiled once per source version into a cache folder the caller names and
loaded with ctypes (no torch headers: it builds in about two seconds). Where there is no
compiler, no AVX2/FMA, or the build fails, `load` returns None and logs why; the caller then
keeps oneDNN. Calls release the GIL (ctypes does) and run on `torch.get_num_threads()` threads.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_gemm.cpp")
FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
MAX_ROWS = 64  # kMaxRows in cpu_gemm.cpp


class SmallBatchGemm:
    """`out = x @ weight.T + bias` for fp32 CPU tensors of 1 to MAX_ROWS rows."""

    def __init__(self, library: ctypes.CDLL):
        self._call = library.small_batch_gemm
        self._call.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_long] * 3 + [ctypes.c_int]
        self._call.restype = ctypes.c_int

    def takes(self, rows: int, weight: torch.Tensor) -> bool:
        out_features, in_features = weight.shape
        return (1 <= rows <= MAX_ROWS and out_features >= 1 and in_features >= 8 and in_features % 8 == 0
                and weight.is_contiguous())

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x: (rows, in_features) contiguous; `takes` must hold."""
        out = torch.empty(x.shape[0], weight.shape[0], dtype=x.dtype)
        status = self._call(x.data_ptr(), weight.data_ptr(), None if bias is None else bias.data_ptr(),
                            out.data_ptr(), x.shape[0], weight.shape[0], x.shape[1], torch.get_num_threads())
        if status != 0:
            raise ValueError(f"small_batch_gemm refused shapes {tuple(x.shape)} x {tuple(weight.shape)}")
        return out


def cpu_supports_avx2() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def find_compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


@functools.cache
def load(build_dir: Path) -> SmallBatchGemm | None:
    """The compiled kernel, built into `build_dir` if needed; None (logged) where unavailable."""
    if not cpu_supports_avx2():
        logger.info("small-batch GEMM: CPU without AVX2/FMA, keeping oneDNN")
        return None
    compiler = find_compiler()
    if not compiler:
        logger.info("small-batch GEMM: no C++ compiler found (set CXX), keeping oneDNN")
        return None
    try:
        digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
        library = Path(build_dir) / f"cpu_gemm-{digest}.so"
        if not library.exists():
            _build(compiler, library)
        return SmallBatchGemm(ctypes.CDLL(str(library)))
    except (OSError, subprocess.SubprocessError) as error:
        logger.warning("small-batch GEMM unavailable, keeping oneDNN: %s", error)
        return None


def _build(compiler: str, library: Path) -> None:
    library.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: a concurrent process never loads a half-written file.
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        partial = Path(scratch) / library.name
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(partial)],
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise OSError(f"{compiler} failed: {result.stderr.strip()[-2000:]}")
        os.replace(partial, library)
    logger.info("built %s", library)
