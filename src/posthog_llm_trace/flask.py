"""Flask: one PostHog LLM trace per request, bound to the signed-in user and their session.

Usage, either form::

    from posthog_llm_trace.flask import LLMTrace

    app = Flask(__name__)
    LLMTrace(app)

    llm_trace = LLMTrace()          # application factory
    def create_app():
        app = Flask(__name__)
        app.config.from_prefixed_env()
        llm_trace.init_app(app)
        return app

Settings come from ``app.config`` (``POSTHOG_API_KEY``, ``POSTHOG_HOST`` and
``POSTHOG_LLM_TRACE_<SETTING>`` for the rest, e.g. ``POSTHOG_LLM_TRACE_PRIVACY_MODE = True``);
keyword arguments to ``LLMTrace(...)`` or ``init_app(...)`` win over the config. A wrong keyword
argument makes ``init_app`` raise :class:`~posthog_llm_trace.ConfigurationError`; a wrong or
unknown config key or ``POSTHOG_LLM_TRACE_*`` environment variable is logged once as an error
naming it, and the app serves as if the package were not installed until it is fixed. Each app
gets a :class:`~posthog_llm_trace.Client` of its own, in ``app.extensions["posthog_llm_trace"]``;
the first one becomes the process default unless ``configure()`` chose one already.

What every request gets:

- A trace named by method and URL rule (``POST /chat/<int:id>``), never the raw path. The view,
  its teardown and a streamed body all run with it current, so ``generation()``, ``tool()`` and
  ``span()`` nest under it. A request that records no span sends nothing.
- ``distinct_id``: the Flask-Login user (``current_user.get_id()``) when one is signed in, or what
  ``POSTHOG_LLM_TRACE_DISTINCT_ID_RESOLVER`` (a callable or dotted path, given the request)
  returns; looked up once the view has run, so a login during the request counts. Anonymous
  requests use ``default_distinct_id`` and set ``$process_person_profile: false``.
  ``X-POSTHOG-DISTINCT-ID`` is used for anonymous requests only if
  ``POSTHOG_LLM_TRACE_DISTINCT_ID_HEADER = True``.
- ``$ai_session_id``: a keyed hash of a random id kept in the Flask session (stable for the
  browser session, useless to anyone who sees it; the cookie never leaves the process). The id
  is stored the first time a request records a span (or streams a response), so requests that
  record nothing never touch the session. Set ``current_trace().session_id`` to use your own
  conversation id instead.
- ``$session_id`` from the browser's ``X-POSTHOG-SESSION-ID`` header, linking session replays.
- ``$ai_is_error`` for an unhandled exception (which reaches Flask's error handling unchanged)
  and for a 5xx response. An exception your ``errorhandler`` turns into a non-5xx response counts
  as handled.
- Streamed responses (generators, ``stream_with_context``) keep the trace open until the body is
  finished or closed (the client went away); spans recorded while streaming belong to it.
  ``async def`` views work (``pip install "flask[async]"``).
- ``X-PostHog-Trace-Id`` on the response of a request that recorded a trace (a streamed one:
  always, when traced), for the browser's feedback (``POSTHOG_LLM_TRACE_TRACE_ID_HEADER``
  renames it, ``""`` turns it off); ``current_trace().feedback_token`` signs the trace for the
  user with the app's ``SECRET_KEY`` (see :func:`posthog_llm_trace.feedback`). Templates have
  ``current_trace`` too: ``{{ current_trace().id }}``.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

try:
    import flask
    from flask import current_app, request
    from flask.signals import got_request_exception, request_started
    from werkzeug.wsgi import ClosingIterator
except ImportError as exc:  # see test_a_clear_error_when_flask_is_missing
    raise ImportError(
        "posthog_llm_trace.flask needs Flask: pip install 'posthog-llm-trace[flask]'"
    ) from exc

try:
    import flask_login as _flask_login
except ImportError:  # pragma: no cover - Flask-Login is optional
    _flask_login = None

from .client import Client, report_problems, set_default_client
from .context import current_trace
from .settings import Layer, from_prefixed, resolve
from .web import RequestTrace, clean_header, session_hash

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["EXTENSION_KEY", "SESSION_KEY", "LLMTrace"]

logger = logging.getLogger("posthog_llm_trace")

#: ``app.extensions[EXTENSION_KEY]`` is the app's :class:`~posthog_llm_trace.Client`.
EXTENSION_KEY = "posthog_llm_trace"
#: The Flask session key holding the random id that ``$ai_session_id`` is derived from.
SESSION_KEY = "_posthog_llm_trace_sid"


class LLMTrace:
    """The Flask extension. ``LLMTrace(app, **settings)`` or ``LLMTrace(**settings)`` and later
    ``init_app(app, **settings)``; keyword settings win over ``app.config``."""

    def __init__(self, app: flask.Flask | None = None, **settings: Any) -> None:
        self._settings = settings
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask, **settings: Any) -> None:
        """Trace every request of ``app``. Raises ``ConfigurationError`` for a wrong keyword
        setting (before touching the app) and ``RuntimeError`` if ``app`` is already
        instrumented. A wrong or unknown ``app.config`` key or environment variable is logged
        as an error naming it, and the app is served with export off until it is fixed."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("posthog-llm-trace is already initialised on this Flask app")
        explicit = Layer({**self._settings, **settings})
        # A wrong keyword argument raises; a wrong app.config key or environment variable (a
        # deployment's doing) is logged and turns export off, and the app serves as usual.
        resolved, problems = resolve(from_prefixed(app.config), explicit=explicit)
        report_problems(problems)
        client = Client(resolved)
        set_default_client(client, if_unset=True)
        # Trace references (sign_trace, feedback tokens) are keyed with the app's SECRET_KEY,
        # read when needed: it is often set after init_app.
        app_ref = weakref.ref(app)
        client.signing_key = lambda: getattr(app_ref(), "secret_key", None)
        hooks = _Hooks(client)
        app.extensions[EXTENSION_KEY] = client
        _HOOKS[app] = hooks
        app.wsgi_app = _TracingMiddleware(app.wsgi_app, hooks)  # type: ignore[method-assign]
        app.after_request(hooks.after_request)
        app.teardown_request(hooks.teardown_request)
        # Templates can write {{ current_trace().id }} / {{ current_trace().feedback_token }}.
        app.context_processor(_template_context)
        # Module-level receivers find the app's hooks through the sender: nothing holds the
        # hooks (and their client) once the app is gone.
        got_request_exception.connect(_on_exception, app)
        if client.settings.request_filter is not None:
            request_started.connect(_on_request_started, app)


