"""Settings: defaults, environment, explicit values, and clear errors that name the setting."""

from __future__ import annotations

import logging

import pytest

from posthog_llm_trace import ConfigurationError, configure
from posthog_llm_trace import client as client_module
from posthog_llm_trace.settings import (
    SPECS,
    Layer,
    Settings,
    build_settings,
    environment_problems,
    from_mapping_upper,
    from_prefixed,
    resolve,
)

KEY = "phc_secret_project_key_123"


def test_defaults():
    s = build_settings(environ={})
    assert s.api_key is None
    assert s.host == "https://us.i.posthog.com"
    assert (s.flush_at, s.flush_interval) == (20, 10.0)
    assert s.serverless is False
    assert s.default_distinct_id == "anonymous"
    assert s.privacy_mode is False
    assert s.export == "thread"
    assert s.max_queue_size == 10_000
    assert s.sample_rate == 1.0
    assert s.mask is None
    assert s.export_enabled is False  # no key: nothing leaves the process


def test_every_setting_has_a_field_a_default_and_documentation():
    fields = set(Settings.__dataclass_fields__)
    assert {spec.name for spec in SPECS} == fields
    for spec in SPECS:
        assert spec.doc.strip(), spec.name


def test_the_environment_is_read():
    s = build_settings(
        environ={
            "POSTHOG_API_KEY": KEY,
            "POSTHOG_HOST": "https://eu.i.posthog.com/",
            "POSTHOG_LLM_TRACE_FLUSH_AT": "50",
            "POSTHOG_LLM_TRACE_PRIVACY_MODE": "true",
            "POSTHOG_LLM_TRACE_SAMPLE_RATE": "0.25",
            "POSTHOG_LLM_TRACE_EXPORT": "SYNC",
        }
    )
    assert s.api_key == KEY
    assert s.host == "https://eu.i.posthog.com"
    assert s.flush_at == 50
    assert s.privacy_mode is True
    assert s.sample_rate == 0.25
    assert s.export == "sync"
    assert s.export_enabled is True


def test_posthog_app_hosts_are_mapped_to_ingestion_hosts():
    assert build_settings(Layer({"host": "https://eu.posthog.com"}), environ={}).host == (
        "https://eu.i.posthog.com"
    )
    self_hosted = build_settings(Layer({"host": "http://posthog.internal:8000"}), environ={})
    assert self_hosted.host == "http://posthog.internal:8000"


def test_explicit_values_win_over_framework_settings_over_the_environment():
    environ = {
        "POSTHOG_API_KEY": "phc_env",
        "POSTHOG_LLM_TRACE_FLUSH_AT": "5",
        "POSTHOG_LLM_TRACE_FLUSH_INTERVAL": "7",
    }
    django = from_mapping_upper({"FLUSH_AT": 30, "API_KEY": "phc_django"}, "POSTHOG_LLM_TRACE")
    s = build_settings(django, Layer({"flush_at": 40}), environ=environ)
    assert s.api_key == "phc_django"
    assert s.flush_at == 40
    assert s.flush_interval == 7.0


def test_flask_config_keys_are_prefixed_and_posthog_keys_kept_as_they_are():
    config = {
        "POSTHOG_API_KEY": KEY,
        "POSTHOG_HOST": "https://eu.i.posthog.com",
        "POSTHOG_LLM_TRACE_FLUSH_AT": 15,
        "SECRET_KEY": "unrelated",
    }
    s = build_settings(from_prefixed(config), environ={})
    assert (s.api_key, s.host, s.flush_at) == (KEY, "https://eu.i.posthog.com", 15)


def test_serverless_changes_the_defaults_and_explicit_values_win_one_by_one():
    assert (lambda s: (s.flush_at, s.flush_interval))(
        build_settings(Layer({"serverless": True}), environ={})
    ) == (10, 2.0)
    s = build_settings(Layer({"serverless": True, "flush_at": 50}), environ={})
    assert (s.flush_at, s.flush_interval) == (50, 2.0)
    s = build_settings(Layer({"serverless": True, "flush_interval": 0.5}), environ={})
    assert (s.flush_at, s.flush_interval) == (10, 0.5)
    s = build_settings(environ={"POSTHOG_LLM_TRACE_SERVERLESS": "1"})
    assert (s.flush_at, s.flush_interval) == (10, 2.0)


@pytest.mark.parametrize(
    ("layer", "named"),
    [
        (Layer({"flush_at": "lots"}), "flush_at must be a positive integer"),
        (Layer({"flush_at": 0}), "flush_at must be a positive integer"),
        (Layer({"flush_at": True}), "flush_at must be a positive integer"),
        (Layer({"flush_interval": -1}), "flush_interval must be a positive number"),
        (Layer({"sample_rate": 1.5}), "sample_rate must be a number between 0 and 1"),
        (Layer({"privacy_mode": "perhaps"}), "privacy_mode must be a boolean"),
        (Layer({"export": "carrier-pigeon"}), "export must be one of"),
        (Layer({"host": "posthog.example.com"}), "host must be a URL"),
        (Layer({"mask": 42}), "mask must be a callable"),
        (Layer({"mask": "nowhere.to.be.found"}), "mask could not import"),
        (
            from_mapping_upper({"FLUSH_AT": "x"}, "POSTHOG_LLM_TRACE"),
            "POSTHOG_LLM_TRACE['FLUSH_AT'] must be a positive integer",
        ),
        (
            from_prefixed({"POSTHOG_LLM_TRACE_MAX_QUEUE_SIZE": -5}),
            "POSTHOG_LLM_TRACE_MAX_QUEUE_SIZE must be a positive integer",
        ),
    ],
)
def test_a_wrong_type_or_value_raises_an_error_naming_the_setting(layer: Layer, named: str):
    with pytest.raises(
        ConfigurationError, match=r"^" + named.replace("[", r"\[").replace("]", r"\]")
    ):
        build_settings(layer, environ={})


