"""GGUF files read without copying and run packed: tiny models written as llama.cpp's
converter writes them reproduce the same model with gguf-py-dequantized weights; files the
packed path cannot take are refused with the reason."""

import gguf
import pytest
import torch

from completion.gguf_file import GGUFError, read_gguf
from completion.gguf_model import PackedUnsupported, build_packed_model, packed_config
from kernels import cpu_gemm
from tests.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("isa", cpu_gemm.supported_isas())  # every build this CPU runs
def test_packed_model_reproduces_the_dequantized_model(tmp_path, kernel_dir, architecture, tied, isa):
    gemm = cpu_gemm.load(kernel_dir, isa)
    path = tmp_path / "tiny.gguf"
    expected = write_tiny_gguf(architecture, path, tied=tied)
    parsed = read_gguf(path)
    model = build_packed_model(parsed, packed_config(parsed), gemm, torch.device("cpu"))
    ids = torch.randint(0, 300, (1, 80))
    with torch.inference_mode():
        want = expected(ids).logits
        torch.testing.assert_close(model(ids).logits, want, atol=1e-5, rtol=1e-5)  # prefill tiles (80 rows)
        got = model(ids[:, :9]).logits  # kernel rows
    if gemm is not None and gemm.int8_activations:  # int8 activations: quantization error only
        assert (got - want[:, :9]).norm() < 0.02 * want[:, :9].norm()
    else:
        torch.testing.assert_close(got, want[:, :9], atol=1e-5, rtol=1e-5)
    resident = sum(m.data.numel() for m in model.modules() if hasattr(m, "fmt"))
    assert resident < 0.6 * sum(p.numel() * 4 for p in expected.parameters())  # packed, not fp32


def test_reader_maps_tensors_and_reads_string_arrays_on_request(tmp_path):
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_token_list(["a", "bé", "<|x|>"])
    writer.add_tensor("w", gguf.quants.quantize(torch.randn(3, 64).numpy(), gguf.GGMLQuantizationType.Q8_0),
                      raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    parsed = read_gguf(path)
    assert parsed.architecture == "qwen2" and parsed.metadata["tokenizer.ggml.tokens"] == 3
    assert read_gguf(path, {"tokenizer.ggml.tokens"}).metadata["tokenizer.ggml.tokens"] == ["a", "bé", "<|x|>"]
    tensor = parsed.tensors["w"]
    assert tensor.shape == (3, 64) and tensor.format_name == "Q8_0" and tensor.data.shape == (3 * 2 * 34,)


def test_broken_files_are_refused_with_the_reason(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf("qwen2", path)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(GGUFError, match="past the end"):
        read_gguf(truncated)
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(path.read_bytes()[:200])
    with pytest.raises(GGUFError, match="truncated or malformed"):
        read_gguf(header_only)
    not_gguf = tmp_path / "text.gguf"
    not_gguf.write_text("hello")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_gguf(not_gguf)


def test_architectures_without_a_packed_path_are_refused(tmp_path):
    path = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_tensor("token_embd.weight", torch.randn(4, 32).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(PackedUnsupported, match="'gpt2' has no packed path"):
        packed_config(read_gguf(path))


def test_a_file_missing_a_layer_tensor_is_refused(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf("qwen2", path)
    parsed = read_gguf(path)
    del parsed.tensors["blk.1.ffn_up.weight"]
    with pytest.raises(PackedUnsupported, match="blk.1.ffn_up.weight"):
        build_packed_model(parsed, packed_config(parsed), None, torch.device("cpu"))
