"""Hover summaries: the prompt (chat template or plain), cancellation, the content-hash cache,
and (embedded model) a real summary of a real function."""

import itertools
import json

import pytest

from completion import load_model
from completion.preemption import repeated_layers
from completion.summarize import SYSTEM_PROMPT, Summarizer, SummaryRequest
from completion.summary_cache import SummaryCache

REQUEST = SummaryRequest("add", "function", "def add(a, b):\n    return a + b\n", "")
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir("qwen2.5-coder")), device="cpu", dtype="fp32")


def test_plain_prompt_without_a_chat_template_and_a_nonempty_summary(tiny):
    summarizer = Summarizer(tiny, max_new_tokens=8)
    prompt = tiny.tokenizer.decode(summarizer.prompt_ids(REQUEST))
    assert prompt.startswith(SYSTEM_PROMPT) and "def add(a, b)" in prompt
    summary = summarizer.summarize(REQUEST)
    assert summary is not None and summary.text and summary.tokens <= 8
    assert summary.model == tiny.name


def test_chat_template_when_the_tokenizer_has_one(tiny):
    tiny.tokenizer.chat_template = CHAT_TEMPLATE
    try:
        request = SummaryRequest("Point.norm", "method", "def norm(self):\n    return 1\n",
                                 "class Point:")
        prompt = tiny.tokenizer.decode(Summarizer(tiny).prompt_ids(request))
    finally:
        tiny.tokenizer.chat_template = None
    assert prompt.startswith("<|im_start|>system\n" + SYSTEM_PROMPT)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "class Point:" in prompt and "`Point.norm`" in prompt


def test_cancelled_generation_returns_none_and_stops_early(tiny):
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 3

    assert Summarizer(tiny).summarize(REQUEST, cancelled) is None
    assert len(calls) == 4  # checked between prefill chunks and tokens, stopped at once


def test_a_stopped_summary_goes_on_where_it_stopped(tiny):
    # Stopped again and again, before passes and between layers (the pass in flight is
    # dropped and its layers' keys cropped), the summary still ends as an uninterrupted one.
    summarizer = Summarizer(tiny, max_new_tokens=8)
    whole = summarizer.summarize(REQUEST)
    period = len(repeated_layers(tiny.model)) + 4  # one whole pass, then a stop at a later layer
    calls = itertools.count(1)
    run, turns, summary = summarizer.start(REQUEST), 0, None
    while summary is None and turns < 100:
        summary = summarizer.advance(run, lambda: next(calls) % period == 0)
        turns += 1
    assert summary is not None and turns > 3
    assert (summary.text, summary.tokens, summary.prompt_tokens) == (whole.text, whole.tokens, whole.prompt_tokens)


def test_key_depends_on_model_code_and_context():
    base = REQUEST.key("m")
    assert base == SummaryRequest("add", "function", REQUEST.code, "").key("m")
    assert base != REQUEST.key("other-model")
    assert base != SummaryRequest("add", "function", REQUEST.code + "#", "").key("m")
    assert base != SummaryRequest("add", "function", REQUEST.code, "caller").key("m")


def test_cache_persists_atomically_and_survives_a_corrupt_file(tmp_path):
    path = tmp_path / "index.summaries.json"
    cache = SummaryCache(path)
    assert cache.get("k") is None
    cache.put("k", "Adds two numbers.")
    assert SummaryCache(path).get("k") == "Adds two numbers."
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["index.summaries.json"]
    assert json.loads(path.read_text())["version"] == 1
    assert cache.stats() == {"entries": 1, "hits": 0, "misses": 1}
    path.write_text("{not json")
    assert len(SummaryCache(path)) == 0
    assert SummaryCache(None).get("k") is None  # in memory only


def test_two_writers_keep_each_others_summaries(tmp_path):
    # The server and `codeassist summarize` both hold the cache open.
    path = tmp_path / "index.summaries.json"
    server, command = SummaryCache(path), SummaryCache(path)
    command.put("from-command", "Written by the command.")
    server.put("from-server", "Written by the server.")
    reopened = SummaryCache(path)
    assert reopened.get("from-command") == "Written by the command."
    assert reopened.get("from-server") == "Written by the server."


