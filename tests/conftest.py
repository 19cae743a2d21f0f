from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny_models import FAMILIES, build_tiny_model

TINY_ARCH_FAMILIES = ["qwen2.5-coder", "deepseek-coder", "starcoder"]
# The lossless/KV-reuse/healing tests also run on a GPU: CODEASSIST_TEST_DEVICE=cuda.
TEST_DEVICE = os.environ.get("CODEASSIST_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """family -> directory of a saved tiny model (built once per session)."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_model(family, tmp_path_factory.mktemp(family.replace(".", "_")))
        return built[family]

    return get


@pytest.fixture(scope="session")
def tiny_tokenizer_of():
    from tests.tiny_models import tiny_tokenizer

    cache = {}

    def get(family: str):
        if family not in cache:
            special, eos, _ = FAMILIES[family]
            cache[family] = tiny_tokenizer(special, eos)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def embedded_loaded():
    """The real embedded default model, loaded once (converted on first use). Elsewhere (a GPU
    machine without the chunk packages) CODEASSIST_TEST_MODEL names the same model's GGUF file."""
    from completion import load_model

    return load_model(os.environ.get("CODEASSIST_TEST_MODEL", "qwen2.5-coder-0.5b"),
                      device=TEST_DEVICE if TEST_DEVICE != "cpu" else "auto")


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_terminal_summary(terminalreporter):
    """Say which CPU kernel builds this machine could not run: their tests were skipped."""
    from tests.kernel_builds import builds_not_run

    for line in builds_not_run():
        terminalreporter.write_line(f"kernel builds not tested here: {line}")
