"""`codeassist index` and `codeassist search` as a user runs them (real encoder)."""

import json

from codeassist.cli import main
from tests.retrieval_helpers import write_repo
from tests.test_cli import assert_clean_error


def _run(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_index_then_search(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CODEASSIST_HOME", str(tmp_path / "home"))  # the default index location
    root = write_repo(tmp_path / "repo")
    code, out, _ = _run(capsys, "index", str(root))
    assert code == 0 and out.startswith(f"indexed {root}: 4 files,") and "(index: " in out
    monkeypatch.chdir(root)
    code, out, _ = _run(capsys, "search", "area of a circle", "--k", "2", "--json")
    assert code == 0
    hits = json.loads(out)
    assert len(hits) == 2
    assert hits[0]["path"] == "geometry/shapes.py" and hits[0]["line"] == 8  # 1-based
    assert hits[0]["symbol"] == "Circle.area" and "math.pi" in hits[0]["snippet"]
    code, out, _ = _run(capsys, "search", "render page", "--k", "1")
    assert code == 0 and out.splitlines()[0].startswith("web/app.ts:1  renderPage  ")
    # A second index run reuses everything.
    code, out, _ = _run(capsys, "index", str(root))
    assert "0 changed, 0 deleted, 0 chunks embedded" in out
    assert not (root / ".codeassist").exists() and (tmp_path / "home" / "indexes").is_dir()


def test_index_with_summaries_then_search_finds_them(tmp_path, capsys, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("CODEASSIST_HOME", str(tmp_path / "home"))
    root = write_repo(tmp_path / "repo")
    model = ("--model", str(tiny_model_dir("qwen2.5-coder")), "--device", "cpu", "--dtype", "fp32")
    code, out, _ = _run(capsys, "index", str(root))
    assert code == 0 and out.splitlines()[-1] == "summaries: 0 of 6 definitions"
    code, out, _ = _run(capsys, "index", str(root), "--summaries", *model)
    assert code == 0 and out.splitlines()[-1] == "summaries: 6 of 6 definitions"
    # The summaries are the hovers' cache entries, and the index holds them.
    from retrieval import CodeIndex

    index = CodeIndex(root)
    stored = json.loads(index.summaries_path.read_text())["summaries"]
    assert set(index.snapshot.summaries) - {""} <= set(stored.values()) and len(stored) == 6
    # A second run has nothing left to write.
    code, out, _ = _run(capsys, "index", str(root), "--summaries", *model)
    assert out.splitlines()[-1] == "summaries: 6 of 6 definitions"
    assert json.loads(index.summaries_path.read_text())["summaries"] == stored


def test_bad_inputs_give_one_clear_line(tmp_path, capsys):
    root = write_repo(tmp_path / "repo")

    class Result:
        def __init__(self, code, out, err):
            self.returncode, self.stdout, self.stderr = code, out, err

    def run(*args):
        return Result(*_run(capsys, *args))

    assert_clean_error(run("index", str(tmp_path / "missing")), "no such directory")
    assert_clean_error(run("search", "", "--dir", str(root)), "query is empty")
    assert_clean_error(run("search", "x", "--k", "0", "--dir", str(root)), "k must be within")
    assert_clean_error(run("search", "x", "--mode", "magic", "--dir", str(root)), "valid: hybrid")
    assert_clean_error(run("index", str(root), "--encoder", str(tmp_path / "no-model")),
                       "cannot load encoder")


def test_kill_9_while_indexing_never_leaves_a_corrupt_index(tmp_path):
    import subprocess
    import time

    from retrieval import store
    from tests.scripts import console_script

    root = tmp_path / "repo"
    root.mkdir()
    for number in range(60):
        (root / f"module_{number:02}.py").write_text("".join(
            f"def function_{number}_{k}(value):\n    return value * {k} + {number}\n\n" for k in range(4)))
    folder = root / ".codeassist" / "index"
    for delay in (1.0, 2.5, 4.0, 5.5, 7.0):  # encoder load, embedding, saving
        process = subprocess.Popen([console_script("codeassist"), "index", "--in-workspace", str(root)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.kill()
        process.wait(30)
        snapshot = store.load(folder)  # CorruptIndexError would fail the test
        assert snapshot is None or len(snapshot.files) in (0, 60)
    finished = subprocess.run([console_script("codeassist"), "index", "--in-workspace", str(root)], capture_output=True,
                              text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert len(store.load(folder).files) == 60
    assert not list(folder.glob("tmp-gen-*"))  # a killed save's staging folder is gone
