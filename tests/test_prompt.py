import pytest

from completion.fim import resolve_fim
from completion.prompt import PromptBudget, RepoFile, build_fim_prompt


def _setup(tokenizer_of, family="qwen2.5-coder"):
    tokenizer = tokenizer_of(family)
    spec = resolve_fim(tokenizer)

    def encode(texts):
        return tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []

    return tokenizer, spec, encode


LONG_PREFIX = "".join(f"line_{i} = {i}\n" for i in range(400)) + "x = line_"
LONG_SUFFIX = "\n" + "".join(f"after_{i} = {i}\n" for i in range(400))


@pytest.mark.parametrize("family", ["qwen2.5-coder", "deepseek-coder", "starcoder", "codellama"])
def test_markers_in_order_and_budget_respected(family, tiny_tokenizer_of):
    tokenizer, spec, encode = _setup(tiny_tokenizer_of, family)
    prompt = build_fim_prompt(spec, encode, LONG_PREFIX, LONG_SUFFIX, PromptBudget(300))
    assert len(prompt.ids) <= 300
    ids = prompt.ids
    assert ids.index(spec.prefix_id) < ids.index(spec.suffix_id) < ids.index(spec.middle_id)
    assert ids[-1] == spec.middle_id
    assert prompt.prefix_truncated and prompt.suffix_truncated
    prefix_text = tokenizer.decode(ids[ids.index(spec.prefix_id) + 1 : ids.index(spec.suffix_id)])
    suffix_text = tokenizer.decode(ids[ids.index(spec.suffix_id) + 1 : -1])
    # Text nearest the cursor survives; the prefix starts at a whole line.
    assert prefix_text.endswith("line_399 = 399\nx = line_")
    assert prefix_text.startswith("line_")
    assert "line_0 = 0\n" not in prefix_text
    assert suffix_text.startswith("\nafter_0 = 0\n")
    assert "after_399" not in suffix_text
    # The suffix takes at most its share.
    assert prompt.suffix_tokens <= int((300 - 3) * 0.25)


def test_unused_suffix_budget_goes_to_prefix(tiny_tokenizer_of):
    _, spec, encode = _setup(tiny_tokenizer_of)
    prompt = build_fim_prompt(spec, encode, LONG_PREFIX, "\n", PromptBudget(300))
    assert prompt.suffix_tokens <= 2
    assert prompt.prefix_tokens > 250
    assert len(prompt.ids) <= 300


def test_short_document_is_not_truncated(tiny_tokenizer_of):
    tokenizer, spec, encode = _setup(tiny_tokenizer_of)
    prompt = build_fim_prompt(spec, encode, "def add(a, b):\n    return ", "\n", PromptBudget(300))
    assert not prompt.prefix_truncated and not prompt.suffix_truncated
    assert tokenizer.decode(prompt.ids) == (
        "<|fim_prefix|>def add(a, b):\n    return <|fim_suffix|>\n<|fim_middle|>"
    )


def test_one_huge_line_is_cut_to_budget(tiny_tokenizer_of):
    _, spec, encode = _setup(tiny_tokenizer_of)
    prompt = build_fim_prompt(spec, encode, "y = " + "1 + " * 5000, "", PromptBudget(100))
    assert len(prompt.ids) <= 100 and prompt.prefix_truncated


def test_repo_level_form_names_the_file(tiny_tokenizer_of):
    tokenizer, spec, encode = _setup(tiny_tokenizer_of)
    context = [RepoFile("pkg/util.py", "def helper():\n    return 1\n")]
    prompt = build_fim_prompt(
        spec, encode, "x = ", "\n", PromptBudget(300), path="pkg/main.py", repo_name="demo",
        repo_files=context,
    )
    text = tokenizer.decode(prompt.ids)
    assert text.startswith(
        "<|repo_name|>demo\n<|file_sep|>pkg/util.py\ndef helper():\n    return 1\n"
        "<|file_sep|>pkg/main.py\n<|fim_prefix|>x = "
    )


def test_family_without_repo_form_ignores_path(tiny_tokenizer_of):
    tokenizer, spec, encode = _setup(tiny_tokenizer_of, "deepseek-coder")
    prompt = build_fim_prompt(spec, encode, "x = ", "\n", PromptBudget(300), path="a.py")
    assert prompt.ids[0] == spec.prefix_id


def test_budget_validation():
    with pytest.raises(ValueError, match="at least 8"):
        PromptBudget(2)
    with pytest.raises(ValueError, match="suffix_share"):
        PromptBudget(100, 1.5)
