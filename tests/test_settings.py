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
    assert ServerSettings(model="m", dtype="fp32").model_key == ("m", "auto", "fp32")
