"""``LLMTraceMiddleware``: Django's side of the request-trace lifecycle in :mod:`..web`.

What is Django's here: the route pattern, the user (``request.user`` or ``await request.auser()``),
the session key, exceptions through ``process_exception``, and keeping the trace open while a
``StreamingHttpResponse`` is sent. Everything else is :class:`~posthog_llm_trace.web.RequestTrace`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, cast

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings as django_settings
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404
from django.utils.functional import LazyObject, empty

from .. import context
from ..client import get_client
from ..settings import Settings
from ..web import REQUEST_SCOPES, RequestTrace, clean_header, open_scopes, session_hash

__all__ = ["LLMTraceMiddleware"]

logger = logging.getLogger("posthog_llm_trace")

#: Where the request keeps its trace, for ``process_exception``.
REQUEST_ATTR = "_posthog_llm_trace"

# Exceptions Django answers with a 4xx: handled, like any other 4xx response.
_CLIENT_ERRORS = (Http404, PermissionDenied, BadRequest, SuspiciousOperation)

_NOT_LOADED: Any = object()

Identity = tuple[str | None, str | None]  # (distinct_id, session_id)


class LLMTraceMiddleware:
    """One trace per request; see :mod:`posthog_llm_trace.django` for what it records.

    ``MIDDLEWARE += ["posthog_llm_trace.django.LLMTraceMiddleware"]``, after
    ``AuthenticationMiddleware``. Works under WSGI and ASGI, with sync and async views.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    # --- WSGI, or a sync middleware chain --------------------------------------------------------

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        rt = _begin(request, _sync_filter)
        if rt is None:
            return self.get_response(request)
        previous, token = _enter(rt)
        try:
            # Django turns view exceptions into responses below us; what still arrives here
            # (DEBUG_PROPAGATE_EXCEPTIONS, a failing middleware) ends the trace and goes on.
            response = self.get_response(request)
            streams = _keeps_streaming(response, rt)
            if streams:
                rt.context = contextvars.copy_context()
        except BaseException as exc:
            _leave(rt, previous, token)
            rt.fail(exc)
            _name(rt, request)
            _finish(rt, None, _identity(request, rt.client.settings) if rt.recorded else None)
            raise
        _leave(rt, previous, token)
        _name(rt, request)
        _trace_header(response, rt, streams)
        if streams:
            _finish_after_body(response, rt, _identity(request, rt.client.settings))
        else:
            identity = _identity(request, rt.client.settings) if rt.recorded else None
            _finish(rt, response, identity)
        return response

    # --- ASGI ---------------------------------------------------------------------------------

    async def __acall__(self, request: Any) -> Any:
        rt = await _abegin(request)
        if rt is None:
            return await self.get_response(request)
        if rt.trace.recording and REQUEST_SCOPES:
            # posthog-python's context reads the user when the view captures an event, in
            # sync code on the event loop: load it now (posthog's own middleware does too).
            await _aload_user(request)
        previous, token = _enter(rt)
        try:
            response = await self.get_response(request)
            streams = _keeps_streaming(response, rt)
            if streams:
                rt.context = contextvars.copy_context()
        except BaseException as exc:  # a cancelled request (client gone), or propagated errors
            _leave(rt, previous, token)
            rt.fail(exc)
            _name(rt, request)
            # No awaiting here: the task may be being cancelled. The user is bound if loaded.
            identity = _identity_loaded(request) if rt.recorded else None
            _finish(rt, None, identity)
            raise
        _leave(rt, previous, token)
        _name(rt, request)
        _trace_header(response, rt, streams)
        settings = rt.client.settings
        if streams:
            _finish_after_body(response, rt, await _aidentity(request, settings))
        else:
            identity = await _aidentity(request, settings) if rt.recorded else None
            if settings.serverless and rt.recorded:
                # The bounded flush blocks; keep it off the event loop.
                await sync_to_async(_finish, thread_sensitive=False)(rt, response, identity)
            else:
                _finish(rt, response, identity)
        return response

    def process_exception(self, request: Any, exception: BaseException) -> None:
        """Mark the trace failed; return None, so the exception reaches Django unchanged."""
        rt = getattr(request, REQUEST_ATTR, None)
        if rt is not None and not isinstance(exception, _CLIENT_ERRORS):
            rt.fail(exception)
        return None


# --- the steps -----------------------------------------------------------------------------------


def _enter(rt: RequestTrace) -> tuple[Any, Any]:
    """Make the request's trace current where the rest of the chain runs.

    In the caller's own context, not in a copy: what the view and the middleware after us set
    in context variables (the active language, ``request.urlconf``) stays visible to the
    middleware before us, as in plain Django. A streamed body is iterated later in a snapshot
    taken when the view returns (``rt.context``), so it goes on where the view left off."""
    previous, token = context.current_node(), context.activate(rt.trace)
    rt.close_scopes = open_scopes(rt.trace)
    return previous, token


