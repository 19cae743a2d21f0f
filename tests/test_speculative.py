"""Speculative decoding is lossless: whatever the drafts, the output and the KV cache are the
ones plain greedy decoding produces. Tiny real models of three architectures, fixed seeds."""

from __future__ import annotations

import random
import zlib

import pytest
import torch
from transformers import DynamicCache

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model
from completion.growing_cache import growing_cache
from completion.speculative import AcceptanceStats, Drafter, ForwardCost, greedy_decode
from completion.speculative.sources import Chain
from completion.speculative.tree import DraftTree
from completion.stops import StopPolicy
from completion.speculative.verify import supports_trees, verify
from tests.conftest import TEST_DEVICE, TINY_ARCH_FAMILIES

MAX_NEW = 24


class ScriptedSource:
    """A draft source that proposes chains derived from a known greedy continuation:
    `script(reference, generated, max_tokens)` returns the chains to propose."""

    name, expensive = "scripted", False

    def __init__(self, reference: list[int], script):
        self.reference, self.script = reference, script

    def propose(self, generated: list[int], max_tokens: int) -> list[Chain]:
        return [Chain(c, self.name) for c in self.script(self.reference, generated, max_tokens) if c]

    def update(self, chain: Chain, accepted: int) -> None:
        pass


def _rest(reference, generated, extra=0):
    n = len(generated)
    return reference[n : n + extra] if extra else reference[n:]


def _wrong(tokens, vocab):
    return [(t + 7) % vocab for t in tokens]


SCRIPTS = {
    "all_right": lambda ref, gen, k: [_rest(ref, gen)[:k]],
    "all_wrong": lambda ref, gen, k: [_wrong(_rest(ref, gen)[:k], 300)],
    "half_right": lambda ref, gen, k: [_rest(ref, gen)[:2] + _wrong(_rest(ref, gen)[2:k], 300)],
    "longer_than_max_tokens": lambda ref, gen, k: [_rest(ref, gen) + [5] * 40],
    # The right continuation is the last of three branches, sharing a first token with one.
    "tree_right_branch_last": lambda ref, gen, k: [
        _wrong(_rest(ref, gen)[:k], 300),
        _rest(ref, gen)[:1] + _wrong(_rest(ref, gen)[1:k], 300),
        _rest(ref, gen)[:k],
    ],
    "tree_all_wrong": lambda ref, gen, k: [_wrong(_rest(ref, gen)[:k], 300),
                                           _wrong(_rest(ref, gen)[:k], 301)],
}


def _prompts(engine, count: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    vocab = len(engine.loaded.tokenizer)
    return [[rng.randrange(10, vocab) for _ in range(rng.randrange(5, 60))] for _ in range(count)]


def _prefill(model, ids: list[int], growing: bool = False):
    cache = growing_cache(model.config) if growing else DynamicCache(config=model.config)
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=model.device), cache=cache, use_cache=True).logits[:, -1:]
    return cache, logits


def _decode(engine, prompt, drafter=None, max_new=MAX_NEW):
    cache, logits = _prefill(engine.loaded.model, prompt)
    stop = lambda generated: "max_tokens" if len(generated) >= max_new else None  # noqa: E731
    generated, reason = greedy_decode(engine.loaded.model, cache, logits, engine.fim.stop_ids, stop, drafter)
    return generated, reason, cache


@pytest.fixture(scope="module")
def engines(tiny_model_dir):
    return {
        family: CompletionEngine(load_model(str(tiny_model_dir(family)), device=TEST_DEVICE, dtype="fp32"))
        for family in TINY_ARCH_FAMILIES
    }


@pytest.mark.parametrize("family", TINY_ARCH_FAMILIES)
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_any_draft_gives_the_plain_greedy_output(engines, family, script):
    engine = engines[family]
    for prompt in _prompts(engine, 4, seed=zlib.crc32(script.encode())):
        plain, plain_reason, _ = _decode(engine, prompt)
        source = ScriptedSource(plain + [3] * 8, SCRIPTS[script])
        cache_probe = _prefill(engine.loaded.model, prompt[:2])[0]
        drafter = Drafter([source], AcceptanceStats(), None, max_tokens=16, max_nodes=40,
                          trees=supports_trees(cache_probe))
        fast, fast_reason, _ = _decode(engine, prompt, drafter)
        assert fast == plain and fast_reason == plain_reason
        if script in ("all_right", "longer_than_max_tokens") and len(plain) > 1:
            assert drafter.stats.accepted > 0
            assert drafter.stats.verify_steps < len(plain)
        if script.endswith("all_wrong"):
            assert drafter.stats.accepted == 0


