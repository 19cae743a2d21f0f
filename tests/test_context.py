"""Repository context: tree-sitter outlines, name resolution across files, the per-scope
choice of snippets (stable while typing), the budgeted selection, and the FIM prompt."""

import pytest

from completion import CompletionEngine, CompletionRequest, EngineSettings, load_model
from completion.context import select_context
from completion.prompt import RepoFile
from retrieval.context import RepoContext
from retrieval.definitions import DefinitionFinder
from retrieval.outline import called_names, definitions, identifier_at, python_imports, used_names

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


def _write(root, files: dict[str, str]):
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


@pytest.fixture
def repo(tmp_path):
    return _write(tmp_path, FILES)


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
    assert [s.path for s in first] == ["pkg/geometry.py"] * 2
    # the definitions of the names used, nearest the cursor first: `geometry.Box()` is on
    # the line above, `circle_area(r)` two lines up; a class by its methods' signatures
    assert first[0].content == 'class Box:\n    """An axis-aligned box."""\n    def volume(self): ...'
    assert first[1].content.startswith("def circle_area(radius):")
    typed = text[:cursor] + "    x = geometry.vol" + text[cursor:]
    assert context.snippets("doc", finder, "pkg/app.py", typed, cursor + 20) is first
    other = context.snippets("doc", finder, "pkg/app.py", text, text.index("return 2"))
    # another scope, which uses nothing from other files: one line per name of another file
    # that the file uses (imported, or `module.name`), the most used first
    assert other == (RepoFile("pkg/geometry.py", "def circle_area(radius): ..."),
                     RepoFile("pkg/geometry.py", "class Box: ..."))
    (repo / "pkg/geometry.py").write_text(FILES["pkg/geometry.py"].replace("radius", "r"))
    changed = context.snippets("doc", finder, "pkg/app.py", text, cursor)
    assert changed is not first and "def circle_area(r):" in changed[1].content


INHERITING = {
    "lib/__init__.py": "",
    "lib/base.py": (
        "class Base:\n"
        '    """The base."""\n\n'
        "    def helper(self, x, *, strict=False):\n"
        '        """Check x.\n\n        Long explanation.\n        """\n'
        + "".join(f"        x = x + {i}\n" for i in range(10)) +
        "        return x\n"
    ),
    "lib/sub/__init__.py": "",
    "lib/sub/tools.py": "def tool(a, b):\n    return a\n\n\nLIMIT = 3\n",
    "lib/child.py": (
        "import lib.sub.tools\n"
        "from .base import Base\n\n\n"
        "class Child(Base):\n"
        "    def run(self, data):\n"
        "        self.helper(data)\n"
        "        super().helper(data)\n"
        "        Base.helper(self, data)\n"
        "        data.helper()\n"
        "        return lib.sub.tools.tool(data, lib.sub.tools.LIMIT)\n"
    ),
}


class _Index:
    """An index whose symbol lookup knows one method, `Base.helper`."""

    def symbols(self, name, k=50):
        from retrieval.types import SearchHit

        return [SearchHit("lib/base.py", 4, 20, "method", "helper", "Base", 1.0, "")]

    def search(self, query, k=10, mode="hybrid"):
        return []


@pytest.fixture
def inheriting(tmp_path):
    return _write(tmp_path, INHERITING)


def test_used_names_give_calls_dotted_owners_and_references():
    text = INHERITING["lib/child.py"]
    uses = {(u.name, u.owner, u.line, u.call) for u in used_names(text, "python", 6, 11)}
    assert {("helper", "self", 7, True), ("helper", "super()", 8, True), ("helper", "Base", 9, True),
            ("tool", "lib.sub.tools", 11, True), ("LIMIT", "lib.sub.tools", 11, False),
            ("data", "", 10, False)} <= uses
    assert not any(u[0] == "run" for u in uses)  # a definition's own name is not a use
    keyword = used_names("f(key=mod.VALUE)\n", "python", 1, 1)
    assert ("VALUE", "mod") in {(u.name, u.owner) for u in keyword} and \
        "key" not in {u.name for u in keyword}
    first = used_names(text, "python", 6, 11)
    first.sort(key=lambda u: -u.line)  # callers sort their list (the answers are kept)
    first.clear()
    assert {(u.name, u.owner, u.line, u.call) for u in used_names(text, "python", 6, 11)} == uses


