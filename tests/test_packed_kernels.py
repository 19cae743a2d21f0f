"""Packed (GGUF block) weights: the torch reference against gguf-py's dequantizer, the C++
kernels (every build: AVX-512, AVX2, portable; those this CPU cannot run are reported as
skipped, and each is at least compiled) against the reference bit for
bit, rows independent of how many are passed together, and the packed layers on every path
(kernel, prefill tiles, no kernel)."""

import gguf
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernels import cpu_gemm
from kernels.gguf_blocks import FORMATS, block_format, c_header, dequantize, row_bytes
from kernels.packed_linear import PackedEmbedding, PackedLinear
from tests.kernel_builds import every_build

QUANTIZED = [name for name in FORMATS if name not in ("F32", "F16")]


def random_packed(name: str, out_features: int, in_features: int, seed: int = 0) -> torch.Tensor:
    """Random rows of `name` blocks: random quants, finite fp16 scales of either sign."""
    fmt = block_format(name)
    generator = torch.Generator().manual_seed(seed)
    if name in ("F32", "F16"):
        values = torch.randn(out_features, in_features, generator=generator)
        return values.to(torch.float32 if name == "F32" else torch.float16).view(torch.uint8).contiguous()
    data = torch.randint(0, 256, (out_features, row_bytes(fmt, in_features)), dtype=torch.uint8, generator=generator)
    blocks = data.view(-1, fmt.block_bytes)
    for offset in (fmt.offset(field) for field, _ in fmt.fields if field in ("d", "dmin")):  # fp16 scales
        scales = ((torch.rand(len(blocks), generator=generator) - 0.5) * 0.02).half()
        blocks[:, offset:offset + 2] = scales.view(torch.uint8).reshape(-1, 2)
    return data


def builds():
    """The builds this CPU runs: portable first, the best last."""
    isas = cpu_gemm.supported_isas()[::-1]
    return isas if cpu_gemm.find_compiler() else []


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


@pytest.mark.parametrize("name", list(FORMATS))
def test_reference_equals_gguf_py(name):
    data = random_packed(name, 7, 512, seed=3)
    expected = gguf.quants.dequantize(data.numpy(), getattr(gguf.GGMLQuantizationType, name))
    ours = dequantize(data, block_format(name), 7, 512)
    np.testing.assert_array_equal(ours.numpy(), np.asarray(expected, dtype=np.float32).reshape(7, 512))


def test_reference_refuses_wrong_shapes():
    with pytest.raises(ValueError, match="multiples of 32"):
        row_bytes(block_format("Q8_0"), 48)
    with pytest.raises(ValueError, match="supported: F32"):
        block_format("IQ2_XXS")
    with pytest.raises(ValueError, match="expected"):
        dequantize(torch.zeros(3, 10, dtype=torch.uint8), block_format("Q8_0"), 3, 32)


@pytest.mark.parametrize("name", list(FORMATS))
def test_layouts_agree_with_gguf_py(name):
    fmt = block_format(name)
    quantization = getattr(gguf.GGMLQuantizationType, name)
    assert (fmt.type_id, (fmt.block_weights, fmt.block_bytes)) == (quantization.value, gguf.GGML_QUANT_SIZES[quantization])
    assert f"struct {name} {{ static constexpr long kType = {fmt.type_id}, kWeights = {fmt.block_weights}, " \
           f"kBytes = {fmt.block_bytes}" in c_header()


@pytest.mark.skipif(not cpu_gemm.find_compiler(), reason="no C++ compiler: the kernels are not built here")
@pytest.mark.parametrize("isa", list(cpu_gemm.ISA_FLAGS))
def test_every_build_compiles_here(tmp_path, isa):
    """Builds this CPU cannot run are still compiled, so a broken AVX-512 source fails on any machine."""
    cpu_gemm.compile_build(isa, tmp_path / "library.so", cpu_gemm.find_compiler())
    assert (tmp_path / "library.so").stat().st_size > 0


