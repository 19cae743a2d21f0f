"""Build and load the small-batch CPU kernels (kernels/cpu/) with the system C++ compiler.

Besides the linear layers, the library holds the RMS norm, the rotary embedding and the
attention of a decode or verify pass, one call each instead of several torch operations.

The library is compiled once per source version and instruction set into a cache folder the
caller names and loaded with ctypes (no torch headers: it builds in a few seconds). Three
builds exist, chosen from the CPU's flags at run time: AVX-512 with VNNI, AVX2/FMA, and
portable C++ vectors (any CPU, slower, the same summation order as AVX2 in the fp32 path).
Each build is `layers.cpp` (the entry points) plus its instruction set's own int8 source;
the block layouts come from `gguf_blocks.c_header()`, written beside the library.
Where a build fails the next one is tried; where there is no compiler or none builds, `load`
returns None and logs why; the caller then keeps torch's own paths. Calls release the
GIL (ctypes does) and run on `torch.get_num_threads()` threads.
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
import time
from pathlib import Path

import torch

from .gguf_blocks import BlockFormat, c_header, row_bytes

logger = logging.getLogger(__name__)

SOURCES = Path(__file__).with_name("cpu")
ISA_SOURCES = {  # every build: layers.cpp and the headers; plus its own int8 path
    "avx512": "int8_avx512.cpp",
    "avx2": "int8_avx2.cpp",
    "portable": "int8_portable.cpp",
}
COMMON_FLAGS = ["-O3", "-fopenmp", "-shared", "-fPIC", "-std=c++17", "-ffp-contract=off", "-Wno-psabi"]
ISA_FLAGS = {
    "avx512": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni"],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "portable": [],
}
# /proc/cpuinfo flags each build needs (torch's own capability check where there is no cpuinfo)
ISA_CPU_FLAGS = {
    "avx512": {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"},
    "avx2": {"avx2", "fma", "f16c"},
    "portable": set(),
}
MAX_ROWS = 64  # kMaxRows in cpu/common.h
_PTR, _LONG, _INT = ctypes.c_void_p, ctypes.c_long, ctypes.c_int


class PackedMatrix(ctypes.Structure):
    """cpu/layers.cpp's PackedMatrix: one packed weight of a decoder layer."""

    _fields_ = [("data", _PTR), ("bias", _PTR), ("format", _LONG), ("rows", _LONG)]


class DecoderLayerWeights(ctypes.Structure):
    """cpu/layers.cpp's DecoderLayer. It holds raw pointers: whoever builds one keeps the tensors
    it points into alive."""

    _fields_ = [("norm_in", _PTR), ("norm_post", _PTR), ("eps", ctypes.c_float), ("scale", ctypes.c_float),
                *((name, _LONG) for name in ("hidden", "intermediate", "heads", "kv_heads", "head_dim")),
                *((name, PackedMatrix) for name in ("q", "k", "v", "o", "gate", "up", "down"))]