def test_a_killed_write_loses_nothing_and_its_temporary_file_goes(tmp_path, monkeypatch):
    import os

    path = tmp_path / "index.summaries.json"
    cache = SummaryCache(path)
    cache.put("kept", "Committed before.")
    leftover = tmp_path / ".index.summaries.json.0badf00d.tmp"  # what a kill -9 mid-write leaves
    leftover.write_text('{"version": 1, "summ')

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    cache.put("new", "Not written.")  # logged, not raised
    monkeypatch.undo()
    assert SummaryCache(path).get("kept") == "Committed before."
    assert not list(tmp_path.glob("*.tmp"))
    cache.put("later", "Written.")
    assert SummaryCache(path).get("new") == "Not written."


@pytest.mark.embedded
def test_embedded_model_summarizes_a_real_function(embedded_loaded):
    code = ("def mean(values):\n    \"\"\"Arithmetic mean.\"\"\"\n"
            "    if not values:\n        raise ValueError('mean of empty data')\n"
            "    return sum(values) / len(values)\n")
    summary = Summarizer(embedded_loaded).summarize(SummaryRequest("mean", "function", code))
    assert summary is not None
    words = summary.text.lower()
    assert "average" in words or "mean" in words
    assert len(summary.text) < 400


def test_cli_summarize_prints_signature_docstring_and_summary(tmp_path, monkeypatch, capsys,
                                                              tiny_model_dir):
    from codeassist.cli import main

    monkeypatch.setenv("CODEASSIST_HOME", str(tmp_path / "home"))
    source = tmp_path / "proj" / "shapes.py"
    source.parent.mkdir()
    source.write_text('class Square:\n    def area(self, side):\n        """Side squared."""\n'
                      "        return side * side\n")
    options = ["--model", str(tiny_model_dir("qwen2.5-coder")), "--device", "cpu", "--dtype", "fp32",
               "--max-tokens", "4", "--json"]
    assert main(["summarize", f"{source}:4", *options]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["name"], first["kind"], first["line"]) == ("Square.area", "method", 2)
    assert first["signature"] == "def area(self, side)" and first["docstring"] == "Side squared."
    assert first["summary"] and not first["cached"]
    assert main(["summarize", f"{source}:2:9", *options]) == 0  # COL on the name
    second = json.loads(capsys.readouterr().out)
    assert second["cached"] and second["summary"] == first["summary"]
    assert main(["summarize", f"{source}:9", *options]) == 1
    assert capsys.readouterr().err.startswith("codeassist: error: line 9 is out of range")


def test_kill_9_during_cache_writes_never_loses_a_committed_summary(tmp_path):
    """A real process writing summaries, killed at random moments: every summary whose write
    returned is in the cache when it is opened again, and no temporary file is left."""
    import random
    import subprocess
    import sys
    import time

    path = tmp_path / "index.summaries.json"
    committed = tmp_path / "committed.txt"  # the writer appends a key once its put() returned
    writer = (
        "import sys\n"
        "from completion.summary_cache import SummaryCache\n"
        "cache = SummaryCache(sys.argv[1])\n"
        "with open(sys.argv[2], 'a') as log:\n"
        "    for n in range(100_000):\n"
        "        key = f'{sys.argv[3]}-{n}'\n"
        "        cache.put(key, 'A summary of ' + key + '. ' * 200)\n"
        "        log.write(key + '\\n'); log.flush()\n"
    )
    delays = random.Random(0)
    for run in range(4):
        process = subprocess.Popen([sys.executable, "-c", writer, str(path), str(committed), f"run{run}"])
        time.sleep(delays.uniform(4.0, 7.0))  # interpreter and imports start-up, then writes
        process.kill()
        process.wait(30)
        cache = SummaryCache(path)
        for key in committed.read_text().split() if committed.exists() else []:
            assert cache.get(key) is not None, key
    assert len(SummaryCache(path)) >= 4  # the writers got going
    SummaryCache(path).put("after", "Cleans up.")
    assert not list(tmp_path.glob("*.tmp"))
