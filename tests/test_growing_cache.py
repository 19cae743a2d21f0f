"""The growing KV cache layer (completion/growing_cache.py) holds exactly what transformers'
DynamicLayer holds through appends, crops and replaced tensors, and appends in place."""

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from completion.growing_cache import GROWTH, GrowingLayer, growing_cache


def states(length: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, 2, length, 8, generator=generator), torch.randn(1, 2, length, 8, generator=generator)


def test_same_contents_as_dynamic_layer_through_appends_crops_and_replacements():
    ours, theirs = GrowingLayer(), DynamicLayer()
    steps = [("add", 20), ("add", 1), ("crop", 3), ("add", 5), ("select", None), ("add", 1),
             ("add", GROWTH + 7), ("crop", 10), ("add", 2), ("assign", None), ("add", 4)]
    for seed, (action, amount) in enumerate(steps):
        if action == "add":
            keys, values = states(amount, seed)
            got, want = ours.update(keys, values), theirs.update(keys, values)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        elif action == "crop":
            ours.crop(-amount)
            theirs.crop(-amount)
        elif action == "select":  # what a tree verify pass does with rejected branches
            keep = torch.tensor([0, 1, 2, 5, 7, 9])
            for layer in (ours, theirs):
                layer.keys, layer.values = layer.keys.index_select(-2, keep), layer.values.index_select(-2, keep)
        else:  # a caller that swaps in its own tensors (keys re-rotated elsewhere)
            for layer in (ours, theirs):
                layer.keys, layer.values = layer.keys * 2, layer.values.clone()
        assert ours.get_seq_length() == theirs.get_seq_length()
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)


def test_appends_write_into_the_same_buffer():
    layer = GrowingLayer()
    layer.update(*states(10, 0))
    start = layer.keys.data_ptr()
    for seed in range(1, 30):
        layer.update(*states(1, seed))
    assert layer.keys.data_ptr() == start and layer.get_seq_length() == 39


def test_cache_for_a_config_uses_growing_layers(tiny_model_dir):
    from completion import load_model

    config = load_model(str(tiny_model_dir("qwen2.5-coder")), device="cpu", dtype="fp32").model.config
    assert all(type(layer) is GrowingLayer for layer in growing_cache(config).layers)
    lazy = growing_cache()
    lazy.update(*states(3, 0), 0)
    assert type(lazy.layers[0]) is GrowingLayer and isinstance(lazy, DynamicCache)
