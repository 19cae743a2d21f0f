"""Summaries in the index: attached to their chunks, searched, persisted, and dropped with
the code they describe."""

import json

import numpy as np
import pytest

from retrieval import CodeIndex, DefinitionSummary, IndexConfig
from retrieval import store as store_module
from retrieval.indexer import text_sha
from tests.retrieval_helpers import FakeEncoder, write_repo

SHAPES = "geometry/shapes.py"


@pytest.fixture
def repo(tmp_path):
    return write_repo(tmp_path / "repo")


def _index(repo, encoder=None):
    return CodeIndex(repo, IndexConfig(location="workspace"), encoder=encoder or FakeEncoder())


def _summary(repo, name, text, line=1, path=SHAPES):
    return DefinitionSummary(path, name, line, text_sha((repo / path).read_text()), text)


def _row(index, name):
    return next(r for r, c in enumerate(index.snapshot.chunks) if c.qualified_name == name)


def test_a_summary_joins_its_chunks_terms_and_vector_and_survives_a_restart(repo):
    index = _index(repo)
    index.update()
    assert index.summary_coverage() == (0, 6)  # four in shapes.py, ParseHeader, renderPage
    assert not index.search("trigonometry wizardry", k=3, mode="bm25")
    query = "trigonometry wizardry for disks"

    def dense_score(index) -> float:
        return next(h.score for h in index.search(query, k=20, mode="dense") if h.qualified_name == "Circle.area")

    before = dense_score(index)
    attached = index.add_summaries([_summary(repo, "Circle.area", "Trigonometry wizardry for disks.", 8)])
    assert attached == 1 and index.summary_coverage() == (1, 6)
    assert index.unsummarized(SHAPES) == {"Circle", "Circle.__init__", "perimeter_of_square"}
    assert index.search("trigonometry wizardry", k=3, mode="bm25")[0].qualified_name == "Circle.area"
    # The summary is the query: its cosine is 1, so the chunk's dense score gains w * (1 - code cosine).
    assert dense_score(index) > before + store_module.SUMMARY_WEIGHT * 0.5
    row = _row(index, "Circle.area")
    expected = (1 - store_module.SUMMARY_WEIGHT) * index.snapshot.vectors[row] \
        + store_module.SUMMARY_WEIGHT * FakeEncoder()._vector("Trigonometry wizardry for disks.")
    assert np.allclose(index.snapshot.search_vectors[row], expected, atol=1e-6)

    reopened = _index(repo)
    assert reopened.snapshot.summaries[_row(reopened, "Circle.area")] == "Trigonometry wizardry for disks."
    assert dense_score(reopened) == pytest.approx(dense_score(index))


def test_an_edit_drops_the_summary_of_the_changed_definition_only(repo):
    index = _index(repo)
    index.update()
    index.add_summaries([_summary(repo, "Circle.area", "Area of a disk.", 8),
                         _summary(repo, "perimeter_of_square", "Perimeter of a square.", 12)])
    path = repo / SHAPES
    path.write_text(path.read_text().replace("4 * side", "side * 4"))
    index.update()
    summaries = {c.qualified_name: s for c, s in zip(index.snapshot.chunks, index.snapshot.summaries) if s}
    assert summaries == {"Circle.area": "Area of a disk."}
    assert not index.search("perimeter square", k=5, mode="bm25") or all(
        "perimeter" not in s for s in index.snapshot.summaries)


def test_a_moved_definition_keeps_its_summary(repo):
    index = _index(repo)
    index.update()
    index.add_summaries([_summary(repo, "perimeter_of_square", "Perimeter of a square.", 12)])
    path = repo / SHAPES
    path.write_text("# a comment that moves every line down\n\n" + path.read_text())
    encoder = index.encoder
    encoder.encoded.clear()
    index.update()
    row = _row(index, "perimeter_of_square")
    assert index.snapshot.summaries[row] == "Perimeter of a square."
    # Only the module chunk (where the comment went) is embedded again; no summary is.
    assert len(encoder.encoded) == 1 and encoder.encoded[0].startswith("module\n# a comment")


def test_a_summary_of_text_the_index_does_not_hold_is_not_attached(repo):
    index = _index(repo)
    index.update()
    stale = DefinitionSummary(SHAPES, "Circle.area", 8, text_sha("some other text"), "Area.")
    unknown = _summary(repo, "Circle.volume", "Volume.")
    unindexed = _summary(repo, "anything", "Something.", path="README.md")
    assert index.add_summaries([stale, unknown, unindexed]) == 0
    assert index.summary_coverage() == (0, 6)


def test_an_index_without_summaries_on_disk_is_read_and_gains_them(repo):
    index = _index(repo)
    index.update()
    folder = index.folder
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format"] = 2  # what indexes without summaries hold
    del manifest["summary_vectors_sha256"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / manifest["generation"] / "summary_vectors.npy").unlink()
    reopened = _index(repo)
    assert len(reopened.snapshot) == len(index.snapshot) and reopened.summary_coverage() == (0, 6)
    assert reopened.add_summaries([_summary(repo, "Circle", "A round shape.", 4)]) == 1
    assert json.loads((folder / "manifest.json").read_text())["format"] == store_module.FORMAT_VERSION


def test_damaged_summary_vectors_rebuild_the_index(repo, caplog):
    index = _index(repo)
    index.update()
    index.add_summaries([_summary(repo, "Circle", "A round shape.", 4)])
    generation = json.loads((index.folder / "manifest.json").read_text())["generation"]
    vectors = index.folder / generation / "summary_vectors.npy"
    vectors.write_bytes(vectors.read_bytes()[:-8] + b"\xff" * 8)
    reopened = _index(repo)
    assert len(reopened.snapshot) == 0  # unreadable: rebuilt from scratch at the next update
    assert "summary_vectors.npy does not match its checksum" in caplog.text
    reopened.update()
    assert reopened.summary_coverage() == (0, 6)


def test_summaries_find_what_the_code_does_not_say_with_the_real_encoder(tmp_path):
    """Expansion on and off over a real index: a query in words the code never uses."""
    files = {
        "billing.py": ("def apply(order, table):\n    total = 0\n    for line in order:\n"
                       "        total += line.qty * table[line.sku]\n    return total\n"),
        "shipping.py": ("def route(parcel, hubs):\n    best = min(hubs, key=lambda h: h.cost(parcel))\n"
                        "    return best.name\n"),
        "audit.py": ("def scan(entries):\n    return [e for e in entries if e.flag and not e.seen]\n"),
    }
    repo = write_repo(tmp_path / "repo", files)
    index = CodeIndex(repo, IndexConfig(location="workspace"))
    index.update()
    query = "compute the invoice amount from quantities and unit prices"
    without = [h.path for h in index.search(query, k=3, mode="hybrid")]
    index.add_summaries([
        _summary(repo, "apply", "Computes an invoice amount by multiplying each item's quantity by "
                 "its unit price and adding them up.", path="billing.py"),
        _summary(repo, "route", "Chooses the cheapest delivery hub for a parcel.", path="shipping.py"),
        _summary(repo, "scan", "Lists flagged entries nobody has reviewed yet.", path="audit.py"),
    ])
    with_summaries = index.search(query, k=3, mode="hybrid")
    assert with_summaries[0].path == "billing.py"
    scores = {h.path: h.score for h in with_summaries}
    assert scores["billing.py"] - max(s for p, s in scores.items() if p != "billing.py") > 0.1, (without, scores)
