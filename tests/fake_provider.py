"""A fake LLM provider on 127.0.0.1 that answers the real ``openai`` and ``anthropic`` SDKs as
their APIs do: JSON bodies, SSE streams, error statuses.

The server is generic: a route table of ``(method, path) -> handler``. What each API answers is
written in its own module (``tests/fake_openai.py``, ``tests/fake_anthropic.py``), each with a
``register(provider)`` function. Every request is kept in ``provider.requests`` so a test can
check what the SDK sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeProvider", "Json", "Request", "Sse"]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Json:
    """A JSON answer."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Sse:
    """A server-sent-events stream: ``(event name or None, data)`` pairs; data that is not a
    string is JSON-encoded. ``delay`` seconds pass before each event."""

    events: Iterable[tuple[str | None, Any]]
    delay: float = 0.0
    status: int = 200


Handler = Callable[[Request], "Json | Sse"]


class FakeProvider:
    """Start with ``FakeProvider()`` (or as a context manager); ``url`` is its base URL."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[Request] = []
        #: Answers to give instead of the route's, next first: ``{path: [Json, ...]}``.
        self.queued: dict[str, list[Json | Sse]] = {}
        self._lock = threading.Lock()
        provider = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                provider._serve(self)

            def do_POST(self) -> None:
                provider._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        for module in ("fake_openai", "fake_anthropic"):
            try:
                register = __import__(f"tests.{module}", fromlist=["register"]).register
            except (ImportError, AttributeError):
                continue
            register(self)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method.upper(), path)] = handler

    def queue(self, path: str, *answers: Json | Sse) -> None:
        """Answer the next requests to ``path`` with these, in order (errors, slow streams)."""
        with self._lock:
            self.queued.setdefault(path, []).extend(answers)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- serving -------------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        request = Request(handler.command, path, dict(handler.headers.items()), body)
        with self._lock:
            self.requests.append(request)
            queued = self.queued.get(path)
            answer = queued.pop(0) if queued else None
        if answer is None:
            route = self.routes.get((handler.command, path))
            if route is None:
                answer = Json({"error": {"message": f"no route {path}", "type": "not_found"}}, 404)
            else:
                answer = route(request)
        if isinstance(answer, Sse):
            self._stream(handler, answer)
        else:
            data = json.dumps(answer.body).encode()
            handler.send_response(answer.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for key, value in answer.headers.items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(data)

    def _stream(self, handler: BaseHTTPRequestHandler, answer: Sse) -> None:
        handler.send_response(answer.status)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        try:
            for event, data in answer.events:
                if answer.delay:
                    time.sleep(answer.delay)
                text = data if isinstance(data, str) else json.dumps(data)
                frame = (f"event: {event}\n" if event else "") + f"data: {text}\n\n"
                handler.wfile.write(frame.encode())
                handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: an abandoned stream
