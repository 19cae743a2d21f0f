from lsp_server.settings import ServerSettings, merge_settings


def test_camel_case_keys_nested_or_flat():
    settings, problems = merge_settings(ServerSettings(), {"codeassist": {"maxNewTokens": 9}})
    assert settings.max_new_tokens == 9 and problems == []
    settings, problems = merge_settings(settings, {"timeBudgetMs": 250, "inlineCompletion": False})
    assert settings.time_budget_ms == 250.0 and not settings.inline_completion
    assert settings.max_new_tokens == 9


def test_unknown_and_invalid_values_are_reported_not_applied():
    settings, problems = merge_settings(
        ServerSettings(), {"colour": "blue", "maxNewTokens": "many", "completion": "yes"}
    )
    assert settings == ServerSettings()
    assert len(problems) == 3
    assert "unknown setting 'colour'" in problems[0] and "maxNewTokens" in problems[0]


def test_non_object_settings():
    assert merge_settings(ServerSettings(), None) == (ServerSettings(), [])
    assert merge_settings(ServerSettings(), [1, 2])[1]


def test_model_key_names_what_needs_a_reload():
    assert ServerSettings(model="m", dtype="fp32").model_key[:4] == ("m", "auto", "fp32", "")
    assert ServerSettings(draft_model="d").model_key[3] == "d"
    engine = ServerSettings(engine="http://box:8080", engine_model="coder", engine_api_key_env="KEY")
    assert engine.model_key[4:] == ("http://box:8080", "coder", "KEY")


def test_speculation_settings_reach_the_engine():
    settings, problems = merge_settings(
        ServerSettings(), {"speculative": False, "draftSources": "prompt, repo", "maxDraftTokens": 8})
    assert problems == []
    engine_settings = settings.engine_settings()
    assert not engine_settings.speculative
    assert engine_settings.draft_sources == ("prompt", "repo") and engine_settings.max_draft_tokens == 8
    bad, _ = merge_settings(ServerSettings(), {"draftSources": "prompt,telepathy"})
    import pytest

    with pytest.raises(ValueError, match="telepathy.*valid: recycle, prompt, repo, model"):
        bad.engine_settings()


def test_settings_out_of_range_are_rejected_and_the_old_ones_kept():
    from lsp_server.server import CodeassistServer

    server = CodeassistServer()
    try:
        for bad in ({"contextTokens": 0}, {"contextTokens": -1}, {"maxNewTokens": 100_000},
                    {"repoContextTokens": -5}):
            server.apply_settings(bad)
            assert server.settings == ServerSettings(), bad
        server.apply_settings({"contextTokens": 512})
        assert server.settings.context_tokens == 512
    finally:
        server.close()
