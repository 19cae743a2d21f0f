"""Our top-level `kernels` package must not pass for the hub library transformers probes for."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_transformers_does_not_take_our_kernels_for_the_hub_library():
    probe = (
        "import importlib.util, kernels\n"
        "from transformers.utils import import_utils as u\n"
        "print(importlib.util.find_spec('kernels').origin)\n"
        "print(u.is_kernels_available())\n"
        "from transformers.integrations import hub_kernels\n"
        "print(hub_kernels.lazy_load_kernel('causal-conv1d'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/"
    ).stdout.split("\n")
    assert Path(out[0]).resolve() == (ROOT / "kernels" / "__init__.py").resolve()
    assert out[1] == "False"
    assert out[2] == "None"  # no hub kernel is looked up through our package


def test_top_level_packages_are_importable():
    for name in ("codeassist", "completion", "lsp_server", "retrieval", "kernels"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and Path(spec.origin).resolve().is_relative_to(ROOT)


def test_lower_layers_never_import_lsp_libraries():
    for package in ("completion", "retrieval", "kernels"):
        for source in (ROOT / package).rglob("*.py"):
            text = source.read_text()
            assert "pygls" not in text and "lsprotocol" not in text, source


def test_the_numbers_in_the_docs_are_those_of_the_stored_runs():
    from codeassist.bench.headlines import PARTS, ROOT, rewritten

    for name, parts in PARTS.items():
        text = (ROOT / name).read_text()
        assert rewritten(text, parts) == text, f"{name}: run python -m codeassist.bench.headlines"
