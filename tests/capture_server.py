"""A loopback PostHog capture server for the delivery tests and the benchmark.

It behaves like PostHog's capture service as ``research/posthog.md`` section 2 describes it:

- ``POST /batch/`` (and ``/batch``) and ``POST /i/v0/ai/batch/``, body
  ``{"api_key", "batch", "sent_at"}``, gzip when ``Content-Encoding: gzip``;
- 400 for malformed JSON or gzip, a missing ``api_key``, an empty batch, or any non-AI event on the
  AI lane; 413 for a body over ``max_body_bytes`` (compressed or not) or for any single event over
  the per-event limit (the *whole* request is refused, as on PostHog);
- 200 ``{"status": 1}`` otherwise; events without a name or distinct id are silently dropped, as
  PostHog does (with a 200).

It can be told to misbehave at runtime: :meth:`CaptureServer.fail` (a status N times or for T
seconds, optionally with ``Retry-After``), :meth:`~CaptureServer.rate_limit`,
:meth:`~CaptureServer.hang` (no answer until :meth:`~CaptureServer.release`),
:meth:`~CaptureServer.drop_connections`, and ``ai_endpoint_missing`` (404 on the AI lane).

Run as a script (``python tests/capture_server.py [--count-only]``) it prints its URL and answers
``count`` / ``unique`` / ``reset`` / ``quit`` on stdin; the benchmark runs it that way, in a
process of its own.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import socket
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "AI_EVENTS",
    "CaptureServer",
    "Fault",
    "RecordedRequest",
    "SimpleItem",
    "make_items",
    "render_simple",
]

AI_EVENTS = frozenset(
    {"$ai_generation", "$ai_embedding", "$ai_span", "$ai_trace", "$ai_metric", "$ai_feedback"}
)
BATCH_PATHS = ("/batch/", "/batch")
AI_PATH = "/i/v0/ai/batch/"
DEFAULT_MAX_BODY_BYTES = 20_000_000
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024 - 64 * 1024  # ~983 KB, as reported on PostHog Cloud
DEFAULT_MAX_AI_EVENT_BYTES = 8 * 1024 * 1024
_OK = b'{"status": 1}'


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    path: str
    status: int
    at: float  # time.monotonic() when the request arrived (same clock as the test process)
    headers: dict[str, str]
    body_bytes: int
    sent_at: str | None = None
    api_key: str | None = None
    events: int = 0
    fault: str | None = None
    gzip_magic: bool = False  # the body really starts with the gzip magic number


@dataclass
class Fault:
    """A misbehaviour: answer ``status`` (kind ``"status"``), never answer (``"hang"``) or close
    the connection (``"drop"``), ``times`` times or until ``until`` (monotonic), on ``paths``."""

    kind: str
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None
    until: float | None = None
    paths: tuple[str, ...] | None = None
    body: bytes = b'{"error": "injected"}'

    def active(self, path: str, now: float) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.until is not None and now >= self.until:
            return False
        return self.paths is None or path in self.paths


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    capture: CaptureServer

    def process_request(self, request: Any, client_address: Any) -> None:
        self.capture._track(request, True)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.capture._track(request, False)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (or a socket we shut down ourselves) is part of the tests.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as PostHog's load balancers
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._answer(405, b'{"error": "method not allowed"}')

    def do_POST(self) -> None:
        capture = self.server.capture
        arrived = time.monotonic()
        path = urlsplit(self.path).path  # absolute URIs arrive when we act as an HTTP proxy
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = RecordedRequest(path, 0, arrived, headers, len(raw))
        record.gzip_magic = raw[:2] == b"\x1f\x8b"

        fault = capture._take_fault(path, arrived)
        if fault is not None:
            record.fault = fault.kind
            record.sent_at = _peek_sent_at(raw, headers)
            if fault.kind == "hang":
                capture._log(record)
                capture._released.wait(60.0)
                self._close()
                return
            if fault.kind == "drop":
                capture._log(record)
                self._close()
                return
            record.status = fault.status
            capture._log(record)
            self._answer(fault.status, fault.body, fault.headers)
            return

        status, body, events = self._ingest(capture, path, raw, headers, record)
        record.status = status
        if status == 200:
            record.events = capture._accept(events, record)
        capture._log(record)
        self._answer(status, body)

    def _ingest(
        self,
        capture: CaptureServer,
        path: str,
        raw: bytes,
        headers: dict[str, str],
        record: RecordedRequest,
    ) -> tuple[int, bytes, list[dict[str, Any]]]:
        ai = path == AI_PATH
        if not ai and path not in BATCH_PATHS:
            return 404, b'{"error": "not found"}', []
        if ai and capture.ai_endpoint_missing:
            return 404, b'{"error": "not found"}', []
        if len(raw) > capture.max_body_bytes:
            return 413, b'{"error": "payload too large"}', []
        if headers.get("content-encoding", "").lower() == "gzip":
            try:
                inflater = zlib.decompressobj(wbits=47)
                data = inflater.decompress(raw, capture.max_body_bytes + 1)
            except zlib.error:
                return 400, b'{"error": "bad gzip"}', []
            if len(data) > capture.max_body_bytes or inflater.unconsumed_tail:
                return 413, b'{"error": "payload too large"}', []
        else:
            data = raw
        try:
            body = json.loads(data)
        except ValueError:
            return 400, b'{"error": "bad json"}', []
        if not isinstance(body, dict) or not body.get("api_key"):
            return 400, b'{"error": "missing api_key"}', []
        batch = body.get("batch")
        if not isinstance(batch, list) or not batch:
            return 400, b'{"error": "empty batch"}', []
        if ai and any(not isinstance(e, dict) or e.get("event") not in AI_EVENTS for e in batch):
            return 400, b'{"error": "non-AI event on the AI endpoint"}', []
        limit = capture.max_ai_event_bytes if ai else capture.max_event_bytes
        # No event can be larger than the whole body, so only re-measure when it could be.
        if len(data) > limit:
            for event in batch:
                size = len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode())
                if size > limit:
                    return 413, b'{"error": "event too large"}', []
        record.sent_at = body.get("sent_at")
        record.api_key = body.get("api_key")
        return 200, _OK, batch

    def _answer(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _close(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class CaptureServer:
    """A PostHog capture server on 127.0.0.1 (see the module docstring). Use as a context
    manager, or call :meth:`start` and :meth:`stop`.

    ``count_only=True`` keeps only uuids (no event bodies, no request log), for benchmarks."""

    def __init__(
        self,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_ai_event_bytes: int = DEFAULT_MAX_AI_EVENT_BYTES,
        count_only: bool = False,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        self.max_ai_event_bytes = max_ai_event_bytes
        self.count_only = count_only
        self.ai_endpoint_missing = False
        self._cond = threading.Condition()
        self._events: list[dict[str, Any]] = []
        self._uuids: list[str] = []
        self._requests: list[RecordedRequest] = []
        self._silently_dropped = 0
        self._faults: list[Fault] = []
        self._released = threading.Event()
        self._released.set()
        self._sockets: set[Any] = set()
        #: TCP connections accepted so far (keep-alive reuses one).
        self.connections_opened = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle

    def start(self) -> CaptureServer:
        """Listen on an ephemeral port of 127.0.0.1 and serve from a daemon thread."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.capture = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hung requests and close every open connection."""
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.disconnect_all()
        self._server = None

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the ``host`` setting that points at this server."""
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- what was received

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every accepted event, in arrival order (a copy)."""
        with self._cond:
            return list(self._events)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request, answered or not, in arrival order (a copy)."""
        with self._cond:
            return list(self._requests)

    @property
    def event_count(self) -> int:
        """How many events were accepted."""
        with self._cond:
            return len(self._uuids)

    @property
    def silently_dropped(self) -> int:
        """Events in accepted requests that PostHog would drop quietly (no name or distinct id)."""
        with self._cond:
            return self._silently_dropped

    def uuids(self) -> list[str]:
        """The uuids of every accepted event, in arrival order (duplicates kept)."""
        with self._cond:
            return list(self._uuids)

    def wait_for(self, n: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``n`` events were accepted; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._uuids) >= n, timeout)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``n`` requests arrived (whatever the answer); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= n, timeout)

    def reset(self) -> None:
        """Forget received events and requests, and every fault."""
        with self._cond:
            self._events.clear()
            self._uuids.clear()
            self._requests.clear()
            self._faults.clear()
            self._silently_dropped = 0
        self.ai_endpoint_missing = False
        self.release()

    # --- misbehaviour

    def fail(
        self,
        status: int = 503,
        *,
        times: int | None = None,
        seconds: float | None = None,
        retry_after: str | None = None,
        paths: tuple[str, ...] | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer ``status`` to the next ``times`` requests, or to all for ``seconds`` (to all
        until :meth:`reset` when neither is given)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        until = time.monotonic() + seconds if seconds is not None else None
        fault = Fault("status", status, headers, times, until, paths)
        if body is not None:
            fault.body = body
        self._add(fault)

    def rate_limit(self, retry_after: str = "1", *, times: int = 1) -> None:
        """Answer 429 with ``Retry-After: retry_after`` to the next ``times`` requests."""
        self.fail(429, times=times, retry_after=retry_after)

    def hang(self, *, times: int | None = None) -> None:
        """Read requests but never answer them, until :meth:`release` (then the connection is
        closed without an answer, and nothing is recorded)."""
        self._released.clear()
        self._add(Fault("hang", times=times))

    def release(self) -> None:
        """End :meth:`hang`: hung requests are closed unanswered; new ones are served."""
        with self._cond:
            self._faults = [f for f in self._faults if f.kind != "hang"]
        self._released.set()

    def drop_connections(self, *, times: int = 1) -> None:
        """Close the connection without answering the next ``times`` requests."""
        self._add(Fault("drop", times=times))

    def disconnect_all(self) -> None:
        """Close every open connection, as a server does with idle keep-alive connections."""
        with self._cond:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # --- internals (called from handler threads)

    def _add(self, fault: Fault) -> None:
        with self._cond:
            self._faults.append(fault)

    def _take_fault(self, path: str, now: float) -> Fault | None:
        with self._cond:
            for fault in self._faults:
                if fault.active(path, now):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _accept(self, batch: list[dict[str, Any]], record: RecordedRequest) -> int:
        kept = [e for e in batch if isinstance(e, dict) and e.get("event") and _distinct_id(e)]
        with self._cond:
            self._silently_dropped += len(batch) - len(kept)
            self._uuids.extend(str(e.get("uuid")) for e in kept)
            if not self.count_only:
                self._events.extend(kept)
            self._cond.notify_all()
        return len(kept)

    def _log(self, record: RecordedRequest) -> None:
        with self._cond:
            if not self.count_only or record.status != 200:
                self._requests.append(record)
            self._cond.notify_all()

    def _track(self, sock: Any, opened: bool) -> None:
        with self._cond:
            if opened:
                self.connections_opened += 1
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)


def _peek_sent_at(raw: bytes, headers: dict[str, str]) -> str | None:
    """``sent_at`` of a request we refuse anyway (best effort, for tests of retries)."""
    try:
        if headers.get("content-encoding", "").lower() == "gzip":
            raw = gzip.decompress(raw)
        body = json.loads(raw)
    except (OSError, ValueError, EOFError, zlib.error):
        return None
    value = body.get("sent_at") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


def _distinct_id(event: dict[str, Any]) -> bool:
    value = event.get("distinct_id")
    if value is None and isinstance(event.get("properties"), dict):
        value = event["properties"].get("distinct_id")
    return value is not None and str(value) != ""


# --- simple items for delivery tests: the delivery layer must not need spans.


@dataclass(frozen=True)
class SimpleItem:
    """A stand-in for what the core submits: it renders to one event per uuid."""

    uuids: tuple[str, ...]
    payload: str = ""
    name: str = "$ai_generation"
    distinct_id: str = "user-1"

    @property
    def event_count(self) -> int:
        return len(self.uuids)


def make_items(
    n: int, *, per_item: int = 1, payload: str = "", prefix: str = ""
) -> list[SimpleItem]:
    """``n`` items of ``per_item`` events each, with unique uuids."""
    return [
        SimpleItem(tuple(f"{prefix}{uuid.uuid4()}" for _ in range(per_item)), payload)
        for _ in range(n)
    ]


def render_simple(item: SimpleItem) -> list[dict[str, Any]]:
    """PostHog-shaped events for ``item`` (what the core's render does for real spans)."""
    return [
        {
            "event": item.name,
            "distinct_id": item.distinct_id,
            "properties": {
                "$ai_trace_id": item.uuids[0],
                "$ai_model": "gpt-4o-mini",
                "$ai_input": item.payload,
                "pid": os.getpid(),
            },
            "timestamp": "2024-05-01T12:00:00.000Z",
            "uuid": event_uuid,
        }
        for event_uuid in item.uuids
    ]


def gunzip_request(raw: bytes) -> Any:
    """Decode a gzipped JSON request body (a test helper)."""
    return json.loads(gzip.decompress(raw))


def _serve_stdio(count_only: bool) -> None:
    """The benchmark's protocol: print the URL, then answer commands read from stdin."""
    with CaptureServer(count_only=count_only) as server:
        print(server.url, flush=True)
        for line in _lines(sys.stdin):
            command = line.strip()
            if command == "count":  # cheap: polled while a benchmark runs
                print(json.dumps({"events": server.event_count}), flush=True)
            elif command == "unique":
                uuids = server.uuids()
                print(json.dumps({"events": len(uuids), "unique": len(set(uuids))}), flush=True)
            elif command == "reset":
                server.reset()
                print("{}", flush=True)
            elif command == "quit":
                break


def _lines(stream: Any) -> Iterator[str]:
    while True:
        line = stream.readline()
        if not line:
            return
        yield line


if __name__ == "__main__":
    _serve_stdio("--count-only" in sys.argv[1:])
