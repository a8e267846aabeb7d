"""Setting up the Flask extension: both init forms, per-app settings, configuration errors."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import pytest
from flask_testapp import isolate, make_app

from posthog_llm_trace import Client, ConfigurationError, configure, get_client
from posthog_llm_trace.flask import EXTENSION_KEY, LLMTrace
from posthog_llm_trace.testing import capture_events


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch)


def one_trace(events: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    [trace] = events.named("$ai_trace")
    spans = [e for e in events if e["event"] != "$ai_trace"]
    return trace, spans


def test_llmtrace_app_traces_each_request() -> None:
    app = make_app()
    LLMTrace(app)

    with capture_events() as events:
        response = app.test_client().post("/chat/42?q=hi")

    assert response.status_code == 200
    trace, spans = one_trace(events)
    assert trace["properties"]["$ai_span_name"] == "POST /chat/<int:conversation>"
    trace_id = response.get_json()["trace_id"]
    assert trace["properties"]["$ai_trace_id"] == trace_id
    assert {e["event"] for e in spans} == {"$ai_generation", "$ai_span"}
    assert {e["properties"]["$ai_trace_id"] for e in spans} == {trace_id}
    assert isinstance(app.extensions[EXTENSION_KEY], Client)


def test_factory_form_with_init_app() -> None:
    llm_trace = LLMTrace()

    def create_app() -> Any:
        app = make_app()
        llm_trace.init_app(app)
        return app

    first, second = create_app(), create_app()
    with capture_events() as events:
        first.test_client().post("/chat/1")
        second.test_client().post("/chat/2")

    assert len(events.named("$ai_trace")) == 2
    assert first.extensions[EXTENSION_KEY] is not second.extensions[EXTENSION_KEY]


def test_each_app_keeps_its_own_settings() -> None:
    llm_trace = LLMTrace()
    shop = make_app(POSTHOG_LLM_TRACE_DEFAULT_DISTINCT_ID="shop-visitor")
    clinic = make_app(
        POSTHOG_LLM_TRACE_DEFAULT_DISTINCT_ID="clinic-visitor", POSTHOG_LLM_TRACE_PRIVACY_MODE=True
    )
    llm_trace.init_app(shop)
    llm_trace.init_app(clinic)

    with capture_events() as events:
        shop.test_client().post("/chat/1?q=shoes")
        clinic.test_client().post("/chat/1?q=my diagnosis")

    shop_events = [e for e in events if e["distinct_id"] == "shop-visitor"]
    clinic_events = [e for e in events if e["distinct_id"] == "clinic-visitor"]
    assert len(shop_events) == len(clinic_events) == 3
    [shop_gen] = [e for e in shop_events if e["event"] == "$ai_generation"]
    [clinic_gen] = [e for e in clinic_events if e["event"] == "$ai_generation"]
    assert "shoes" in str(shop_gen["properties"]["$ai_input"])
    assert clinic_gen["properties"].get("$ai_input") is None  # the clinic's privacy mode only
    assert "diagnosis" not in str(clinic_events)
    # The first app's client became the process default; the second did not replace it.
    assert get_client() is shop.extensions[EXTENSION_KEY]


def test_a_configured_default_client_is_kept() -> None:
    configured = configure(export="off")
    app = make_app()
    LLMTrace(app)

    assert get_client() is configured
    assert app.extensions[EXTENSION_KEY] is not configured


def test_settings_come_from_app_config() -> None:
    app = make_app(
        POSTHOG_API_KEY="phc_from_config",
        POSTHOG_HOST="https://eu.i.posthog.com",
        POSTHOG_LLM_TRACE_FLUSH_AT="50",
        POSTHOG_LLM_TRACE_SERVERLESS=True,
    )
    LLMTrace(app)

    settings = app.extensions[EXTENSION_KEY].settings
    assert settings.api_key == "phc_from_config"
    assert settings.host == "https://eu.i.posthog.com"
    assert settings.flush_at == 50
    assert settings.flush_interval == 2.0  # serverless default
    assert "phc_from_config" not in repr(settings)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"POSTHOG_LLM_TRACE_FLUSH_AT": 0},
            "POSTHOG_LLM_TRACE_FLUSH_AT must be a positive integer",
        ),
        ({"POSTHOG_LLM_TRACE_SAMPLE_RATE": 2}, "POSTHOG_LLM_TRACE_SAMPLE_RATE must be a number"),
        ({"POSTHOG_HOST": "eu.posthog.com"}, "POSTHOG_HOST must be a URL"),
        ({"POSTHOG_LLM_TRACE_FLUSH_AY": 5}, "POSTHOG_LLM_TRACE_FLUSH_AY is not a posthog-llm"),
        (
            {"POSTHOG_LLM_TRACE_DISTINCT_ID_RESOLVER": "no.such.module.fn"},
            "POSTHOG_LLM_TRACE_DISTINCT_ID_RESOLVER could not import",
        ),
    ],
)
def test_a_wrong_config_value_is_logged_naming_the_key_and_the_app_serves_untraced(
    config: dict[str, Any], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(POSTHOG_API_KEY="phc_test", **config)

    with caplog.at_level(logging.ERROR, logger="posthog_llm_trace"):
        LLMTrace(app)

    [logged] = [r for r in caplog.records if message in r.getMessage()]
    assert logged.levelno == logging.ERROR and "nothing is exported" in logged.getMessage()
    client = app.extensions[EXTENSION_KEY]
    assert not client.enabled and not client.recording  # export off until it is fixed
    response = app.test_client().post("/chat/42?q=hi")
    assert response.status_code == 200 and response.get_json()["answer"]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("POSTHOG_LLM_TRACE_PRIVACY_MOD", "true", "did you mean POSTHOG_LLM_TRACE_PRIVACY_MODE?"),
        ("POSTHOG_LLM_TRACE_FLUSH_AT", "abc", "POSTHOG_LLM_TRACE_FLUSH_AT must be a positive"),
    ],
)
def test_init_app_reports_a_wrong_or_unknown_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)
    app = make_app(POSTHOG_API_KEY="phc_test")

    with caplog.at_level(logging.ERROR, logger="posthog_llm_trace"):
        LLMTrace(app)

    assert [r for r in caplog.records if message in r.getMessage()]
    assert not app.extensions[EXTENSION_KEY].enabled
    assert app.test_client().post("/chat/1").status_code == 200


def test_explicit_arguments_win_over_app_config() -> None:
    app = make_app(
        POSTHOG_LLM_TRACE_FLUSH_AT=50,
        POSTHOG_LLM_TRACE_DEFAULT_DISTINCT_ID="from-config",
        POSTHOG_LLM_TRACE_PRIVACY_MODE=True,
    )
    llm_trace = LLMTrace(default_distinct_id="from-constructor", privacy_mode=False)
    llm_trace.init_app(app, flush_at=7)

    settings = app.extensions[EXTENSION_KEY].settings
    assert settings.flush_at == 7
    assert settings.default_distinct_id == "from-constructor"
    assert settings.privacy_mode is False


def test_a_wrong_explicit_argument_is_named() -> None:
    with pytest.raises(ConfigurationError, match="flush_at must be a positive integer"):
        LLMTrace(make_app(), flush_at=0)
    with pytest.raises(ConfigurationError, match="flush_every is not a posthog-llm-trace"):
        LLMTrace(make_app(), flush_every=3)


def test_initialising_an_app_twice_is_refused() -> None:
    app = make_app()
    llm_trace = LLMTrace(app)

    with pytest.raises(RuntimeError, match="already initialised"):
        llm_trace.init_app(app)


def test_a_clear_error_when_flask_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flask", None)  # what an uninstalled package looks like
    monkeypatch.delitem(sys.modules, "posthog_llm_trace.flask")

    with pytest.raises(ImportError, match=r"pip install 'posthog-llm-trace\[flask\]'"):
        importlib.import_module("posthog_llm_trace.flask")