@pytest.mark.parametrize("family", TINY_ARCH_FAMILIES)
@pytest.mark.parametrize("shape", ["chain", "tree"])
@pytest.mark.parametrize("growing", [False, True])
def test_cache_after_verify_equals_plain_decoding(engines, family, shape, growing):
    engine = engines[family]
    model = engine.loaded.model
    prompt = _prompts(engine, 1, seed=5)[0]
    plain, _, _ = _decode(engine, prompt, max_new=8)
    # Plain: feed the root and the next four tokens one at a time.
    ref_cache, _ = _prefill(model, prompt)
    with torch.inference_mode():
        for token in plain[:5]:
            model(input_ids=torch.tensor([[token]], device=model.device), cache=ref_cache, use_cache=True)
    cache, _ = _prefill(model, prompt, growing)
    if shape == "tree" and not supports_trees(cache):
        pytest.skip("this architecture's cache does not allow tree compaction")
    tree = DraftTree.rooted_at(plain[0])
    if shape == "tree":
        tree.add_chain(_wrong(plain[1:6], 300), "x", 64)
        tree.add_chain(plain[1:3] + _wrong(plain[3:6], 300), "x", 64)
    tree.add_chain(plain[1:5] + _wrong(plain[5:7], 300), "x", 64)
    buffers = [layer.keys.data_ptr() for layer in cache.layers]
    verdict = verify(model, cache, tree)
    if growing:  # the kept entries moved within the buffers: nothing reallocated
        assert [layer.keys.data_ptr() for layer in cache.layers] == buffers
    assert verdict.accepted == plain[1:5]
    assert int(verdict.logits[0, -1].argmax()) == plain[5]
    assert cache.get_seq_length() == ref_cache.get_seq_length() == len(prompt) + 5
    for mine, ref in zip(cache.layers, ref_cache.layers):
        torch.testing.assert_close(mine.keys, ref.keys, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(mine.values, ref.values, atol=1e-5, rtol=1e-4)


def _documents(count: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    lines = ["def add(a, b):", "    return a + b", "class Point:", "    def __init__(self, x, y):",
             "        self.x = x", "        self.y = y", "for i in range(10):", "    print(i)",
             "import os", "if __name__ == '__main__':", "    main()"]
    documents = []
    for _ in range(count):
        text = "\n".join(rng.choice(lines) for _ in range(rng.randrange(3, 12))) + "\n"
        documents.append((text, rng.randrange(0, len(text) + 1)))
    return documents


@pytest.mark.parametrize("family", TINY_ARCH_FAMILIES)
def test_engine_output_is_identical_with_every_source(tiny_model_dir, family):
    loaded = load_model(str(tiny_model_dir(family)), device=TEST_DEVICE, dtype="fp32")
    draft = load_model(str(tiny_model_dir(family)), device=TEST_DEVICE, dtype="fp32")
    with torch.no_grad():  # a different draft model with the same tokenizer
        for parameter in draft.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    common = dict(max_new_tokens=20, kv_mode="full")
    plain = CompletionEngine(loaded, EngineSettings(speculative=False, **common))
    fast = CompletionEngine(loaded, EngineSettings(cost_aware_drafts=False, **common), draft=draft)
    fast.remember_text("other.py", "def add(a, b):\n    return a + b\n" * 3)
    accepted = 0
    for text, cursor in _documents(12, seed=1):
        request = CompletionRequest(text, cursor, "python", "m.py")
        expected, got = plain.complete(request), fast.complete(request, session_key="m.py")
        assert (got.text, got.tokens, got.stop_reason) == (expected.text, expected.tokens, expected.stop_reason)
        accepted += got.spec["accepted"]
    assert accepted > 0


def test_past_suggestions_draft_as_their_own_kind(tiny_model_dir):
    # Files and past suggestions are separate caches and acceptance kinds ("repo" / "past").
    loaded = load_model(str(tiny_model_dir("qwen2.5-coder")), device=TEST_DEVICE, dtype="fp32")
    settings = dict(max_new_tokens=20, kv_mode="full")
    engine = CompletionEngine(loaded, EngineSettings(draft_sources=("repo",), cost_aware_drafts=False, **settings))
    plain = CompletionEngine(loaded, EngineSettings(speculative=False, **settings))
    for text, cursor in _documents(12, seed=3):
        request = CompletionRequest(text, cursor, "python", "m.py")
        first = engine.complete(request)
        if first.tokens >= 6:
            break
    else:
        pytest.fail("the tiny model wrote no suggestion of 6 tokens")
    assert len(engine.past_ngrams) == 1 and len(engine.repo_ngrams) == 0
    again = engine.complete(request)  # the same hole again: the past suggestion is the draft
    assert (again.text, again.tokens) == (plain.complete(request).text, first.tokens)
    assert again.spec["accepted_by_source"].get("past", 0) > 0
    assert "repo" not in again.spec["accepted_by_source"]
    assert any(kind.startswith("past/") for kind in engine.acceptance.snapshot())


def test_typing_into_the_suggestion_recycles_it(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir("qwen2.5-coder")), device=TEST_DEVICE, dtype="fp32")
    text = "def add(a, b):\n    return \n"
    cursor = text.index("return ") + len("return ")
    direct = CompletionEngine(loaded, EngineSettings(max_new_tokens=12, max_lines=1))
    first = direct.complete(CompletionRequest(text, cursor, "python"), session_key="doc")
    if len(first.text) < 2:
        pytest.skip("the tiny model suggested too little to type into")
    typed = text[:cursor] + first.text[:1] + text[cursor:]
    again = direct.complete(CompletionRequest(typed, cursor + 1, "python"), session_key="doc")
    assert again.stop_reason == "recycled" and again.text == first.text[1:] and again.tokens == 0
    # A change elsewhere in the document: no recycling.
    elsewhere = "# note\n" + typed
    moved = direct.complete(CompletionRequest(elsewhere, cursor + 8, "python"), session_key="doc")
    assert moved.stop_reason != "recycled"

    # Without the shortcut the rest is a draft, verified: the output is plain greedy's.
    verified = CompletionEngine(loaded, EngineSettings(max_new_tokens=12, max_lines=1, recycle_direct=False,
                                                       cost_aware_drafts=False))
    plain = CompletionEngine(loaded, EngineSettings(max_new_tokens=12, max_lines=1, speculative=False))
    verified.complete(CompletionRequest(text, cursor, "python"), session_key="doc")
    got = verified.complete(CompletionRequest(typed, cursor + 1, "python"), session_key="doc")
    # Same history: both prompts end with the typed tokens of the same first suggestion.
    plain.complete(CompletionRequest(text, cursor, "python"), session_key="doc")
    expected = plain.complete(CompletionRequest(typed, cursor + 1, "python"), session_key="doc")
    assert got.text == expected.text and got.stop_reason != "recycled"


def test_cost_model_refuses_drafts_that_do_not_pay(engines):
    engine = engines["qwen2.5-coder"]
    prompt = _prompts(engine, 1, seed=9)[0]
    plain, _, _ = _decode(engine, prompt)
    cost = ForwardCost()
    cost.record(1, 10.0)
    for size in (2, 4, 8, 16, 32):
        cost.record(size, 100.0)  # a pass over several tokens costs 10x one token
    source = ScriptedSource(plain, SCRIPTS["all_wrong"])
    drafter = Drafter([source], AcceptanceStats(), cost, max_tokens=8, max_nodes=16)
    fast, _, _ = _decode(engine, prompt, drafter)
    assert fast == plain and drafter.stats.drafted == 0


def test_drafts_are_cut_where_the_output_can_no_longer_use_them(engines):
    engine = engines["qwen2.5-coder"]
    prompt = _prompts(engine, 1, seed=5)[0]
    plain, _, _ = _decode(engine, prompt)
    # Room for 3 tokens per draft: every pass verifies at most 3 drafted tokens.
    drafter = Drafter([ScriptedSource(plain, SCRIPTS["all_right"])], AcceptanceStats(), None,
                      max_tokens=8, max_nodes=16, room=lambda generated, draft: min(len(draft), 3))
    fast, _, _ = _decode(engine, prompt, drafter)
    assert fast == plain and drafter.stats.drafted <= 3 * drafter.stats.verify_steps
    assert drafter.stats.accepted == drafter.stats.drafted > 0


def test_draft_room_follows_the_stop_rules_and_the_token_limit(engines):
    engine = CompletionEngine(engines["qwen2.5-coder"].loaded, EngineSettings(max_new_tokens=12))
    one_line = StopPolicy(multiline=False, min_indent=4, line_suffix="", next_code_line="")
    room = engine.decoder.draft_room(one_line, engine.settings, None)
    draft = engine.encode(["values) + 1\n    return total"])[0]
    newline = next(i for i, token in enumerate(draft) if "\n" in engine.decode([token]))
    assert room([], draft) == newline  # the token that ends the line is the pass's bonus
    ten = engine.encode(["x"])[0] * 10
    assert room(ten, draft) == 1  # 12 tokens at most: one drafted, then the bonus
    assert room(ten * 2, draft) == 0


def test_acceptance_statistics_follow_results():
    stats = AcceptanceStats()
    first, following = stats.rates("prompt/2")
    for _ in range(10):
        stats.record("prompt/2", proposed=8, accepted=0)
    assert stats.rates("prompt/2") == (pytest.approx(stats.rates("prompt/2")[0]), following)
    assert stats.rates("prompt/2")[0] < first / 3
    for _ in range(30):
        stats.record("prompt/3", proposed=8, accepted=6)  # once started, copies go on
    first3, following3 = stats.rates("prompt/3")
    assert first3 > 0.85 and 0.75 < following3 < 0.9
    assert stats.expected_tokens("prompt/3", 8) > stats.expected_tokens("prompt/2", 8)


def test_a_requests_own_failures_weigh_more_than_the_servers_history():
    server = AcceptanceStats()
    for _ in range(20):
        server.record("prompt/3", proposed=8, accepted=6)
    request = AcceptanceStats(decay=1.0, prior_weight=3.0, parent=server)
    assert request.rates("prompt/3") == pytest.approx(server.rates("prompt/3"))
    for _ in range(4):
        request.record("prompt/3", proposed=8, accepted=0)
    assert request.rates("prompt/3")[0] < server.rates("prompt/3")[0] / 2  # this context is different
    assert server.rates("prompt/3")[0] > 0.6  # the server learned of the failures too, slowly


@pytest.mark.embedded
def test_embedded_model_output_is_identical(embedded_loaded):
    # No time budget: a loaded machine must not cut one output shorter than the other.
    common = dict(max_new_tokens=32, max_prompt_tokens=512, kv_mode="full", time_budget_ms=600_000)
    plain = CompletionEngine(embedded_loaded, EngineSettings(speculative=False, **common))
    fast = CompletionEngine(embedded_loaded, EngineSettings(cost_aware_drafts=False, **common))
    source = (
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
        "    def push(self, item):\n        self.items.append(item)\n\n"
        "    def pop(self):\n        return self.items.pop()\n\n"
        "    def peek(self):\n        return self.items[-1]\n\n"
        "    def size(self):\n        \n"
    )
    holes = [len(source) - 1, source.index("self.items.pop()") + len("self."),
             source.index("    def peek") ]
    for cursor in holes:
        request = CompletionRequest(source, cursor, "python", "stack.py")
        expected, got = plain.complete(request), fast.complete(request)
        assert got.text == expected.text and got.tokens == expected.tokens


@pytest.mark.embedded
def test_typing_on_past_a_line_of_a_block_suggestion_still_recycles_it(embedded_loaded):
    # Typing into a block suggestion puts the cursor mid-line: that answer is one line. A user
    # typing on into the next lines is still typing the block: its rest is still the answer
    # (and, verified, the draft), and it is what plain greedy decoding writes there too.
    common = dict(max_new_tokens=32, max_prompt_tokens=512, kv_mode="full", time_budget_ms=600_000)
    source = (
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
        "    def push(self, item):\n        self.items.append(item)\n\n"
        "    def pop(self):\n        return self.items.pop()\n\n"
        "    def peek(self):\n        return self.items[-1]\n\n    \n"
    )
    cursor = len(source) - 1
    engines = {"direct": CompletionEngine(embedded_loaded, EngineSettings(**common)),
               # Without the cost model every draft is verified whole: what is checked here is
               # the draft, not how long a draft the pass costs measured here make worth it.
               "verified": CompletionEngine(embedded_loaded, EngineSettings(recycle_direct=False,
                                                                            cost_aware_drafts=False, **common)),
               "plain": CompletionEngine(embedded_loaded, EngineSettings(speculative=False, **common))}
    block = engines["plain"].complete(CompletionRequest(source, cursor, "python"), session_key="d").text
    first_line, rest = block.split("\n", 1)
    assert rest.strip(), block  # a block suggestion: a method, its body and more
    second_line = rest.split("\n", 1)[0]
    states = [block[:3], first_line + "\n" + second_line[: len(second_line) // 2]]
    results = {}
    for name, engine in engines.items():
        engine.complete(CompletionRequest(source, cursor, "python"), session_key="d")
        results[name] = [engine.complete(CompletionRequest(source[:cursor] + typed + source[cursor:],
                                                           cursor + len(typed), "python"), session_key="d")
                         for typed in states]
    expected = [first_line[3:], second_line[len(second_line) // 2:]]
    assert [r.text for r in results["plain"]] == expected
    assert all(r.stop_reason == "recycled" for r in results["direct"])
    assert [r.text for r in results["direct"]] == expected
    past_the_line = results["verified"][1]
    assert past_the_line.text == expected[1] and past_the_line.tokens == results["plain"][1].tokens
    assert past_the_line.spec["accepted_by_source"].get("recycle", 0) >= past_the_line.tokens - 2


def test_ngram_lookup_and_bounded_cache():
    import numpy as np

    from completion.speculative.ngram import NgramCache, find_continuations

    haystack = np.array([1, 2, 3, 4, 5, 1, 2, 3, 9, 8, 1, 2], dtype=np.int32)
    found = find_continuations(haystack, [1, 2], length=3, branches=3)
    # Longest n-gram first (the 2-gram "1 2"), most recent match first, distinct first tokens.
    assert found == [([3, 9, 8], 2)]
    found = find_continuations(haystack, [7, 1, 2], length=2, branches=3, stop_ids={9})
    assert found == [([3], 2)]  # "3 9": cut at the stop id
    assert find_continuations(haystack, [42], length=3, branches=2) == []

    cache = NgramCache(max_tokens=10)
    cache.add("a", [1, 2, 3, 4, 5, 6])
    cache.add("b", [7, 8, 9, 10, 11, 12])
    assert len(cache) == 1 and cache.total_tokens == 6  # "a" evicted
    cache.add("c", [5, 6])
    assert find_continuations(cache.haystack(), [11], length=5, branches=2) == [([12], 1)]  # no crossing
    cache.drop("b")
    assert cache.total_tokens == 2

    many = NgramCache(max_tokens=10_000, max_docs=50)  # a workspace of many tiny files
    for index in range(500):
        many.add(f"f{index}.py", [index, index + 1])
    assert len(many) == 50 and many.total_tokens == 100


def test_forward_cost_is_read_between_measured_sizes():
    cost = ForwardCost()
    for size, ms in ((1, 100.0), (2, 150.0), (8, 200.0), (9, 210.0)):
        cost.record(size, ms)  # 9 tokens fall in the bucket of 16
    assert cost.ratio(1) == 1.0 and cost.ratio(2) == 1.5
    assert cost.ratio(5) == pytest.approx(1.75)  # halfway between 2 and 8 tokens
    assert cost.ratio(9) == pytest.approx(2.1)  # not the cost of 16
    assert cost.ratio(12) == pytest.approx(2.1)  # in a measured bucket, past its points
    assert cost.ratio(17) < 1.5  # an unmeasured bucket: assumed cheap, so it gets tried


def test_a_second_chain_joins_the_tree_only_if_it_pays():
    cost = ForwardCost()
    for size, ms in ((1, 10.0), (2, 12.0), (4, 12.0), (8, 60.0), (16, 60.0)):
        cost.record(size, ms)  # up to 4 tokens cost about one; 5-16 cost 6x
    two_chains = ScriptedSource([], lambda ref, gen, k: [[11, 12, 13], [21, 22, 23]])
    drafter = Drafter([two_chains], AcceptanceStats(), cost, max_tokens=8, max_nodes=32)
    assert len(drafter.tree([5])) == 4  # root + the first chain; the second would cost 6x
    cheap = ForwardCost()
    for size in (1, 2, 4, 8, 16):
        cheap.record(size, 10.0)  # a GPU-like cost curve: both chains go in
    drafter = Drafter([two_chains], AcceptanceStats(), cheap, max_tokens=8, max_nodes=32)
    assert len(drafter.tree([5])) == 7


def test_alternative_first_tokens_share_one_chance():
    cost = ForwardCost()
    for size, ms in ((1, 100.0), (4, 120.0), (8, 146.67)):
        cost.record(size, ms)
    trusted = ScriptedSource([], lambda ref, gen, k: [[11, 12, 13]])
    trusted.name = "recycle"  # first token right 90 % of the time
    guess = ScriptedSource([], lambda ref, gen, k: [[21, 22, 23]])
    guess.name = "prompt/2"
    # Alone, the guess pays for its 3 nodes; next to the trusted chain at most 10 % is left
    # for any other first token, and it does not.
    assert len(Drafter([guess], AcceptanceStats(), cost, max_tokens=8, max_nodes=32).tree([5])) == 4
    drafter = Drafter([trusted, guess], AcceptanceStats(), cost, max_tokens=8, max_nodes=32)
    assert drafter.tree([5]).tokens == [5, 11, 12, 13]
