"""Celery on Redis: a process that exports through Celery is told, once, how late an export
batch held by a killed worker comes back (Redis's ``visibility_timeout``), and what to set."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from celery import Celery

import posthog_llm_trace.celery as plt_celery
from posthog_llm_trace import client as client_module
from posthog_llm_trace.client import Client
from posthog_llm_trace.settings import Layer, build_settings


@pytest.fixture(autouse=True)
def _celery_export(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = build_settings(Layer({"api_key": "phc_test", "export": "celery"}), environ={})
    monkeypatch.setattr(client_module, "_default", Client(settings))
    monkeypatch.setattr(plt_celery, "_warned_redelivery", False)


def _instrumented(caplog: pytest.LogCaptureFixture, broker: str, **options: Any) -> list[str]:
    app = Celery("redelivery", broker=broker, set_as_current=False)
    if options:
        app.conf.broker_transport_options = options
    try:
        with caplog.at_level(logging.WARNING, logger="posthog_llm_trace"):
            plt_celery.instrument(app)
            plt_celery.instrument(app)
    finally:
        plt_celery.uninstrument()
    return [r.getMessage() for r in caplog.records if "visibility_timeout" in r.getMessage()]


def test_redis_with_the_default_visibility_timeout_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    [message] = _instrumented(caplog, "redis://127.0.0.1:6379/0")
    assert "visibility_timeout=3600 s" in message
    assert "'visibility_timeout': 600" in message


def test_a_short_visibility_timeout_or_rabbitmq_needs_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert _instrumented(caplog, "redis://127.0.0.1:6379/0", visibility_timeout=300) == []
    assert _instrumented(caplog, "amqp://guest:guest@127.0.0.1:5672//") == []
