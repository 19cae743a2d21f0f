"""Which files are indexed: .gitignore, vendored folders, binary, huge and non-UTF-8 files."""

import pytest

from retrieval.files import FileFilter, is_indexable, read_text, walk
from retrieval.tokens import split_identifier, words


@pytest.fixture
def tree(tmp_path):
    files = {
        "src/app.py": "print('hi')\n",
        "src/generated/out.py": "x = 1\n",
        "src/keep.log": "kept by negation\n",
        "debug.log": "ignored\n",
        "node_modules/lib/index.js": "module.exports = 1;\n",
        "vendor/dep.go": "package dep\n",
        "docs/guide.md": "# Guide\n",
        "docs/.gitignore": "draft.md\n",
        "docs/draft.md": "ignored by the nested .gitignore\n",
        "big.py": "x = 1\n" * 2000,
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    (tmp_path / ".gitignore").write_text("*.log\n!src/keep.log\nsrc/generated/\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (tmp_path / "latin1.py").write_bytes("caf\xe9 = 1\n".encode("latin-1"))
    return tmp_path


def test_walk_honours_gitignore_vendor_and_size(tree):
    found = {s.path for s in walk(tree, FileFilter(max_bytes=5000))}
    assert found == {".gitignore", "src/app.py", "src/keep.log", "docs/guide.md",
                     "docs/.gitignore", "image.png", "latin1.py"}
    assert "big.py" in {s.path for s in walk(tree)}  # under the default limit
    assert "vendor/dep.go" in {s.path for s in walk(tree, FileFilter(exclude=()))}


def test_is_indexable_agrees_with_walk(tree):
    file_filter = FileFilter(max_bytes=5000)
    found = {s.path for s in walk(tree, file_filter)}
    for path in ["src/app.py", "src/generated/out.py", "debug.log", "src/keep.log",
                 "node_modules/lib/index.js", "docs/draft.md", "docs/guide.md"]:
        assert is_indexable(tree, path, file_filter) == (path in found), path


def test_read_text_skips_binary_and_undecodable(tree):
    assert read_text(tree / "image.png") is None
    assert read_text(tree / "latin1.py") is None
    assert read_text(tree / "missing.py") is None
    assert read_text(tree / "big.py", max_bytes=100) is None
    assert read_text(tree / "src" / "app.py") == "print('hi')\n"


def test_a_folder_1100_levels_deep_is_walked_down_to_the_depth_limit(tmp_path):
    from retrieval.files import MAX_DEPTH

    (tmp_path / "top.py").write_text("x = 1\n")
    folders = [tmp_path / ("d/" * depth) for depth in range(1, 1101)]  # 2,200 characters deep
    for folder in folders:
        folder.mkdir()
        (folder / "f.py").write_text("y = 2\n")
    try:
        found = [state.path for state in walk(tmp_path)]  # os.walk raised RecursionError here
    finally:
        for folder in reversed(folders):  # shutil.rmtree recurses as deep
            (folder / "f.py").unlink()
            folder.rmdir()
    assert found[0] == "top.py" and len(found) == MAX_DEPTH + 1


def test_the_walk_stops_at_the_file_count_and_total_size(tmp_path):
    for index in range(30):
        (tmp_path / f"m{index:02}.py").write_text("z = 3\n" * 10)  # 60 bytes each
    assert len(list(walk(tmp_path, FileFilter(max_files=12)))) == 12
    assert len(list(walk(tmp_path, FileFilter(max_total_bytes=600)))) == 10


def test_bad_filter_is_refused():
    with pytest.raises(ValueError, match="max_bytes"):
        FileFilter(max_bytes=0)


def test_identifiers_split_for_bm25():
    assert split_identifier("parseHTTPHeader_v2") == ["parse", "http", "header", "v", "2"]
    assert words("def getUserName(self):") == ["getusernam", "get", "user", "name"]
    assert words("Return the parsed headers") == ["pars", "header"]
