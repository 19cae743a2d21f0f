"""Query vectors in numpy (retrieval/numpy_bert.py) against sentence-transformers' on the real
default encoder, and a search process that never imports torch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.encoder import load_encoder, resolve_encoder
from retrieval.numpy_bert import NumpyBertEncoder
from tests.retrieval_helpers import write_repo

QUERIES = ["is a point inside the circle", "Parse a JSON document and return Python objects", "",
           "naïve Unicode ΣΔ 日本語 and emoji 🙂", "def __init__(self, radius): return x ** 2", "word " * 400]


@pytest.fixture(scope="module")
def both():
    return NumpyBertEncoder.load(resolve_encoder(None)), load_encoder()


@pytest.mark.parametrize("query", QUERIES)
def test_numpy_query_vectors_equal_sentence_transformers(both, query):
    fast, full = both
    ours, theirs = fast.encode_query(query), full.encode_query(query)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape == (384,)
    assert np.abs(ours - theirs).max() < 1e-5


def test_other_encoders_are_declined(tmp_path):
    folder = tmp_path / "encoder"
    folder.mkdir()
    assert NumpyBertEncoder.load(folder) is None  # no files
    source = Path(resolve_encoder(None))
    for name in ("modules.json", "config.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                 "model.safetensors", "tokenizer.json", "1_Pooling"):
        (folder / name).symlink_to(source / name)
    assert NumpyBertEncoder.load(folder) is not None  # the default's files
    (folder / "1_Pooling").unlink()
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert NumpyBertEncoder.load(folder) is None  # CLS pooling: not this shape
    (folder / "1_Pooling" / "config.json").unlink()
    (folder / "1_Pooling").rmdir()
    (folder / "1_Pooling").symlink_to(source / "1_Pooling")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    assert NumpyBertEncoder.load(folder) is None  # damaged weights: declined, not raised


def test_a_search_over_an_existing_index_imports_no_torch(tmp_path):
    from retrieval import CodeIndex, IndexConfig

    root = write_repo(tmp_path / "repo")
    config = IndexConfig(location="workspace")
    CodeIndex(root, config).update()
    script = (
        "import sys\n"
        "from retrieval import CodeIndex, IndexConfig\n"
        f"index = CodeIndex({str(root)!r}, IndexConfig(location='workspace'))\n"
        "index.update()\n"  # nothing changed: no document to encode
        "hits = index.search('area of a circle', 2)\n"
        "print([h.qualified_name for h in hits])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    names, imported = result.stdout.strip().splitlines()
    assert imported == "[]"
    assert names.startswith("['Circle.area'")