def _leave(rt: RequestTrace, previous: Any, token: Any) -> None:
    """Undo :func:`_enter` (a streamed body goes on in its snapshot, ``rt.context``)."""
    close, rt.close_scopes = rt.close_scopes, None
    if close is not None:
        close()
    context.restore(token, previous)


def _start(request: Any, settings: Settings, client: Any) -> RequestTrace:
    meta = request.META
    replay = (
        clean_header(meta.get("HTTP_X_POSTHOG_SESSION_ID"))
        if settings.session_replay_header
        else None
    )
    # A header is not authentication: used only when trusted, and only if no user is found.
    claimed = (
        clean_header(meta.get("HTTP_X_POSTHOG_DISTINCT_ID"))
        if settings.distinct_id_header
        else None
    )
    rt = RequestTrace.begin(
        client,
        request.method or "GET",
        replay_session_id=replay,
        distinct_id=claimed,
        scoped=False,  # the view runs in the caller's context: see _enter
    )
    setattr(request, REQUEST_ATTR, rt)
    return rt


def _begin(
    request: Any, traced: Callable[[Callable[[Any], Any], Any], bool]
) -> RequestTrace | None:
    client = get_client()
    settings = client.settings
    if settings.request_filter is not None and not traced(settings.request_filter, request):
        return None
    rt = _start(request, settings, client)
    rt.trace.identify = lambda: _identity_now(request, settings)
    return rt


async def _abegin(request: Any) -> RequestTrace | None:
    client = get_client()
    settings = client.settings
    if settings.request_filter is not None and not await _async_filter(
        settings.request_filter, request
    ):
        return None
    rt = _start(request, settings, client)
    # Called from the view's (async) code: only what is known without a query.
    rt.trace.identify = lambda: _identity_loaded(request)
    return rt


def _sync_filter(request_filter: Callable[[Any], Any], request: Any) -> bool:
    try:
        result = request_filter(request)
        if inspect.isawaitable(result):
            result = async_to_sync(_awaited)(result)
        return bool(result)
    except Exception:
        logger.exception("posthog-llm-trace: REQUEST_FILTER raised; the request is traced")
        return True


async def _async_filter(request_filter: Callable[[Any], Any], request: Any) -> bool:
    try:
        result = request_filter(request)
        if inspect.isawaitable(result):
            result = await result
        return bool(result)
    except Exception:
        logger.exception("posthog-llm-trace: REQUEST_FILTER raised; the request is traced")
        return True


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


async def _aclose(agen: AsyncGenerator[Any, None]) -> None:
    await agen.aclose()


def _name(rt: RequestTrace, request: Any) -> None:
    """``POST /chat/<int:id>/`` from the URL pattern that matched (none: the method alone)."""
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    if isinstance(route, str):
        rt.name_route(request.method or "GET", "/" + route.removeprefix("^").removesuffix("$"))


def _trace_header(response: Any, rt: RequestTrace, streams: bool) -> None:
    """``X-PostHog-Trace-Id`` (``TRACE_ID_HEADER``), unless the view set that header itself."""
    try:
        header = rt.trace_header(streams)
        if header is not None and not response.has_header(header[0]):
            response[header[0]] = header[1]
    except Exception:  # a response object of an unusual kind: never break it
        logger.debug("posthog-llm-trace could not set the trace id header", exc_info=True)


def _finish(rt: RequestTrace, response: Any, identity: Identity | None) -> None:
    distinct_id, session_id = identity or (None, None)
    try:
        rt.finish(
            status=getattr(response, "status_code", None),
            distinct_id=distinct_id,
            session_id=session_id,
        )
    except Exception:  # pragma: no cover - the core does not raise; never break a response
        logger.exception("posthog-llm-trace could not finish a request trace")


# --- identity ------------------------------------------------------------------------------------


def _session_id(request: Any) -> str | None:
    """A keyed hash of the session key, if the request has a session; none is created."""
    key = getattr(getattr(request, "session", None), "session_key", None)
    if not key:
        return None
    return session_hash(django_settings.SECRET_KEY, str(key))


def _user_id(user: Any) -> str | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    pk = getattr(user, "pk", None)
    return None if pk is None else str(pk)


def _loaded_user(request: Any) -> Any:
    """``request.user`` if it needs no query: set by ``login()`` or an API framework during the
    request, or the middleware's lazy user once evaluated. ``_NOT_LOADED`` otherwise."""
    user = vars(request).get("user")
    if isinstance(user, LazyObject):
        wrapped = user._wrapped
        if wrapped is empty:
            # ``await request.auser()`` caches here (Django 5), not in the lazy object.
            return vars(request).get("_acached_user", _NOT_LOADED)
        return wrapped
    return user


def _resolved(resolver: Callable[[Any], Any], request: Any) -> str | None:
    try:
        value = resolver(request)
        if inspect.isawaitable(value):
            value = async_to_sync(_awaited)(value)
    except Exception:
        logger.exception("posthog-llm-trace: DISTINCT_ID_RESOLVER raised; using the user")
        return None
    return None if value is None else str(value)


