"""What one request carries and how it travels: events as JSON, request bodies, gzip, and the
connections (with proxies from the environment) that :mod:`.http`'s transport keeps alive.

Nothing here retries, counts or decides: :class:`~.http.HttpTransport` does, with these parts.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from .. import jsonenc
from .base import Event

__all__ = [
    "GZIP_LEVEL",
    "MAX_BODY_BYTES",
    "Body",
    "Chunk",
    "Encoded",
    "Outgoing",
    "PlainConnection",
    "Proxy",
    "TLSConnection",
    "pack",
    "proxy_for",
    "to_json",
    "user_agent",
]

T = TypeVar("T")

#: Largest request body we build, in bytes of JSON (before gzip).
MAX_BODY_BYTES = 5 * 1024 * 1024
GZIP_LEVEL = 2

# Compact UTF-8 JSON (orjson when installed, the same bytes as the standard library's): see
# jsonenc. Raises TypeError, ValueError or RecursionError for what is not JSON.
to_json = jsonenc.dumps

#: An event already serialised: ``(event name, its JSON)``. The background exporter encodes each
#: trace's events as soon as they are mapped and holds only these through the round trip: a tuple
#: of a string and bytes is one small object the garbage collector stops tracking, where the
#: mapped dicts are a dozen tracked containers per event that a queue of thousands would promote
#: to the oldest generation (rescanned by every full collection). The dict is rebuilt only for
#: the rare event that must be shrunk.
Encoded = tuple[str, bytes]
#: What :meth:`.http.HttpTransport.send` takes: events as dicts, encoded, or both.
Outgoing = Event | Encoded


def user_agent() -> str:
    """``posthog-llm-trace/<version>``, the User-Agent of every request."""
    try:
        from importlib.metadata import version

        return f"posthog-llm-trace/{version('posthog-llm-trace')}"
    except Exception:  # not installed (running from a checkout)
        return "posthog-llm-trace/0"


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def no_delay(sock: socket.socket | None) -> None:
    # http.client writes the headers and the body with two send() calls: with Nagle's algorithm
    # the body's last segment can wait for the server's delayed ACK of the headers (up to 40 ms).
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PlainConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        no_delay(self.sock)


class TLSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        no_delay(self.sock)


class Chunk:
    """Events that travel in one request, with each one's JSON and the whole array."""

    __slots__ = ("array", "encoded", "events")

    def __init__(self, events: list[Outgoing], encoded: list[bytes]) -> None:
        self.events = events
        self.encoded = encoded
        self.array = b"[" + b",".join(encoded) + b"]"

    def halves(self) -> tuple[Chunk, Chunk]:
        encoded, half = self.encoded, len(self.events) // 2
        return (
            Chunk(self.events[:half], encoded[:half]),
            Chunk(self.events[half:], encoded[half:]),
        )


class Body:
    """A request body built once per chunk; each attempt only re-stamps ``sent_at``.

    Each attempt gzips the whole body afresh. Compressing the part before ``sent_at`` once and
    copying the compressor for every attempt looks cheaper but is not: :meth:`zlib.Compress.copy`
    duplicates ~256 KiB of deflate state, which cost more than compressing a 20-event batch twice
    (``bench/bench_export.py``). Retries are rare; first attempts are every request."""

    __slots__ = ("_gzip", "_prefix")

    def __init__(self, array: bytes, key_json: str, gzip: bool) -> None:
        self._prefix = b"".join(
            (b'{"api_key":', key_json.encode(), b',"batch":', array, b',"sent_at":"')
        )
        self._gzip = gzip

    def render(self) -> bytes:
        body = self._prefix + (utc_now_iso() + '"}').encode()
        if not self._gzip:
            return body
        return zlib.compress(body, GZIP_LEVEL, 31)


def pack(sized: Iterable[tuple[T, int]], limit: int, envelope: int = 0) -> list[list[T]]:
    """Items, given with their size in bytes of JSON, in runs that fit ``limit`` as one array
    (a comma each, and ``envelope`` bytes around it); an item too large for that travels alone.
    Request bodies here, Celery messages in :mod:`.celery`."""
    runs: list[list[T]] = []
    current: list[T] = []
    size = envelope
    for item, n in sized:
        if current and size + n + 1 > limit:
            runs.append(current)
            current, size = [], envelope
        current.append(item)
        size += n + 1
    if current:
        runs.append(current)
    return runs


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    auth: str | None


def proxy_for(scheme: str, hostname: str) -> Proxy | None:
    """The proxy from the environment for ``scheme://hostname``, as ``requests`` would pick it;
    loopback is never proxied."""
    if hostname in ("127.0.0.1", "localhost", "::1"):
        return None
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme)
    if not url or urllib.request.proxy_bypass(hostname):
        return None
    parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    if not parts.hostname:
        return None
    auth = None
    if parts.username:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return Proxy(parts.hostname, parts.port or 80, auth)
