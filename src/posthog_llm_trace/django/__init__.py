"""Django: one PostHog LLM trace per request, bound to the signed-in user and their session.

Set-up, in ``settings.py``::

    INSTALLED_APPS += ["posthog_llm_trace.django"]
    MIDDLEWARE += ["posthog_llm_trace.django.LLMTraceMiddleware"]   # after AuthenticationMiddleware

    POSTHOG_LLM_TRACE = {            # optional; every key is a setting, upper-case
        "API_KEY": "phc_...",        # or the POSTHOG_API_KEY environment variable
        "PRIVACY_MODE": True,
        "REQUEST_FILTER": "myapp.tracing.is_traced",            # a callable or a dotted path
        "DISTINCT_ID_RESOLVER": "myapp.tracing.distinct_id",
    }

The app builds the settings from ``POSTHOG_LLM_TRACE`` (over the environment) when Django starts
and makes them the process default, unless :func:`posthog_llm_trace.configure` was called first.
A wrong key, type or value is reported by ``manage.py check`` naming the setting (and nothing is
exported until it is fixed, so a mistyped ``PRIVACY_MODE`` never leaks prompts). The exporter
starts on the first trace of each process, forked workers included.

What every request gets:

- A trace named by method and URL pattern (``POST /chat/<int:id>/``, from
  ``request.resolver_match.route``), never the raw path. The view and a streamed body run with it
  current, so ``generation()``, ``tool()`` and ``span()`` nest under it. A request that records no
  span sends nothing and does no identity lookup.
- ``distinct_id``: what ``DISTINCT_ID_RESOLVER(request)`` returns, else the authenticated user's
  primary key, read when the view has returned, so users authenticated inside the view (Django
  REST framework token or JWT auth, ``login()`` during the request) are bound. Under ASGI the user
  comes from ``await request.auser()``, never from a synchronous query. Anonymous requests use
  ``DEFAULT_DISTINCT_ID`` and set ``$process_person_profile: false``. ``X-POSTHOG-DISTINCT-ID`` is
  used for anonymous requests only with ``"DISTINCT_ID_HEADER": True``.
- ``$ai_session_id``: a keyed hash (with ``SECRET_KEY``) of the Django session key, stable for the
  session and useless to anyone who sees it; the key itself never leaves the process, and no
  session is created for it. ``current_trace().session_id = conversation.id`` overrides it.
- ``$session_id`` from the browser's ``X-POSTHOG-SESSION-ID`` header, linking session replays.
- ``$ai_is_error`` when the view raises (the exception reaches Django unchanged) or the response
  is a 5xx. Exceptions Django answers with a 4xx (``Http404``, ``PermissionDenied``,
  ``BadRequest``, ``SuspiciousOperation``) count as handled, like any 4xx response.
- ``StreamingHttpResponse`` (a sync iterator under WSGI, an async one under ASGI) keeps the trace
  open until the body is finished or the client goes away; spans recorded while streaming (a
  streamed generation with its time to first token) belong to the request's trace and user.
- ``X-PostHog-Trace-Id`` on the response of a request that recorded a trace (a streamed one:
  always, when traced), for the browser's feedback (``TRACE_ID_HEADER`` renames it, ``None``
  turns it off); ``current_trace().feedback_token`` signs the trace for the user with
  ``SECRET_KEY`` (see :func:`posthog_llm_trace.feedback`).
- With ``"SERVERLESS": True``, a bounded flush when each request ends.

The middleware is sync- and async-capable; put it after ``AuthenticationMiddleware``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .middleware import LLMTraceMiddleware

__all__ = ["LLMTraceMiddleware"]


def __getattr__(name: str) -> Any:
    # Lazy, so that listing the app in INSTALLED_APPS imports nothing but this module and the
    # AppConfig; the middleware module is loaded when Django builds the middleware chain.
    if name == "LLMTraceMiddleware":
        from .middleware import LLMTraceMiddleware

        return LLMTraceMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
