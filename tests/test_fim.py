import pytest

from completion.fim import FIM_TEMPLATES, detect_family, resolve_fim
from tests.tiny_models import FAMILIES, tiny_tokenizer


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_detected_from_tokenizer(family, tiny_tokenizer_of):
    assert detect_family(tiny_tokenizer_of(family)) == family


@pytest.mark.parametrize("family", list(FAMILIES))
def test_markers_resolve_to_single_tokens(family, tiny_tokenizer_of):
    tokenizer = tiny_tokenizer_of(family)
    spec = resolve_fim(tokenizer)
    template = FIM_TEMPLATES[family]
    for marker, token_id in [
        (template.prefix, spec.prefix_id),
        (template.suffix, spec.suffix_id),
        (template.middle, spec.middle_id),
    ]:
        assert tokenizer.convert_ids_to_tokens(token_id) == marker
    assert tokenizer.eos_token_id in spec.stop_ids
    assert {spec.prefix_id, spec.suffix_id, spec.middle_id} <= spec.stop_ids
    has_repo_form = template.repo_name is not None
    assert (spec.repo_name_id is not None) == has_repo_form
    assert (spec.file_sep_id is not None) == has_repo_form


def test_missing_marker_is_a_clear_error():
    special, eos, _ = FAMILIES["qwen2.5-coder"]
    tokenizer = tiny_tokenizer([t for t in special if t != "<|fim_middle|>"], eos)
    with pytest.raises(ValueError, match="no known FIM markers"):
        detect_family(tokenizer)
    with pytest.raises(ValueError, match=r"<\|fim_middle\|>.*not single tokens"):
        resolve_fim(tokenizer, "qwen2.5-coder")


def test_unknown_family_lists_valid_ones(tiny_tokenizer_of):
    with pytest.raises(ValueError, match="valid: qwen2.5-coder, deepseek-coder, starcoder, codellama"):
        resolve_fim(tiny_tokenizer_of("qwen2.5-coder"), "gpt-17")


def test_wrong_family_for_tokenizer_is_refused(tiny_tokenizer_of):
    with pytest.raises(ValueError, match="not single tokens"):
        resolve_fim(tiny_tokenizer_of("qwen2.5-coder"), "deepseek-coder")
