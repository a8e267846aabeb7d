"""Fixtures of the Django tests: settings per test, and real WSGI and ASGI servers.

Import the fixtures a test module uses (``from tests.django_app.fixtures import llm_settings``);
pytest finds them in the module's namespace.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings

from posthog_llm_trace import client as client_module
from posthog_llm_trace.client import Client, get_client


@pytest.fixture
def llm_settings() -> Iterator[Callable[..., Client]]:
    """``llm_settings(**keys)`` applies ``POSTHOG_LLM_TRACE = {"EXPORT": "memory", **keys}``
    through ``override_settings`` (the app rebuilds the default client, as it would in an
    application's tests) and returns the new default client. Called once with no keys before
    the test. The suite's previous default client is restored, untouched, afterwards."""
    with client_module._lock:
        saved = (client_module._default, client_module._explicit)
        # So that the app's set_default_client() does not shut the suite's client down.
        client_module._default = None
    overrides: list[override_settings] = []

    def apply(**keys: Any) -> Client:
        override = override_settings(POSTHOG_LLM_TRACE={"EXPORT": "memory", **keys})
        override.enable()
        overrides.append(override)
        return get_client()

    apply()
    try:
        yield apply
    finally:
        for override in reversed(overrides):
            override.disable()
        with client_module._lock:
            ours = client_module._default
            client_module._default, client_module._explicit = saved
        if ours is not None and ours is not saved[0]:
            ours.shutdown(timeout=1.0)


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``condition`` until it is truthy (it is an event another thread produces)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {condition}")
        time.sleep(0.005)


class Server:
    """A server on 127.0.0.1 in a thread of this process."""

    def __init__(self, port: int) -> None:
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: str | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def open_stream(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", path, headers=headers or {})
        return conn, conn.getresponse()


@pytest.fixture
def wsgi_server(transactional_db: None) -> Iterator[Server]:
    """Django's WSGI application behind a threaded werkzeug server (a thread per request)."""
    from django.core.wsgi import get_wsgi_application
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, get_wsgi_application(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="wsgi-server", daemon=True)
    thread.start()
    try:
        yield Server(server.port)
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def asgi_server(transactional_db: None) -> Iterator[Server]:
    """Django's ASGI application behind uvicorn, in a thread with its own event loop."""
    import uvicorn
    from django.core.asgi import get_asgi_application

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until uvicorn serves: no start-up race
    config = uvicorn.Config(
        get_asgi_application(),
        lifespan="off",
        log_level="warning",
        http="h11",
        loop="asyncio",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="asgi-server", daemon=True
    )
    thread.start()
    try:
        yield Server(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
