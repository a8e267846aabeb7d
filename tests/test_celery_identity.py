"""A Celery task published from a view carries the signed-in user, although the request's
trace binds its identity only when it ends (so that logins inside the view count)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.test import AsyncClient
from django.test import Client as DjangoClient

from posthog_llm_trace.celery import H_DISTINCT, H_SESSION, H_TRACE, trace_headers
from posthog_llm_trace.context import current_node
from posthog_llm_trace.flask import LLMTrace
from tests.django_app.fixtures import llm_settings
from tests.flask_testapp import isolate, make_app

__all__ = ["llm_settings"]


@pytest.fixture
def alice(db: None) -> Any:
    return get_user_model().objects.create_user("alice", password="pw")


@pytest.mark.usefixtures("llm_settings")
def test_a_task_published_from_a_django_view_carries_the_user(alice: Any) -> None:
    client = DjangoClient()
    client.force_login(alice)
    headers = client.get("/task-headers/").json()
    assert headers[H_TRACE]
    assert headers[H_DISTINCT] == str(alice.pk)
    assert headers[H_SESSION].startswith("s_")
    assert client.session.session_key not in headers[H_SESSION]


@pytest.mark.usefixtures("llm_settings")
def test_an_anonymous_django_view_publishes_no_user(db: None) -> None:
    headers = DjangoClient().get("/task-headers/").json()
    assert headers[H_TRACE]
    assert H_DISTINCT not in headers


@pytest.mark.usefixtures("llm_settings")
@pytest.mark.django_db(transaction=True)
def test_a_task_published_from_an_async_django_view_carries_the_user(alice: Any) -> None:
    client = AsyncClient()
    client.force_login(alice)
    response = async_to_sync(client.get)("/async/task-headers/")
    assert response.json()[H_DISTINCT] == str(alice.pk)


def test_a_task_published_from_a_flask_view_carries_the_user(monkeypatch: Any) -> None:
    isolate(monkeypatch)
    app = make_app(POSTHOG_LLM_TRACE_EXPORT="memory")

    @app.get("/task-headers")
    def headers_view() -> dict[str, str]:
        return trace_headers(current_node())

    LLMTrace(app)
    client = app.test_client()
    client.post("/login/carol")
    headers = client.get("/task-headers").get_json()
    assert headers[H_DISTINCT] == "carol"
    assert headers[H_SESSION].startswith("s_")
    client.post("/logout")
    assert H_DISTINCT not in client.get("/task-headers").get_json()
