"""Edit-aware KV reuse: exact re-rotation, exact reuse for appends, sane caches for any edit."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model
from completion.kv_plan import Segment, plan_reuse
from completion.kv_session import KvSession, KvSessions, build_cache, rope_inv_freq, shift_support
from kernels.rope import rotate_keys
from tests.conftest import TEST_DEVICE

VOCAB = 97
ROPES = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
               "rope_theta": 10000.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
             "rope_theta": 10000.0},
}


def tiny(rope=None, cls=LlamaForCausalLM, config_cls=LlamaConfig, **extra):
    torch.manual_seed(0)
    config = config_cls(vocab_size=VOCAB, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                        rope_parameters=rope or ROPES["default"], **extra)
    return cls(config).to(TEST_DEVICE).eval()


def encode(model, ids, start=0):
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        positions = torch.arange(start, start + len(ids), device=model.device)[None]
        out = model(input_ids=torch.tensor([ids], device=model.device), position_ids=positions,
                    cache=cache, use_cache=True)
    return cache, out.logits


@pytest.mark.parametrize("rope", list(ROPES))
def test_rotation_moves_keys_exactly(rope):
    model = tiny(ROPES[rope])
    ids = torch.randint(0, VOCAB, (23,)).tolist()
    at_p, _ = encode(model, ids, start=5)
    for delta in (1, 37, -5):
        moved, _ = encode(model, ids, start=5 + delta)
        inv_freq = rope_inv_freq(model)
        for layer_p, layer_moved in zip(at_p.layers, moved.layers):
            rotated = rotate_keys(layer_p.keys, delta, inv_freq)
            torch.testing.assert_close(rotated, layer_moved.keys, atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(layer_p.values, layer_moved.values, atol=2e-5, rtol=1e-4)


def test_rotation_per_token_deltas_and_partial_rotary():
    keys = torch.randn(1, 2, 5, 12)
    inv_freq = torch.tensor([1.0, 0.1, 0.01, 0.001])  # 8 of 12 dims rotate
    deltas = torch.tensor([0, 1, 2, 3, 4])
    moved = rotate_keys(keys, deltas, inv_freq)
    torch.testing.assert_close(moved[..., 0, :], keys[..., 0, :])
    torch.testing.assert_close(moved[..., 8:], keys[..., 8:])
    back = rotate_keys(moved, -deltas, inv_freq)
    torch.testing.assert_close(back, keys, atol=1e-5, rtol=1e-5)
    bf16 = rotate_keys(keys.bfloat16(), 3, inv_freq)
    assert bf16.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="one delta per token"):
        rotate_keys(keys, torch.tensor([1, 2]), inv_freq)


def _refusal(model, budget):
    return shift_support(model.config, rope_inv_freq(model), budget)


def test_shift_support_refuses_what_it_cannot_shift():
    assert _refusal(tiny(), 1024) is None
    dynamic = tiny({"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    assert "changes with sequence length" in _refusal(dynamic, 1024)
    windowed = tiny(cls=Qwen2ForCausalLM, config_cls=Qwen2Config, use_sliding_window=True,
                    sliding_window=256)
    assert "sliding window" in _refusal(windowed, 1024)
    assert _refusal(windowed, 128) is None  # the window is never reached
    from transformers import GPT2Config, GPT2LMHeadModel

    learned = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2))
    assert "no (single) rotary" in _refusal(learned, 1024)


def test_plan_segments():
    old = list(range(100))
    plan = plan_reuse(old, old, "pie")
    assert plan.segments == (Segment(0, 99, 0), Segment(99, 100))
    assert plan.encoded == 1 and plan.rotated == 0
    inserted = old[:40] + [500, 501] + old[40:]
    plan = plan_reuse(old, inserted, "pie")
    assert plan.segments == (Segment(0, 40, 0), Segment(40, 42), Segment(42, 101, 40), Segment(101, 102))
    assert plan.rotated == 59 and plan.encoded == 3
    prefix = plan_reuse(old, inserted, "prefix")
    assert prefix.reused == 40 and prefix.encoded == 62
    assert plan_reuse(old, inserted, "full").encoded == 102
    assert plan_reuse(old, list(range(1000, 1100)), "pie").encoded == 100  # nothing matches
    with pytest.raises(ValueError, match="valid: full, prefix, pie"):
        plan_reuse(old, old, "magic")


def test_append_to_repetitive_tokens_keeps_the_prefix_in_place():
    old = [7] * 30 + [1, 2]
    new = [7] * 31 + [1, 2]  # one more of the same token: an append in the middle of a run
    plan = plan_reuse(old, new, "pie")
    assert plan.segments[0] == Segment(0, 30, 0)  # not a block shifted by one position
    assert plan.rotated == 0 or plan.segments[0].shift == 0


def test_margin_re_encodes_tokens_right_after_a_change():
    old = list(range(100))
    inserted = old[:40] + [500] + old[40:]
    plan = plan_reuse(old, inserted, "pie", margin=16)
    assert plan.segments == (Segment(0, 40, 0), Segment(40, 57), Segment(57, 100, 56), Segment(100, 101))
    whole = plan_reuse(old, inserted, "pie", margin=1000)  # the margin swallows the tail
    assert whole.segments == (Segment(0, 40, 0), Segment(40, 101))
    assert plan_reuse(old, old, "pie", margin=16).encoded == 1  # no change, nothing widened


def _assert_same_logits(model, old_ids, new_ids, mode="pie"):
    old_cache, _ = encode(model, old_ids)
    plan = plan_reuse(old_ids, new_ids, mode, min_block=2)
    cache, logits = build_cache(model, plan, new_ids, KvSession(old_ids, old_cache), rope_inv_freq(model))
    _, full_logits = encode(model, new_ids)
    torch.testing.assert_close(logits[0, -1], full_logits[0, -1], atol=1e-4, rtol=1e-4)
    assert cache.get_seq_length() == len(new_ids)
    return plan


def test_unchanged_and_appended_prompts_equal_full():
    model = tiny()
    ids = torch.randint(0, VOCAB, (60,)).tolist()
    assert _assert_same_logits(model, ids, ids).encoded == 1
    appended = ids + [5, 6, 7]
    assert _assert_same_logits(model, ids, appended).encoded == 3
    assert _assert_same_logits(model, ids, appended, "prefix").encoded == 3


edits = st.lists(
    st.tuples(st.sampled_from(["insert", "delete", "replace"]), st.floats(0, 1),
              st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=6)),
    min_size=1, max_size=4,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, VOCAB - 1), min_size=8, max_size=60), edits)
def test_any_edit_gives_a_full_length_cache_with_right_positions(old_ids, edit_list):
    model = PROPERTY_MODEL
    new_ids = list(old_ids)
    for kind, where, tokens in edit_list:
        at = int(where * len(new_ids))
        if kind == "insert":
            new_ids[at:at] = tokens
        elif kind == "delete":
            del new_ids[at : at + len(tokens)]
        else:
            new_ids[at : at + len(tokens)] = tokens
    if not new_ids:
        new_ids = [1]
    old_cache, _ = encode(model, old_ids)
    plan = plan_reuse(old_ids, new_ids, "pie", min_block=2)
    cache, logits = build_cache(model, plan, new_ids, KvSession(old_ids, old_cache), rope_inv_freq(model))
    assert cache.get_seq_length() == len(new_ids)
    full_cache, full_logits = encode(model, new_ids)
    # Layer-0 keys depend only on token and position: equal everywhere iff every reused or
    # re-rotated key sits at its new position.
    torch.testing.assert_close(cache.layers[0].keys, full_cache.layers[0].keys, atol=1e-4, rtol=1e-4)
    common = next((i for i, (a, b) in enumerate(zip(old_ids, new_ids)) if a != b), min(len(old_ids), len(new_ids)))
    if common >= len(new_ids) - 1 or common == len(old_ids):  # the edit touched only the end
        torch.testing.assert_close(logits[0, -1], full_logits[0, -1], atol=1e-4, rtol=1e-4)
    with torch.inference_mode():  # generation runs on the assembled cache
        step = model(input_ids=logits[:, -1:].argmax(-1), cache=cache, use_cache=True)
    assert step.logits.shape[-1] == VOCAB


PROPERTY_MODEL = tiny()


def test_sessions_lru_by_token_budget():
    sessions = KvSessions(max_total_tokens=100)
    for name in ("a", "b", "c"):
        sessions.put(name, KvSession(list(range(40)), DynamicCache()))
    assert "a" not in sessions and "b" in sessions and sessions.total_tokens == 80
    sessions.get("b")
    sessions.put("d", KvSession(list(range(40)), DynamicCache()))
    assert "c" not in sessions and "b" in sessions
    sessions.drop("b")
    assert "b" not in sessions


def test_the_kv_budget_is_memory_whatever_the_model():
    from types import SimpleNamespace


    from completion.kv_cache import KvCacheManager
    from completion.kv_session import kv_bytes_per_token

    # Qwen2.5-Coder 0.5B and 1.5B in fp32: 24 and 28 layers, 2 KV heads of 64 and 128.
    small = SimpleNamespace(config=Qwen2Config(num_hidden_layers=24, hidden_size=896, num_attention_heads=14,
                                               num_key_value_heads=2), dtype=torch.float32)
    large = SimpleNamespace(config=Qwen2Config(num_hidden_layers=28, hidden_size=1536, num_attention_heads=12,
                                               num_key_value_heads=2), dtype=torch.float32)
    assert kv_bytes_per_token(small) == 24 * 2 * 2 * 64 * 4
    assert kv_bytes_per_token(large) == 28 * 2 * 2 * 128 * 4
    model = tiny()
    manager = KvCacheManager(model, budget_mb=1)
    assert manager.sessions.max_total_tokens * kv_bytes_per_token(model) <= 2**20
    assert (manager.sessions.max_total_tokens + 1) * kv_bytes_per_token(model) > 2**20


@pytest.mark.parametrize("family", ["qwen2.5-coder", "deepseek-coder"])
def test_engine_reuses_the_session_across_edits(family, tiny_model_dir):
    loaded = load_model(str(tiny_model_dir(family)), device=TEST_DEVICE, dtype="fp32")
    engine = CompletionEngine(loaded, EngineSettings(max_new_tokens=4))
    full = CompletionEngine(loaded, EngineSettings(max_new_tokens=4, kv_mode="full"))
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(30)) + "value = f3("
    first = engine.complete(CompletionRequest(text, len(text), "python"), session_key="doc")
    assert first.kv["encoded"] == first.prompt_tokens
    again = engine.complete(CompletionRequest(text, len(text), "python"), session_key="doc")
    assert again.kv["encoded"] == 1 and again.text == first.text
    assert again.text == full.complete(CompletionRequest(text, len(text), "python")).text
    edited = "# header\n" + text  # a line inserted far above the cursor: everything moves
    moved = engine.complete(CompletionRequest(edited, len(edited), "python"), session_key="doc")
    margin = engine.settings.reencode_margin  # re-encoded after the change, for fidelity
    assert moved.kv["rotated"] > 0.7 * moved.prompt_tokens and moved.kv["encoded"] < margin + 10
    engine.forget("doc")
    assert "doc" not in engine.kv.sessions


def test_refresh_makes_an_approximate_session_exact(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir("qwen2.5-coder")), device=TEST_DEVICE, dtype="fp32")
    engine = CompletionEngine(loaded, EngineSettings(max_new_tokens=4))
    full = CompletionEngine(loaded, EngineSettings(max_new_tokens=4, kv_mode="full"))
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(30)) + "value = f3("
    engine.complete(CompletionRequest(text, len(text), "python"), session_key="doc")
    assert not engine.needs_refresh("doc") and not engine.refresh("doc")  # already exact
    edited = "# header\n" + text
    engine.complete(CompletionRequest(edited, len(edited), "python"), session_key="doc")
    assert engine.needs_refresh("doc") and engine.kv_status()["approximate"] == 1
    approximate = engine.kv.sessions.get("doc")
    assert not engine.refresh("doc", cancelled=lambda: True)  # yields: the session stays
    assert engine.kv.sessions.get("doc") is approximate
    assert engine.refresh("doc") and not engine.needs_refresh("doc")
    assert engine.kv_status() == {"documents": 1, "tokens": len(approximate), "approximate": 0,
                                  "refreshed": 1}
    full.complete(CompletionRequest(edited, len(edited), "python"), session_key="doc")
    refreshed, reference = engine.kv.sessions.get("doc"), full.kv.sessions.get("doc")
    assert refreshed.ids == reference.ids
    for ours, theirs in zip(refreshed.cache.layers, reference.cache.layers):
        torch.testing.assert_close(ours.keys, theirs.keys, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.values, theirs.values, rtol=1e-4, atol=1e-4)
    # The next request starts from exact states: a pure append equals `full`.
    longer = edited + "1"
    assert (engine.complete(CompletionRequest(longer, len(longer), "python"), session_key="doc").text
            == full.complete(CompletionRequest(longer, len(longer), "python")).text)
