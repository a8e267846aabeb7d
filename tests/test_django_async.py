"""The middleware on Django's async path (ASGI handler, async views), driven by AsyncClient.

``async_to_sync`` runs each test body on an event loop in another thread while the sync parts
(database queries through ``sync_to_async``) run on this thread, inside the ``db`` fixture's
transaction, as Django recommends for async tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.exceptions import SynchronousOnlyOperation
from django.test import AsyncClient

from posthog_llm_trace import Client
from posthog_llm_trace.testing import CapturedEvents, capture_events
from posthog_llm_trace.web import session_hash
from tests.django_app import views
from tests.django_app.fixtures import llm_settings

pytestmark = pytest.mark.usefixtures("llm_settings")
SECRET = "test-secret-key-not-for-production"

__all__ = ["llm_settings"]


@pytest.fixture
def alice(db: None) -> Any:
    return get_user_model().objects.create_user("alice", password="pw")


def one_trace(events: CapturedEvents) -> dict[str, Any]:
    [trace] = events.named("$ai_trace")
    for event in events:
        assert event["properties"]["$ai_trace_id"] == trace["properties"]["$ai_trace_id"]
        assert event["distinct_id"] == trace["distinct_id"]
    return trace


def test_async_view_with_auser_binds_the_user_and_session(alice: Any) -> None:
    client = AsyncClient()
    client.force_login(alice)
    key = client.session.session_key

    @async_to_sync
    async def run() -> Any:
        return await client.get("/async/whoami/")

    with capture_events() as events:
        response = run()
    assert response.json() == {"pk": alice.pk}
    trace = one_trace(events)
    assert trace["properties"]["$ai_span_name"] == "GET /async/whoami/"
    assert trace["distinct_id"] == str(alice.pk)
    assert trace["properties"]["$ai_session_id"] == session_hash(SECRET, key)


def test_the_user_is_looked_up_without_sync_queries_on_the_event_loop(
    alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The view never loads the user; the middleware must, with auser(), not request.user.
    # Django raises SynchronousOnlyOperation for a sync query from async code: make any
    # evaluation of the lazy request.user on the loop fail loudly, whatever the DB backend.
    from django.contrib.auth import middleware

    real_get_user = middleware.get_user

    def sync_get_user(request: Any) -> Any:
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return real_get_user(request)
        raise SynchronousOnlyOperation("request.user evaluated on the event loop")

    monkeypatch.setattr(middleware, "get_user", sync_get_user)
    client = AsyncClient()
    client.force_login(alice)

    @async_to_sync
    async def run() -> Any:
        return await client.post("/api/v1/chat/1/")  # a sync view that never reads the user

    with capture_events() as events:
        assert run().status_code == 200
    assert one_trace(events)["distinct_id"] == str(alice.pk)


def test_async_login_during_the_request_is_bound(alice: Any) -> None:
    client = AsyncClient()

    @async_to_sync
    async def run() -> Any:
        return await client.post("/async/login-inside/", {"username": "alice"})

    with capture_events() as events:
        assert run().status_code == 200
    assert one_trace(events)["distinct_id"] == str(alice.pk)


def test_async_anonymous_and_no_span(db: None) -> None:
    client = AsyncClient()

    @async_to_sync
    async def run() -> None:
        await client.get("/async/plain/")
        await client.get("/async/whoami/")

    with capture_events() as events:
        run()
    trace = one_trace(events)  # only the request that recorded a span
    assert trace["distinct_id"] == "anonymous"
    assert trace["properties"]["$process_person_profile"] is False


def test_async_view_exception_fails_the_trace_and_propagates(db: None) -> None:
    client = AsyncClient()

    @async_to_sync
    async def run() -> Any:
        return await client.get("/async/boom/")

    with capture_events() as events, pytest.raises(views.Boom, match="the async view failed"):
        run()
    assert one_trace(events)["properties"]["$ai_is_error"] is True


def test_sync_views_under_the_async_handler(alice: Any) -> None:
    client = AsyncClient()
    client.force_login(alice)

    @async_to_sync
    async def run() -> Any:
        await client.get("/server-error/")
        return await client.post("/login-inside/", {"username": "alice"})

    with capture_events() as events:
        run()
    failed, logged_in = events.named("$ai_trace")
    assert failed["properties"]["$ai_is_error"] is True
    assert logged_in["distinct_id"] == str(alice.pk)
    assert logged_in["properties"]["$ai_span_name"] == "POST /login-inside/"


async def async_resolver(request: Any) -> str:
    user = await views.auser(request)
    return f"async:{user.username}"


def sync_resolver(request: Any) -> str:
    return f"sync:{request.user.username}"  # a query: must not run on the event loop


@pytest.mark.parametrize(
    ("resolver", "prefix"), [(async_resolver, "async"), (sync_resolver, "sync")]
)
def test_distinct_id_resolver_sync_or_async_under_asgi(
    alice: Any, llm_settings: Callable[..., Client], resolver: Any, prefix: str
) -> None:
    llm_settings(DISTINCT_ID_RESOLVER=resolver)
    client = AsyncClient()
    client.force_login(alice)

    @async_to_sync
    async def run() -> Any:
        return await client.post("/api/v1/chat/1/")

    with capture_events() as events:
        run()
    assert one_trace(events)["distinct_id"] == f"{prefix}:alice"