@pytest.mark.parametrize("isa", every_build())
@pytest.mark.parametrize("name", list(FORMATS))
def test_kernel_dequantizes_like_the_reference_bit_for_bit(kernel_dir, isa, name):
    gemm = cpu_gemm.load(kernel_dir, isa)
    assert gemm is not None
    data = random_packed(name, 37, 768, seed=1)
    fmt = block_format(name)
    assert torch.equal(gemm.dequantize(data, fmt, 37, 768), dequantize(data, fmt, 37, 768))


def int8_activations(x: torch.Tensor) -> torch.Tensor:
    """x as the int8 builds (AVX-512, AVX2) see it: blocks of 32 quantized to int8 with scale max|x| / 127
    (the same float32 operations, ties rounded to even), dequantized again."""
    blocks = x.reshape(-1, 32)
    scale = blocks.abs().amax(1, keepdim=True) / 127.0
    inverse = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
    return (torch.round(blocks * inverse) * scale).reshape(x.shape)


@pytest.mark.parametrize("isa", every_build())
@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 9, 64])
@pytest.mark.parametrize("long_rows", [False, True])
def test_packed_gemm_matches_linear(kernel_dir, isa, name, rows, long_rows):
    gemm = cpu_gemm.load(kernel_dir, isa)
    # 37: not a multiple of the four-row tiles; an odd number of 32-weight blocks: the AVX-512
    # build pairs the last block with zeros. Long rows: taken slice of k by slice.
    if block_format(name).block_weights == 256:
        in_features = 256 * (19 if long_rows else 3)
    else:
        in_features = 32 * (151 if long_rows else 17)
    out_features = 37
    atol = 1e-3 if long_rows else 2e-4  # fp32 sums over 4,800 products round further from torch's
    data = random_packed(name, out_features, in_features, seed=rows)
    weight = dequantize(data, block_format(name), out_features, in_features)
    x = torch.randn(rows, in_features)
    bias = torch.randn(out_features)
    out = gemm.packed(x, data, block_format(name), out_features, bias)
    if gemm.int8_activations and name in QUANTIZED:
        # exact integer dot products of int8 activations: float64 over the same values
        want = F.linear(int8_activations(x).double(), weight.double(), bias.double()).float()
        torch.testing.assert_close(out, want, atol=atol, rtol=1e-4)
        # and within activation-quantization error of the fp32 product
        full = F.linear(x, weight, bias)
        assert (out - full).norm() < 0.02 * full.norm()
    else:
        torch.testing.assert_close(out, F.linear(x, weight, bias), atol=atol, rtol=1e-4)
        # the same summation as the fp32 kernel over the dequantized weights
        assert torch.equal(out, gemm(x, weight, bias))


@pytest.mark.parametrize("isa", every_build())
@pytest.mark.parametrize("name", ["Q4_0", "Q5_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K"])
@pytest.mark.parametrize("long_rows", [False, True])
def test_packed_rows_equal_single_row_passes_bit_for_bit(kernel_dir, isa, name, long_rows):
    # What keeps speculative decoding identical to plain greedy on packed weights. Long rows:
    # several rows' activations outgrow L1 and the AVX-512 build goes over k slice by slice.
    gemm = cpu_gemm.load(kernel_dir, isa)
    if long_rows:
        in_features = 256 * 19 if block_format(name).block_weights == 256 else 32 * 151
    else:
        in_features = 1024 if block_format(name).block_weights == 256 else 32 * 29
    data = random_packed(name, 203, in_features, seed=5)
    x = torch.randn(11, in_features)
    together = gemm.packed(x, data, block_format(name), 203, None)
    for i in range(len(x)):
        alone = gemm.packed(x[i:i + 1].contiguous(), data, block_format(name), 203, None)
        assert torch.equal(together[i], alone[0])


