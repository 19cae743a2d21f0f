"""bench quality's holes: cut from HumanEval's canonical solutions, checked by running the
problem's tests (the canonical middle passes, an empty one or a wrong one does not)."""

from codeassist.bench.quality import KINDS, cut_holes, load_problems, passes, summarize


def test_holes_are_reproducible_and_checked_by_running_the_tests():
    problems = load_problems()
    assert len(problems) == 164
    for kind in KINDS:
        holes = cut_holes(problems, 4, kind)
        assert holes == cut_holes(problems, 4, kind)  # the same seed, the same holes
        assert len({hole.task for hole in holes}) == 4
        for hole in holes:
            lines = hole.middle.split("\n")
            if kind != "random-span":
                assert len(lines) == 1 if kind == "single-line" else 2 <= len(lines) <= 4
                assert hole.before.split("\n")[-1] == " " * hole.indent  # the cursor after the indentation
            assert passes(hole, hole.middle)
            assert not passes(hole, "")
        assert not passes(holes[0], "raise SystemExit(1)")


def test_summary_per_kind_and_engine():
    rows = [{"kind": "single-line", "engine": "codeassist", "passes": True, "first_line_passes": True,
             "exact": False, "ms": 100.0, "empty": False, "leak": False},
            {"kind": "single-line", "engine": "codeassist", "passes": False, "first_line_passes": True,
             "exact": False, "ms": 300.0, "empty": False, "leak": True}]
    summary = summarize(rows)
    assert summary["single_line_codeassist_passes"] == 0.5
    assert summary["single_line_codeassist_first_line_passes"] == 1.0
    assert summary["single_line_codeassist_leaks"] == 1 and summary["single_line_codeassist_p50_ms"] == 200.0


def test_result_names_per_model():
    from codeassist.bench.quality import result_name

    assert result_name("qwen2.5-coder-0.5b") == "quality"
    assert result_name("qwen2.5-coder-1.5b") == "quality_1.5b"
    assert result_name("/models/My Coder.gguf") == "quality_My_Coder"


def test_llama_server_gets_the_window_the_engine_prompt_holds(tiny_model_dir):
    """bench context gives llama-server the prefix and suffix text of the engine's FIM prompt."""
    from codeassist.bench.context import _window
    from completion import CompletionEngine, EngineSettings, load_model

    engine = CompletionEngine(load_model(str(tiny_model_dir("qwen2.5-coder")), device="cpu", dtype="fp32"),
                              EngineSettings(max_prompt_tokens=64))
    prefix = "".join(f"line_{i} = {i}\n" for i in range(40)) + "total = line_"
    suffix = "\n" + "".join(f"after_{i} = {i}\n" for i in range(40))
    kept_prefix, kept_suffix = _window(engine, prefix, suffix)
    # whole lines nearest the cursor, within the budget (a quarter of it for the suffix)
    assert prefix.endswith(kept_prefix) and kept_prefix.endswith("line_39 = 39\ntotal = line_")
    assert suffix.startswith(kept_suffix) and kept_suffix.startswith("\nafter_0 = 0\n")
    assert len(kept_prefix) < len(prefix) and len(kept_suffix) < len(suffix)
    assert len(engine.encode([kept_prefix + kept_suffix])[0]) <= 64
