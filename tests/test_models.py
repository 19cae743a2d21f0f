"""Model resolution and embedded-model assembly, on real files in temporary directories."""

import hashlib
import os

import pytest
import torch

from completion.embedded import (
    EmbeddedModel,
    ModelUnavailableError,
    assemble,
    chunk_files,
    ensure_cached,
    ensure_gguf,
    is_cached,
)
from completion.models import load_model, resolve_device, resolve_dtype


def _fake_model(tmp_path, monkeypatch, chunks: list[bytes], sha: str | None = None, size=None):
    """Chunk packages named like the real ones (partNN.bin in <package>/data/) on sys.path."""
    site = tmp_path / "site"
    names = []
    for index, data in enumerate(chunks, start=1):
        package = site / f"fake_chunks_{tmp_path.name}_part{index}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{index:02d}.bin").write_bytes(data)
        names.append(package.name)
    monkeypatch.syspath_prepend(str(site))
    blob = b"".join(chunks)
    return EmbeddedModel(
        name="fake-model", description="test", packages=tuple(names),
        size=len(blob) if size is None else size,
        sha256=sha or hashlib.sha256(blob).hexdigest(), install_hint="pip install fake",
    )


def test_chunks_sorted_by_number_not_text(tmp_path, monkeypatch):
    chunks = [bytes([i]) * 10 for i in range(12)]
    model = _fake_model(tmp_path, monkeypatch, chunks)
    names = [p.name for p in chunk_files(model)]
    assert names == [f"part{i:02d}.bin" for i in range(1, 13)]
    out = assemble(model, tmp_path / "model.gguf")
    assert out.read_bytes() == b"".join(chunks)


def test_hash_mismatch_never_leaves_a_file(tmp_path, monkeypatch):
    model = _fake_model(tmp_path, monkeypatch, [b"a" * 100, b"b" * 50], sha="0" * 64)
    with pytest.raises(ModelUnavailableError, match="SHA-256 mismatch"):
        assemble(model, tmp_path / "model.gguf")
    assert not (tmp_path / "model.gguf").exists()
    assert not list(tmp_path.glob("*.partial"))


def test_size_mismatch_is_reported_before_hashing(tmp_path, monkeypatch):
    model = _fake_model(tmp_path, monkeypatch, [b"a" * 100], size=101)
    with pytest.raises(ModelUnavailableError, match="hold 100 bytes, expected 101"):
        assemble(model, tmp_path / "model.gguf")


def test_missing_chunk_package_names_the_install_command(tmp_path, monkeypatch):
    model = _fake_model(tmp_path, monkeypatch, [b"a"])
    broken = EmbeddedModel(**{**model.__dict__, "packages": (*model.packages, "no_such_part_pkg")})
    with pytest.raises(ModelUnavailableError, match="missing no_such_part_pkg.*pip install fake"):
        chunk_files(broken)


def test_corrupt_chunks_never_reach_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEASSIST_HOME", str(tmp_path / "home"))
    model = _fake_model(tmp_path, monkeypatch, [b"not a gguf"], sha="1" * 64)
    with pytest.raises(ModelUnavailableError, match="SHA-256 mismatch"):
        ensure_cached(model, "float32")
    assert not is_cached(model, "float32")
    leftovers = [p for p in (tmp_path / "home").rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert leftovers == []


def test_cache_marker_must_match_the_pinned_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEASSIST_HOME", str(tmp_path / "home"))
    model = _fake_model(tmp_path, monkeypatch, [b"x"])
    directory = tmp_path / "home" / "models" / "fake-model" / "float32"
    directory.mkdir(parents=True)
    (directory / "codeassist-cache.json").write_text('{"sha256": "other", "format": 1}')
    assert not is_cached(model, "float32")
    (directory / "codeassist-cache.json").write_text("{truncated")
    assert not is_cached(model, "float32")


def test_an_assembled_file_changed_on_disk_is_assembled_and_checked_again(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEASSIST_HOME", str(tmp_path / "home"))
    chunks = [b"GGUF" + b"a" * 60, b"b" * 36]
    model = _fake_model(tmp_path, monkeypatch, chunks)
    path = ensure_gguf(model)
    assert path.read_bytes() == b"".join(chunks)
    recorded = path.stat().st_mtime_ns
    path.write_bytes(b"GGUF" + b"c" * 96)  # same size, other weights
    os.utime(path, ns=(recorded + 10**7, recorded + 10**7))  # file times are coarse: a write within a tick keeps them
    assert ensure_gguf(model).read_bytes() == b"".join(chunks)


def test_extra_names_are_in_normalized_form():
    # pip before 23.3 compares the extra as typed with the normalized name in the metadata
    import re
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    for extra in project["optional-dependencies"]:
        assert extra == re.sub(r"[-_.]+", "-", extra).lower(), extra
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for typed in re.findall(r'pip install [^\n`]*\[([^\]]+)\]', readme):
        for extra in typed.split(","):
            assert extra.strip() in project["optional-dependencies"], extra


def test_unknown_model_lists_what_is_valid():
    with pytest.raises(ModelUnavailableError, match="qwen2.5-coder-0.5b.*\\.gguf file"):
        load_model("definitely-not-a-model")


def test_missing_gguf_and_non_model_directory(tmp_path):
    with pytest.raises(ModelUnavailableError, match="GGUF file not found"):
        load_model(str(tmp_path / "nothing.gguf"))
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        load_model(str(tmp_path))


def test_pickled_weights_are_refused(tiny_model_dir, tmp_path):
    """A directory with only a pickle checkpoint is not loaded."""
    import shutil

    source = tiny_model_dir("qwen2.5-coder")
    target = tmp_path / "pickled"
    shutil.copytree(source, target)
    state = load_model(str(source), device="cpu", dtype="fp32").model.state_dict()
    (target / "model.safetensors").unlink()
    torch.save(state, target / "pytorch_model.bin")
    with pytest.raises(ModelUnavailableError, match="cannot load"):
        load_model(str(target), device="cpu", dtype="fp32")


def test_local_directory_loads(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir("starcoder")), device="cpu", dtype="fp32")
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_device_and_dtype_choices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ValueError, match="valid: auto, cpu, cuda, mps"):
        resolve_device("tpu")
    assert resolve_dtype("fp32", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) in {torch.float32, torch.bfloat16}
    with pytest.raises(ValueError, match="valid: auto, packed, bf16, fp16, fp32"):
        resolve_dtype("int3", torch.device("cpu"))


def test_packed_is_refused_where_the_model_is_not_a_gguf_file(tiny_model_dir):
    with pytest.raises(ModelUnavailableError, match="only GGUF files"):
        load_model(str(tiny_model_dir("qwen2.5-coder")), dtype="packed")
