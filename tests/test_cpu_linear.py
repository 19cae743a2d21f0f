"""The small-batch linear paths (oneDNN, the AVX2 kernel) agree with F.linear (odd shapes,
with/without bias); the kernel's rows are independent of how many are passed together."""

import pytest
import torch
import torch.nn.functional as F

from kernels import cpu_gemm, cpu_linear
from kernels.cpu_linear import (MAX_ROWS, onednn_linear_available, small_batch_linear, takes_onednn,
                                use_small_batch_linear)

pytestmark = pytest.mark.skipif(not onednn_linear_available(), reason="torch built without oneDNN")


@pytest.mark.parametrize("shape", [(1, 1, 7), (1, 3, 33), (2, 5, 64), (1, MAX_ROWS, 17), (1, MAX_ROWS + 1, 9)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_default_linear(shape, bias):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    weight = torch.randn(151, shape[-1])
    b = torch.randn(151) if bias else None
    torch.testing.assert_close(small_batch_linear(x, weight, b), F.linear(x, weight, b), atol=1e-4, rtol=1e-4)


def test_other_dtypes_and_gradients_take_the_default_path():
    x = torch.randn(2, 8, dtype=torch.float64)
    weight = torch.randn(4, 8, dtype=torch.float64)
    torch.testing.assert_close(small_batch_linear(x, weight, None), F.linear(x, weight))
    layer = torch.nn.Linear(8, 4)
    use_small_batch_linear(layer)
    out = layer(torch.randn(3, 8, requires_grad=True))
    out.sum().backward()
    assert layer.weight.grad is not None


def test_model_layers_are_routed_and_agree():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
    x = torch.randn(1, 4, 16)
    with torch.no_grad():
        expected = model(x)
        assert use_small_batch_linear(model) == 2
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_inference_takes_onednn_although_parameters_require_grad():
    # A loaded model's parameters keep requires_grad: inference must still take the fast path.
    layer = torch.nn.Linear(16, 32)
    x = torch.randn(1, 4, 16)
    assert layer.weight.requires_grad
    with torch.inference_mode():
        assert takes_onednn(x, layer.weight)
    with torch.no_grad():
        assert takes_onednn(x, layer.weight)
    assert not takes_onednn(x, layer.weight)  # grad mode: autograd records the default path
    assert not takes_onednn(torch.randn(1, MAX_ROWS + 1, 16), layer.weight.detach())


# The AVX2 small-batch GEMM (kernels/cpu/layers.cpp), built with the system compiler.
needs_gemm = pytest.mark.skipif(not cpu_gemm.cpu_supports_avx2() or not cpu_gemm.find_compiler(),
                                reason="no AVX2 or no C++ compiler: the kernel is not built here")


@pytest.fixture(scope="module")
def gemm(tmp_path_factory):
    return cpu_gemm.load(tmp_path_factory.mktemp("kernels"))


@needs_gemm
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 9, 17, cpu_gemm.MAX_ROWS])
@pytest.mark.parametrize("out_features,in_features", [(37, 8), (5, 40), (151, 896)])
@pytest.mark.parametrize("bias", [True, False])
def test_gemm_matches_default_linear(gemm, rows, out_features, in_features, bias):
    assert gemm is not None  # AVX2 and a compiler: the build must work
    torch.manual_seed(rows)
    x = torch.randn(rows, in_features)
    weight = torch.randn(out_features, in_features)
    b = torch.randn(out_features) if bias else None
    assert gemm.takes(rows, weight)
    torch.testing.assert_close(gemm(x, weight, b), F.linear(x, weight, b), atol=1e-4, rtol=1e-4)


@needs_gemm
def test_gemm_rows_equal_single_row_passes_bit_for_bit(gemm):
    # What makes verify passes reproduce plain decoding: row i of a many-row pass is exactly
    # the one-row pass of row i.
    torch.manual_seed(1)
    weight = torch.randn(203, 896)
    bias = torch.randn(203)
    x = torch.randn(11, 896)
    together = gemm(x, weight, bias)
    for i in range(len(x)):
        assert torch.equal(together[i], gemm(x[i : i + 1].contiguous(), weight, bias)[0])


@needs_gemm
def test_linear_layers_take_the_kernel_where_it_fits(gemm, tmp_path):
    layer = torch.nn.Linear(12, 7)  # 12 inputs: not a multiple of 8, oneDNN instead
    wide = torch.nn.Linear(16, 7)
    assert not gemm.takes(3, layer.weight) and gemm.takes(3, wide.weight)
    assert not gemm.takes(cpu_gemm.MAX_ROWS + 1, wide.weight)
    model = torch.nn.Sequential(wide, torch.nn.ReLU(), torch.nn.Linear(7, 16))
    x = torch.randn(1, 5, 16)
    with torch.inference_mode():
        expected = model(x)
        assert use_small_batch_linear(model, build_dir=tmp_path) == 2
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("compiler", ["false", "/nonexistent/c++"])
def test_a_failing_compiler_leaves_onednn(monkeypatch, tmp_path, caplog, compiler):
    monkeypatch.setenv("CXX", compiler)
    assert cpu_gemm.load(tmp_path) is None
    assert not list(tmp_path.glob("*.so"))  # no half-built library left behind
    layer = torch.nn.Linear(16, 4)
    x = torch.randn(2, 16)
    with torch.inference_mode():
        expected = F.linear(x, layer.weight, layer.bias)
        assert use_small_batch_linear(layer, build_dir=tmp_path) == 1
        torch.testing.assert_close(layer(x), expected)
    if cpu_gemm.cpu_supports_avx2():
        assert "keeping torch's GEMM" in caplog.text


def test_a_missing_kernel_source_leaves_onednn(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(cpu_gemm, "SOURCES", tmp_path / "missing")  # an install without the sources
    assert cpu_gemm.load(tmp_path) is None
    if cpu_gemm.cpu_supports_avx2() and cpu_gemm.find_compiler():
        assert "keeping torch's GEMM" in caplog.text


@pytest.mark.parametrize("onednn", [True, False])
def test_large_batches_agree_with_f_linear(monkeypatch, onednn):
    # prefill tiles: oneDNN where the CPU has AVX-512, else torch's default GEMM
    monkeypatch.setattr(cpu_linear, "onednn_for_large_batches", lambda: onednn)
    x, weight, bias = torch.randn(200, 64), torch.randn(48, 64), torch.randn(48)
    with torch.inference_mode():
        torch.testing.assert_close(cpu_linear.large_batch_linear(x, weight, bias), F.linear(x, weight, bias),
                                   atol=1e-4, rtol=1e-4)
        layer = torch.nn.Linear(64, 48)
        want = layer(x)
        use_small_batch_linear(layer)
        torch.testing.assert_close(layer(x), want, atol=1e-4, rtol=1e-4)  # more rows than MAX_ROWS