def test_finder_follows_base_classes_dotted_modules_and_does_not_guess(inheriting):
    finder = DefinitionFinder(inheriting, _Index())
    text = INHERITING["lib/child.py"]
    for owner in ("self", "super()", "Base"):  # inherited from a class in another file
        found = finder.resolve("helper", owner, "lib/child.py", text, 7)
        assert (found.path, found.qualified_name) == ("lib/base.py", "Base.helper"), owner
    tool = finder.resolve("tool", "lib.sub.tools", "lib/child.py", text, 11)
    assert (tool.path, tool.name) == ("lib/sub/tools.py", "tool")
    # `data` is of unknown type: only a guess (by the method's name alone) finds a `helper`
    assert finder.resolve("helper", "data", "lib/child.py", text, 10).path == "lib/base.py"
    assert finder.resolve("helper", "data", "lib/child.py", text, 10, guess=False) is None
    assert finder.resolve("helper", "", "lib/child.py", text, 10, guess=False) is None


def test_context_shows_inherited_methods_under_their_class_cut_to_the_docstring(inheriting):
    finder = DefinitionFinder(inheriting, _Index())
    text = INHERITING["lib/child.py"]
    cursor = text.index("        data.helper()")
    snippets = RepoContext().snippets("doc", finder, "lib/child.py", text, cursor)
    # nearest the cursor first: `Base.helper(self, data)` and `Base` on the line above, then
    # `lib.sub.tools.tool(...)` below; `data.helper()` (unknown type) is not guessed at
    assert [s.path for s in snippets] == ["lib/base.py", "lib/base.py", "lib/sub/tools.py"]
    assert snippets[0].content == (  # a long method: under its class, cut to the docstring
        "class Base:\n    def helper(self, x, *, strict=False):\n"
        '        """Check x."""\n        ...')
    assert snippets[1].content == (
        'class Base:\n    """The base."""\n    def helper(self, x, *, strict=False): ...')
    assert snippets[2].content == "def tool(a, b):\n    return a"  # short: whole


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
    # one-line snippets of one file pay its header once, and sit on consecutive lines
    stubs = [RepoFile("pkg/some/rather/long/module_path.py", f"def f{i}(x): ...") for i in range(10)]
    merged = RepoFile(stubs[0].path, "\n".join(s.content for s in stubs))
    exact = len(encode([f"{merged.path}\n{merged.content}\n"])[0]) + 1
    assert select_context(stubs, encode, exact) == ((merged,), exact)
    fewer, fewer_used = select_context(stubs, encode, exact - 1)
    assert fewer_used <= exact - 1 and fewer[0].content.count("\n") == 8


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


class _ScoredIndex:
    """An index whose search finds two chunks of other files, one scoring below the floor."""

    def __init__(self, low: float):
        self.low = low

    def symbols(self, name, k=50):
        return []

    def search(self, query, k=10, mode="hybrid"):
        from retrieval.types import SearchHit

        from retrieval.context import MIN_HIT_SCORE

        return [SearchHit("pkg/geometry.py", 4, 6, "function", "circle_area", "", MIN_HIT_SCORE + 0.1, ""),
                SearchHit("pkg/geometry.py", 9, 13, "class", "Box", "", self.low, "")]


def test_search_hits_below_the_relevance_floor_are_left_out(repo):
    from retrieval.context import MIN_HIT_SCORE

    text = "def tally(items):\n    total = 0\n    for item in items:\n        total += item\n"
    (repo / "pkg/tally.py").write_text(text)
    cursor = len(text)
    shown = RepoContext().snippets("doc", DefinitionFinder(repo, _ScoredIndex(MIN_HIT_SCORE - 0.01)),
                                   "pkg/tally.py", text, cursor)
    assert [s.content.split("\n", 1)[0] for s in shown] == ["def circle_area(radius):"]
    both = RepoContext().snippets("doc", DefinitionFinder(repo, _ScoredIndex(MIN_HIT_SCORE)),
                                  "pkg/tally.py", text, cursor)
    assert [s.content.split("\n", 1)[0] for s in both] == ["def circle_area(radius):", "class Box:"]
