"""Token healing: the prompt ends at a token boundary of the model's choosing."""

import pytest

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model
from completion.healing import Healing, Vocabulary, align_typed, allowed_prefixes
from tests.conftest import TEST_DEVICE
from tests.tiny_models import force_next_token


def test_allowed_tokens_extend_or_start_the_pending_text():
    vocabulary = Vocabulary(["ret", "return", " ", "re", "r", "x", "\ufffd", "retur"])
    assert sorted(vocabulary.allowed("ret")) == [0, 1, 3, 4, 7]  # ret, return, retur; re, r
    assert sorted(vocabulary.allowed("x")) == [5]
    assert vocabulary.allowed("q") == []


def test_healed_indentation_is_not_ended_by_a_line_break():
    # "    \n" after four spaces of indentation would leave the cursor's line blank.
    texts = ["    ", "    \n", "     ", "    \r\n", "   ", "\n", "\n\n"]
    vocabulary = Vocabulary(texts)
    assert sorted(texts[i] for i in vocabulary.allowed("    ")) == ["   ", "    ", "     "]
    assert sorted(texts[i] for i in vocabulary.allowed("\n")) == ["\n"]


def test_healing_is_written_first_then_stripped():
    import torch

    texts = ["       ", " return", "        ", "x", " "]
    healing = Healing("        ", Vocabulary(texts), lambda ids: "".join(texts[i] for i in ids))
    logits = torch.tensor([0.0, 0.0, 0.0, 9.0, 0.0])  # "x" is the favourite, but not allowed
    first = healing.choose(logits, [])
    assert first in (0, 2)
    assert healing.choose(torch.tensor([0.0, 5.0, 0.0, 9.0, 1.0]), [0]) == 1  # " return" beats " "
    assert healing.pending([0, 1]) is None and healing.choose(logits, [0, 1]) == 3
    assert healing.strip("        return x") == "return x" and healing.strip("   ") == ""


def test_only_the_tokenizers_own_splits_of_the_pending_text_are_allowed():
    import torch

    # Indentation as Qwen's tokenizer writes it: a run of spaces before a word gives its last
    # space to the word (27 + " params"); a run at the end stays whole (28).
    texts = [" " * 15, " ", " " * 27, " " * 28, " params", "params", " " * 13]
    ids = {text: i for i, text in enumerate(texts)}

    def encode(batch):  # first tokens only: all that the rule looks at
        runs = [len(text) - len(text.lstrip(" ")) for text in batch]
        return [[ids[" " * (run - 1)] if text[run:run + 1].isalpha() else ids[" " * min(run, 28)]]
                for text, run in zip(batch, runs)]

    def decode(tokens):
        return "".join(texts[i] for i in tokens)

    healing = Healing(" " * 28, Vocabulary(texts), decode, encode)
    favourite_15 = torch.tensor([0.0, 8.0, 1.0, 0.5, 0.0, 0.0, 0.0])
    favourite_15[0] = 9.0  # the model's favourite: 15 spaces, then single spaces
    assert healing.choose(favourite_15, []) == ids[" " * 27]
    assert sorted(healing.vocabulary.allowed(" " * 28, allowed_prefixes(" " * 28, encode, decode))) == [2, 3]
    without_rule = Healing(" " * 28, Vocabulary(texts), decode)
    assert without_rule.choose(favourite_15, []) == ids[" " * 15]


@pytest.mark.embedded
def test_embedded_tokenizer_splits_indentation_before_a_word(embedded_loaded):
    tokenizer = embedded_loaded.tokenizer
    encode = lambda batch: tokenizer(list(batch), add_special_tokens=False)["input_ids"]  # noqa: E731
    decode = lambda ids: tokenizer.decode(list(ids))  # noqa: E731
    assert allowed_prefixes(" " * 28, encode, decode) == {" " * 27}
    assert allowed_prefixes(".ret", encode, decode) == {".", ".r", ".re"}  # "." + "return" stays possible
    assert " " * 7 in allowed_prefixes(" " * 8, encode, decode)  # 7 spaces + " return"


def test_alignment_splits_the_suggestion_at_the_cursor():
    texts = {1: "       ", 2: " return", 3: " len", 4: "(self"}
    decode = lambda ids: "".join(texts[i] for i in ids)  # noqa: E731
    head = "def f(self):\n "
    aligned = align_typed(head, [1, 2, 3, 4], head + "        return le", decode)
    assert aligned.tokens == [1, 2] and aligned.rest == [3, 4] and aligned.leftover == " le"
    aligned = align_typed(head, [1, 2, 3, 4], head + "        return", decode)
    assert aligned.tokens == [1, 2] and aligned.leftover == ""
    assert align_typed(head, [1, 2, 3, 4], head + "        retina", decode) is None
    assert align_typed("other", [1, 2], head, decode) is None


@pytest.mark.parametrize("healing", [True, False])
def test_engine_heals_the_prompt_end(tiny_model_dir, healing):
    loaded = load_model(str(tiny_model_dir("qwen2.5-coder")), device=TEST_DEVICE, dtype="fp32")
    engine = CompletionEngine(loaded, EngineSettings(max_new_tokens=4, token_healing=healing))
    force_next_token(loaded.model, loaded.tokenizer.eos_token_id)  # the model would stop at once
    text = "def add(a, b):\n    return a + b\n"
    cursor = text.index("return") + len("ret")
    result = engine.complete(CompletionRequest(text, cursor, "python"))
    prompt = engine.build_prompt(CompletionRequest(text, cursor, "python"))
    ends_with = loaded.tokenizer.decode(prompt.ids[: prompt.prefix_tokens + 1])
    if healing:
        # " ret" was taken off the prompt, and must be written again before the model may stop.
        assert ends_with.endswith("   ") and prompt.healed
        assert result.tokens >= 1 and result.text == ""
    else:
        assert ends_with.endswith(" ret") and not prompt.healed
        assert result.tokens == 0 and result.stop_reason == "eos"


@pytest.mark.embedded
def test_embedded_line_start_and_typed_suggestion(embedded_loaded):
    # No cost model: on a busy machine it may find that no draft pays (it measures time).
    engine = CompletionEngine(embedded_loaded, EngineSettings(max_new_tokens=16, time_budget_ms=600_000,
                                                               recycle_direct=False, cost_aware_drafts=False))
    source = ("class Stack:\n    def __init__(self):\n        self.items = []\n\n"
              "    def push(self, item):\n        self.items.append(item)\n\n"
              "    def size(self):\n        \n")
    cursor = len(source) - 1  # after the indentation: the prompt would end in 8 spaces
    first = engine.complete(CompletionRequest(source, cursor, "python", "stack.py"), session_key="s")
    assert first.text.startswith("return len(self.items)")
    # Typing the suggestion's first word (and a part of the next token): the prompt ends with
    # the suggestion's own tokens, so greedy decoding writes the same rest, all drafted.
    for typed in ("return", "return l"):
        state = source[:cursor] + typed + source[cursor:]
        again = engine.complete(CompletionRequest(state, cursor + len(typed), "python", "stack.py"),
                                session_key="s")
        assert again.text == first.text[len(typed):]
        # The rest comes in at most two passes, every drafted token accepted (drafts stop at
        # the end of the line, where the suggestion ends).
        spec = again.spec
        assert spec["verify_steps"] <= 2 and spec["accepted"] == spec["drafted"]
        assert spec["accepted_by_source"].get("recycle", 0) >= 2