def test_a_wrong_value_in_the_environment_names_the_variable():
    with pytest.raises(ConfigurationError, match=r"^POSTHOG_LLM_TRACE_FLUSH_AT must be"):
        build_settings(environ={"POSTHOG_LLM_TRACE_FLUSH_AT": "soon"})


def test_configure_raises_configuration_errors_too():
    with pytest.raises(ConfigurationError, match="flush_at"):
        configure(flush_at="many")


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (
            Layer({"flush_att": 3}),
            "flush_att is not a posthog-llm-trace setting; did you mean flush_at?",
        ),
        (
            from_mapping_upper({"PRIVACY": True}, "POSTHOG_LLM_TRACE"),
            "POSTHOG_LLM_TRACE['PRIVACY'] is not a posthog-llm-trace setting; "
            "did you mean POSTHOG_LLM_TRACE['PRIVACY_MODE']?",
        ),
        (
            from_prefixed({"POSTHOG_LLM_TRACE_FLUSH_INTERVALL": 3}),
            "POSTHOG_LLM_TRACE_FLUSH_INTERVALL is not a posthog-llm-trace setting; "
            "did you mean POSTHOG_LLM_TRACE_FLUSH_INTERVAL?",
        ),
    ],
)
def test_unknown_keys_suggest_the_right_one(layer: Layer, message: str):
    with pytest.raises(ConfigurationError) as raised:
        build_settings(layer, environ={})
    assert str(raised.value) == message


def test_an_unknown_environment_variable_is_named_with_a_suggestion():
    with pytest.raises(ConfigurationError) as raised:
        build_settings(environ={"POSTHOG_LLM_TRACE_PRIVACY_MOD": "true"})
    assert str(raised.value) == (
        "POSTHOG_LLM_TRACE_PRIVACY_MOD is not a posthog-llm-trace setting; "
        "did you mean POSTHOG_LLM_TRACE_PRIVACY_MODE?"
    )
    # Variables of other tools, and the Django setting's own name, are none of ours.
    assert build_settings(environ={"POSTHOG_LLM_TRACE": "x", "POSTHOG_DEBUG": "1"}).flush_at == 20


def test_environment_problems_lists_every_wrong_variable():
    problems = environment_problems(
        {
            "POSTHOG_LLM_TRACE_FLUSH_AT": "abc",
            "POSTHOG_HOST": "eu.i.posthog.com",
            "POSTHOG_LLM_TRACE_SAMPLE_RATE": "50%",
            "POSTHOG_LLM_TRACE_PRIVACY_MOD": "true",
            "POSTHOG_LLM_TRACE_MAX_RETRIES": "3",
        }
    )
    assert sorted(problems) == [
        "POSTHOG_HOST must be a URL starting with http:// or https://, got 'eu.i.posthog.com'",
        "POSTHOG_LLM_TRACE_FLUSH_AT must be a positive integer, got 'abc'",
        "POSTHOG_LLM_TRACE_PRIVACY_MOD is not a posthog-llm-trace setting; "
        "did you mean POSTHOG_LLM_TRACE_PRIVACY_MODE?",
        "POSTHOG_LLM_TRACE_SAMPLE_RATE must be a number between 0 and 1, got '50%'",
    ]


def test_resolve_turns_export_off_for_a_wrong_environment_but_raises_for_an_argument():
    env = {"POSTHOG_API_KEY": KEY, "POSTHOG_LLM_TRACE_FLUSH_AT": "abc"}
    resolved, problems = resolve(explicit=Layer({"privacy_mode": True}), environ=env)
    assert resolved.export == "off" and not resolved.export_enabled
    assert problems == ["POSTHOG_LLM_TRACE_FLUSH_AT must be a positive integer, got 'abc'"]
    with pytest.raises(ConfigurationError, match=r"^flush_at must be a positive integer"):
        resolve(explicit=Layer({"flush_at": "abc"}), environ={})
    resolved, problems = resolve(explicit=Layer({"flush_at": 7}), environ={"POSTHOG_API_KEY": KEY})
    assert (resolved.flush_at, resolved.export, problems) == (7, "thread", [])


def test_configure_logs_a_wrong_environment_once_and_exports_nothing(monkeypatch, caplog):
    monkeypatch.setenv("POSTHOG_API_KEY", KEY)
    monkeypatch.setenv("POSTHOG_LLM_TRACE_SAMPLE_RATE", "50%")
    monkeypatch.setattr(client_module, "_reported", set())
    with caplog.at_level(logging.ERROR, logger="posthog_llm_trace"):
        client = configure(flush_at=5)
        configure(flush_at=6)
    assert not client.enabled
    named = [r for r in caplog.records if "POSTHOG_LLM_TRACE_SAMPLE_RATE" in r.getMessage()]
    assert len(named) == 1 and named[0].levelno == logging.ERROR
    assert KEY not in caplog.text


def test_the_api_key_never_appears_in_reprs_or_errors():
    s = build_settings(Layer({"api_key": KEY}), environ={})
    assert KEY not in repr(s) and KEY not in str(s)
    assert "api_key='***'" in repr(s)
    with pytest.raises(ConfigurationError) as raised:
        build_settings(Layer({"api_key": 12345}), environ={})
    assert "12345" not in str(raised.value)
    from posthog_llm_trace import Client

    assert KEY not in repr(Client(s))


def test_settings_are_frozen():
    s = build_settings(environ={})
    with pytest.raises(AttributeError):
        s.flush_at = 5  # type: ignore[misc]
