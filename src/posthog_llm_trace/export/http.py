"""The HTTP transport: PostHog's capture API as the server really behaves.

:class:`HttpTransport` posts lists of PostHog events to ``{host}/batch/`` (or to the AI lane
``/i/v0/ai/batch/``) and accounts for every event it is given, exactly once: either ``sent``, or
dropped with a reason (``rejected``, ``too_large``, ``retries_exhausted``, ``invalid``, or the
reason of an :meth:`~HttpTransport.abort`: ``shutdown`` / ``at_exit``).

Wire behaviour (see ``research/posthog.md`` section 2):

- Body ``{"api_key", "batch", "sent_at"}``; ``sent_at`` is stamped at send time on every attempt
  because the server corrects clock skew with it. Each event is serialised once: the background
  exporter has :meth:`~HttpTransport.encode` do it as each trace is mapped (see :data:`Encoded`),
  and :meth:`~HttpTransport.send` does it for events given as dicts. A retry only re-stamps
  ``sent_at`` (and gzips the body again: see :class:`.wire.Body`).
- gzip with ``Content-Encoding: gzip`` when ``settings.gzip``, at level 2: on ~1 KB LLM events
  it shrinks bodies about 4x for ~9 us per event on a small VM, where level 6 gets 5x for ~34 us
  (measured with ``bench/bench_export.py``'s events); CPU on the web host is dearer than bytes.
- A request body stays under ~5 MiB of JSON (posthog-python's ``BATCH_SIZE_LIMIT``), far below the
  server's 20 MB, so one slow request never holds a huge batch hostage.
- Retries for network errors, 408, 429 and 5xx: ``min(2**n, 30)`` seconds with jitter, a
  ``Retry-After`` header (seconds or HTTP date) honoured as a minimum and clamped to 30 s, at most
  ``settings.max_retries`` retries, never past the caller's deadline.
- Other 4xx are final (``rejected``). A 413 refuses the *whole* request, so the batch is split in
  halves until the offending event is alone; that event is handed to ``shrink`` for a smaller
  version and sent once more, and only then dropped as ``too_large``.
- With ``settings.ai_endpoint``, ``$ai_*`` events go to ``/i/v0/ai/batch/`` (8 MiB per event) and
  anything else to ``/batch/`` (the AI lane answers 400 to a whole request holding one non-AI
  event). A 404 from the AI lane (self-hosted PostHog) switches that host to ``/batch/`` for the
  rest of the process, logged once; events measured for the AI lane (8 MiB each) that then go to
  ``/batch/`` are measured, and shrunk, again for its lower limit, never dropped for it.

Why the standard library's :mod:`http.client` and not posthog-python's ``Client`` or ``requests``:
posthog-python's client drops events without counting them (queue full, oversized events, failed
batches), cannot be given our deadlines (its retries and atexit budget are its own), and its queue
and consumer thread would duplicate ours, so every event would be buffered twice. ``requests`` /
``urllib3`` would add a dependency for a single POST and their retry layer would hide attempts from
our accounting. :mod:`http.client` gives a persistent keep-alive connection per sender (reconnected
after any error), socket timeouts we set from the deadline, and sockets we can shut down from
another thread so that shutdown interrupts a request stuck on a hanging server. Proxies from the
environment (``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``) are honoured as ``requests`` would.

The API key only ever goes into request bodies: never into logs, reprs or exception messages,
even when a server echoes it (it is redacted from an error body before the body is cut for the
log). The user info of a host URL (``https://user:password@host``) is never shown either.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import logging
import os
import random
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC

from .. import jsonenc
from ..settings import Settings, safe_url
from ..stats import Stats
from .base import Event
from .wire import (
    MAX_BODY_BYTES,
    Body,
    Chunk,
    Encoded,
    Outgoing,
    PlainConnection,
    TLSConnection,
    pack,
    proxy_for,
    to_json,
    user_agent,
)

__all__ = [
    "AI_EVENTS",
    "AI_PATH",
    "BATCH_PATH",
    "MAX_BODY_BYTES",
    "Encoded",
    "HttpTransport",
    "parse_retry_after",
    "retry_budget",
    "user_agent",
]

logger = logging.getLogger("posthog_llm_trace")

BATCH_PATH = "/batch/"
AI_PATH = "/i/v0/ai/batch/"
#: The event names PostHog's AI lane accepts; any other name makes it refuse the whole request.
AI_EVENTS = frozenset(
    {"$ai_generation", "$ai_embedding", "$ai_span", "$ai_trace", "$ai_metric", "$ai_feedback"}
)
#: The AI lane's per-event ceiling (``ai_max_event_bytes``), less room for the envelope.
AI_MAX_EVENT_BYTES = 8 * 1024 * 1024 - 64 * 1024
MAX_BACKOFF = 30.0
SNIPPET_CHARS = 300  # of an error body, in the drop log

_RETRYABLE_STATUS = frozenset({408, 429})
# Errors that mean a kept-alive connection was closed by the server while idle: the request never
# reached the application, so it is resent at once on a fresh connection, not after a backoff.
_STALE_CONNECTION_ERRORS = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)


# Hosts whose AI lane answered 404: they get /batch/ for the rest of the process.
_AI_LANE_MISSING: set[str] = set()
_AI_LANE_LOCK = threading.Lock()


def _encoded(events: Sequence[Outgoing]) -> list[Outgoing]:
    out: list[Outgoing] = []
    for event in events:
        if isinstance(event, tuple):
            out.append(event)
            continue
        try:
            out.append((str(event.get("event")), to_json(event)))
        except (TypeError, ValueError, RecursionError):
            out.append(event)
    return out


def retry_budget(settings: Settings) -> float:
    """Seconds a batch may need when every allowed retry happens, each request taking its full
    timeout: the natural deadline for callers that have none of their own."""
    retries = settings.max_retries
    backoff = sum(min(2.0**n, MAX_BACKOFF) * 1.25 for n in range(retries))
    return backoff + (retries + 1) * settings.timeout


def parse_retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), 0 if absent or
    malformed, clamped to ``MAX_BACKOFF``."""
    if not value:
        return 0.0
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return 0.0
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return 0.0
    return min(max(seconds, 0.0), MAX_BACKOFF)


