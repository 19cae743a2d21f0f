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