class SmallBatchGemm:
    """`out = x @ weight.T + bias` for fp32 CPU inputs of 1 to MAX_ROWS rows, with fp32 or
    GGUF-packed weights; and dequantization of packed rows."""

    def __init__(self, library: ctypes.CDLL, isa: str):
        self.isa = isa
        # The AVX2 and AVX-512 builds multiply quantized weights with int8-quantized
        # activations (blocks of 32, as llama.cpp does); the portable one dequantizes weights
        # to fp32 instead.
        self.int8_activations = isa in ("avx2", "avx512")
        self._fp32 = library.small_batch_gemm
        self._fp32.argtypes = [_PTR] * 4 + [_LONG] * 3 + [_INT]
        self._packed = library.quant_gemm
        self._packed.argtypes = [_INT] + [_PTR] * 4 + [_LONG] * 3 + [_INT]
        self._dequantize = library.dequantize_rows
        self._dequantize.argtypes = [_INT, _PTR, _PTR, _LONG, _LONG, _INT]
        self._rms_norm = library.rms_norm_rows
        self._rms_norm.argtypes = [_PTR, _PTR, ctypes.c_float, _PTR, _LONG, _LONG]
        self._rope = library.rope_rows
        self._rope.argtypes = [_PTR] * 3 + [_LONG] * 3
        self._attend = library.attend_rows
        self._attend.argtypes = [_PTR, _LONG, _LONG, _PTR, _LONG, _LONG, _PTR, _LONG, _LONG, _PTR, _PTR] + [_LONG] * 5 + [
            ctypes.c_float, _INT]
        self._silu_mul = library.silu_mul
        self._silu_mul.argtypes = [_PTR, _PTR, _PTR, _LONG]
        self._decoder_layer = library.decoder_layer_rows
        self._decoder_layer.argtypes = [ctypes.POINTER(DecoderLayerWeights), _PTR, _PTR, _LONG, _PTR, _PTR, _PTR, _PTR,
                                        _LONG, _LONG, _PTR, _INT]
        self._int8_peak = library.int8_peak_probe
        self._int8_peak.argtypes = [_LONG, _INT]
        self._int8_peak.restype = ctypes.c_double
        for function in (self._fp32, self._packed, self._dequantize, self._rms_norm, self._rope, self._attend,
                         self._silu_mul, self._decoder_layer):
            function.restype = ctypes.c_int

    def int8_peak(self, threads: int | None = None, seconds: float = 0.3) -> float:
        """This build's int8 multiply-adds per second on `threads` threads (default: torch's),
        its product step run for about `seconds` in registers; 0.0 for a build without an
        int8 path."""
        threads = threads or torch.get_num_threads()
        began = time.perf_counter()
        if self._int8_peak(100_000, threads) <= 0:  # also wakes the threads and the clock
            return 0.0
        iterations = int(100_000 * seconds / max(time.perf_counter() - began, 1e-6))
        return self._int8_peak(max(iterations, 100_000), threads)

    def takes(self, rows: int, weight: torch.Tensor) -> bool:
        out_features, in_features = weight.shape
        return (1 <= rows <= MAX_ROWS and out_features >= 1 and in_features >= 8 and in_features % 8 == 0
                and weight.is_contiguous())

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x: (rows, in_features) contiguous fp32; `takes` must hold."""
        out = torch.empty(x.shape[0], weight.shape[0], dtype=x.dtype)
        status = self._fp32(x.data_ptr(), weight.data_ptr(), _ptr(bias), out.data_ptr(),
                            x.shape[0], weight.shape[0], x.shape[1], torch.get_num_threads())
        _check(status, f"small_batch_gemm refused shapes {tuple(x.shape)} x {tuple(weight.shape)}")
        return out

    def packed(self, x: torch.Tensor, data: torch.Tensor, fmt: BlockFormat, out_features: int,
               bias: torch.Tensor | None) -> torch.Tensor:
        """x: (rows <= MAX_ROWS, in_features) contiguous fp32; data: (out_features, row bytes) uint8."""
        _check_packed(data, fmt, out_features, x.shape[1])
        out = torch.empty(x.shape[0], out_features, dtype=torch.float32)
        self.packed_into(out, x, data, fmt.type_id, bias)
        return out

    def packed_into(self, out: torch.Tensor, x: torch.Tensor, data: torch.Tensor, type_id: int,
                    bias: torch.Tensor | None) -> None:
        """`packed` without the checks, for layers that checked their data once (a decode step
        makes ~170 of these calls: each microsecond here is ~0.2 ms per token)."""
        rows, in_features = x.shape
        status = self._packed(type_id, x.data_ptr(), data.data_ptr(), bias.data_ptr() if bias is not None else None,
                              out.data_ptr(), rows, out.shape[-1], in_features, torch.get_num_threads())
        if status != 0:
            raise ValueError(f"quant_gemm refused ggml type {type_id}: {rows} x {in_features} -> {out.shape[-1]}")

    def dequantize(self, data: torch.Tensor, fmt: BlockFormat, out_features: int, in_features: int) -> torch.Tensor:
        _check_packed(data, fmt, out_features, in_features)
        out = torch.empty(out_features, in_features, dtype=torch.float32)
        status = self._dequantize(fmt.type_id, data.data_ptr(), out.data_ptr(), out_features, in_features,
                                  torch.get_num_threads())
        _check(status, f"dequantize_rows refused {fmt.name} {out_features} x {in_features}")
        return out

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """transformers' RMSNorm of each row of x (contiguous fp32, rows of weight.numel())."""
        out = torch.empty_like(x)
        status = self._rms_norm(x.data_ptr(), weight.data_ptr(), eps, out.data_ptr(),
                                x.numel() // weight.numel(), weight.numel())
        _check(status, f"rms_norm_rows refused rows of {weight.numel()}")
        return out

    def rope_(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int) -> None:
        """Rotary embedding in place: x (positions, heads * dim) contiguous fp32, cos and sin
        (positions, dim) contiguous fp32."""
        dim = cos.shape[-1]
        status = self._rope(x.data_ptr(), cos.data_ptr(), sin.data_ptr(), cos.numel() // dim, heads, dim)
        _check(status, f"rope_rows refused {heads} heads of {dim}")

    def takes_attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> bool:
        """Whether `attend_rows` takes these (batch 1, fp32 CPU, rows of floats in memory)."""
        dim = query.shape[-1]
        return (query.shape[0] == 1 and dim % 8 == 0 and 8 <= dim <= 512 and value.shape[-1] == dim
                and query.shape[1] % key.shape[1] == 0
                and all(t.dtype == torch.float32 and t.device.type == "cpu" and t.stride(-1) == 1
                        for t in (query, key, value)))

    def attend_rows(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    allowed: torch.Tensor | None, scale: float) -> torch.Tensor:
        """Attention of each query row over its allowed keys: query (1, heads, rows, dim), key
        and value (1, kv_heads, keys, dim), allowed (rows, keys) booleans or None (every key);
        returns (1, rows, heads, dim). `takes_attention` must hold."""
        _, heads, rows, dim = query.shape
        kv_heads, keys = key.shape[1], key.shape[2]
        allowed = _mask_bytes(allowed)
        out = torch.empty(1, rows, heads, dim, dtype=torch.float32)
        status = self._attend(query.data_ptr(), query.stride(2), query.stride(1), key.data_ptr(), key.stride(1),
                              key.stride(2), value.data_ptr(), value.stride(1), value.stride(2), _ptr(allowed),
                              out.data_ptr(), rows, heads, kv_heads, keys, dim, scale, torch.get_num_threads())
        _check(status, f"attend_rows refused {heads} heads over {kv_heads} of {dim}, {keys} keys")
        return out

    def silu_mul(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up for contiguous fp32 tensors of the same shape (numel a multiple of 8)."""
        out = torch.empty_like(gate)
        status = self._silu_mul(gate.data_ptr(), up.data_ptr(), out.data_ptr(), gate.numel())
        _check(status, f"silu_mul refused {gate.numel()} values")
        return out

    def decoder_layer(self, weights: DecoderLayerWeights, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      keys: torch.Tensor, values: torch.Tensor, length: int,
                      allowed: torch.Tensor | None) -> torch.Tensor:
        """A whole decoder layer over x (rows <= MAX_ROWS, hidden) contiguous fp32: returns its
        output and writes the rows' keys and values into `keys`/`values` (kv_heads, capacity,
        head_dim) contiguous buffers at positions [length, length + rows); attention over
        the first length + rows positions as `allowed` (rows, length + rows) says, or every
        one for a single row (None). cos/sin: (rows, head_dim) contiguous fp32."""
        rows, allowed = x.shape[0], _mask_bytes(allowed)
        out = torch.empty_like(x)
        status = self._decoder_layer(ctypes.byref(weights), x.data_ptr(), out.data_ptr(), rows, cos.data_ptr(),
                                     sin.data_ptr(), keys.data_ptr(), values.data_ptr(), keys.shape[-2], length,
                                     _ptr(allowed), torch.get_num_threads())
        _check(status, f"decoder_layer_rows refused {rows} rows at {length} of {keys.shape[-2]} positions")
        return out


def is_plain_fp32(x: torch.Tensor) -> bool:
    """Whether the kernels read `x` as it is: contiguous fp32 in CPU memory."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and x.is_contiguous()


def _ptr(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _mask_bytes(allowed: torch.Tensor | None) -> torch.Tensor | None:
    """(rows, keys) allowed booleans as the kernels read them: one byte each, contiguous (the
    caller keeps the result alive through the call)."""
    return None if allowed is None else allowed.to(torch.bool).contiguous().view(torch.uint8)


def _check(status: int, message: str) -> None:
    if status != 0:
        raise ValueError(message)


def _check_packed(data: torch.Tensor, fmt: BlockFormat, out_features: int, in_features: int) -> None:
    if (data.dtype != torch.uint8 or not data.is_contiguous()
            or tuple(data.shape) != (out_features, row_bytes(fmt, in_features))):
        raise ValueError(f"{fmt.name} data {tuple(data.shape)} {data.dtype} does not hold "
                         f"{out_features} contiguous rows of {in_features} weights")


@functools.cache
def _cpu_flags() -> set[str] | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_supports(isa: str) -> bool:
    """Whether this CPU runs the `isa` build (detected at run time)."""
    flags = _cpu_flags()
    if flags is not None:
        return ISA_CPU_FLAGS[isa] <= flags
    capability = torch.backends.cpu.get_cpu_capability()
    return isa == "portable" or (isa == "avx2" and capability in ("AVX2", "AVX512"))


def why_not_run(isa: str) -> str | None:
    """None where this CPU runs the `isa` build, else the reason (the flags it lacks)."""
    if cpu_supports(isa):
        return None
    flags = _cpu_flags()
    missing = sorted(ISA_CPU_FLAGS[isa] - flags) if flags is not None else ["(no /proc/cpuinfo)"]
    return f"the {isa} build cannot run on this CPU (lacks {', '.join(missing)})"


def cpu_supports_avx2() -> bool:
    return cpu_supports("avx2")


def supported_isas() -> list[str]:
    """The builds this CPU runs, best first."""
    return [isa for isa in ISA_FLAGS if cpu_supports(isa)]


def find_compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def best_isa() -> str:
    """The instruction set this CPU runs the kernels with (detected at run time)."""
    return supported_isas()[0]


@functools.cache
def load(build_dir: Path, isa: str | None = None) -> SmallBatchGemm | None:
    """The compiled kernels for `isa` (default: the best this CPU has and the compiler
    builds), built into `build_dir` if needed; None (logged) where unavailable."""
    candidates = [isa] if isa else supported_isas()
    for candidate in candidates:
        if candidate not in ISA_FLAGS:
            raise ValueError(f"unknown instruction set {candidate!r}; valid: {', '.join(ISA_FLAGS)}")
    compiler = find_compiler()
    if not compiler:
        logger.info("small-batch kernels: no C++ compiler found (set CXX), keeping torch's GEMM")
        return None
    for candidate in candidates:
        gemm = _load_build(Path(build_dir), candidate, compiler)
        if gemm is not None:
            return gemm
    logger.warning("small-batch kernels unavailable, keeping torch's GEMM")
    return None


def build_sources(isa: str) -> list[Path]:
    """The files one build compiles (headers included, for the cache key)."""
    return [*sorted(SOURCES.glob("*.h")), SOURCES / "layers.cpp", SOURCES / ISA_SOURCES[isa]]


def _load_build(build_dir: Path, isa: str, compiler: str) -> SmallBatchGemm | None:
    flags = COMMON_FLAGS + ISA_FLAGS[isa]
    try:
        digest = hashlib.sha256(b"".join(path.read_bytes() for path in build_sources(isa)) + c_header().encode()
                                + " ".join(flags).encode()).hexdigest()[:16]
        library = build_dir / f"cpu_gemm-{isa}-{digest}.so"
        if not library.exists():
            compile_build(isa, library, compiler)
        return SmallBatchGemm(ctypes.CDLL(str(library)), isa)
    except (OSError, subprocess.SubprocessError) as error:
        logger.warning("small-batch kernels: the %s build is unavailable: %s", isa, error)
        return None


def compile_build(isa: str, library: Path, compiler: str) -> None:
    """Compile the `isa` build into `library` (OSError with the compiler's message when it
    fails). Any machine compiles every build: the tests compile those its CPU cannot run."""
    sources = [path for path in build_sources(isa) if path.suffix == ".cpp"]
    _build(compiler, COMMON_FLAGS + ISA_FLAGS[isa], sources, c_header(), library)


def _build(compiler: str, flags: list[str], sources: list[Path], header: str, library: Path) -> None:
    library.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: a concurrent process never loads a half-written file.
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        (Path(scratch) / "block_layouts.h").write_text(header)
        partial = Path(scratch) / library.name
        result = subprocess.run([compiler, *flags, f"-I{scratch}", *map(str, sources), "-o", str(partial)],
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise OSError(f"{compiler} failed: {result.stderr.strip()[-2000:]}")
        os.replace(partial, library)
    logger.info("built %s", library)