def _user_of(request: Any) -> Any:
    user = getattr(request, "user", None)
    _user_id(user)  # evaluates a lazy user here, in this thread
    return user


def _identity(request: Any, settings: Settings) -> Identity:
    """Who made the request, looked up now (sync code: a query is fine)."""
    distinct_id = None
    if settings.distinct_id_resolver is not None:
        distinct_id = _resolved(settings.distinct_id_resolver, request)
    if distinct_id is None:
        try:
            distinct_id = _user_id(getattr(request, "user", None))
        except Exception:  # a failing user lookup must not fail the response
            logger.exception("posthog-llm-trace could not look the user up")
    return distinct_id, _session_id(request)


def _identity_now(request: Any, settings: Settings) -> Identity:
    """The identity while the view runs: looked up in sync code, only what is loaded in async
    code (an async view behind a sync middleware chain must not query the database)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _identity(request, settings)
    return _identity_loaded(request)


def _identity_loaded(request: Any) -> Identity:
    """What is known without a query or an await (a request being cancelled)."""
    user = _loaded_user(request)
    return _user_id(None if user is _NOT_LOADED else user), _session_id(request)


async def _aload_user(request: Any) -> None:
    auser = getattr(request, "auser", None)
    if auser is None or _loaded_user(request) is not _NOT_LOADED:
        return
    try:
        await auser()
    except Exception:
        logger.exception("posthog-llm-trace could not look the user up")


async def _aidentity(request: Any, settings: Settings) -> Identity:
    """Who made the request, without a synchronous query on the event loop."""
    distinct_id = None
    resolver = settings.distinct_id_resolver
    if resolver is not None:
        if iscoroutinefunction(resolver):
            try:
                value = await resolver(request)
                distinct_id = None if value is None else str(value)
            except Exception:
                logger.exception("posthog-llm-trace: DISTINCT_ID_RESOLVER raised; using the user")
        else:  # it may query the database
            distinct_id = await sync_to_async(_resolved)(resolver, request)
    if distinct_id is None:
        try:
            user = _loaded_user(request)
            if user is _NOT_LOADED:
                auser = getattr(request, "auser", None)
                if auser is not None:
                    user = await auser()
                else:  # no auser() (no AuthenticationMiddleware, or a custom user attribute)
                    user = await sync_to_async(_user_of)(request)
            distinct_id = _user_id(user)
        except Exception:
            logger.exception("posthog-llm-trace could not look the user up")
    return distinct_id, _session_id(request)


# --- streamed responses --------------------------------------------------------------------------


def _keeps_streaming(response: Any, rt: RequestTrace) -> bool:
    # A FileResponse may be sent by the server's file wrapper, which never iterates the body;
    # it records nothing anyway, so its trace ends now.
    return (
        bool(getattr(response, "streaming", False))
        and getattr(response, "file_to_stream", None) is None
        and rt.trace.recording
    )


def _finish_after_body(response: Any, rt: RequestTrace, identity: Identity) -> None:
    """End the trace when the body has been sent or the client went away, not now.

    The view's own iterator is iterated (and, on a disconnect, closed) in the request's context
    by ``RequestTrace.stream`` / ``astream``, which end the trace. ``response.close()``, which
    every server calls, ends it too, first thing: for a body that was never iterated, and for an
    async body abandoned by a cancelled send (Django does not close those)."""
    # The status is the one already sent; an error while streaming is recorded by stream().
    finish = functools.partial(_finish, rt, response, identity)
    # Django keeps the view's iterator in ``_iterator``; wrapping it rather than the bytes-mapping
    # ``streaming_content`` lets stream() close it inside the request's context.
    body = getattr(response, "_iterator", None)
    if body is None:  # pragma: no cover - a Django without ``_iterator``
        body = response.streaming_content
    close_body: Callable[[], None]
    if response.is_async:
        agen = cast("AsyncGenerator[Any, None]", rt.astream(body, finish))
        response.streaming_content = agen

        def close_body() -> None:
            try:
                # Not finished (ag_frame is None then), and not being iterated right now.
                if getattr(agen, "ag_frame", None) is not None and not getattr(
                    agen, "ag_running", True
                ):
                    # Called from a thread by Django's ASGI handler: the loop runs the aclose.
                    async_to_sync(_aclose)(agen)
            except Exception:
                logger.debug("posthog-llm-trace could not close a streamed body", exc_info=True)
            finally:
                finish()

    else:
        gen = cast("Generator[Any, None, None]", rt.stream(body, finish))
        response.streaming_content = gen

        def close_body() -> None:
            try:
                gen.close()
            finally:
                finish()

    closers = getattr(response, "_resource_closers", None)
    if isinstance(closers, list):
        closers.insert(0, close_body)
    else:  # pragma: no cover - a Django without ``_resource_closers``
        django_close = response.close

        def close() -> None:
            try:
                close_body()
            finally:
                django_close()

        response.close = close
