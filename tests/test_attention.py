"""Masked attention over grouped key/value heads (completion/attention.py) equals transformers'
"sdpa" path, which copies the grouped heads first."""

import types

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from completion import load_model
from completion.attention import NAME, grouped_sdpa_forward


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