def _template_context() -> dict[str, Any]:
    return {"current_trace": current_trace}


#: Each instrumented app's hooks, for the signal receivers.
_HOOKS: weakref.WeakKeyDictionary[flask.Flask, _Hooks] = weakref.WeakKeyDictionary()


def _on_exception(sender: flask.Flask, exception: BaseException, **extra: Any) -> None:
    hooks = _HOOKS.get(sender)
    if hooks is not None:
        hooks.on_exception(exception)


def _on_request_started(sender: flask.Flask, **extra: Any) -> None:
    hooks = _HOOKS.get(sender)
    if hooks is not None:
        hooks.on_request_started()


class _Request:
    """What one request's hooks share, kept in the WSGI environ."""

    __slots__ = ("distinct_id", "resolved", "rt", "session_id", "status", "streamed")

    def __init__(self, rt: RequestTrace) -> None:
        self.rt = rt
        self.status: int | None = None
        self.streamed = False
        self.resolved = False
        self.distinct_id: str | None = None
        self.session_id: str | None = None

    def finish(self) -> None:
        try:
            self.rt.finish(
                status=self.status, distinct_id=self.distinct_id, session_id=self.session_id
            )
        except Exception:  # pragma: no cover - the core does not raise; never break a response
            logger.exception("posthog-llm-trace could not finish a request trace")


class _TracingMiddleware:
    """Wraps ``app.wsgi_app``: the whole request runs in its trace's context, and the trace
    ends exactly once -- when the app returns, or, for a streamed body, when the body is
    exhausted or closed."""

    def __init__(self, wsgi_app: WSGIApplication, hooks: _Hooks) -> None:
        self.wsgi_app = wsgi_app
        self.hooks = hooks

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        settings = self.hooks.client.settings
        replay = distinct_id = None
        if settings.session_replay_header:
            replay = clean_header(environ.get("HTTP_X_POSTHOG_SESSION_ID"))
        if settings.distinct_id_header:  # a header is not authentication: opt-in only
            distinct_id = clean_header(environ.get("HTTP_X_POSTHOG_DISTINCT_ID"))
        rt = RequestTrace.begin(
            self.hooks.client,
            environ.get("REQUEST_METHOD", "GET"),
            replay_session_id=replay,
            distinct_id=distinct_id,
        )
        rt.trace.identify = self.hooks.identity_now
        req = _Request(rt)
        environ[self.hooks.environ_key] = req

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            code = status[:3]
            req.status = int(code) if code.isdigit() else None
            return start_response(status, headers, exc_info)

        try:
            body = rt.run(self.wsgi_app, environ, start)
        except BaseException as exc:  # PROPAGATE_EXCEPTIONS, or a failing teardown
            rt.fail(exc)
            req.finish()
            raise
        if not req.streamed:
            req.finish()
            return body
        return _StreamedBody(req, body)


