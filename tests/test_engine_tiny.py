"""The engine end to end on tiny real models of three architectures."""

import pytest

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model
from tests.conftest import TINY_ARCH_FAMILIES
from tests.tiny_models import force_next_token

DOCUMENT = "def add(a, b):\n    return a + \n\nprint(add(1, 2))\n"
MID_LINE = DOCUMENT.index("a + ") + len("a + ")
BLOCK = "def add(a, b):\n    \n"


def _engine(directory, **settings):
    loaded = load_model(str(directory), device="cpu", dtype="fp32")
    # These tests force every token; token healing would choose the first one (test_healing).
    settings.setdefault("token_healing", False)
    return CompletionEngine(loaded, EngineSettings(**settings))


@pytest.mark.parametrize("family", TINY_ARCH_FAMILIES)
def test_completes_within_max_tokens(family, tiny_model_dir):
    engine = _engine(tiny_model_dir(family), max_new_tokens=5)
    assert engine.fim.template.family == family
    result = engine.complete(CompletionRequest(BLOCK, len(BLOCK) - 1, "python", "m.py", "repo"))
    assert 1 <= result.tokens <= 5
    assert result.prompt_tokens > 3
    assert result.prompt_ms > 0 and result.decode_ms >= 0
    assert result.stop_reason in {"eos", "max_tokens", "dedent", "max_lines", "next_statement",
                                  "reached_suffix"}
    assert result.model == str(tiny_model_dir(family))


@pytest.mark.parametrize("family", TINY_ARCH_FAMILIES)
def test_stops_at_end_of_sequence_token(family, tiny_model_dir):
    engine = _engine(tiny_model_dir(family))
    tokenizer = engine.loaded.tokenizer
    force_next_token(engine.loaded.model, tokenizer.eos_token_id)
    result = engine.complete(CompletionRequest(DOCUMENT, MID_LINE, "python"))
    assert result.text == "" and result.tokens == 0 and result.stop_reason == "eos"


@pytest.mark.parametrize("family", TINY_ARCH_FAMILIES)
def test_stops_at_every_fim_marker(family, tiny_model_dir):
    engine = _engine(tiny_model_dir(family))
    force_next_token(engine.loaded.model, engine.fim.middle_id)
    result = engine.complete(CompletionRequest(DOCUMENT, MID_LINE, "python"))
    assert result.tokens == 0 and result.stop_reason == "eos"


def test_single_line_ends_at_newline(tiny_model_dir):
    engine = _engine(tiny_model_dir("qwen2.5-coder"))
    newline = engine.encode(["\n"])[0][0]
    force_next_token(engine.loaded.model, newline)
    result = engine.complete(CompletionRequest(DOCUMENT, MID_LINE, "python"))
    assert not result.multiline
    assert result.stop_reason == "end_of_line" and result.text == "" and result.tokens == 1


def test_max_tokens_and_time_budget(tiny_model_dir):
    engine = _engine(tiny_model_dir("qwen2.5-coder"), max_new_tokens=7)
    letter = engine.encode(["b"])[0][0]
    force_next_token(engine.loaded.model, letter)
    result = engine.complete(CompletionRequest(DOCUMENT, MID_LINE, "python"))
    assert result.stop_reason == "max_tokens" and result.tokens == 7 and result.text == "b" * 7

    # Past the budget an unfinished first line goes on (here to the token limit)...
    engine = _engine(tiny_model_dir("qwen2.5-coder"), max_new_tokens=50, time_budget_ms=0)
    force_next_token(engine.loaded.model, letter)
    result = engine.complete(CompletionRequest(DOCUMENT, MID_LINE, "python"))
    assert result.stop_reason == "max_tokens" and result.tokens == 50

    # ...up to its cap; one token is always produced.
    engine = _engine(tiny_model_dir("qwen2.5-coder"), max_new_tokens=50, time_budget_ms=0, first_line_cap_ms=0)
    force_next_token(engine.loaded.model, letter)
    result = engine.complete(CompletionRequest(DOCUMENT, MID_LINE, "python"))
    assert result.stop_reason == "time_budget" and result.tokens == 1


