"""Streamed responses and concurrency, through a real WSGI server on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.cookiejar import CookieJar
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask, Response, stream_with_context
from flask_login import current_user
from flask_testapp import isolate, make_app, serve
from werkzeug.test import EnvironBuilder

from posthog_llm_trace import current_trace, generation, tool
from posthog_llm_trace.flask import LLMTrace
from posthog_llm_trace.testing import CapturedEvents, capture_events


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch)


def wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``condition`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def get(url: str, path: str) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def streaming_app(events: CapturedEvents, seen: list[dict[str, Any]]) -> Flask:
    """A chat app whose answer is streamed; the body notes what it sees while it streams."""
    app = make_app()
    LLMTrace(app)

    @app.get("/stream/<int:conversation>")
    def stream(conversation: int) -> Response:
        trace = current_trace()
        assert trace is not None

        def body() -> Iterator[str]:
            with generation("answer", model="gpt-4o-mini", input="tell me", stream=True) as gen:
                for word in ("one", "two", "three"):
                    gen.chunk(word + " ")
                    yield word + " "
                    now = current_trace()
                    seen.append(
                        {
                            "same_trace": now is trace,
                            "traces_sent": len(events.named("$ai_trace")),
                        }
                    )

        return Response(stream_with_context(body()), mimetype="text/plain")

    return app


def test_a_streamed_response_keeps_the_trace_open_until_the_body_ends() -> None:
    seen: list[dict[str, Any]] = []
    with capture_events() as events:
        app = streaming_app(events, seen)
        with serve(app) as url:
            status, body = get(url, "/stream/3")
            assert status == 200
            assert body == b"one two three "

            # The body ended before the server finished the response: the trace is out.
            [trace] = events.named("$ai_trace")

    assert seen == [{"same_trace": True, "traces_sent": 0}] * 3
    props = trace["properties"]
    assert props["$ai_span_name"] == "GET /stream/<int:conversation>"
    gen = events.by_span_name("answer")
    assert gen["properties"]["$ai_trace_id"] == props["$ai_trace_id"]
    assert gen["properties"]["$ai_parent_id"] == props["$ai_trace_id"]
    assert gen["properties"]["$ai_output_choices"]  # the streamed text
    assert trace["timestamp"] >= gen["timestamp"]
    assert "$ai_is_error" not in props


def test_a_client_that_disconnects_mid_stream_still_gets_its_trace_exported_once() -> None:
    client_gone = threading.Event()
    chunks_after_disconnect: list[int] = []

    with capture_events() as events:
        app = make_app()
        LLMTrace(app)

        @app.get("/stream")
        def stream() -> Response:
            def body() -> Iterator[bytes]:
                with generation("answer", model="gpt-4o-mini", input="long story"):
                    yield b"first\n"
                    client_gone.wait(5)
                    for n in range(10_000):  # the server fails to write long before the end
                        chunks_after_disconnect.append(n)
                        yield b"more\n" * 100

            return Response(stream_with_context(body()))

        with serve(app) as url:
            port = int(url.rsplit(":", 1)[1])
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
            received = b""
            while b"first" not in received:
                received += sock.recv(1024)
            # Close with a reset, as a browser tab being closed would.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            client_gone.set()

            [trace] = wait_for(lambda: events.named("$ai_trace"))
        assert len(chunks_after_disconnect) < 10_000

    assert len(events.named("$ai_trace")) == 1
    [gen] = events.named("$ai_generation")
    assert events.trace_ids() == {trace["properties"]["$ai_trace_id"]}
    assert trace["timestamp"] >= gen["timestamp"]  # the trace lasted until the disconnect
    assert trace["properties"]["$ai_span_name"] == "GET /stream"


def test_a_streamed_body_closed_before_its_first_chunk_ends_the_trace() -> None:
    app = make_app()
    LLMTrace(app)
    body_closed = threading.Event()

    @app.get("/stream")
    def stream() -> Response:
        with tool("prepare"):
            pass

        def body() -> Iterator[str]:
            try:
                yield "never sent"
            finally:
                body_closed.set()

        response = Response(body())
        response.call_on_close(body_closed.set)
        return response

    environ = EnvironBuilder(path="/stream").get_environ()
    with capture_events() as events:
        wsgi_body = app(environ, lambda status, headers, exc_info=None: lambda data: None)
        assert events.named("$ai_trace") == []  # still open: the body may yet run
        wsgi_body.close()  # type: ignore[attr-defined]

        assert body_closed.is_set()
        assert len(events.named("$ai_trace")) == 1
        wsgi_body.close()  # type: ignore[attr-defined]
        assert len(events.named("$ai_trace")) == 1


def test_a_plain_generator_streams_in_the_request_trace() -> None:
    app = make_app()
    LLMTrace(app)

    @app.get("/plain")
    def plain() -> Response:
        def body() -> Iterator[str]:  # no stream_with_context: no request context here
            with generation("answer", model="gpt-4o-mini", input="hi") as gen:
                gen.chunk("hello")
                yield "hello"

        return Response(body())

    with capture_events() as events:
        response = app.test_client().get("/plain")
        assert events.named("$ai_trace") == []
        assert response.get_data() == b"hello"
        [trace] = events.named("$ai_trace")
        response.close()

    assert len(events.named("$ai_trace")) == 1
    assert (
        events.by_span_name("answer")["properties"]["$ai_trace_id"]
        == (trace["properties"]["$ai_trace_id"])
    )


def test_an_error_while_streaming_marks_the_trace() -> None:
    app = make_app()
    LLMTrace(app)

    @app.get("/fails")
    def fails() -> Response:
        def body() -> Iterator[str]:
            with generation("answer", input="hi"):
                yield "partial"
                raise ConnectionResetError("provider hung up")

        return Response(stream_with_context(body()))

    with capture_events() as events:
        response = app.test_client().get("/fails")
        with pytest.raises(ConnectionResetError):
            response.get_data()
        response.close()

    [trace] = events.named("$ai_trace")
    assert trace["properties"]["$ai_error_type"] == "ConnectionResetError"
    assert events.by_span_name("answer")["properties"]["$ai_is_error"] is True


def test_a_first_request_that_streams_gets_a_session_id() -> None:
    with capture_events() as events:
        app = streaming_app(events, [])
        browser = app.test_client()
        streamed = browser.get("/stream/1")
        streamed.get_data()
        streamed.close()
        browser.post("/chat/1")

    first, second = (t["properties"].get("$ai_session_id") for t in events.named("$ai_trace"))
    assert first is not None
    assert first == second


def test_concurrent_users_never_get_each_others_spans() -> None:
    """Two signed-in users hit a threaded server at the same time, each pair of requests
    meeting inside the view (and inside a streamed body): every span must carry its own
    user's distinct_id, session id and trace."""
    rounds = 12
    meet = threading.Barrier(2)
    app = make_app()
    LLMTrace(app)

    def work(me: str) -> None:
        with generation("answer", model="m", input=me, properties={"who": me}) as gen:
            meet.wait(timeout=5)  # both users are inside a generation now
            with tool("lookup", properties={"who": me}):
                meet.wait(timeout=5)
            gen.set_output(me)

    @app.post("/ask")
    def ask() -> str:
        me = str(current_user.get_id())
        work(me)
        return me

    @app.get("/stream")
    def stream() -> Response:
        me = str(current_user.get_id())

        def body() -> Iterator[str]:
            yield "start "
            work(me)
            yield me

        return Response(stream_with_context(body()))

    def browser(url: str, name: str) -> list[str]:
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        opener.open(urllib.request.Request(f"{url}/login/{name}", method="POST"), timeout=10)
        answers = []
        for n in range(rounds):
            if n % 2:
                request = urllib.request.Request(f"{url}/stream")
            else:
                request = urllib.request.Request(f"{url}/ask", method="POST")
            with opener.open(request, timeout=10) as response:
                answers.append(response.read().decode())
        return answers

    with capture_events() as events, serve(app) as url, ThreadPoolExecutor(2) as pool:
        alice, bob = pool.submit(browser, url, "alice"), pool.submit(browser, url, "bob")
        assert alice.result(30)[-1].endswith("alice")
        assert bob.result(30)[-1].endswith("bob")
        wait_for(lambda: len(events.named("$ai_trace")) == 2 * rounds)

    spans = [e for e in events if e["event"] != "$ai_trace"]
    assert len(spans) == 2 * 2 * rounds
    owner_of_trace = {t["properties"]["$ai_trace_id"]: t for t in events.named("$ai_trace")}
    sessions: dict[str, set[str]] = {"alice": set(), "bob": set()}
    for span in spans:
        who = span["properties"]["who"]
        trace = owner_of_trace[span["properties"]["$ai_trace_id"]]
        assert span["distinct_id"] == who
        assert trace["distinct_id"] == who
        assert span["properties"]["$ai_session_id"] == trace["properties"]["$ai_session_id"]
        sessions[who].add(span["properties"]["$ai_session_id"])
    assert len(sessions["alice"]) == len(sessions["bob"]) == 1
    assert sessions["alice"] != sessions["bob"]
    assert json.dumps(list(events)).count('"who": "alice"') == 2 * rounds
