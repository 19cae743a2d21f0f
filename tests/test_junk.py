"""Suggestions not worth showing (whitespace, stray closing brackets, the lines above or
below again) and leaks (markdown fences, special tokens' text) never reach the editor."""

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model
from completion.junk import cut_leaks, junk_reason
from completion.stops import check_text, decide_policy, finalize
from tests.tiny_models import force_next_token


def _reason(text, prefix="", above=(), below=(), suffix=""):
    return junk_reason(text, prefix, list(above), list(below), suffix)


def test_whitespace_and_closing_brackets_that_close_nothing():
    assert _reason("   \n\t") == "only whitespace"
    assert _reason("}") == "only closing brackets"
    assert _reason(")))", prefix="print(add(1, 2") == "only closing brackets"  # one too many
    assert _reason("))", prefix="print(add(1, 2") is None  # closes what the line opened
    assert _reason("])", prefix="f([1") is None
    assert _reason(")]", prefix="f([1") == "only closing brackets"  # wrong order


def test_repeats_of_the_lines_above_or_below():
    above = ("def area(self):", "return self.w * self.h")
    assert _reason("return self.w * self.h", prefix="        ", above=above) == "repeats the lines above"
    assert _reason("self.w * self.h", prefix="    return ", above=above) == "repeats the lines above"
    assert _reason("def area(self):\n    return self.w * self.h", above=above) == "repeats the lines above"
    assert _reason("return self.w + self.h", above=above) is None
    below = ("x = compute()", "return x")
    assert _reason("x = compute()\n    return x", prefix="    ", below=below) == "repeats the code below"
    assert _reason("x = compute()", below=below, suffix=" # note") is None  # completes within the line
    assert _reason("y = compute()", below=below) is None


def test_leaks_are_cut():
    assert cut_leaks("a if a > b else b\n```", fences_allowed=False) == ("a if a > b else b\n", "markdown fence")
    assert cut_leaks("a\n```", fences_allowed=True) == ("a\n```", None)
    assert cut_leaks("x = 1<|endoftext|>junk", fences_allowed=False) == ("x = 1", "special token")
    assert cut_leaks("x = 1<fim_middle>", fences_allowed=False) == ("x = 1", "special token")
    assert cut_leaks("s = '<|'", fences_allowed=False) == ("s = '<|'", None)


def test_the_policy_applies_them():
    text = "def f(a, b):\n    return a\n\n"
    policy = decide_policy(text, len(text), "python")
    check = check_text("x = max(a, b)\n```\nprint(x)", policy)
    assert check.stop and check.reason == "markdown fence" and finalize(check.text, policy) == "x = max(a, b)"
    markdown = "Example:\n```python\nx = 1\n"
    assert not check_text("y = 2\n```", decide_policy(markdown, len(markdown), "markdown")).stop
    assert finalize("return a", decide_policy(text, len(text), "python")) == ""  # the line above again


def _engine(directory, max_new_tokens):
    loaded = load_model(str(directory), device="cpu", dtype="fp32")
    # Every token is forced; token healing would choose the first one.
    settings = EngineSettings(max_new_tokens=max_new_tokens, speculative=False, token_healing=False)
    return CompletionEngine(loaded, settings)


def test_the_engine_drops_a_repeat_of_the_line_above_and_stops_at_a_fence(tiny_model_dir):
    engine = _engine(tiny_model_dir("qwen2.5-coder"), max_new_tokens=4)
    x = engine.encode(["x"])[0]
    assert len(x) == 1
    force_next_token(engine.loaded.model, x[0])
    repeat = "xxxx\n"
    assert engine.complete(CompletionRequest(repeat, len(repeat), "python")).text == ""
    other = "xxx\n"
    assert engine.complete(CompletionRequest(other, len(other), "python")).text == "xxxx"

    fence = engine.encode(["```"])[0]
    force_next_token(engine.loaded.model, fence[0])
    result = engine.complete(CompletionRequest(other, len(other), "python"))
    assert result.text == "" and result.stop_reason == "markdown fence"