class _StreamedBody:
    """A streamed response body as the WSGI server sees it (PEP 3333: iterate, then close).

    Iterated in the request's context by :meth:`RequestTrace.stream`, which ends the trace when
    the body is exhausted, raises or is closed -- also when the server closes it before asking
    for the first chunk, which a generator alone would not notice."""

    __slots__ = ("_body", "_chunks", "_req")

    def __init__(self, req: _Request, body: Iterable[bytes]) -> None:
        self._req = req
        self._body = body
        # stream() is a generator function; its generator's close() ends the trace.
        self._chunks = cast(
            "Generator[bytes, None, None]", req.rt.stream(_closing(body), req.finish)
        )

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        unstarted = inspect.getgeneratorstate(self._chunks) == inspect.GEN_CREATED
        self._chunks.close()  # when started, this closes the body and ends the trace
        if not unstarted:
            return
        close = getattr(self._body, "close", None)
        try:
            if close is not None:
                self._req.rt.run(close)
        except Exception as exc:
            self._req.rt.fail(exc)
            raise
        finally:
            self._req.finish()


def _closing(body: Iterable[bytes]) -> Iterator[bytes]:
    """``body`` as a generator whose end or ``close()`` calls ``body.close()`` exactly once."""
    try:
        # Not ``yield from``: on close it would also close the iterator, which for werkzeug's
        # ClosingIterator is the body itself -- a second close().
        for chunk in body:  # noqa: UP028
            yield chunk
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def _is_live_stream(response: flask.Response) -> bool:
    """Whether the body runs code after the view returned (a generator, ``stream_with_context``):
    then the trace stays open until the body is finished. Fixed bodies, files and responses
    Flask made by running a WSGI callable (``abort(404)`` is one) end the trace at once."""
    return (
        response.is_streamed
        and not response.direct_passthrough
        and not isinstance(response.response, ClosingIterator)
    )


class _Hooks:
    """One app's Flask hooks. They find the request's trace in the WSGI environ."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.environ_key = f"posthog_llm_trace.request.{id(self):x}"

    def _request(self) -> _Request | None:
        req: _Request | None = request.environ.get(self.environ_key)
        return req

    # -- signals

    def on_request_started(self) -> None:
        req = self._request()
        request_filter = self.client.settings.request_filter
        if req is None or request_filter is None:
            return
        try:
            traced = request_filter(request._get_current_object())  # type: ignore[attr-defined]
        except Exception:
            logger.exception("posthog-llm-trace request_filter failed; tracing the request")
            return
        if not traced:
            req.rt.trace.recording = False

    def on_exception(self, exception: BaseException) -> None:
        req = self._request()
        if req is not None:
            req.rt.fail(exception)

    # -- hooks

    def after_request(self, response: flask.Response) -> flask.Response:
        req = self._request()
        if req is not None:
            req.streamed = _is_live_stream(response)
            self._resolve(req, write_session=True)
            header = req.rt.trace_header(req.streamed)
            if header is not None and header[0] not in response.headers:
                response.headers[header[0]] = header[1]
        return response

    def teardown_request(self, exc: BaseException | None) -> None:
        # after_request did not run (an unhandled exception) or ran before anything was
        # recorded: look again, now that the session can no longer be saved.
        req = self._request()
        if req is not None and not req.resolved:
            self._resolve(req, write_session=False)

    # -- identity

    def _resolve(self, req: _Request, *, write_session: bool) -> None:
        rt = req.rt
        rule = request.url_rule
        if rule is not None:
            rt.name_route(request.method, rule.rule)
        # Spans recorded while streaming come after this point: resolve for streams anyway.
        if not (rt.recorded or (req.streamed and rt.trace.recording)):
            return
        req.resolved = True
        try:
            req.distinct_id = self._distinct_id()
        except Exception:
            logger.exception("posthog-llm-trace could not resolve the distinct_id")
        try:
            req.session_id = self._session_id(write_session)
        except Exception:
            logger.exception("posthog-llm-trace could not derive the session id")

    def identity_now(self) -> tuple[str | None, str | None]:
        """The identity while the view runs (a Celery task published from it carries it)."""
        return self._distinct_id(), self._session_id(True)

    def _distinct_id(self) -> str | None:
        resolver: Callable[[Any], Any] | None = self.client.settings.distinct_id_resolver
        if resolver is not None:
            value = resolver(request._get_current_object())  # type: ignore[attr-defined]
            return None if value is None else str(value)
        if _flask_login is not None and hasattr(current_app, "login_manager"):
            user = _flask_login.current_user
            if user is not None and user.is_authenticated:
                user_id = user.get_id()
                return None if user_id is None else str(user_id)
        return None

    def _session_id(self, write: bool) -> str | None:
        app = current_app
        secret = app.secret_key
        session = flask.session
        if not secret or app.session_interface.is_null_session(session):
            return None
        sid = session.get(SESSION_KEY)
        if not isinstance(sid, str) or not sid:
            if not write:
                return None
            sid = secrets.token_hex(16)
            session[SESSION_KEY] = sid
        return session_hash(secret, sid)
