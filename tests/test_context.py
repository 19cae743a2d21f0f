"""Repository context: tree-sitter outlines, name resolution across files, the per-scope
choice of snippets (stable while typing), the budgeted selection, and the FIM prompt."""

import pytest

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model
from completion.context import select_context
from completion.prompt import RepoFile
from retrieval.context import RepoContext
from retrieval.definitions import DefinitionFinder
from retrieval.outline import called_names, definitions, identifier_at, python_imports

FILES = {
    "pkg/__init__.py": "",
    "pkg/geometry.py": (
        "import math\n\n\n"
        "def circle_area(radius):\n"
        '    """Area of a circle."""\n'
        "    return math.pi * radius ** 2\n\n\n"
        "class Box:\n"
        '    """An axis-aligned box."""\n\n'
        "    def volume(self):\n        return 1\n"
    ),
    "pkg/app.py": (
        "from .geometry import circle_area\n"
        "from . import geometry\n\n\n"
        "def report(r):\n"
        "    total = circle_area(r)\n"
        "    box = geometry.Box()\n"
        "    return total\n\n\n"
        "def other():\n    return 2\n"
    ),
}


@pytest.fixture
def repo(tmp_path):
    for path, text in FILES.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    return tmp_path


def test_outline_signatures_docstrings_and_scopes():
    defs = definitions("pkg/geometry.py", FILES["pkg/geometry.py"], "python")
    assert [(d.kind, d.qualified_name) for d in defs] == [
        ("function", "circle_area"), ("class", "Box"), ("method", "Box.volume")]
    assert defs[0].signature == "def circle_area(radius)" and defs[0].docstring == "Area of a circle."
    assert defs[0].name_line == 4 and defs[1].docstring == "An axis-aligned box."
    assert definitions("notes.txt", "hello", None) == []


def test_identifier_at_calls_and_imports():
    text = FILES["pkg/app.py"]
    assert identifier_at(text, 6, 14, "python") == ("circle_area", "")
    assert identifier_at(text, 7, 19, "python") == ("Box", "geometry")
    assert identifier_at(text, 6, 0, "python") == ("", "")  # whitespace
    assert identifier_at(text, 99, 0, "python") == ("", "")  # out of range
    assert called_names(text, "python", 5, 8) == [("circle_area", ""), ("Box", "geometry")]
    imports = python_imports(text)
    assert [(i.alias, i.module, i.name, i.level) for i in imports] == [
        ("circle_area", "geometry", "circle_area", 1), ("geometry", "", "geometry", 1)]


def test_finder_resolves_through_relative_imports(repo):
    finder = DefinitionFinder(repo)
    text = FILES["pkg/app.py"]
    found = finder.resolve("circle_area", "", "pkg/app.py", text)
    assert (found.path, found.signature) == ("pkg/geometry.py", "def circle_area(radius)")
    box = finder.resolve("Box", "geometry", "pkg/app.py", text)
    assert (box.path, box.kind) == ("pkg/geometry.py", "class")
    assert finder.resolve("other", "", "pkg/app.py", text).path == "pkg/app.py"
    assert finder.resolve("missing", "", "pkg/app.py", text) is None
    assert finder.module_path("pkg/app.py", "geometry", 1) == "pkg/geometry.py"
    assert finder.module_path("pkg/app.py", "pkg.geometry", 0) == "pkg/geometry.py"
    assert finder.module_path("pkg/sub/deep.py", "geometry", 2) == "pkg/geometry.py"
    assert finder.module_path("pkg/app.py", "geometry", 3) is None  # above the root
    context = finder.summary_context(finder.resolve("report", "", "pkg/app.py", text))
    assert "def circle_area(radius)  # Area of a circle." in context


def test_context_is_chosen_once_per_scope_and_stays_while_typing(repo):
    finder, context = DefinitionFinder(repo), RepoContext()
    text = FILES["pkg/app.py"]
    cursor = text.index("    return total")
    first = context.snippets("doc", finder, "pkg/app.py", text, cursor)
    assert [s.path for s in first] == ["pkg/geometry.py"] * 3
    assert first[0].content == "def circle_area(radius): ...  # Area of a circle."  # imported
    assert first[1].content.startswith("class Box:")  # then the calls, nearest the cursor first
    assert "def circle_area(radius):" in first[2].content
    typed = text[:cursor] + "    x = geometry.vol" + text[cursor:]
    assert context.snippets("doc", finder, "pkg/app.py", typed, cursor + 20) is first
    other = context.snippets("doc", finder, "pkg/app.py", text, text.index("return 2"))
    # another scope, which calls nothing from other files: only the file's imports, briefly
    assert other == (RepoFile("pkg/geometry.py", "def circle_area(radius): ...  # Area of a circle."),)
    (repo / "pkg/geometry.py").write_text(FILES["pkg/geometry.py"].replace("radius", "r"))
    changed = context.snippets("doc", finder, "pkg/app.py", text, cursor)
    assert changed is not first and "def circle_area(r):" in changed[2].content


def test_select_context_budget_order_and_merge(tiny_tokenizer_of):
    tokenizer = tiny_tokenizer_of("qwen2.5-coder")

    def encode(texts):
        return tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    candidates = [RepoFile("z.py", "def z():\n    pass"), RepoFile("a.py", "A = 1"),
                  RepoFile("z.py", "Z = 2"), RepoFile("a.py", "A = 1")]
    files, used = select_context(candidates, encode, 10_000)
    assert files == (RepoFile("a.py", "A = 1"), RepoFile("z.py", "def z():\n    pass\n\nZ = 2"))
    assert used > 0
    small, small_used = select_context(candidates, encode, 12)
    assert small_used <= 12 and all(f.path == "a.py" for f in small)
    assert select_context(candidates, encode, 0) == ((), 0)


def test_prompt_with_context_holds_the_other_file_and_keeps_the_fim_budget(repo, tiny_model_dir):
    engine = CompletionEngine(load_model(str(tiny_model_dir("qwen2.5-coder")), device="cpu",
                                         dtype="fp32"), EngineSettings(max_prompt_tokens=64))
    text = FILES["pkg/app.py"]
    cursor = text.index("    return total")
    snippets = RepoContext().snippets("doc", DefinitionFinder(repo), "pkg/app.py", text, cursor)
    plain = engine.build_prompt(CompletionRequest(text, cursor, "python", "pkg/app.py", "demo"))
    with_context = engine.build_prompt(
        CompletionRequest(text, cursor, "python", "pkg/app.py", "demo", context=snippets))
    prompt = engine.loaded.tokenizer.decode(with_context.ids)
    assert prompt.startswith("<|repo_name|>demo\n<|file_sep|>pkg/geometry.py\n")
    assert "def circle_area(radius):" in prompt and "class Box:" in prompt
    assert prompt.index("pkg/geometry.py") < prompt.index("<|file_sep|>pkg/app.py\n<|fim_prefix|>")
    assert with_context.prefix_tokens == plain.prefix_tokens  # the local code is not starved
    assert with_context.ids[-len(plain.ids) + 10:] == plain.ids[-len(plain.ids) + 10:]
    engine.settings = EngineSettings(max_prompt_tokens=64, context_budget_tokens=0)
    off = engine.build_prompt(CompletionRequest(text, cursor, "python", "pkg/app.py", "demo",
                                                context=snippets))
    assert off.ids == plain.ids
