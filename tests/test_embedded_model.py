"""A handful of FIM holes on the real embedded Qwen2.5-Coder-0.5B model."""

import json
import subprocess

import pytest

from completion import CompletionEngine, CompletionRequest, EngineSettings
from tests.scripts import console_script

pytestmark = pytest.mark.embedded


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


@pytest.fixture(scope="module")
def engine(embedded_loaded):
    return CompletionEngine(embedded_loaded, EngineSettings(max_new_tokens=48))


def _complete(engine, document: str, language: str, path: str):
    cursor = document.index("<CURSOR>")
    text = document.replace("<CURSOR>", "")
    return engine.complete(CompletionRequest(text, cursor, language, path, "demo")), text, cursor


def test_family_and_markers(engine):
    assert engine.fim.template.family == "qwen2.5-coder"


def test_mid_line_finishes_the_line(engine):
    doc = "import math\n\n\ndef area_of_circle(radius):\n    return math.pi * <CURSOR>\n"
    result, _, _ = _complete(engine, doc, "python", "geometry.py")
    assert not result.multiline
    assert result.text.strip() and "\n" not in result.text
    assert "radius" in result.text


def test_does_not_repeat_the_rest_of_the_line(engine):
    doc = (
        "import os\n\n\ndef config_path(name):\n"
        '    return os.path.join(os.path.expanduser("~"), <CURSOR>)\n'
    )
    result, _, _ = _complete(engine, doc, "python", "paths.py")
    assert result.text.strip() and "\n" not in result.text
    assert not result.text.endswith(")")


def test_block_body_stops_at_dedent(engine):
    doc = "def is_prime(n):\n    <CURSOR>\n\n\nprint(is_prime(7))\n"
    result, _, _ = _complete(engine, doc, "python", "primes.py")
    assert result.multiline and result.text.strip()
    later_lines = result.text.split("\n")[1:]
    assert all(not line.strip() or _indent(line) >= 4 for line in later_lines), result.text
    assert "print(is_prime(7))" not in result.text
    assert "return" in result.text


def test_method_body_does_not_run_into_the_next_method(engine):
    doc = (
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
        "    def push(self, item):\n        <CURSOR>\n\n"
        "    def pop(self):\n        return self.items.pop()\n"
    )
    result, _, _ = _complete(engine, doc, "python", "stack.py")
    assert result.multiline and "def pop" not in result.text
    assert "self.items" in result.text


def test_javascript_block_stops_before_the_suffix(engine):
    doc = (
        "function sum(values) {\n  let total = 0;\n  <CURSOR>\n  return total;\n}\n"
        "\nconsole.log(sum([1, 2, 3]));\n"
    )
    result, _, _ = _complete(engine, doc, "javascript", "sum.js")
    assert result.multiline and result.text.strip()
    assert "return total;" not in result.text
    assert not result.text.rstrip().endswith("}")  # the suffix already closes the function


def test_readme_run_command(tmp_path):
    """`codeassist complete FILE:LINE:COL --json` on the embedded default model."""
    source = tmp_path / "circle.py"
    source.write_text("import math\n\n\ndef area_of_circle(radius):\n    return math.pi * \n")
    result = subprocess.run(
        [console_script("codeassist"), "complete", f"{source}:5:22", "--json"], capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"] == "qwen2.5-coder-0.5b"
    assert data["text"].strip() and "\n" not in data["text"]
    assert data["timings"]["prompt_ms"] > 0
