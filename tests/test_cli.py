"""The `codeassist` command as a user runs it: real processes, real files."""

import json
import subprocess
from dataclasses import dataclass

import pytest

from codeassist.cli import main
from codeassist.sources import offset_of, parse_location, read_source
from tests.scripts import console_script


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys):
    """Run `codeassist ARGS` in this process (the same code path as the console script)."""

    def run(*args):
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_process(*args):
    return subprocess.run([console_script("codeassist"), *args], capture_output=True, text=True, timeout=300)


def assert_clean_error(result, message):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("codeassist: error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.fixture
def source_file(tmp_path):
    path = tmp_path / "demo.py"
    path.write_text("def add(a, b):\n    return a + b\n")
    return path


def test_bad_inputs_give_one_clear_line(run_cli, tmp_path, source_file):
    assert_clean_error(run_cli("complete", f"{tmp_path}/missing.py:1:1"), "no such file")
    assert_clean_error(run_cli("complete", f"{source_file}:9:1"), "line 9 is out of range")
    assert_clean_error(run_cli("complete", f"{source_file}:1:99"), "column 99 is out of range")
    assert_clean_error(run_cli("complete", f"{source_file}:0:1"), "line 0 is out of range")
    assert_clean_error(run_cli("complete", f"{source_file}:x:1"), "FILE:LINE:COL")
    binary = tmp_path / "blob.py"
    binary.write_bytes(b"\x00\x01\x02print()")
    assert_clean_error(run_cli("complete", f"{binary}:1:1"), "binary file")
    latin = tmp_path / "latin.py"
    latin.write_bytes(b"x = '\xe9'\n")
    assert_clean_error(run_cli("complete", f"{latin}:1:1"), "not UTF-8")
    assert_clean_error(run_cli("complete", f"{tmp_path}:1:1"), "not a regular file")
    assert_clean_error(
        run_cli("complete", f"{source_file}:1:1", "--model", "no-such-model"), "unknown model"
    )
    assert_clean_error(
        run_cli("complete", f"{source_file}:1:1", "--device", "tpu"), "unknown device"
    )


def test_complete_json_with_a_local_model(tiny_model_dir, source_file):
    model = tiny_model_dir("qwen2.5-coder")
    result = run_process(
        "complete", f"{source_file}:2:16", "--model", str(model), "--json", "--max-tokens", "4",
        "--dtype", "fp32",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) >= {"text", "tokens", "prompt_tokens", "timings", "model", "stop_reason"}
    assert set(data["timings"]) == {"load_ms", "prompt_ms", "decode_ms", "stages_ms"}
    stages = data["timings"]["stages_ms"]
    assert list(stages) == ["plan", "prompt", "encode", "decode", "finish"]  # in the order they ran
    assert all(ms >= 0 for ms in stages.values())
    assert sum(stages.values()) <= data["timings"]["prompt_ms"] + data["timings"]["decode_ms"] + 1
    assert 1 <= data["tokens"] <= 4 and data["model"] == str(model) and data["dtype"] == "float32"


def test_missing_file_from_the_console_script(tmp_path):
    assert_clean_error(run_process("complete", f"{tmp_path}/none.py:1:1"), "no such file")


def test_models_lists_embedded_models(run_cli):
    result = run_cli("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["qwen2.5-coder-0.5b"]["installed"] and "qwen2.5-coder-1.5b" in rows
    # Without a CUDA GPU the 0.5B is the default, and the listing says why.
    assert rows["qwen2.5-coder-0.5b"]["default"] and "CPU" in rows["qwen2.5-coder-0.5b"]["why"]
    assert not rows["qwen2.5-coder-1.5b"]["default"]
    table = run_cli("models", "--device", "cpu")
    assert "qwen2.5-coder-0.5b *" in table.stdout and "default here (--model auto, --device cpu): CPU" in table.stdout


def test_location_parsing_is_one_based(tmp_path):
    assert parse_location("a/b.py:3:7") == (tmp_path.__class__("a/b.py"), 3, 7)
    assert parse_location(r"C:\src\x.py:1:2")[1:] == (1, 2)
    assert parse_location("x.py:4", need_column=False)[1:] == (4, 1)
    text = "ab\r\ncd\n"
    assert offset_of(text, 1, 1) == 0
    assert offset_of(text, 1, 3) == 2  # one past the end of "ab"
    assert offset_of(text, 2, 2) == text.index("d")
    with pytest.raises(ValueError, match="column 4"):
        offset_of(text, 1, 4)


def test_read_source_keeps_unicode(tmp_path):
    path = tmp_path / "u.py"
    path.write_text("s = '你好 🙂'\n", encoding="utf-8")
    assert read_source(path) == "s = '你好 🙂'\n"


def test_complete_has_no_time_budget_unless_given_and_explains_an_empty_answer():
    from codeassist.cli import _build_parser, why_empty

    assert _build_parser().parse_args(["complete", "f.py:1:1"]).time_budget_ms is None
    assert why_empty("end_of_line", 1) == "the model's first token ends the line (stop reason end_of_line, 1 tokens generated)"