@pytest.mark.skipif(not builds(), reason="no C++ compiler: the kernels are not built here")
def test_kernel_refuses_mismatched_data(kernel_dir):
    gemm = cpu_gemm.load(kernel_dir, builds()[0])
    with pytest.raises(ValueError, match="does not hold"):
        gemm.packed(torch.randn(1, 64), torch.zeros(4, 10, dtype=torch.uint8), block_format("Q8_0"), 4, None)


@pytest.mark.parametrize("with_kernel", [True, False])
@pytest.mark.parametrize("rows", [1, 6, 65, 200])
def test_packed_linear_every_path(kernel_dir, with_kernel, rows):
    gemm = cpu_gemm.load(kernel_dir, builds()[-1]) if with_kernel and builds() else None
    data = random_packed("Q4_K", 300, 256, seed=rows)
    bias = torch.randn(300)
    layer = PackedLinear(data, block_format("Q4_K"), 256, bias, gemm)
    weight = dequantize(data, block_format("Q4_K"), 300, 256)
    x = torch.randn(1, rows, 256)
    kernel_rows = gemm is not None and rows <= cpu_gemm.MAX_ROWS
    seen = int8_activations(x) if kernel_rows and gemm.int8_activations else x
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), F.linear(seen, weight, bias), atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("isa", [None, *every_build()])  # None: the torch reference
@pytest.mark.parametrize("name", ["Q5_0", "Q8_0", "Q6_K"])
def test_packed_embedding_dequantizes_the_rows_looked_up(kernel_dir, isa, name):
    data = random_packed(name, 50, 256, seed=2)
    table = dequantize(data, block_format(name), 50, 256)
    ids = torch.tensor([[3, 49, 3, 0], [7, 7, 1, 2]])
    gemm = cpu_gemm.load(kernel_dir, isa) if isa else None
    assert torch.equal(PackedEmbedding(data, block_format(name), 256, gemm)(ids), F.embedding(ids, table))


@pytest.mark.parametrize("isa", every_build())
def test_int8_peak_is_measured_where_a_build_has_an_int8_path(kernel_dir, isa):
    gemm = cpu_gemm.load(kernel_dir, isa)
    peak = gemm.int8_peak(seconds=0.05)
    if gemm.int8_activations:
        assert 1e8 < peak < 1e15  # multiply-adds per second: some, and a finite count
    else:
        assert peak == 0.0


@pytest.mark.parametrize("isa", every_build())
def test_rms_norm_rows_match_transformers(kernel_dir, isa):
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    gemm = cpu_gemm.load(kernel_dir, isa)
    norm = Qwen2RMSNorm(96, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(96))
    x = torch.randn(5, 96) * 3
    out = gemm.rms_norm(x, norm.weight.detach(), 1e-6)
    torch.testing.assert_close(out, norm(x).detach(), atol=1e-5, rtol=1e-5)
    single = torch.cat([gemm.rms_norm(x[i:i + 1], norm.weight.detach(), 1e-6) for i in range(5)])
    assert torch.equal(out, single)  # each row alone, whatever else is in the call


@pytest.mark.parametrize("isa", every_build())
def test_rope_rows_equal_transformers_bit_for_bit(kernel_dir, isa):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    gemm = cpu_gemm.load(kernel_dir, isa)
    positions, heads, kv_heads, dim = 6, 4, 2, 16
    angles = torch.arange(positions)[:, None] * (10000 ** (-torch.arange(0, dim, 2) / dim))[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos()[None].contiguous(), angles.sin()[None].contiguous()
    query, key = torch.randn(1, positions, heads * dim), torch.randn(1, positions, kv_heads * dim)
    want_q, want_k = apply_rotary_pos_emb(query.view(1, positions, heads, dim).transpose(1, 2),
                                          key.view(1, positions, kv_heads, dim).transpose(1, 2), cos, sin)
    gemm.rope_(query, cos, sin, heads)
    gemm.rope_(key, cos, sin, kv_heads)
    assert torch.equal(query.view(1, positions, heads, dim).transpose(1, 2), want_q)
    assert torch.equal(key.view(1, positions, kv_heads, dim).transpose(1, 2), want_k)
