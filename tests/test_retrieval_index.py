"""The index: incremental updates, deletions, renames, persistence, corruption, queries."""

import logging
import shutil

import numpy as np
import pytest

from retrieval import CodeIndex, IndexConfig
from retrieval import indexer
from retrieval import store as store_module
from tests.retrieval_helpers import FakeEncoder, write_repo


@pytest.fixture
def repo(tmp_path):
    return write_repo(tmp_path / "repo")


@pytest.fixture
def encoder():
    return FakeEncoder()


def _index(repo, encoder, **config):
    return CodeIndex(repo, IndexConfig(**{"location": "workspace", **config}), encoder=encoder)


def test_first_update_indexes_every_file_and_saves_in_the_workspace(repo, encoder):
    index = _index(repo, encoder)
    stats = index.update()
    assert stats.files == 4 and stats.changed_files == 4 and stats.embedded_chunks == stats.chunks
    names = {c.qualified_name for c in index.snapshot.chunks}
    assert {"Circle", "Circle.__init__", "Circle.area", "perimeter_of_square", "ParseHeader",
            "renderPage"} <= names
    assert (repo / ".codeassist" / ".gitignore").read_text() == "*\n"
    assert (repo / ".codeassist" / "index" / "manifest.json").exists()
    hits = index.search("area of the circle radius", k=3)
    assert hits[0].qualified_name == "Circle.area" and hits[0].start_line == 8


def test_changed_file_embeds_only_its_changed_chunks(repo, encoder):
    index = _index(repo, encoder)
    index.update()
    path = repo / "geometry" / "shapes.py"
    path.write_text(path.read_text().replace("4 * side", "side + side + side + side"))
    encoder.encoded.clear()
    stats = index.update()
    assert stats.changed_files == 1 and stats.embedded_chunks == 1
    # Its one block and its name text.
    assert len(encoder.encoded) == 2 and all("perimeter" in t for t in encoder.encoded)
    # Nothing changed: nothing is read or embedded.
    assert index.update().changed_files == 0 and len(encoder.encoded) == 2


def test_update_of_named_paths_only(repo, encoder):
    index = _index(repo, encoder)
    index.update()
    (repo / "web" / "extra.ts").write_text("function helperForTests() {\n  return 1;\n}\n")
    (repo / "net" / "http.go").unlink()
    stats = index.update([repo / "web" / "extra.ts", "net/http.go", "/elsewhere/x.py"])
    assert stats.changed_files == 1 and stats.deleted_files == 1 and stats.embedded_chunks == 1
    paths = {c.path for c in index.snapshot.chunks}
    assert "web/extra.ts" in paths and "net/http.go" not in paths


def test_deleted_files_leave_the_index(repo, encoder):
    index = _index(repo, encoder)
    index.update()
    (repo / "net" / "http.go").unlink()
    stats = index.update()
    assert stats.deleted_files == 1 and stats.files == 3
    assert all(c.path != "net/http.go" for c in index.snapshot.chunks)
    assert all(h.path != "net/http.go" for h in index.search("parse header line", k=10))


def test_renames_do_not_re_embed(repo, encoder):
    index = _index(repo, encoder)
    index.update()
    before = index.snapshot.chunks
    shutil.move(repo / "geometry", repo / "shapes")
    encoder.encoded.clear()
    stats = index.update()
    assert stats.embedded_chunks == 0 and encoder.encoded == []
    assert {c.path for c in index.snapshot.chunks if c.symbol == "area"} == {"shapes/shapes.py"}
    assert len(index.snapshot.chunks) == len(before)


def test_index_persists_across_restarts(repo, encoder):
    first = _index(repo, encoder)
    first.update()
    generation = first.snapshot.generation
    encoder.encoded.clear()
    second = _index(repo, encoder)  # a new process, in effect
    assert second.snapshot.generation == generation
    assert len(second.snapshot) == len(first.snapshot)
    assert second.update().embedded_chunks == 0 and encoder.encoded == []
    assert second.search("render page title", k=1)[0].symbol == "renderPage"
    np.testing.assert_allclose(second.snapshot.vectors, first.snapshot.vectors)


@pytest.mark.parametrize("damage", ["truncated vectors", "changed vector bytes", "garbage manifest",
                                    "missing sqlite", "other format", "broken bm25"])
