"""The request-trace lifecycle, written once for every web framework.

An adapter (Django middleware, Flask extension) does four things with it:

1. ``rt = RequestTrace.begin(client, method)`` when a request arrives, and runs the view inside
   ``rt.context`` so that spans recorded by the view nest under the request's trace;
2. ``rt.fail(exc)`` if the view raises;
3. ``rt.name_route(pattern)`` once the URL pattern is known;
4. either ``rt.finish(status=..., distinct_id=..., session_id=...)`` for an ordinary response,
   or wraps a streamed body with :func:`RequestTrace.stream` / :func:`RequestTrace.astream`, which
   finish the trace when the body is exhausted or closed (the client went away).

Identity is passed at the end, so users authenticated inside the view (DRF tokens, a login
during the request) are bound; what the application set on ``current_trace()`` still wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import hmac
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, TypeVar

from . import context
from .client import Client
from .spans import ErrorInfo, Trace

__all__ = ["REQUEST_SCOPES", "RequestTrace", "clean_header", "open_scopes", "session_hash"]

T = TypeVar("T")

#: Hooks run where a request's view will run, given its trace; each returns what undoes it (or
#: None). The posthog-python bridge opens posthog-python's own context this way.
REQUEST_SCOPES: list[Callable[[Trace], Callable[[], None] | None]] = []


def open_scopes(trace: Trace) -> Callable[[], None] | None:
    """Run every :data:`REQUEST_SCOPES` hook in the current context; returns what closes them."""
    if not REQUEST_SCOPES:
        return None
    closers = []
    for hook in list(REQUEST_SCOPES):
        try:
            closer = hook(trace)
        except Exception:  # a hook must never fail a request
            continue
        if closer is not None:
            closers.append(closer)
    if not closers:
        return None

    def close() -> None:
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                closer()

    return close


# C0 and C1 controls, and the line and paragraph separators (JavaScript line breaks).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clean_header(value: str | None, limit: int = 1000) -> str | None:
    """A header value fit to be a property: control characters removed, length capped."""
    if not value:
        return None
    value = _CONTROL.sub("", value).strip()[:limit]
    return value or None


def session_hash(secret: str | bytes, session_key: str) -> str:
    """A stable, non-reversible id for a web session: a keyed hash of the session key.

    The session key is a credential (whoever has it is logged in), so it never leaves the
    process; this id is stable for the session's lifetime and useless to an attacker.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, b"posthog-llm-trace/session/" + session_key.encode(), hashlib.sha256)
    return "s_" + digest.hexdigest()[:32]


class RequestTrace:
    """One request's trace and the context its view runs in."""

    __slots__ = ("_done", "client", "close_scopes", "context", "trace")

    def __init__(self, trace: Trace, *, scoped: bool = True) -> None:
        self.trace = trace
        self.client = trace.client
        self._done = False
        # A context of its own, with the trace current: the view and, later, a streamed body
        # run in it, so spans nest correctly wherever the server iterates the body.
        self.context = contextvars.copy_context()
        self.context.run(context.activate, trace)
        #: Closes what :data:`REQUEST_SCOPES` opened for the request (at its finish).
        self.close_scopes = self.context.run(open_scopes, trace) if scoped else None

    @classmethod
    def begin(
        cls,
        client: Client,
        method: str,
        path: str = "",
        *,
        replay_session_id: str | None = None,
        distinct_id: str | None = None,
        scoped: bool = True,
    ) -> RequestTrace:
        """``scoped=False``: the adapter runs the view in its own context and opens the
        :data:`REQUEST_SCOPES` there itself (:func:`open_scopes`)."""
        trace = Trace(f"{method} {path}".strip(), client=client)
        trace.replay_session_id = replay_session_id
        if distinct_id:
            trace.bind(distinct_id=distinct_id)
        return cls(trace, scoped=scoped)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` with the request's trace current."""
        return self.context.run(fn, *args)

    def name_route(self, method: str, route: str | None) -> None:
        """Name the trace by the URL pattern (``POST /chat/<int:id>/``), never the raw path."""
        if route:
            if not route.startswith("/"):
                route = "/" + route
            self.trace.name = f"{method} {route}"

    def fail(self, error: BaseException | ErrorInfo | str) -> None:
        self.trace.set_error(error)

    @property
    def recorded(self) -> bool:
        """Whether something has been recorded so far (a span, so the trace will be exported,
        or feedback): adapters skip identity lookups and session writes for requests that
        record nothing."""
        trace = self.trace
        return (trace.recording and bool(trace._spans or trace._had_children)) or bool(
            trace._feedback
        )

    def trace_header(self, streaming: bool = False) -> tuple[str, str] | None:
        """The ``(name, trace id)`` response header (``trace_id_header``) when the response
        belongs to a recorded trace, so the browser can send feedback about it.

        Headers are sent before a streamed body, whose spans are recorded while it streams:
        a streamed response of a traced request always gets it. Feedback alone is not a trace
        of the request's own, so it adds no header."""
        name = self.client.settings.trace_id_header
        trace = self.trace
        if not name or not trace.recording:
            return None
        if streaming or trace._spans or trace._had_children:
            return name, trace.id
        return None

    def finish(
        self,
        *,
        status: int | None = None,
        distinct_id: str | None = None,
        session_id: str | None = None,
    ) -> None:
        """End the trace (once): bind identity, mark 5xx responses failed, export."""
        if self._done:
            return
        self._done = True
        trace = self.trace
        trace.bind(distinct_id=distinct_id, session_id=session_id)
        if status is not None and status >= 500 and trace.error is None:
            trace.set_error(ErrorInfo("HTTPError", f"HTTP {status}", status))
        recorded = self.recorded
        trace.end()
        close = self.close_scopes
        if close is not None:
            self.close_scopes = None
            try:
                self.context.run(close)
            except RuntimeError:  # finished from inside the request's context
                close()
        settings = self.client.settings
        if settings.serverless and recorded:
            # The platform may freeze the process as soon as the response is sent. A request
            # that recorded nothing has nothing to wait for.
            self.client.flush(timeout=min(settings.timeout, 2.0))

    # --- streamed bodies ----------------------------------------------------------------------

    def stream(self, body: Iterable[T], finish: Callable[[], None]) -> Iterator[T]:
        """Iterate ``body`` in the request's context; call ``finish`` when it is exhausted,
        raises, or is closed early (``GeneratorExit`` when the client disconnects)."""
        iterator = self.context.run(iter, body)
        try:
            while True:
                try:
                    chunk = self.context.run(next, iterator)
                except StopIteration:
                    return
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as exc:
            self.fail(exc)
            raise
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    self.context.run(close)
                except Exception as exc:  # a failing close must not hide the finish
                    self.fail(exc)
            finish()

    async def astream(self, body: AsyncIterable[T], finish: Callable[[], None]) -> AsyncIterator[T]:
        """The async counterpart of :meth:`stream` (ASGI streaming responses)."""
        iterator = self.context.run(body.__aiter__)
        try:
            while True:
                try:
                    chunk = await self._in_context(iterator.__anext__())
                except StopAsyncIteration:
                    return
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as exc:
            self.fail(exc)
            raise
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                try:
                    await self._in_context(aclose())
                except Exception as exc:
                    self.fail(exc)
            finish()

    async def _in_context(self, awaitable: Any) -> Any:
        # Run the step as a task in the request's context, so context changes made by the body
        # (spans it opens) persist between chunks.
        loop = asyncio.get_running_loop()
        return await loop.create_task(_await(awaitable), context=self.context)


async def _await(awaitable: Any) -> Any:
    return await awaitable
