"""User feedback and scores on a trace: ``$ai_metric`` and ``$ai_feedback`` events.

PostHog's LLM analytics shows two kinds of event on a trace (research/posthog.md §1.6):
``$ai_metric`` (``$ai_metric_name``, ``$ai_metric_value``: a number or a string) and
``$ai_feedback`` (``$ai_feedback_text``), both joined to the trace by ``$ai_trace_id``.
:func:`feedback` sends one of each (the second only with a comment).

A feedback item travels like a span: it is checked on the caller's thread (cheap, never raising),
carried to the exporter in a :class:`~posthog_llm_trace.spans.TraceRecord` and rendered to events
off the request path. Given inside a request (or any open trace), it waits for that trace's end
so it goes out under the identity the adapter binds then; it never makes that trace send a
``$ai_trace`` of its own, since the feedback is about another trace.

A trace id that comes back from a browser is user input. :func:`sign_trace` makes a reference to
a trace that only the server can produce (an HMAC over the trace id and the user, keyed with the
application's secret), and ``feedback(token=...)`` accepts it only from the same user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import numbers
import re
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import context
from .events import LIB, LIB_VERSION, iso
from .messages import jsonable, shrink_event
from .settings import ConfigurationError, Settings
from .spans import Trace, TraceRecord
from .stats import Stats

if TYPE_CHECKING:
    from .client import Client

__all__ = [
    "MAX_COMMENT_CHARS",
    "FeedbackItem",
    "feedback",
    "render_feedback",
    "sign_trace",
    "verify_trace_token",
]

logger = logging.getLogger("posthog_llm_trace")

#: PostHog's documented trace id alphabet (research/posthog.md §1.1); we also cap the length.
_ID = re.compile(r"[A-Za-z0-9\-_~.@()!':|]{1,200}")
#: A comment longer than this is cut, with a marker, rather than dropped.
MAX_COMMENT_CHARS = 10_000
#: A string metric value ("up", "negative", "95") longer than this is cut.
MAX_VALUE_CHARS = 200
_TRIMMED = " [truncated by posthog-llm-trace]"
_TOKEN_CONTEXT = b"posthog-llm-trace/feedback-token/v1\x00"
_SIG_BYTES = 16  # 128 bits of HMAC-SHA256: unforgeable, short enough for an HTML attribute


@dataclass(slots=True)
class FeedbackItem:
    """One piece of feedback, checked, waiting to be rendered."""

    trace_id: str
    name: str
    value: int | float | str | None
    comment: str | None
    span_id: str | None
    distinct_id: str | None
    session_id: str | None
    properties: dict[str, Any]
    timestamp: float
    uuid: str

    @property
    def event_count(self) -> int:
        return (self.value is not None) + (self.comment is not None)


class _Drop(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def feedback(
    trace_id: Any = None,
    value: Any = None,
    *,
    comment: Any = None,
    name: Any = "rating",
    span_id: Any = None,
    token: Any = None,
    distinct_id: Any = None,
    session_id: Any = None,
    properties: Mapping[str, Any] | None = None,
    key: str | bytes | None = None,
    client: Client | None = None,
) -> bool:
    """Send a score (``$ai_metric``) and, with ``comment``, a text (``$ai_feedback``) about a
    trace. Returns True when queued; bad input is a counted, logged drop (False), never an
    exception::

        feedback(trace_id, 1, name="thumbs")                     # in a view: the request's user
        feedback(trace_id, "negative", comment="Wrong city")
        feedback(trace_id, 0.8, name="eval_relevance")           # a worker, a script
        feedback(None, 1, token=request.POST["token"])           # a signed reference (safe)

    ``value`` is a number (finite, not a bool) or a short string; None sends only the comment.
    ``span_id`` names the span the feedback is about: the events become its children
    (``$ai_parent_id`` = ``span_id``, each with a ``$ai_span_id`` of its own).
    Inside a request or any open trace, the events go out when it ends, under its user and
    ``$ai_session_id``; elsewhere under ``distinct_id`` (default: ``default_distinct_id``).
    ``properties`` are added, but never over a ``$ai_*`` key (those are dropped).
    ``token`` is a :func:`sign_trace` reference, checked against the current user (the
    request's, or ``distinct_id``); ``key`` is the secret it was signed with, when it is not
    the default (see :func:`sign_trace`).
    """
    trace = context.current_trace()
    client = client or (trace.client if trace is not None else None) or _default_client()
    if not client.recording:
        return False
    stats = client.stats
    n = 1 + (comment is not None)
    try:
        if token is not None:
            trace_id = _verified(token, trace_id, distinct_id, trace, key, client)
        item = _item(trace_id, value, comment, name, span_id, distinct_id, session_id, properties)
    except _Drop as drop:
        stats.dropped(drop.reason, n, drop.detail)
        return False
    except Exception as exc:  # a hostile object (a __str__ that raises...): still never raise
        stats.dropped("feedback_invalid", n, f"unexpected {type(exc).__name__}")
        return False
    # Held for the open trace's end (its identity is bound then), unless another client was
    # asked for explicitly.
    if trace is not None and trace.client is client and trace._add_feedback(item):
        return True
    client.submit(_record(item, trace))
    return True


def _default_client() -> Client:
    from .client import get_client

    return get_client()


def _item(
    trace_id: Any,
    value: Any,
    comment: Any,
    name: Any,
    span_id: Any,
    distinct_id: Any,
    session_id: Any,
    properties: Mapping[str, Any] | None,
) -> FeedbackItem:
    trace_id = _ident(trace_id, "feedback_bad_trace_id", "trace id")
    span = None if span_id is None else _ident(span_id, "feedback_bad_span_id", "span id")
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or not name.isprintable():
        raise _Drop("feedback_bad_name", "the metric name must be a short, printable string")
    text = _comment(comment)
    number = _value(value)
    if number is None and text is None:
        raise _Drop("feedback_bad_value", "feedback needs a value or a comment")
    props: dict[str, Any] = {}
    if properties is not None:
        if not isinstance(properties, Mapping):
            raise _Drop("feedback_invalid", "properties must be a mapping")
        props = {
            str(k): v
            for k, v in properties.items()
            if not (isinstance(k, str) and k.startswith("$ai_"))
        }
    return FeedbackItem(
        trace_id,
        name.strip(),
        number,
        text,
        span,
        _optional_text(distinct_id),
        _optional_text(session_id),
        props,
        time.time(),
        str(uuid.uuid4()),
    )


def _ident(value: Any, reason: str, what: str) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str) or not value:
        raise _Drop(reason, f"the {what} is missing or not a string")
    if not _ID.fullmatch(value):
        # Never log the value: it came from the browser and may be anything.
        raise _Drop(reason, f"the {what} has characters PostHog does not allow, or is too long")
    return value


def _value(value: Any) -> int | float | str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        # True/False would be read as 1/0 by some tools and as text by others: say what you mean.
        raise _Drop("feedback_bad_value", "a bool is not a metric value; send 1/0 or 'up'/'down'")
    if isinstance(value, str):
        text: str = value.strip()[:MAX_VALUE_CHARS]
        if not text:
            raise _Drop("feedback_bad_value", "the metric value is an empty string")
        return text
    if isinstance(value, numbers.Integral):
        number: int | float = int(value)
        try:
            finite = math.isfinite(float(number))
        except OverflowError:
            finite = False
    elif isinstance(value, numbers.Real):
        number = float(value)
        finite = math.isfinite(number)
    else:
        raise _Drop("feedback_bad_value", f"a {type(value).__name__} is not a metric value")
    if not finite:
        raise _Drop("feedback_bad_value", "the metric value is not a finite number")
    return number


def _comment(comment: Any) -> str | None:
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise _Drop("feedback_bad_comment", f"the comment is a {type(comment).__name__}")
    text: str = comment.strip()
    if not text:
        return None
    if len(text) > MAX_COMMENT_CHARS:
        text = text[:MAX_COMMENT_CHARS] + _TRIMMED
    return text


def _optional_text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:200] or None


def _record(item: FeedbackItem, trace: Trace | None) -> TraceRecord:
    """A record carrying only ``item``: for feedback outside any trace, or after its end (then
    under that trace's identity)."""
    now = item.timestamp
    distinct_id = session_id = replay = None
    groups: dict[str, Any] = {}
    if trace is not None:
        distinct_id, session_id = trace.distinct_id, trace.session_id
        replay, groups = trace.replay_session_id, dict(trace.groups)
    record = TraceRecord(
        item.trace_id,
        "feedback",
        distinct_id,
        session_id,
        replay,
        {},
        groups,
        now,
        now,
        0.0,
        None,
        None,
        None,
        False,
    )
    record.feedback = [item]
    return record


# --- rendering (on the export thread) ---------------------------------------------------------


def render_feedback(
    record: TraceRecord, settings: Settings, stats: Stats | None = None, *, fit: bool = True
) -> list[dict[str, Any]]:
    """The ``$ai_metric`` / ``$ai_feedback`` events of the record's feedback items."""
    events: list[dict[str, Any]] = []
    for item in record.feedback:
        try:
            events.extend(_events(record, item, settings, fit))
        except Exception:
            logger.exception("posthog-llm-trace could not render feedback")
            if stats is not None:
                stats.dropped("invalid", item.event_count)
    return events


def _events(
    record: TraceRecord, item: FeedbackItem, settings: Settings, fit: bool
) -> list[dict[str, Any]]:
    limit = settings.max_event_bytes
    default = settings.default_distinct_id
    distinct_id = item.distinct_id or record.distinct_id or default
    custom = jsonable(item.properties, limit) if item.properties else {}
    base: dict[str, Any] = {"$ai_trace_id": item.trace_id}
    session_id = item.session_id or record.session_id
    if session_id:
        base["$ai_session_id"] = session_id
    if record.replay_session_id:
        base["$session_id"] = record.replay_session_id
    if record.groups:
        base["$groups"] = jsonable(record.groups, limit)
    if distinct_id == default:
        base["$process_person_profile"] = False
    if item.span_id:
        # A node under the span the feedback is about; its own span id is the event's uuid, so
        # a tree built from $ai_span_id / $ai_parent_id never sees a span that is its own parent.
        base["$ai_parent_id"] = item.span_id
    base["$ai_lib"] = LIB
    base["$ai_lib_version"] = LIB_VERSION
    base["$lib"] = LIB
    base["$lib_version"] = LIB_VERSION
    out = []
    if item.value is not None:
        props = {**custom, **base, "$ai_metric_name": item.name, "$ai_metric_value": item.value}
        if item.span_id:
            props["$ai_span_id"] = item.uuid
        out.append(_event("$ai_metric", distinct_id, props, item.timestamp, item.uuid))
    if item.comment is not None:
        props = {**custom, **base, "$ai_feedback_text": _content(item.comment, settings)}
        if item.value is not None:
            props["$ai_metric_name"] = item.name  # which score the comment goes with
        feedback_uuid = str(uuid.uuid5(uuid.NAMESPACE_OID, item.uuid + "/feedback"))
        if item.span_id:
            props["$ai_span_id"] = feedback_uuid
        out.append(_event("$ai_feedback", distinct_id, props, item.timestamp, feedback_uuid))
    if fit:
        out = [shrink_event(e, limit) or _without_custom(e, base) for e in out]
    return out


def _event(
    name: str, distinct_id: str, props: dict[str, Any], ts: float, event_uuid: str
) -> dict[str, Any]:
    return {
        "event": name,
        "distinct_id": distinct_id,
        "properties": props,
        "timestamp": iso(ts),
        "uuid": event_uuid,
    }


def _without_custom(event: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    props = event["properties"]
    event["properties"] = {k: v for k, v in props.items() if k in base or k.startswith("$ai_")}
    return event


def _content(text: str, settings: Settings) -> Any:
    """The comment, as every content field: withheld by privacy mode, passed through ``mask``."""
    if settings.privacy_mode:
        return None
    mask = settings.mask
    if mask is None:
        return text
    try:
        return jsonable(mask(text), settings.max_event_bytes)
    except Exception:
        logger.warning("posthog-llm-trace mask raised; the feedback text is withheld")
        return "[withheld: mask failed]"


# --- signed references --------------------------------------------------------------------------


def _key(key: str | bytes | None, client: Client | None) -> bytes:
    # An explicit key, the setting, the Flask app's SECRET_KEY (set by the extension on its
    # client), Django's SECRET_KEY.
    candidates: list[Any] = [key]
    if client is not None:
        candidates.append(client.settings.trace_token_key)
        candidates.append(client.signing_key)
    candidates.append(_django_secret)
    for candidate in candidates:
        if callable(candidate):
            try:
                candidate = candidate()
            except Exception:
                continue
        if isinstance(candidate, str) and candidate:
            return candidate.encode()
        if isinstance(candidate, bytes) and candidate:
            return candidate
    raise ConfigurationError(
        "no key to sign trace references: set the trace_token_key setting, Django's SECRET_KEY "
        "or Flask's SECRET_KEY, or pass key="
    )


def _subject(user: Any, trace: Trace | None) -> bytes:
    """Who a reference is for: the given user, else the open trace's user, else its session."""
    if user is not None:
        return b"u:" + str(user).encode()
    if trace is not None:
        trace.resolve_identity()
        if trace.distinct_id:
            return b"u:" + trace.distinct_id.encode()
        if trace.session_id:
            return b"s:" + trace.session_id.encode()
    return b"-"


def _signature(secret: bytes, trace_id: str, subject: bytes) -> str:
    digest = hmac.new(
        secret, _TOKEN_CONTEXT + trace_id.encode() + b"\x00" + subject, hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest[:_SIG_BYTES]).rstrip(b"=").decode()


def sign_trace(
    trace_id: str | None = None,
    user: Any = None,
    *,
    key: str | bytes | None = None,
    client: Client | None = None,
) -> str:
    """A signed reference to a trace, ``"<trace id>.<signature>"``, for the browser to send back
    with its feedback::

        token = sign_trace()                    # in a view: the request's trace and user
        token = sign_trace(trace_id, user.pk)   # anywhere

    ``trace_id`` defaults to the current trace; ``user`` to the current trace's user (its
    ``$ai_session_id`` for an anonymous request with a session; nobody outside a trace). The key
    is ``key``, else the ``trace_token_key`` setting, else the framework's ``SECRET_KEY``.
    Raises ``ConfigurationError`` when there is no key, ``ValueError`` for a bad trace id.
    """
    trace = context.current_trace()
    if trace_id is None:
        if trace is None:
            raise ValueError("sign_trace() outside a trace needs a trace_id")
        trace_id = trace.id
    if not isinstance(trace_id, str) or not _ID.fullmatch(trace_id):
        raise ValueError("not a valid trace id")
    client = client or (trace.client if trace is not None else None) or _default_client()
    secret = _key(key, client)
    return f"{trace_id}.{_signature(secret, trace_id, _subject(user, trace))}"


def verify_trace_token(
    token: Any,
    user: Any = None,
    *,
    key: str | bytes | None = None,
    client: Client | None = None,
) -> str | None:
    """The trace id in ``token`` if :func:`sign_trace` made it for ``user`` (default: the current
    trace's user, as in :func:`sign_trace`) with this key; None otherwise. Never raises for a
    bad token."""
    trace = context.current_trace()
    client = client or (trace.client if trace is not None else None) or _default_client()
    try:
        return _check(token, user, trace, key, client)
    except (_Drop, ConfigurationError):
        return None


def _check(
    token: Any, user: Any, trace: Trace | None, key: str | bytes | None, client: Client
) -> str:
    if not isinstance(token, str) or "." not in token or len(token) > 300:
        raise _Drop("feedback_bad_token", "the trace token is not a token")
    trace_id, _, signature = token.rpartition(".")
    if not _ID.fullmatch(trace_id):
        raise _Drop("feedback_bad_token", "the trace token holds no valid trace id")
    try:
        secret = _key(key, client)
    except ConfigurationError as exc:
        raise _Drop("feedback_bad_token", str(exc)) from None
    expected = _signature(secret, trace_id, _subject(user, trace))
    if not hmac.compare_digest(expected, signature):
        raise _Drop("feedback_bad_token", "the trace token was not signed for this user")
    return trace_id


def _verified(
    token: Any,
    trace_id: Any,
    distinct_id: Any,
    trace: Trace | None,
    key: str | bytes | None,
    client: Client,
) -> str:
    verified = _check(token, distinct_id, trace, key, client)
    if trace_id is not None and trace_id != verified:
        raise _Drop("feedback_bad_token", "the trace id differs from the token's")
    return verified


def token_for(trace: Trace) -> str | None:
    """``Trace.feedback_token``: a reference to ``trace`` for its user, or None (logged) when
    no key is configured."""
    global _warned_no_key
    try:
        return f"{trace.id}.{_signature(_key(None, trace.client), trace.id, _subject(None, trace))}"
    except ConfigurationError as exc:
        if not _warned_no_key:  # once: a template may ask on every page
            _warned_no_key = True
            logger.warning("posthog-llm-trace: %s", exc)
        return None


_warned_no_key = False


def _django_secret() -> Any:
    conf = sys.modules.get("django.conf")
    settings = getattr(conf, "settings", None)
    if settings is None or not settings.configured:
        return None
    return getattr(settings, "SECRET_KEY", None)