def test_corrupt_index_is_rebuilt_with_a_warning(repo, encoder, caplog, damage):
    index = _index(repo, encoder)
    index.update()
    folder = index.folder
    generation = folder / index.snapshot.generation
    if damage == "truncated vectors":
        data = (generation / "vectors.npy").read_bytes()
        (generation / "vectors.npy").write_bytes(data[: len(data) // 2])
    elif damage == "changed vector bytes":  # same size and header: only the checksum tells
        data = bytearray((generation / "vectors.npy").read_bytes())
        data[-64:] = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes()
        (generation / "vectors.npy").write_bytes(bytes(data))
    elif damage == "garbage manifest":
        (folder / "manifest.json").write_text("{not json")
    elif damage == "missing sqlite":
        (generation / "chunks.sqlite").unlink()
    elif damage == "other format":
        (folder / "manifest.json").write_text(
            (folder / "manifest.json").read_text().replace(f'"format": {store_module.FORMAT_VERSION}', '"format": 99'))
    else:
        for path in (generation / "bm25").iterdir():
            path.write_bytes(b"\x00garbage")
    restarted = _index(repo, encoder)
    with caplog.at_level(logging.WARNING, logger="retrieval.index"):
        assert len(restarted.snapshot) == 0
    assert "rebuilding" in caplog.text
    assert not any(chunk.text in caplog.text for chunk in index.snapshot.chunks)  # logs hold no code
    stats = restarted.update()
    assert stats.chunks == len(index.snapshot)
    assert restarted.search("circle area", k=1)[0].symbol == "area"
    assert _index(repo, encoder).snapshot.generation == restarted.snapshot.generation


def test_a_crash_while_saving_keeps_the_previous_index(repo, encoder, monkeypatch):
    index = _index(repo, encoder)
    index.update()
    generation = index.snapshot.generation
    (repo / "web" / "more.ts").write_text("function another() {\n  return 2;\n}\n")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store_module.np, "save", crash)
    with pytest.raises(OSError):
        index.update()
    monkeypatch.undo()
    reopened = _index(repo, encoder)
    assert reopened.snapshot.generation == generation
    assert not [p for p in index.folder.iterdir() if p.name.startswith("tmp-")]
    assert reopened.update().changed_files == 1  # the new file is picked up next time


def test_another_encoder_rebuilds_the_index(repo, encoder, caplog):
    _index(repo, encoder).update()
    other = FakeEncoder()
    other.name = "another-encoder"
    index = _index(repo, other)
    with caplog.at_level(logging.WARNING, logger="retrieval.index"):
        assert index.update().embedded_chunks == len(index.snapshot)
    assert "was built with" in caplog.text


def test_index_in_the_cache_dir_by_default(repo, encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("CODEASSIST_HOME", str(tmp_path / "home"))
    index = CodeIndex(repo, IndexConfig(), encoder=encoder)
    index.update()
    assert index.folder.is_relative_to(tmp_path / "home" / "indexes")
    assert not (repo / ".codeassist").exists()


def test_long_chunks_are_split_encoded_and_aggregated(repo, encoder):
    body = "".join(f"    value = value + weight_{i} * factor_{i}\n" for i in range(60))
    (repo / "long.py").write_text(f"def blend(value):\n{body}    return value\n")
    index = _index(repo, encoder)
    index.update()
    blocks = [t for t in encoder.encoded if t.startswith("function blend (blend)\n")]
    assert len(blocks) > 1
    assert "blend: def blend(value):" in encoder.encoded  # the name text
    row = next(i for i, c in enumerate(index.snapshot.chunks) if c.symbol == "blend")
    mean = np.mean([encoder._vector(t) for t in blocks], axis=0)
    code = mean / np.linalg.norm(mean)
    name = encoder._vector("blend: def blend(value):")
    weight = indexer.NAME_WEIGHT
    np.testing.assert_allclose(index.snapshot.vectors[row], (1 - weight) * code + weight * name,
                               atol=1e-6)


def test_symbols_put_names_first_then_semantic_matches(repo, encoder):
    index = _index(repo, encoder)
    index.update()
    symbols = index.symbols("area", k=5)
    assert symbols[0].qualified_name == "Circle.area"
    assert len({s.qualified_name for s in symbols}) == len(symbols)
    assert [s.symbol for s in index.symbols("perimeter", k=1)] == ["perimeter_of_square"]


@pytest.mark.parametrize("query, k, mode, message", [
    ("", 5, "hybrid", "empty"), ("   ", 5, "hybrid", "empty"), ("x", 0, "hybrid", "within 1..200"),
    ("x", -3, "hybrid", "within 1..200"), ("x", 5, "fuzzy", "valid: hybrid, dense, bm25"),
])
def test_bad_queries_are_refused_clearly(repo, encoder, query, k, mode, message):
    index = _index(repo, encoder)
    with pytest.raises(ValueError, match=message):
        index.search(query, k, mode)


def test_search_modes_and_an_empty_index(tmp_path, repo, encoder):
    empty = _index(tmp_path / "repo" / "web", encoder, index_dir=str(tmp_path / "elsewhere"))
    assert empty.search("anything", k=3) == [] and empty.symbols("anything") == []
    index = _index(repo, encoder)
    index.update()
    for mode in ("hybrid", "bm25"):
        assert index.search("parse header", k=2, mode=mode)[0].symbol == "ParseHeader"
    assert len(index.search("parse header", k=2, mode="dense")) == 2
    assert index.search("zzzz qqqq", k=3, mode="bm25") == []


def test_a_search_leaves_the_threads_of_the_model_as_they_were(repo, encoder):
    import torch

    index = _index(repo, encoder)
    index.update()
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # what a 2-core machine runs the model with
    try:
        index.search("area of the circle", k=3, mode="dense")
        # faiss and torch share the calling thread's OpenMP setting; the search sets it to 1.
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_missing_root_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        CodeIndex(tmp_path / "missing", encoder=FakeEncoder())


def test_name_text_is_the_declaration_with_the_names_words():
    from retrieval.types import Chunk

    method = Chunk("g.py", "python", "method", "area", "Circle", 3, 5,
                   "# cached\n@property\ndef area(self):\n    return 1", ())
    assert indexer.name_text(method) == "area of circle: def area(self):"
    assert indexer.name_text(Chunk("g.py", "python", "module", "", "", 1, 1, "import os", ())) is None
    assert indexer.chunk_terms(method).split().count("area") == indexer.NAME_REPEAT + 1


def test_anonymous_chunks_have_no_name_part(repo, encoder):
    index = _index(repo, encoder)
    index.update()
    norms = {(c.kind, c.symbol): float(np.linalg.norm(v))
             for c, v in zip(index.snapshot.chunks, index.snapshot.vectors)}
    assert norms[("lines", "")] == pytest.approx(1 - indexer.NAME_WEIGHT)
    assert norms[("method", "area")] > 1 - indexer.NAME_WEIGHT


def test_a_killed_update_keeps_what_was_embedded_before_its_last_checkpoint(tmp_path, encoder, monkeypatch):
    monkeypatch.setattr(indexer, "GROUP_CHUNKS", 4)
    files = {f"mod_{n:02}.py": "".join(f"def f{n}_{k}(x):\n    return x * {k}\n\n" for k in range(3))
             for n in range(12)}
    root = write_repo(tmp_path / "many", files)

    class Killed(Exception):
        pass

    def kill_midway(done: int, total: int) -> None:
        if done > total // 2:
            raise Killed  # as if the process died here

    index = _index(root, encoder, checkpoint_every_s=0)
    with pytest.raises(Killed):
        index.update(progress=kill_midway)
    reopened = _index(root, encoder)  # the next process
    kept = set(reopened.snapshot.files)
    assert 0 < len(kept) < len(files)
    assert {c.path for c in reopened.snapshot.chunks} == kept  # whole files, nothing half-done
    assert all(len([c for c in reopened.snapshot.chunks if c.path == p]) == 3 for p in kept)
    encoder.encoded.clear()
    stats = reopened.update()
    assert stats.embedded_chunks == 3 * (len(files) - len(kept)) and stats.chunks == 3 * len(files)
    fresh = _index(write_repo(tmp_path / "fresh", files), FakeEncoder())
    fresh.update()
    np.testing.assert_allclose(np.asarray(reopened.snapshot.vectors), np.asarray(fresh.snapshot.vectors))


def test_a_cap_on_padded_tokens_batches_short_texts_together_and_long_ones_alone():
    import numpy as np

    from retrieval.encoder import load_encoder

    encoder = load_encoder(threads=1)
    texts = ["def f(x):\n    return x * 2\n" * 20, "area of circle", "total of items", "def g(): pass"]
    whole = encoder.encode(texts, 64)
    batches = []
    encoder.batch_tokens = 64

    def run_batch(encode_batch):
        rows = encode_batch()
        batches.append(len(rows))
        return rows

    capped = encoder.encode(texts, 64, None, run_batch)
    assert batches == [1, 3]  # the long text alone (longest first), the three short ones together
    assert np.allclose(whole, capped, atol=1e-5)
