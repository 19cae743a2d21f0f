"""Masked attention over grouped key/value heads (completion/attention.py) equals transformers'
"sdpa" path, which copies the grouped heads first."""

import types

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from completion import load_model
from completion.attention import NAME, grouped_sdpa_forward
from kernels import cpu_gemm
from tests.kernel_builds import every_build


def test_grouped_attention_with_a_mask_equals_transformers_sdpa():
    torch.manual_seed(0)
    module = types.SimpleNamespace(num_key_value_groups=3, is_causal=True)
    query = torch.randn(1, 6, 5, 16)  # 6 query heads share 2 key/value heads
    key, value = torch.randn(1, 2, 12, 16), torch.randn(1, 2, 12, 16)
    mask = torch.zeros(1, 1, 5, 12)
    mask[..., 9:] = float("-inf")  # a draft tree: each new token sees part of the others
    mask[0, 0, torch.arange(5), 7 + torch.arange(5)] = 0.0
    ours, _ = grouped_sdpa_forward(module, query, key, value, mask, scaling=0.25)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_cpu_models_use_it_and_agree_with_sdpa(tiny_model_dir):
    from transformers import DynamicCache

    loaded = load_model(str(tiny_model_dir("qwen2.5-coder")), device="cpu", dtype="fp32")
    model = loaded.model
    assert model.config._attn_implementation == NAME
    prompt = torch.randint(10, 300, (1, 20))
    draft = torch.randint(10, 300, (1, 4))

    def verify_pass() -> torch.Tensor:
        cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            model(input_ids=prompt, cache=cache, use_cache=True)
            return model(input_ids=draft, position_ids=20 + torch.arange(4)[None], cache=cache,
                         use_cache=True).logits

    ours = verify_pass()
    model.set_attn_implementation("sdpa")
    torch.testing.assert_close(ours, verify_pass(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("row_kernel", [True, False])
@pytest.mark.parametrize("growing", [True, False])  # growing: the layers run fused (completion/fused_layer.py)
def test_verify_rows_equal_single_token_steps_bit_for_bit(tmp_path, row_kernel, growing):
    # The lossless promise on the packed path: int8-quantized activations turn any last-bit
    # difference between a verify pass and single-token steps into a different token, so
    # every row of a chain or tree pass must reproduce its single-token step exactly.
    from transformers import DynamicCache

    from completion.attention import use_grouped_sdpa
    from completion.gguf_file import read_gguf
    from completion.gguf_model import build_packed_model, packed_config
    from completion.growing_cache import growing_cache
    from kernels import cpu_gemm
    from tests.tiny_gguf import write_tiny_gguf

    write_tiny_gguf("qwen2", tmp_path / "tiny.gguf")
    parsed = read_gguf(tmp_path / "tiny.gguf")
    gemm = cpu_gemm.load(tmp_path / "kernels")
    model = build_packed_model(parsed, packed_config(parsed), gemm, torch.device("cpu"))
    use_grouped_sdpa(model, gemm if row_kernel else None)
    prefix = torch.randint(0, 300, (1, 30))
    a, b, c = 11, 22, 33  # tree: a, then b or c after a

    def primed():
        cache = growing_cache(model.config) if growing else DynamicCache()
        with torch.inference_mode():
            model(input_ids=prefix, cache=cache, use_cache=True)
        return cache

    def step(cache, token, position):
        with torch.inference_mode():
            return model(input_ids=torch.tensor([[token]]), position_ids=torch.tensor([[position]]),
                         cache=cache, use_cache=True).logits[0, -1]

    cache = primed()
    want_a, want_b = step(cache, a, 30), step(cache, b, 31)
    cache = primed()
    step(cache, a, 30)
    want_c = step(cache, c, 31)
    mask = torch.zeros(1, 1, 3, 33)
    blocked = torch.finfo(torch.float32).min
    mask[0, 0, 0, 31:] = blocked  # a sees the prefix and itself
    mask[0, 0, 1, 32] = mask[0, 0, 2, 31] = blocked  # b and c see a, never each other
    with torch.inference_mode():
        tree = model(input_ids=torch.tensor([[a, b, c]]), position_ids=torch.tensor([[30, 31, 31]]),
                     attention_mask=mask, cache=primed(), use_cache=True).logits[0]
        chain = model(input_ids=torch.tensor([[a, b]]), position_ids=torch.tensor([[30, 31]]),
                      cache=primed(), use_cache=True).logits[0]
    assert torch.equal(tree[0], want_a) and torch.equal(tree[1], want_b) and torch.equal(tree[2], want_c)
    assert torch.equal(chain[0], want_a) and torch.equal(chain[1], want_b)


def test_one_query_row_equals_torch_attention():
    from completion.attention import _one_row

    torch.manual_seed(1)
    for heads, kv_heads in ((6, 2), (4, 4)):
        query = torch.randn(1, heads, 1, 16)
        buffer_k, buffer_v = torch.randn(1, kv_heads, 40, 16), torch.randn(1, kv_heads, 40, 16)
        key, value = buffer_k[:, :, :29], buffer_v[:, :, :29]  # a growing cache's views
        want = torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=0.3,
                                                                enable_gqa=heads != kv_heads)
        torch.testing.assert_close(_one_row(query, key, value, 0.3), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("isa", every_build())
def test_attend_rows_kernel_equals_torch_and_rows_are_independent(tmp_path, isa):
    gemm = cpu_gemm.load(tmp_path, isa)
    torch.manual_seed(2)
    for heads, kv_heads, dim in ((14, 2, 64), (4, 4, 16)):
        rows, keys = 5, 37
        query = torch.randn(1, rows, heads, dim).transpose(1, 2)  # as the attention layer passes it
        buffer_k, buffer_v = torch.randn(1, kv_heads, 50, dim), torch.randn(1, kv_heads, 50, dim)
        key, value = buffer_k[:, :, :keys], buffer_v[:, :, :keys]  # a growing cache's views
        allowed = torch.rand(rows, keys) < 0.6  # a draft tree's rows see different subsets
        allowed[:, 0] = True
        assert gemm.takes_attention(query, key, value)
        ours = gemm.attend_rows(query, key, value, allowed, 0.3)
        mask = torch.where(allowed, 0.0, float("-inf"))[None, None]
        want = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=0.3,
                                                                enable_gqa=heads != kv_heads)
        torch.testing.assert_close(ours, want.transpose(1, 2), atol=1e-5, rtol=1e-5)
        for row in range(rows):  # each row alone, over just its keys, as a single-token step
            keep = allowed[row].nonzero().squeeze(-1)
            alone = gemm.attend_rows(query[:, :, row:row + 1], key[:, :, keep], value[:, :, keep], None, 0.3)
            assert torch.equal(alone[0, 0], ours[0, row])
