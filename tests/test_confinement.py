"""Workspace confinement: what the server reads for hover, context and the index stays
inside the workspace, resolves symlinks and relative paths first, and never opens a FIFO."""

import os
import threading

import pytest

from retrieval import CodeIndex, IndexConfig
from retrieval.definitions import read_workspace_file
from retrieval.files import read_text, walk
from tests.retrieval_helpers import FakeEncoder, write_repo


@pytest.fixture
def layout(tmp_path):
    root, outside = tmp_path / "workspace", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.py").write_text('def secret():\n    """the secret docstring"""\n')
    (root / "inside.py").write_text("def inside():\n    return 1\n")
    (root / "link.py").symlink_to(outside / "secret.py")
    os.mkfifo(root / "fifo_mod.py")
    return root, outside


def _within(seconds: float, work):
    """`work()`'s result, failing if it blocks (a FIFO without a writer blocks forever)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked"
    return result[0]


def test_definition_reads_stay_in_the_workspace(layout):
    root, _ = layout
    assert read_workspace_file(root, "inside.py").startswith("def inside")
    assert read_workspace_file(root, "link.py") is None  # a symlink out of the workspace
    assert read_workspace_file(root, "../outside/secret.py") is None
    assert _within(5, lambda: read_workspace_file(root, "fifo_mod.py")) is None


def test_index_reads_never_open_a_fifo(layout):
    root, _ = layout
    assert _within(5, lambda: read_text(root / "fifo_mod.py")) is None
    assert [state.path for state in walk(root)] == ["inside.py"]


def test_index_updates_of_paths_outside_the_workspace_are_ignored(layout):
    root, outside = layout
    write_repo(root)
    index = CodeIndex(root, IndexConfig(), encoder=FakeEncoder())
    index.update()
    before = {hit.path for hit in index.search("secret docstring", 20)}
    index.update(["../outside/secret.py", str(outside / "secret.py"), "fifo_mod.py"])
    paths = {hit.path for hit in index.search("secret docstring", 20)}
    assert paths == before and not any("secret" in p for p in paths)


def test_a_client_chooses_an_index_folder_only_inside_the_workspace_or_home(layout, monkeypatch, tmp_path):
    from lsp_server.search import client_index_dir

    root, outside = layout
    monkeypatch.setenv("CODEASSIST_HOME", str(tmp_path / "home"))
    assert client_index_dir("", str(root)) is None
    assert client_index_dir(str(root / "idx"), str(root)) == str((root / "idx").resolve())
    assert client_index_dir(str(tmp_path / "home" / "i"), str(root)) == str((tmp_path / "home" / "i").resolve())
    for elsewhere in (str(outside), str(root / ".." / "outside"), "/etc/cron.d"):
        with pytest.raises(ValueError, match="outside the workspace"):
            client_index_dir(elsewhere, str(root))


def test_an_encoder_folder_with_only_pickled_weights_is_refused(tmp_path):
    from retrieval.encoder import load_encoder

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ValueError, match="pickled weights without safetensors"):
        load_encoder(str(tmp_path))


def test_a_pickled_module_beside_safetensors_weights_is_refused(tmp_path):
    """sentence-transformers loads each module folder (2_Dense/) on its own: safetensors in
    the top folder do not make a pickled module safe."""
    from retrieval.encoder import load_encoder

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"{}")
    (tmp_path / "2_Dense").mkdir()
    (tmp_path / "2_Dense" / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ValueError, match=r"2_Dense/pytorch_model\.bin"):
        load_encoder(str(tmp_path))


def test_a_hostile_workspace_is_indexed_within_its_bounds(layout):
    from retrieval.files import FileFilter

    root, _ = layout  # a symlink out of the workspace and a FIFO already
    (root / "loop").symlink_to(root)
    (root / "huge.py").write_bytes(b"x = 1\n" * (50_000_000 // 6))  # 50 MB
    (root / "binary.py").write_bytes(bytes(range(256)) * 40)
    (root / "latin1.py").write_bytes("caf\xe9 = 1\n".encode("latin-1"))
    many = root / "many"
    many.mkdir()
    for number in range(20_000):
        (many / f"m{number:05}.py").write_text(f"def f{number}():\n    return {number}\n")
    index = CodeIndex(root, IndexConfig(file_filter=FileFilter(max_files=300)), encoder=FakeEncoder())
    assert _within(300, index.update) is not None
    listed, chunked = set(index.snapshot.files), {chunk.path for chunk in index.snapshot.chunks}
    assert "inside.py" in chunked and len(listed) <= 300
    assert not listed & {"link.py", "fifo_mod.py", "huge.py"}
    assert not chunked & {"binary.py", "latin1.py"}  # read, found not to be UTF-8 text
    assert not any(path.startswith("loop/") for path in listed)


def test_an_ignore_file_that_is_a_link_to_a_device_or_a_fifo_is_skipped(layout):
    """The walk reads .gitignore files through the same guard as sources: a link to
    /dev/zero would be read forever, a FIFO would block the walk for good."""
    root, _ = layout
    (root / ".gitignore").symlink_to("/dev/zero")
    (root / "pkg").mkdir()
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    os.mkfifo(root / "pkg" / ".gitignore")
    (root / "sub").mkdir()
    (root / "sub" / ".gitignore").write_text("skipped.py\n")
    (root / "sub" / "skipped.py").write_text("y = 2\n")
    listed = _within(10, lambda: [state.path for state in walk(root)])
    assert listed == ["inside.py", "pkg/mod.py", "sub/.gitignore"]  # sub/.gitignore still applies


def _index_at(root, folder):
    return CodeIndex(root, IndexConfig(index_dir=str(folder)), encoder=FakeEncoder())


def test_an_index_folder_is_never_the_workspace_home_or_a_folder_of_the_users(layout, tmp_path, monkeypatch):
    root, outside = layout
    home = tmp_path / "home"
    monkeypatch.setenv("CODEASSIST_HOME", str(home))
    write_repo(root)
    for forbidden in (root, tmp_path, home, tmp_path.parent):
        with pytest.raises(ValueError, match="workspace or a folder above it|CODEASSIST_HOME"):
            _index_at(root, forbidden)
    # A folder of the user's: its manifest.json and gen-* folder stay as they are.
    users = outside / "assets"
    (users / "gen-assets").mkdir(parents=True)
    (users / "gen-assets" / "logo.txt").write_text("mine")
    (users / "manifest.json").write_text('{"name": "my app"}')
    with pytest.raises(ValueError, match="holds other files"):
        _index_at(root, users)
    assert (users / "gen-assets" / "logo.txt").read_text() == "mine"
    assert (users / "manifest.json").read_text() == '{"name": "my app"}'
    assert sorted(p.name for p in outside.iterdir()) == ["assets", "secret.py"]  # no lock beside it


def test_an_index_writes_only_inside_its_own_folder(layout, tmp_path):
    root, _ = layout
    write_repo(root)
    parent = tmp_path / "indexes"
    parent.mkdir()
    folder = parent / "mine"
    index = _index_at(root, folder)
    index.update()
    assert index.search("add", 5)
    assert [p.name for p in parent.iterdir()] == ["mine"]  # lock and temporary files inside
    assert (folder / ".codeassist-index").is_file() and (folder / "index.lock").exists()
    # Reopened later (a folder with the marker), and an index written before the marker existed.
    assert _index_at(root, folder).search("add", 5)
    (folder / ".codeassist-index").unlink()
    assert _index_at(root, folder).search("add", 5)
