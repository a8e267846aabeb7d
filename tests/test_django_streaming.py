"""Streamed responses through real servers: werkzeug (WSGI, a sync body) and uvicorn (ASGI, an
async body). The request's trace must stay open until the body is sent or the client goes away,
and the generation streamed in the body must belong to it, under the signed-in user."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.signals import request_finished
from django.test import Client as DjangoClient

from posthog_llm_trace.testing import CapturedEvents, capture_events
from posthog_llm_trace.web import session_hash
from tests.django_app import views
from tests.django_app.fixtures import Server, asgi_server, llm_settings, wait_for, wsgi_server

pytestmark = pytest.mark.usefixtures("llm_settings")
SECRET = "test-secret-key-not-for-production"

__all__ = ["asgi_server", "llm_settings", "wsgi_server"]


@pytest.fixture
def alice(transactional_db: None) -> Any:
    return get_user_model().objects.create_user("alice", password="pw")


@pytest.fixture
def session(alice: Any) -> dict[str, str]:
    """A signed-in session's cookie, and its key."""
    client = DjangoClient()
    client.force_login(alice)
    key = client.cookies["sessionid"].value
    return {"Cookie": f"sessionid={key}", "key": key}


@pytest.fixture
def gate() -> Iterator[tuple[str, threading.Event]]:
    name, event = uuid.uuid4().hex, threading.Event()
    views.GATES[name] = event
    yield name, event
    event.set()  # never leave a body waiting
    views.GATES.pop(name, None)


@pytest.fixture
def finished() -> Iterator[threading.Event]:
    """Set when Django has finished a request (``request_finished``, sent by response.close())."""
    event = threading.Event()

    def receiver(**kwargs: Any) -> None:
        event.set()

    request_finished.connect(receiver, weak=False)
    yield event
    request_finished.disconnect(receiver)


SERVERS = [("wsgi_server", "/stream/"), ("asgi_server", "/astream/")]


def check_streamed_trace(events: CapturedEvents, user: Any, key: str, path: str) -> None:
    [trace] = events.named("$ai_trace")
    [gen] = events.named("$ai_generation")
    tp, gp = trace["properties"], gen["properties"]
    assert tp["$ai_span_name"] == f"GET {path}"
    assert gp["$ai_trace_id"] == tp["$ai_trace_id"]
    assert gp["$ai_parent_id"] == tp["$ai_trace_id"]
    assert trace["distinct_id"] == gen["distinct_id"] == str(user.pk)
    assert gp["$ai_session_id"] == tp["$ai_session_id"] == session_hash(SECRET, key)
    assert gp["$ai_stream"] is True
    assert gp["$ai_time_to_first_token"] >= 0


@pytest.mark.parametrize(("server_fixture", "path"), SERVERS)
def test_the_trace_stays_open_until_the_body_is_sent(
    request: pytest.FixtureRequest,
    server_fixture: str,
    path: str,
    alice: Any,
    session: dict[str, str],
    gate: tuple[str, threading.Event],
) -> None:
    server: Server = request.getfixturevalue(server_fixture)
    name, event = gate
    with capture_events() as events:
        conn, response = server.open_stream(
            f"{path}?gate={name}&n=3", {"Cookie": session["Cookie"]}
        )
        assert response.status == 200
        assert response.read1(65536).startswith(b"first")
        # The view has returned and the first piece is out; the body waits for the gate.
        assert list(events) == []
        time.sleep(0.05)  # the body takes a while: the trace's latency must include it
        event.set()
        rest = response.read()
        conn.close()
        assert rest.count(b"piece-") == 3
        wait_for(lambda: events.named("$ai_trace"))
    check_streamed_trace(events, alice, session["key"], path)
    [trace] = events.named("$ai_trace")
    [gen] = events.named("$ai_generation")
    assert gen["properties"]["$ai_latency"] >= 0.05
    assert trace["properties"]["$ai_latency"] >= gen["properties"]["$ai_latency"]
    assert trace["timestamp"] >= gen["timestamp"]
    output = str(gen["properties"]["$ai_output_choices"])
    assert "first" in output and "piece-2" in output
    assert not trace["properties"].get("$ai_is_error")


