"""The one-call decoder layer (completion/fused_layer.py, `decoder_layer_rows` in
kernels/cpu/layers.cpp) computes bit for bit what the lean forward computes, for a short
prompt, decode steps and a tree verify pass, on every build this CPU runs; passes it does not
take (a cache that is not a growing one) go the lean way."""

import pytest
import torch
import torch.nn.functional as F

from completion.attention import use_grouped_sdpa
from completion.gguf_file import read_gguf
from completion.gguf_model import build_packed_model, packed_config
from completion.growing_cache import GrowingLayer, growing_cache
from kernels import cpu_gemm
from tests.kernel_builds import every_build
from tests.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


class OtherLayer(GrowingLayer):
    """The same cache layer under another type: the fused forward leaves it to the lean one."""


def lean_cache(config):
    cache = growing_cache(config)
    cache.layers = [OtherLayer() for _ in cache.layers]
    return cache


def run_passes(model, cache) -> list[torch.Tensor]:
    """A 20-token prompt, three decode steps, then a tree pass (a; b or c after a)."""
    torch.manual_seed(1)
    prompt, steps = torch.randint(0, 300, (1, 20)), torch.randint(0, 300, (3,))
    logits = []
    with torch.inference_mode():
        logits.append(model(input_ids=prompt, cache=cache, use_cache=True).logits)
        for position, token in enumerate(steps.tolist(), start=20):
            logits.append(model(input_ids=torch.tensor([[token]]), position_ids=torch.tensor([[position]]),
                                cache=cache, use_cache=True).logits)
        mask = torch.zeros(1, 1, 3, 26, dtype=torch.bool)
        mask[0, 0, :, :23] = True  # every row sees the prefix
        mask[0, 0, 0, 23] = mask[0, 0, 1, 23:25] = True  # a itself; b after a
        mask[0, 0, 2, 23] = mask[0, 0, 2, 25] = True  # c after a, never b
        logits.append(model(input_ids=torch.tensor([[11, 22, 33]]), position_ids=torch.tensor([[23, 24, 24]]),
                            attention_mask=mask, cache=cache, use_cache=True).logits)
    return logits


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
@pytest.mark.parametrize("isa", every_build())  # builds this CPU cannot run: skipped, named
def test_fused_layers_equal_the_lean_forward_bit_for_bit(tmp_path, kernel_dir, monkeypatch, architecture, isa):
    write_tiny_gguf(architecture, tmp_path / "tiny.gguf")
    parsed = read_gguf(tmp_path / "tiny.gguf")
    gemm = cpu_gemm.load(kernel_dir, isa)
    model = build_packed_model(parsed, packed_config(parsed), gemm, torch.device("cpu"))
    use_grouped_sdpa(model, gemm)
    calls = []
    fused_call = gemm.decoder_layer
    monkeypatch.setattr(gemm, "decoder_layer", lambda *args: calls.append(args[1].shape[0]) or fused_call(*args))

    fused = run_passes(model, growing_cache(model.config))
    layers = model.config.num_hidden_layers
    assert calls.count(1) == 3 * layers and calls.count(3) == layers  # decode steps and the tree pass
    calls.clear()
    lean = run_passes(model, lean_cache(model.config))
    assert not calls
    for got, want in zip(fused, lean, strict=True):
        assert torch.equal(got, want)


def test_silu_mul_kernel_equals_torch(kernel_dir):
    gemm = cpu_gemm.load(kernel_dir)
    gate = torch.cat([torch.randn(4000) * 6, torch.tensor([0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 200.0, -200.0])])
    up = torch.randn_like(gate)
    torch.testing.assert_close(gemm.silu_mul(gate, up), F.silu(gate) * up, atol=1e-6, rtol=1e-6)