@dataclass
class _Outcome:
    """What one HTTP attempt gave: a status, or a network error's class name."""

    status: int | None
    retry_after: str | None = None
    error: str | None = None
    snippet: str = ""
    stale: bool = False


class _Aborted(Exception):
    """Internal: the transport was aborted while sending (shutdown, exit)."""


class _Tally:
    """Events of one ``send`` call not yet accounted for, so that a bug cannot lose any silently."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


class HttpTransport:
    """Posts PostHog events to the capture API, with retries, splitting and exact accounting.

    ``shrink(event, budget)`` (supplied by the core) returns a version of ``event`` whose JSON fits
    in ``budget`` bytes, or None; it is used when the server refuses a single event as too large.

    ``clock`` (a monotonic clock), ``sleep`` (``sleep(seconds)``; the default waits on an internal
    :class:`threading.Event` so that :meth:`abort` cuts it short) and ``rand`` (jitter in [0, 1))
    can be injected so that backoff is testable without real waiting.

    Thread-safe: several threads may call :meth:`send` at once (the ``sync`` exporter does); each
    takes its own keep-alive connection from a small pool.
    """

    def __init__(
        self,
        settings: Settings,
        stats: Stats,
        shrink: Callable[[Event, int], Event | None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._shrink = shrink
        self._clock = clock
        self._sleep_fn = sleep
        self._rand = rand
        self._api_key = settings.api_key or ""
        self._shown_host = safe_url(settings.host)  # for logs and reprs: no user info
        self._key_json = json.dumps(self._api_key)
        self._user_agent = user_agent()

        parts = urllib.parse.urlsplit(settings.host)
        self._scheme = parts.scheme
        self._hostname = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        # A self-hosted PostHog may sit under a path prefix (https://example.com/posthog).
        self._prefix = parts.path.rstrip("/")
        self._host_key = f"{self._scheme}://{self._hostname}:{self._port}{self._prefix}"
        self._proxy = proxy_for(self._scheme, self._hostname)
        self._ssl_context: ssl.SSLContext | None = None

        self._init_state()
        _register_for_fork(self)

    def _init_state(self) -> None:
        # Everything here is per process: rebuilt from scratch in a forked child.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._busy: set[http.client.HTTPConnection] = set()
        self._stop = threading.Event()
        self._abort_reason = "shutdown"

    def __repr__(self) -> str:
        return f"HttpTransport(host={self._shown_host!r}, ai_endpoint={self._use_ai_lane()})"

    # --- public API

    def send(self, events: Sequence[Outgoing], deadline: float) -> bool:
        """Deliver ``events``, retrying until ``deadline`` (a ``time.monotonic()`` value).

        Returns True when every event was accepted by the server. Never raises: every event is
        counted once, as ``sent`` or as a drop with its reason."""
        if not events:
            return True
        tally = _Tally(len(events))
        try:
            if self._stop.is_set():
                raise _Aborted
            return self._send(_encoded(events), deadline, tally)
        except _Aborted:
            self._drop(self._abort_reason, tally, tally.left, "")
            return False
        except Exception as exc:  # a bug of ours: count, never raise into the exporter
            logger.error("posthog-llm-trace transport failed: %s", type(exc).__name__)
            self._drop("invalid", tally, tally.left, f"internal error {type(exc).__name__}")
            return False

    def encode(self, events: Sequence[Outgoing]) -> list[Outgoing]:
        """``events`` serialised one by one for a later :meth:`send` (those already encoded are
        kept). What cannot be serialised stays a dict, for :meth:`send` to count."""
        return _encoded(events)

    def abort(self, reason: str = "shutdown") -> None:
        """Stop sending now: cut any backoff short, interrupt requests in flight, and count the
        events they held (and those of later :meth:`send` calls) as dropped for ``reason``."""
        self._abort_reason = reason
        self._stop.set()
        with self._lock:
            busy = list(self._busy)
        for conn in busy:
            sock = conn.sock
            if sock is not None:
                # shutdown() (not close()) wakes a thread blocked in recv() on this socket.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Abort (reason ``shutdown``, unless already aborted for another reason) and close the
        kept-alive connections."""
        if not self._stop.is_set():
            self.abort("shutdown")
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def retry_budget(self) -> float:
        """Seconds a batch may need when every allowed retry happens (see :func:`retry_budget`)."""
        return retry_budget(self._settings)

    # --- sending

    def _use_ai_lane(self) -> bool:
        return self._settings.ai_endpoint and self._host_key not in _AI_LANE_MISSING

    def _send(self, events: Sequence[Outgoing], deadline: float, tally: _Tally) -> bool:
        ai: list[Outgoing]
        plain: list[Outgoing]
        if self._use_ai_lane():
            ai, plain = [], []
            for e in events:
                name = e[0] if isinstance(e, tuple) else e.get("event")
                (ai if name in AI_EVENTS else plain).append(e)
        else:
            ai, plain = [], list(events)
        ok = True
        if ai:
            ok = self._send_lane(ai, True, deadline, tally) and ok
        if plain:
            ok = self._send_lane(plain, False, deadline, tally) and ok
        return ok and tally.left == 0

    def _send_lane(self, events: list[Outgoing], ai: bool, deadline: float, tally: _Tally) -> bool:
        limit = max(self._settings.max_event_bytes, AI_MAX_EVENT_BYTES if ai else 0)
        if events and all(isinstance(e, tuple) for e in events):
            # The common case: every event encoded, and all of them fit one request.
            parts = [e[1] for e in events]  # type: ignore[index]
            fits = max(map(len, parts)) <= limit
            if fits and sum(map(len, parts)) + len(parts) + 1 <= MAX_BODY_BYTES:
                return self._deliver(Chunk(events, parts), ai, deadline, tally)

        # Otherwise event by event: count what cannot be serialised, shrink what is too large
        # for the server (it would refuse the whole request), and split into request-sized chunks.
        fitting: list[tuple[Outgoing, bytes]] = []
        ok = True
        for event in events:
            try:
                # A dict here is one encode() could not serialise: this names the error.
                encoded = event[1] if isinstance(event, tuple) else to_json(event)
            except (TypeError, ValueError, RecursionError) as exc:
                self._drop("invalid", tally, 1, f"not JSON-serialisable: {type(exc).__name__}")
                ok = False
                continue
            if len(encoded) > limit:
                smaller = self._shrunk(event, limit)
                if smaller is None:
                    self._drop("too_large", tally, 1, f"event of {len(encoded)} bytes")
                    ok = False
                    continue
                encoded = smaller
            fitting.append((event, encoded))
        for pairs in pack(((pair, len(pair[1])) for pair in fitting), MAX_BODY_BYTES, 256):
            chunk = Chunk([e for e, _ in pairs], [encoded for _, encoded in pairs])
            ok = self._deliver(chunk, ai, deadline, tally) and ok
        return ok

    def _shrunk(self, event: Outgoing, budget: int) -> bytes | None:
        """The JSON of a smaller version of ``event`` that fits ``budget``, or None."""
        if self._shrink is None:
            return None
        try:
            # Decoded with its floats as they were written, so that they encode alike.
            decoded = jsonenc.canonical(json.loads(event[1])) if isinstance(event, tuple) else event
            smaller = self._shrink(decoded, budget)
            if smaller is None:
                return None
            encoded = to_json(smaller)
        except Exception as exc:
            logger.error("posthog-llm-trace shrink failed: %s", type(exc).__name__)
            return None
        return encoded if len(encoded) <= budget else None

    def _deliver(
        self,
        chunk: Chunk,
        ai: bool,
        deadline: float,
        tally: _Tally,
        shrunk: bool = False,
    ) -> bool:
        """Send one chunk with retries; split it on 413."""
        n = len(chunk.events)
        body = Body(chunk.array, self._key_json, self._settings.gzip)
        attempt = 0
        reconnected = False
        while True:
            if self._stop.is_set():
                raise _Aborted
            remaining = deadline - self._clock()
            if remaining <= 0:
                self._drop("retries_exhausted", tally, n, "deadline reached before sending")
                return False
            lane_ai = ai and self._use_ai_lane()
            if ai and not lane_ai:
                # Built for the AI lane, which this host turned out not to have (a 404 to this
                # chunk or another): the same events go to /batch/, whose per-event limit is
                # lower, so they are measured (and shrunk) again for it. Not a retry.
                return self._send_lane(chunk.events, False, deadline, tally)
            path = self._prefix + (AI_PATH if lane_ai else BATCH_PATH)
            outcome, reused = self._post(
                path, body.render(), min(self._settings.timeout, remaining)
            )
            status = outcome.status

            if status is not None and 200 <= status < 300:
                self._stats.add("sent", n)
                tally.left -= n
                return True
            if self._stop.is_set():
                raise _Aborted
            if status == 404 and lane_ai:
                self._ai_lane_missing()
                continue  # to /batch/, above
            if status == 413:
                return self._too_large(chunk, ai, deadline, tally, shrunk)
            if outcome.stale and reused and not reconnected:
                # A kept-alive connection the server had closed: resend at once, once.
                reconnected = True
                continue
            retryable = status is None or status in _RETRYABLE_STATUS or status >= 500
            what = f"HTTP {status}" if status is not None else f"network error {outcome.error}"
            if not retryable:
                detail = f"{what} from {self._shown_host}{path}"
                if outcome.snippet:
                    detail += f": {outcome.snippet}"
                self._drop("rejected", tally, n, detail)
                return False
            if attempt >= self._settings.max_retries:
                self._drop("retries_exhausted", tally, n, f"{what} after {attempt} retries")
                return False
            delay = self._backoff(attempt, outcome.retry_after)
            if self._clock() + delay >= deadline:
                self._drop("retries_exhausted", tally, n, f"{what}; no time left to retry")
                return False
            logger.debug("posthog-llm-trace: %s, retrying %d events in %.1f s", what, n, delay)
            self._stats.add("retried", n)
            self._pause(delay)
            attempt += 1

    def _too_large(
        self,
        chunk: Chunk,
        ai: bool,
        deadline: float,
        tally: _Tally,
        shrunk: bool,
    ) -> bool:
        if len(chunk.events) > 1:
            # The server refused the whole request: find the culprit by halving.
            first, second = chunk.halves()
            first_ok = self._deliver(first, ai, deadline, tally)
            second_ok = self._deliver(second, ai, deadline, tally)
            return first_ok and second_ok
        event, encoded = chunk.events[0], chunk.encoded[0]
        if not shrunk:
            smaller = self._shrunk(event, len(encoded) // 2)
            if smaller is not None:
                return self._deliver(Chunk([event], [smaller]), ai, deadline, tally, shrunk=True)
        self._drop("too_large", tally, 1, f"server refused an event of {len(encoded)} bytes")
        return False

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        base = min(2.0**attempt, MAX_BACKOFF)
        # Jitter spreads the retries of many processes that failed together.
        delay = min(base * (0.75 + 0.5 * self._rand()), MAX_BACKOFF)
        return max(delay, parse_retry_after(retry_after))

    def _pause(self, seconds: float) -> None:
        if self._sleep_fn is not None:
            self._sleep_fn(seconds)
        else:
            self._stop.wait(seconds)
        if self._stop.is_set():
            raise _Aborted

    def _ai_lane_missing(self) -> None:
        with _AI_LANE_LOCK:
            first = self._host_key not in _AI_LANE_MISSING
            _AI_LANE_MISSING.add(self._host_key)
        if first:
            logger.warning(
                "posthog-llm-trace: %s has no AI endpoint (%s answered 404); "
                "sending to %s instead from now on",
                self._shown_host,
                AI_PATH,
                BATCH_PATH,
            )

    def _drop(self, reason: str, tally: _Tally, n: int, detail: str) -> None:
        tally.left -= n
        self._stats.dropped(reason, n, detail)

    def _snippet(self, data: bytes) -> str:
        """The start of an error body for the drop log, the API key removed: redacted before it
        is cut, and a key cut at the end is removed too (a server may echo the request)."""
        text = data[: 64 * 1024].decode("utf-8", "replace")
        key = self._api_key
        if key:
            text = text.replace(key, "***")
        text = text[:SNIPPET_CHARS]
        if key and len(text) == SNIPPET_CHARS:
            for k in range(min(len(key), len(text)), 3, -1):
                if text.endswith(key[:k]):
                    text = text[:-k] + "***"
                    break
        return text

    # --- connections

    def _post(self, path: str, body: bytes, timeout: float) -> tuple[_Outcome, bool]:
        """One POST. Returns the outcome and whether a kept-alive connection was reused."""
        conn, reused = self._acquire(timeout)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
        }
        if self._settings.gzip:
            headers["Content-Encoding"] = "gzip"
        if self._proxy is not None and self._scheme == "http":
            target = f"http://{self._hostname}:{self._port}{path}"
            if self._proxy.auth:
                headers["Proxy-Authorization"] = self._proxy.auth
        else:
            target = path
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            outcome = _Outcome(
                response.status,
                response.getheader("Retry-After"),
                snippet=self._snippet(data) if response.status >= 400 else "",
            )
        except (OSError, http.client.HTTPException) as exc:
            self._discard(conn)
            stale = isinstance(exc, _STALE_CONNECTION_ERRORS)
            return _Outcome(None, error=type(exc).__name__, stale=stale), reused
        self._release(conn)
        return outcome, reused

    def _acquire(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._pid != os.getpid():  # forked without our hook having run
                self._idle, self._busy, self._pid = [], set(), os.getpid()
            conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = self._connect(timeout)
            self._busy.add(conn)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, reused

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._busy.discard(conn)
            if conn.sock is not None and len(self._idle) < 4 and not self._stop.is_set():
                self._idle.append(conn)
                return
        conn.close()

    def _discard(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._busy.discard(conn)
        conn.close()

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        proxy = self._proxy
        if self._scheme == "https":
            # Loading the CA bundle takes milliseconds: once per transport, not per connection.
            context = self._ssl_context
            if context is None:
                context = self._ssl_context = ssl.create_default_context()
            if proxy is None:
                return TLSConnection(self._hostname, self._port, timeout=timeout, context=context)
            conn = TLSConnection(proxy.host, proxy.port, timeout=timeout, context=context)
            headers = {"Proxy-Authorization": proxy.auth} if proxy.auth else None
            conn.set_tunnel(self._hostname, self._port, headers=headers)
            return conn
        if proxy is None:
            return PlainConnection(self._hostname, self._port, timeout=timeout)
        return PlainConnection(proxy.host, proxy.port, timeout=timeout)

    def _after_fork_in_child(self) -> None:
        # The parent's sockets are the parent's: never write to them (nor shut them down) here.
        self._init_state()


# --- fork safety: one hook for every live transport, each held weakly.

_LIVE: weakref.WeakSet[HttpTransport] = weakref.WeakSet()


def _register_for_fork(transport: HttpTransport) -> None:
    _LIVE.add(transport)


def _reinit_all_after_fork() -> None:
    global _AI_LANE_LOCK
    _AI_LANE_LOCK = threading.Lock()  # it may have been held by a thread the child lacks
    for transport in list(_LIVE):
        transport._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_all_after_fork)