@pytest.mark.parametrize(("server_fixture", "path"), SERVERS)
def test_a_client_that_goes_away_mid_stream_ends_the_trace_once(
    request: pytest.FixtureRequest,
    server_fixture: str,
    path: str,
    alice: Any,
    session: dict[str, str],
    gate: tuple[str, threading.Event],
    finished: threading.Event,
) -> None:
    server: Server = request.getfixturevalue(server_fixture)
    name, event = gate
    with capture_events() as events:
        # Many pieces after the gate: a WSGI server notices the disconnect on a failed write.
        conn, response = server.open_stream(
            f"{path}?gate={name}&n=100000", {"Cookie": session["Cookie"]}
        )
        assert response.read1(65536).startswith(b"first")
        finished.clear()  # the login and earlier requests are done; wait for this one
        response.close()
        conn.close()
        event.set()
        wait_for(finished.is_set)  # Django closed the response: nothing more can come
        wait_for(lambda: events.named("$ai_trace"))
    check_streamed_trace(events, alice, session["key"], path)
    [gen] = events.named("$ai_generation")
    # The body was cut short: the generation ended with the disconnect, not after 100000 pieces.
    assert gen["properties"]["$ai_is_error"] is True
    assert str(gen["properties"]["$ai_output_choices"]).count("piece-") < 100000


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
def test_a_sync_body_served_by_the_asgi_server(
    asgi_server: Server, alice: Any, session: dict[str, str]
) -> None:
    # Django consumes a sync iterator in a thread under ASGI; the trace still covers it.
    with capture_events() as events:
        status, body = asgi_server.request("GET", "/stream/?n=2", {"Cookie": session["Cookie"]})
        assert status == 200 and body.count(b"piece-") == 2
        wait_for(lambda: events.named("$ai_trace"))
    check_streamed_trace(events, alice, session["key"], "/stream/")


def test_a_body_that_is_never_iterated_still_ends_the_trace(db: None) -> None:
    # A HEAD request, a middleware that swaps the response...: close() ends the trace.
    client = DjangoClient()
    with capture_events() as events:
        response = client.get("/stream/?n=1")
        response.close()
    # Nothing was recorded (the body never ran), so nothing is sent; the trace is ended,
    # so a span recorded afterwards does not join it.
    assert list(events) == []
    assert "_posthog_llm_trace" in vars(response.wsgi_request)
    rt = response.wsgi_request._posthog_llm_trace
    assert rt.trace.ended


def test_an_async_body_abandoned_in_a_blocked_send_still_ends_the_trace_once(db: None) -> None:
    """The client goes away while the server is stuck sending a piece: Django cancels the
    send and drops the body without closing it. ``response.close()`` must end the trace, with
    the body's generation in it. Driven through Django's ASGI handler with a scripted server."""
    import asyncio

    from asgiref.sync import async_to_sync
    from django.core.asgi import get_asgi_application

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/astream/",
        "raw_path": b"/astream/",
        "query_string": b"n=3",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    @async_to_sync
    async def serve() -> list[dict[str, Any]]:
        app = get_asgi_application()
        sent: list[dict[str, Any]] = []
        requested = False
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and len(sent) == 3:
                gone.set()  # the client left; this send never completes
                await asyncio.Event().wait()

        await app(scope, receive, send)
        return sent

    at_finish: list[int] = []

    def finished(**kwargs: Any) -> None:
        at_finish.append(len(events.named("$ai_trace")))

    with capture_events() as events:
        request_finished.connect(finished, weak=False)
        try:
            sent = serve()
        finally:
            request_finished.disconnect(finished)
    assert [m["type"] for m in sent] == ["http.response.start"] + ["http.response.body"] * 2
    # Ended by response.close(), before Django finished the request; not left to the GC.
    assert at_finish == [1]
    [trace] = events.named("$ai_trace")
    [gen] = events.named("$ai_generation")
    assert gen["properties"]["$ai_trace_id"] == trace["properties"]["$ai_trace_id"]
    assert trace["properties"]["$ai_span_name"] == "GET /astream/"
    assert gen["properties"]["$ai_is_error"] is True  # closed before its end
