"""Chunk boundaries per language against golden files in tests/data/chunking.

Regenerate with `UPDATE_GOLDEN=1 python -m pytest tests/test_retrieval_chunking.py`, then
read the JSON diff: the goldens are only worth what that review is.
"""

import json
import os
from pathlib import Path

import pytest

from completion.syntax import language_for
from retrieval.chunking import chunk_file, line_windows

DATA = Path(__file__).parent / "data" / "chunking"
SOURCES = sorted(p for p in DATA.iterdir() if p.suffix != ".json")


def _summary(chunks):
    return [{"kind": c.kind, "symbol": c.symbol, "scope": c.scope,
             "start_line": c.start_line, "end_line": c.end_line} for c in chunks]


@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_chunk_boundaries_match_golden(source):
    language = language_for(source.name)
    assert language is not None
    got = _summary(chunk_file(source.name, source.read_text(), language))
    golden = source.with_name(source.name + ".json")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(json.dumps(got, indent=1) + "\n")
    assert got == json.loads(golden.read_text())


def test_every_grammar_language_has_a_golden_file():
    languages = {language_for(p.name) for p in SOURCES}
    assert {"python", "javascript", "typescript", "go", "rust", "java", "c", "cpp"} <= languages


def test_long_function_is_split_at_statement_boundaries():
    body = "".join(f"    total += step_{i}(value)\n" for i in range(40))
    text = f"def accumulate(value):\n    total = 0\n{body}    return total\n"
    (chunk,) = chunk_file("acc.py", text, "python", max_tokens=60)
    assert chunk.symbol == "accumulate" and chunk.start_line == 1 and chunk.end_line == 43
    assert len(chunk.blocks) > 1
    assert all(b.startswith("def accumulate(value):") for b in chunk.blocks)
    # Every statement is in exactly one block, whole.
    statements = [ln for ln in text.splitlines()[1:]]
    joined = [ln for b in chunk.blocks for ln in b.splitlines()[1:]]
    assert [ln for ln in joined if ln != "def accumulate(value):"] == statements[: len(joined)]
    assert sorted(set(joined)) == sorted(set(statements))


def test_small_siblings_merge_into_one_module_chunk():
    text = "import os\nimport sys\n\nLIMIT = 3\n\n\ndef f():\n    return LIMIT\n\nNAME = 'x'\n"
    chunks = chunk_file("m.py", text, "python")
    module = [c for c in chunks if c.kind == "module"]
    assert len(module) == 1
    assert module[0].text == "import os\nimport sys\nLIMIT = 3\nNAME = 'x'"
    assert [c.symbol for c in chunks if c.kind == "function"] == ["f"]


def test_syntax_errors_do_not_stop_chunking():
    text = "def good():\n    return 1\n\ndef broken(:\n    pass\n\nclass Later:\n    def m(self):\n        pass\n"
    names = [c.qualified_name for c in chunk_file("bad.py", text, "python")]
    assert "good" in names and "Later.m" in names


def test_files_without_a_grammar_fall_back_to_line_windows():
    text = "\n".join(f"line {i} of the notes" for i in range(200))
    chunks = chunk_file("notes.md", text, None, max_tokens=64)
    assert len(chunks) > 1 and {c.kind for c in chunks} == {"lines"}
    assert chunks[0].start_line == 1 and chunks[-1].end_line == 200
    assert all(b.end_line + 1 == a.start_line for b, a in zip(chunks, chunks[1:]))
    assert chunks == line_windows("notes.md", text, 64)


def test_empty_file_has_no_chunks():
    assert chunk_file("empty.py", "\n\n", "python") == []
