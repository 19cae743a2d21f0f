"""The session bench's peer client: llama.vscode's `/infill` window, and requests that a
newer key aborts, against a real llama-server (built by .ci/install_llama_server.sh)."""

import pytest

from codeassist.bench.llama_server import DEFAULT_BINARY, llama_server, llama_server_binary
from codeassist.bench.session_llama import N_PREFIX_LINES, N_SUFFIX_LINES, SERVER_OPTIONS, InfillCall, infill_body
from completion.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, ensure_gguf

LINES = [f"value_{number} = {number} * 2" for number in range(400)]


def test_the_window_is_llama_vscodes():
    body = infill_body(LINES, 300, 7)
    assert body["input_prefix"] == "".join(line + "\n" for line in LINES[300 - N_PREFIX_LINES:300])
    assert body["prompt"] == "value_3"
    assert body["input_suffix"] == "00 = 300 * 2" + "".join("\n" + line for line in LINES[301:301 + N_SUFFIX_LINES])
    assert body["cache_prompt"] and body["n_predict"] == 128
    top = infill_body(LINES[:3], 0, 0)  # a cursor at the top of a short file
    assert top["input_prefix"] == "" and top["prompt"] == "" and top["input_suffix"] == "\n".join(LINES[:3])


@pytest.mark.embedded
def test_a_newer_key_aborts_the_open_request(tmp_path):
    binary = llama_server_binary()
    if binary is None:
        pytest.skip(f"llama-server not built ({DEFAULT_BINARY} missing): run .ci/install_llama_server.sh")
    lines = [f"def function_{number}(x):\n    return x + {number}\n" for number in range(40)]
    lines = "".join(lines).split("\n")
    with llama_server(binary, ensure_gguf(EMBEDDED_MODELS[DEFAULT_MODEL]), tmp_path / "llama-server.log",
                      extra=SERVER_OPTIONS) as url:
        first = InfillCall(url, infill_body(lines, 60, 11), 300)
        first.abort()
        second = InfillCall(url, infill_body(lines, 61, 11), 300)
        first.join(300)
        second.join(300)
    assert not first.answered() and first.text is None
    assert second.answered() and second.text


def test_rows_and_summary_of_a_visit():
    from codeassist.bench.session import LLAMA, _answer_rows, _summary

    line = "    return value + 1"
    # keys 1-3 typed at 10.0, 10.15, 10.3; key 1 cancelled, keys 2 and 3 answered
    rows = _answer_rows("default", 0, 4, line, 10.0, [(1, 6, 10.15, 11.0, "turn value + 1\nmore"),
                                                      (2, 7, 10.3, 11.5, "wrong")])
    assert [(r["key"], r["ms"], r["first_key_ms"], r["completes"]) for r in rows] == [
        (2, 850.0, 1000.0, True), (3, 1200.0, None, False)]
    rows += _answer_rows(LLAMA, 0, 4, line, 10.0, [(0, 5, 10.0, 14.0, "eturn value + 1")])
    summary = _summary(rows)
    assert summary["default_first_key_p50_ms"] == 1000.0 and summary[f"{LLAMA}_first_key_p50_ms"] == 4000.0
    assert summary[f"first_key_default_over_{LLAMA}"] == 0.25 and summary["default_completes_line_share"] == 0.5