def test_out_of_time_finishes_the_first_line_within_its_cap():
    settings = EngineSettings(time_budget_ms=100, first_line_cap_ms=1000)
    assert not settings.out_of_time("x = 1\n", 99)
    assert not settings.out_of_time("x = compute(", 200)  # the first line is not written yet
    assert not settings.out_of_time("\n    ", 200)
    assert settings.out_of_time("x = 1\n", 200)
    assert settings.out_of_time("x = compute(", 1000)


def test_prompt_encoding_stops_between_passes_when_cancelled(tiny_model_dir):
    from completion.kv_session import ENCODE_CHUNK

    engine = _engine(tiny_model_dir("qwen2.5-coder"), max_prompt_tokens=4 * ENCODE_CHUNK)
    passes = []
    engine.loaded.model.register_forward_pre_hook(lambda *_: passes.append(1))
    document = "value = compute(1, 2)\n" * 400
    checks = []
    request = CompletionRequest(document, len(document), "python")
    result = engine.complete(request, session_key="doc", cancelled=lambda: checks.append(1) or len(checks) > 1)
    assert result.stop_reason == "cancelled" and result.text == "" and result.tokens == 0
    assert result.prompt_tokens > 2 * ENCODE_CHUNK and len(passes) == 1
    # The encoded prefix is kept: the next request of the document starts from it.
    assert len(engine.kv.sessions.get("doc")) == ENCODE_CHUNK
    assert engine.complete(request, session_key="doc").kv["reused"] >= ENCODE_CHUNK


def test_cancellation_returns_nothing(tiny_model_dir):
    engine = _engine(tiny_model_dir("starcoder"), max_new_tokens=50)
    letter = engine.encode(["b"])[0][0]
    force_next_token(engine.loaded.model, letter)
    calls = []
    result = engine.complete(
        CompletionRequest(DOCUMENT, MID_LINE, "python"), cancelled=lambda: calls.append(1) or len(calls) > 2
    )
    # checked once before the prompt's encoding pass, then after each token
    assert result.stop_reason == "cancelled" and result.text == "" and result.tokens == 2


def test_rest_of_line_is_not_retyped(tiny_model_dir):
    engine = _engine(tiny_model_dir("qwen2.5-coder"), max_new_tokens=2)
    paren = engine.encode([")"])[0][0]
    force_next_token(engine.loaded.model, paren)
    text = "print(add(1, 2\n"
    result = engine.complete(CompletionRequest(text, len("print(add(1, 2"), "python"))
    assert result.text == ")" * 2  # nothing right of the cursor: nothing to trim
    text = "print(add(1, 2))\n"
    result = engine.complete(CompletionRequest(text, len("print(add(1, 2"), "python"))
    # The model retypes the "))" that is already right of the cursor: nothing to insert.
    assert result.text == "" and result.stop_reason == "reached_suffix" and result.tokens == 2


def test_a_prompt_without_other_files_is_plain_fim(tiny_model_dir):
    # The repository form (name, path) only frames other files' snippets: alone it costs
    # quality (bench quality).
    engine = _engine(tiny_model_dir("qwen2.5-coder"))
    prompt = engine.build_prompt(CompletionRequest(DOCUMENT, MID_LINE, "python", "pkg/m.py", "demo"))
    text = engine.loaded.tokenizer.decode(prompt.ids)
    assert text.startswith("<|fim_prefix|>def add")
    assert text.endswith("<|fim_middle|>")


def test_request_and_settings_validation():
    with pytest.raises(ValueError, match="outside the document"):
        CompletionRequest("abc", 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        EngineSettings(max_new_tokens=0)


def test_alternatives_are_other_distinct_suggestions_from_the_same_prompt_cache(tiny_model_dir):
    engine = _engine(tiny_model_dir("qwen2.5-coder"), max_new_tokens=6)
    request = CompletionRequest(DOCUMENT, MID_LINE, "python")
    plain = engine.complete(request, session_key="doc")
    result = engine.complete(request, session_key="doc", alternatives=2)
    assert result.text == plain.text and plain.alternatives == ()
    assert len(result.alternatives) == 2
    assert len({result.text, *result.alternatives}) == 3 and all(result.alternatives)
    assert all("\n" not in text for text in result.alternatives)  # the same stop rules (mid-line)
    # The session keeps the prompt only: the next request reuses all of it.
    assert len(engine.kv.sessions.get("doc")) == result.prompt_tokens
    assert engine.complete(request, session_key="doc").kv["encoded"] <= 1
