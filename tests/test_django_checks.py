"""The Django app: settings from the ``POSTHOG_LLM_TRACE`` dict, and the system checks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.core import checks
from django.test import override_settings

from posthog_llm_trace import Client, configure
from posthog_llm_trace import client as client_module
from posthog_llm_trace.client import get_client
from posthog_llm_trace.django.apps import configure_from_settings, load_settings
from posthog_llm_trace.settings import SPECS
from tests.django_app import hooks
from tests.django_app.fixtures import llm_settings

pytestmark = pytest.mark.usefixtures("llm_settings")

__all__ = ["llm_settings"]

OURS = "posthog_llm_trace.django.LLMTraceMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
SESSIONS = "django.contrib.sessions.middleware.SessionMiddleware"


#: A valid, non-default value for every setting, as a Django user writes it.
EVERY_SETTING: dict[str, Any] = {
    "API_KEY": "phc_from_django",
    "HOST": "https://eu.i.posthog.com",
    "FLUSH_AT": 7,
    "FLUSH_INTERVAL": 3.5,
    "SERVERLESS": True,
    "DEFAULT_DISTINCT_ID": "guest",
    "PRIVACY_MODE": True,
    "EXPORT": "sync",
    "EXPORT_FILE": "/tmp/events.jsonl",
    "MAX_QUEUE_SIZE": 123,
    "MAX_QUEUE_BYTES": 12_345_678,
    "SAMPLE_RATE": 0.5,
    "MASK": "tests.django_app.hooks.mask",
    "CHUNK_SPANS": True,
    "AI_ENDPOINT": True,
    "MAX_EVENT_BYTES": 400_000,
    "GZIP": False,
    "TIMEOUT": 3.0,
    "MAX_RETRIES": 0,
    "SHUTDOWN_TIMEOUT": 1.5,
    "CELERY_QUEUE": "llm",
    "REQUEST_FILTER": hooks.only_api,
    "DISTINCT_ID_RESOLVER": "tests.django_app.hooks.nobody",
    "DISTINCT_ID_HEADER": True,
    "SESSION_REPLAY_HEADER": False,
    "POSTHOG_CLIENT": "tests.django_app.hooks.posthog_client",
    "INSTRUMENT": [],
    "TRACE_ID_HEADER": "X-Answer-Id",
    "TRACE_TOKEN_KEY": "django-token-key",
}
EXPECTED = {
    **{key.lower(): value for key, value in EVERY_SETTING.items()},
    "mask": hooks.mask,
    "distinct_id_resolver": hooks.nobody,
    "posthog_client": hooks.posthog_client,
    "instrument": (),
}


def run_checks() -> list[checks.CheckMessage]:
    return checks.run_checks(tags=["posthog_llm_trace"])


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return sorted(m.id for m in messages)


# --- settings ------------------------------------------------------------------------------------


def test_every_setting_works_from_the_settings_dict(llm_settings: Callable[..., Client]) -> None:
    assert {key.lower() for key in EVERY_SETTING} == {spec.name for spec in SPECS}
    client = llm_settings(**EVERY_SETTING)
    for name, value in EXPECTED.items():
        assert getattr(client.settings, name) == value, name
    assert run_checks() == []


def test_the_settings_dict_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, llm_settings: Callable[..., Client]
) -> None:
    monkeypatch.setenv("POSTHOG_API_KEY", "phc_from_env")
    monkeypatch.setenv("POSTHOG_LLM_TRACE_FLUSH_AT", "50")
    assert llm_settings().settings.api_key == "phc_from_env"
    client = llm_settings(FLUSH_AT=5)
    assert (client.settings.api_key, client.settings.flush_at) == ("phc_from_env", 5)


def test_app_ready_makes_the_dict_the_default_unless_configure_chose_one() -> None:
    config = apps.get_app_config("posthog_llm_trace")
    with override_settings(POSTHOG_LLM_TRACE={"EXPORT": "memory", "FLUSH_AT": 7}):
        client_module._default, client_module._explicit = None, False
        config.ready()
        assert get_client().settings.flush_at == 7

        mine = configure(export="memory", flush_at=9)
        config.ready()  # e.g. configure() in settings.py, before Django starts: it stays
        assert get_client() is mine


def test_wrong_settings_turn_export_off_instead_of_falling_back() -> None:
    with override_settings(POSTHOG_LLM_TRACE={"EXPORT": "memory", "PRIVACY_MODE": "yes please"}):
        client = configure_from_settings()
        assert client.settings.export == "off"
        assert not client.enabled
        with pytest.raises(Exception, match=r"POSTHOG_LLM_TRACE\['PRIVACY_MODE'\]"):
            load_settings()


def test_an_api_key_in_the_settings_never_shows_in_errors() -> None:
    with override_settings(POSTHOG_LLM_TRACE={"API_KEY": 12345}):
        [error] = run_checks()
    assert "12345" not in error.msg and "API_KEY" in error.msg


# --- system checks -------------------------------------------------------------------------------


def test_unknown_keys_are_reported_by_name_with_a_suggestion() -> None:
    with override_settings(POSTHOG_LLM_TRACE={"FLUSH_ATT": 5, "PRIVACY": True}):
        messages = run_checks()
    assert ids(messages) == ["posthog_llm_trace.E001", "posthog_llm_trace.E001"]
    text = " ".join(m.msg for m in messages)
    assert "POSTHOG_LLM_TRACE['FLUSH_ATT']" in text
    assert "POSTHOG_LLM_TRACE['FLUSH_AT']" in text  # did you mean
    assert "POSTHOG_LLM_TRACE['PRIVACY']" in text
    assert all(m.level == checks.ERROR for m in messages)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("FLUSH_AT", "twenty"),
        ("FLUSH_AT", 0),
        ("SAMPLE_RATE", 1.5),
        ("PRIVACY_MODE", "maybe"),
        ("EXPORT", "kafka"),
        ("HOST", "eu.posthog.com"),
        ("REQUEST_FILTER", "no.such.module.fn"),
        ("DISTINCT_ID_RESOLVER", 42),
        ("MASK", "tests.django_app.hooks.NOT_THERE"),
    ],
)
def test_wrong_types_and_values_are_reported_by_name(key: str, value: Any) -> None:
    with override_settings(POSTHOG_LLM_TRACE={key: value}):
        [message] = run_checks()
    assert message.id == "posthog_llm_trace.E001"
    assert f"POSTHOG_LLM_TRACE['{key}']" in message.msg


def test_every_wrong_key_is_reported_not_only_the_first() -> None:
    with override_settings(POSTHOG_LLM_TRACE={"FLUSH_AT": -1, "GZIP": "sometimes", "TIMEOUT": 5}):
        messages = run_checks()
    assert len(messages) == 2
    assert {"FLUSH_AT", "GZIP"} == {
        k for k in ("FLUSH_AT", "GZIP", "TIMEOUT") if any(k in m.msg for m in messages)
    }


def test_a_wrong_environment_variable_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTHOG_LLM_TRACE_FLUSH_AT", "lots")
    [message] = run_checks()
    assert message.id == "posthog_llm_trace.E001"
    assert "POSTHOG_LLM_TRACE_FLUSH_AT" in message.msg


def test_an_unknown_environment_variable_is_reported_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTHOG_LLM_TRACE_PRIVACY_MOD", "true")
    monkeypatch.setenv("POSTHOG_LLM_TRACE_SAMPLE_RATE", "50%")
    messages = run_checks()
    assert ids(messages) == ["posthog_llm_trace.E001", "posthog_llm_trace.E001"]
    assert all(m.level == checks.ERROR for m in messages)
    text = " ".join(m.msg for m in messages)
    assert (
        "POSTHOG_LLM_TRACE_PRIVACY_MOD is not a posthog-llm-trace setting; "
        "did you mean POSTHOG_LLM_TRACE_PRIVACY_MODE?" in text
    )
    assert "POSTHOG_LLM_TRACE_SAMPLE_RATE must be a number between 0 and 1" in text


def test_manage_py_check_fails_on_an_unknown_environment_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTHOG_")}
    env.update(
        POSTHOG_LLM_TRACE_PRIVACY_MOD="true", DJANGO_SETTINGS_MODULE="tests.django_app.settings"
    )
    done = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "posthog_llm_trace.E001" in done.stderr
    assert "did you mean POSTHOG_LLM_TRACE_PRIVACY_MODE?" in done.stderr


def test_the_setting_must_be_a_dict() -> None:
    with override_settings(POSTHOG_LLM_TRACE=["API_KEY", "phc"]):
        assert ids(run_checks()) == ["posthog_llm_trace.E002"]


def test_celery_export_without_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    with override_settings(POSTHOG_LLM_TRACE={"EXPORT": "celery", "API_KEY": "phc_x"}):
        assert run_checks() == []  # Celery is installed here
        monkeypatch.setitem(sys.modules, "celery", None)  # now it cannot be imported
        [message] = run_checks()
    assert message.id == "posthog_llm_trace.E003"
    assert "POSTHOG_LLM_TRACE['EXPORT']" in message.msg


def test_a_missing_api_key_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTHOG_API_KEY", raising=False)
    with override_settings(POSTHOG_LLM_TRACE={"EXPORT": "thread"}):
        [message] = run_checks()
    assert message.id == "posthog_llm_trace.W001"
    assert message.level == checks.WARNING
    with override_settings(POSTHOG_LLM_TRACE={"EXPORT": "file"}):  # local export needs none
        assert run_checks() == []


def test_the_middleware_before_authentication_is_reported() -> None:
    with override_settings(MIDDLEWARE=[SESSIONS, OURS, AUTH]):
        [message] = run_checks()
    assert message.id == "posthog_llm_trace.W002"
    assert AUTH in message.msg
    with override_settings(MIDDLEWARE=[SESSIONS, AUTH, OURS]):
        assert run_checks() == []


def test_the_middleware_missing_is_reported() -> None:
    with override_settings(MIDDLEWARE=[SESSIONS, AUTH]):
        assert ids(run_checks()) == ["posthog_llm_trace.W003"]


def test_the_test_settings_pass_the_checks() -> None:
    assert run_checks() == []
