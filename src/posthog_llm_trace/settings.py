"""Settings: one frozen object, built from layered sources.

Every setting is declared once, in :data:`SPECS`, with its default, its meaning and how a raw
value is checked. The README's settings table is generated from that list
(``python -m posthog_llm_trace settings-table``) and a test keeps the two in step.

Sources, later wins: defaults, environment, framework settings (Django's ``POSTHOG_LLM_TRACE``
dict, Flask's ``POSTHOG_LLM_TRACE_*`` config keys), explicit arguments. A wrong type or value
raises :class:`ConfigurationError` naming the setting the way its source spells it;
:func:`resolve` is the variant for start-up, where a wrong deployment setting turns export off
instead of stopping the application.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SPECS",
    "ConfigurationError",
    "Layer",
    "Settings",
    "build_settings",
    "environment_problems",
    "resolve",
]

US_HOST = "https://us.i.posthog.com"
EXPORT_MODES = ("thread", "celery", "sync", "posthog", "console", "file", "memory", "off")


class ConfigurationError(ValueError):
    """A setting has a wrong type or value. The message names the setting."""


# --- value checkers: take a raw value (possibly a string from the environment), return it typed.


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be a boolean")


def _positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a positive integer")
    if isinstance(value, str):
        value = value.strip()
        if not value.isdigit():
            raise ValueError("must be a positive integer")
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(value: Any) -> int:
    if isinstance(value, str) and value.strip() == "0":
        return 0
    if value == 0 and not isinstance(value, bool):
        return 0
    return _positive_int(value)


def _positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a positive number of seconds")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a positive number of seconds") from None
    if not number > 0 or number == float("inf"):
        raise ValueError("must be a positive number of seconds")
    return number


def _rate(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number between 0 and 1")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number between 0 and 1") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError("must be a number between 0 and 1")
    return number


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value.strip() or None


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def safe_url(url: str) -> str:
    """``url`` without the user info (``https://user:password@host`` -> ``https://***@host``):
    the form of a host fit for reprs, logs and error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"


def _shown(key: str, raw: Any) -> str:
    """How a refused value appears in its error message: never a credential."""
    if key in SECRET_SETTINGS:
        return "***"
    if key == "host" and isinstance(raw, str):
        if "://" in raw:
            return repr(safe_url(raw))
        text = raw.strip()
        # A bare host name is worth echoing (the usual mistake); anything else may be a key
        # pasted in the wrong place.
        if "." not in text or not all(c.isalnum() or c in ".-:" for c in text):
            return "a value that is not a URL (not shown: it may be a credential)"
    return repr(raw)


def _host(value: Any) -> str:
    host = _str(value).rstrip("/")
    if not host.startswith(("http://", "https://")):
        raise ValueError("must be a URL starting with http:// or https://")
    # PostHog's app hosts do not ingest; map them to the ingestion hosts as posthog-python does.
    return {
        "https://app.posthog.com": US_HOST,
        "https://us.posthog.com": US_HOST,
        "https://eu.posthog.com": "https://eu.i.posthog.com",
    }.get(host, host)


def _export(value: Any) -> str:
    mode = _str(value).lower()
    if mode not in EXPORT_MODES:
        raise ValueError("must be one of " + ", ".join(repr(m) for m in EXPORT_MODES))
    return mode


def _callable(value: Any) -> Callable[..., Any] | None:
    """A callable, or a dotted path to one (``"myapp.tracing.resolve_user"``)."""
    if value is None:
        return None
    if isinstance(value, str):
        module_name, _, attr = value.strip().rpartition(".")
        if not module_name:
            raise ValueError("must be a callable or a dotted path such as 'myapp.hooks.fn'")
        try:
            value = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"could not import {value!r}: {exc}") from None
    if not callable(value):
        raise ValueError("must be a callable or a dotted path to one")
    return value  # type: ignore[no-any-return]


def _posthog_client(value: Any) -> Any:
    """None (posthog-python's module-level client), a ``posthog.Posthog`` client, or a dotted
    path to one (``"myapp.analytics.posthog_client"``)."""
    if value is None:
        return None
    if isinstance(value, str):
        module_name, _, attr = value.strip().rpartition(".")
        if not module_name:
            raise ValueError("must be a posthog.Posthog client or a dotted path to one")
        try:
            value = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"could not import {value!r}: {exc}") from None
    if not callable(getattr(value, "capture", None)) or isinstance(value, type):
        raise ValueError("must be a posthog.Posthog client (an object with capture())")
    return value


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _header_name(value: Any) -> str | None:
    """An HTTP header name, or None (empty string too): the header is off."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a header name or None")
    name: str = value.strip()
    if not name:
        return None
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError("must be a valid HTTP header name")
    return name


#: Settings whose values are secrets: never shown in reprs or error messages.
SECRET_SETTINGS = frozenset({"api_key", "trace_token_key"})


#: The SDKs whose calls can be recorded without hand-written spans (see :mod:`.instrument`).
INSTRUMENTABLE = ("openai", "anthropic", "posthog")


def _instrument(value: Any) -> tuple[str, ...] | None:
    """None (every supported SDK that is importable), or the names to instrument: a list, or a
    comma-separated string from the environment (empty: none)."""
    if value is None:
        return None
    if isinstance(value, str):
        names = [part.strip().lower() for part in value.split(",") if part.strip()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        names = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError("must be a list of SDK names")
            names.append(item.strip().lower())
    else:
        raise ValueError("must be a list of SDK names (or a comma-separated string)")
    unknown = [name for name in names if name not in INSTRUMENTABLE]
    if unknown:
        raise ValueError(
            f"names unknown SDK {unknown[0]!r} (supported: {', '.join(INSTRUMENTABLE)})"
        )
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Spec:
    """One setting: its Python name, default, checker, and a sentence for the README."""

    name: str
    default: Any
    check: Callable[[Any], Any]
    doc: str
    env: str | None = None
    shown_default: str | None = None


SPECS: tuple[Spec, ...] = (
    Spec(
        "api_key",
        None,
        _optional_str,
        "Project API key (`phc_...`). Missing: export is disabled with one warning; "
        "recording still works.",
        env="POSTHOG_API_KEY",
        shown_default="env `POSTHOG_API_KEY`",
    ),
    Spec(
        "host",
        US_HOST,
        _host,
        "PostHog ingestion host; EU (`https://eu.i.posthog.com`) and self-hosted URLs work "
        "the same way.",
        env="POSTHOG_HOST",
        shown_default="env `POSTHOG_HOST`, else `https://us.i.posthog.com`",
    ),
    Spec(
        "flush_at",
        None,
        _positive_int,
        "Events per batch sent to PostHog.",
        shown_default="20 (serverless: 10)",
    ),
    Spec(
        "flush_interval",
        None,
        _positive_float,
        "Longest wait in seconds before a partial batch is sent.",
        shown_default="10 (serverless: 2)",
    ),
    Spec(
        "serverless",
        False,
        _bool,
        "Smaller, faster batches and a bounded flush at the end of every request.",
    ),
    Spec(
        "default_distinct_id",
        "anonymous",
        _str,
        "distinct_id when no user is known; such events also carry "
        "`$process_person_profile: false`.",
    ),
    Spec(
        "privacy_mode",
        False,
        _bool,
        "No prompt, completion, tool input/output or trace state leaves the process; "
        "errors are reduced to their type and status.",
    ),
    Spec(
        "export",
        "thread",
        _export,
        "`thread` (background batching), `celery` (a worker posts batches), `sync` "
        "(inline, bounded), `posthog` (through your posthog-python client, see "
        "`posthog_client`), `console` / `file` (JSON lines for development), `memory` "
        "(tests), `off`.",
    ),
    Spec(
        "export_file",
        "posthog-llm-trace.jsonl",
        _str,
        "Path the `file` export appends JSON lines to (replay them with "
        "`python -m posthog_llm_trace replay FILE`).",
    ),
    Spec(
        "max_queue_size",
        10_000,
        _positive_int,
        "Events held in memory for export; past it new events are dropped and counted.",
    ),
    Spec(
        "max_queue_bytes",
        64 * 1024 * 1024,
        _positive_int,
        "Bytes of content held in memory for export (an estimate made without serialising); "
        "past it new events are dropped and counted as `queue_bytes`.",
        shown_default="67108864 (64 MiB)",
    ),
    Spec(
        "sample_rate",
        1.0,
        _rate,
        "Share of traces exported, decided once at the root and carried into Celery tasks.",
    ),
    Spec(
        "mask",
        None,
        _callable,
        "Callable applied to every content field (input, output, state, error) before export; "
        "a callable or a dotted path.",
    ),
    Spec(
        "chunk_spans",
        False,
        _bool,
        "Export each streamed segment (text, reasoning, tool call) as a `chunk` `$ai_span` "
        "under its generation.",
    ),
    Spec(
        "ai_endpoint",
        False,
        _bool,
        "Send to PostHog's AI lane `/i/v0/ai/batch/` (8 MiB per event); falls back to "
        "`/batch/` when the host answers 404.",
    ),
    Spec(
        "max_event_bytes",
        900_000,
        _positive_int,
        "Per-event size budget: larger content fields are truncated with a marker, "
        "the event is never dropped for size.",
    ),
    Spec("gzip", True, _bool, "Compress request bodies with gzip."),
    Spec("timeout", 10.0, _positive_float, "HTTP timeout in seconds for one request."),
    Spec(
        "max_retries",
        5,
        _non_negative_int,
        "Retries of a failed batch (network error, 408, 429, 5xx) with exponential backoff "
        "and jitter, honouring `Retry-After`.",
    ),
    Spec(
        "shutdown_timeout",
        5.0,
        _positive_float,
        "Budget in seconds of the flush at exit: interpreter exit, a stop by SIGTERM, a "
        "uvicorn shutdown, Celery worker exit.",
    ),
    Spec(
        "celery_queue",
        None,
        _optional_str,
        "Queue the `celery` export task is routed to (default: Celery's default queue).",
    ),
    Spec(
        "request_filter",
        None,
        _callable,
        "Callable `(request) -> bool`; a request for which it returns False is not traced.",
    ),
    Spec(
        "distinct_id_resolver",
        None,
        _callable,
        "Callable `(request) -> str or None` that returns the distinct_id for a request "
        "(default: the authenticated user's primary key).",
    ),
    Spec(
        "distinct_id_header",
        False,
        _bool,
        "Trust `X-POSTHOG-DISTINCT-ID` from the client. Off by default: a header is not "
        "authentication.",
    ),
    Spec(
        "session_replay_header",
        True,
        _bool,
        "Copy the browser's `X-POSTHOG-SESSION-ID` header into `$session_id` to link replays.",
    ),
    Spec(
        "posthog_client",
        None,
        _posthog_client,
        'With `export="posthog"`: the `posthog.Posthog` client (or a dotted path to it) that '
        "delivers the events; none means posthog-python's module-level client.",
    ),
    Spec(
        "instrument",
        None,
        _instrument,
        "SDKs whose calls are recorded without hand-written spans: `openai`, `anthropic`, "
        "`posthog` (its `posthog.ai` wrappers). A list, or a comma list in the environment; "
        "`[]` turns it off.",
        shown_default="every supported SDK that is importable",
    ),
    Spec(
        "trace_id_header",
        "X-PostHog-Trace-Id",
        _header_name,
        "Response header carrying the id of the trace the request recorded (streamed "
        'responses: always, when traced), for the browser\'s feedback; `None` or `""` '
        "turns it off.",
    ),
    Spec(
        "trace_token_key",
        None,
        _optional_str,
        "Secret that signs the trace references of `sign_trace()` / "
        "`current_trace().feedback_token`.",
        shown_default="Django's / Flask's `SECRET_KEY`",
    ),
)

_BY_NAME = {spec.name: spec for spec in SPECS}


@dataclass(frozen=True)
class Settings:
    """The resolved settings. Immutable: build a new one to change anything."""

    api_key: str | None = None
    host: str = US_HOST
    flush_at: int = 20
    flush_interval: float = 10.0
    serverless: bool = False
    default_distinct_id: str = "anonymous"
    privacy_mode: bool = False
    export: str = "thread"
    export_file: str = "posthog-llm-trace.jsonl"
    max_queue_size: int = 10_000
    max_queue_bytes: int = 64 * 1024 * 1024
    sample_rate: float = 1.0
    mask: Callable[[Any], Any] | None = None
    chunk_spans: bool = False
    ai_endpoint: bool = False
    max_event_bytes: int = 900_000
    gzip: bool = True
    timeout: float = 10.0
    max_retries: int = 5
    shutdown_timeout: float = 5.0
    celery_queue: str | None = None
    request_filter: Callable[[Any], Any] | None = None
    distinct_id_resolver: Callable[[Any], Any] | None = None
    distinct_id_header: bool = False
    session_replay_header: bool = True
    posthog_client: Any = None
    instrument: tuple[str, ...] | None = None
    trace_id_header: str | None = "X-PostHog-Trace-Id"
    trace_token_key: str | None = None

    def __repr__(self) -> str:
        # The API key, the token key and the host's user info are secrets: never in reprs, logs
        # or exceptions.
        shown = ", ".join(f"{f.name}={self._shown(f.name)}" for f in dataclasses.fields(self))
        return f"Settings({shown})"

    def _shown(self, name: str) -> str:
        if name in SECRET_SETTINGS and getattr(self, name):
            return "'***'"
        if name == "host":
            return repr(safe_url(self.host))
        return repr(getattr(self, name))

    @property
    def export_enabled(self) -> bool:
        """True when events leave the process (a key is set, or a local sink is chosen)."""
        if self.export in ("console", "file", "memory", "posthog"):
            return True
        return self.export != "off" and bool(self.api_key)


@dataclass(frozen=True)
class Layer:
    """One source of raw values and how that source spells a setting's name in messages."""

    values: Mapping[str, Any]
    spell: Callable[[str], str] = str
    strict: bool = True  # unknown keys are an error


ENV_PREFIX = "POSTHOG_LLM_TRACE_"


def env_layer(environ: Mapping[str, str] | None = None) -> Layer:
    """Settings from the environment: ``POSTHOG_API_KEY``, ``POSTHOG_HOST`` and
    ``POSTHOG_LLM_TRACE_<NAME>`` for every other scalar setting.

    Any other ``POSTHOG_LLM_TRACE_*`` variable is an unknown setting, as an unknown dict key is:
    ``POSTHOG_LLM_TRACE_PRIVACY_MOD=true`` must not pass silently while prompts are exported."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in SPECS:
        if spec.env and environ.get(spec.env):
            values[spec.name] = environ[spec.env]
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and len(key) > len(ENV_PREFIX):
            values[key[len(ENV_PREFIX) :].lower()] = value

    def spell(name: str) -> str:
        spec = _BY_NAME.get(name)
        if spec and spec.env and name in values and environ.get(spec.env) == values[name]:
            return spec.env
        return ENV_PREFIX + name.upper()

    return Layer(values, spell)


def environment_problems(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every wrong or unknown setting in the environment, one message each (empty: none)."""
    layer = env_layer(environ)
    return [
        message
        for key, raw in layer.values.items()
        if (message := _problem(layer, key, raw)) is not None
    ]


def layer_problems(layer: Layer) -> list[str]:
    """Every wrong or unknown key of ``layer`` on its own, one message each."""
    return [
        message
        for key, raw in layer.values.items()
        if (message := _problem(layer, key, raw)) is not None
    ]


def _problem(layer: Layer, key: str, raw: Any) -> str | None:
    return _checked(layer, key, raw)[1]


_IGNORED = object()


def _checked(layer: Layer, key: str, raw: Any) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(_IGNORED, message)`` naming the key as its source spells it."""
    spec = _BY_NAME.get(key)
    if spec is None:
        return _IGNORED, (_unknown(layer, key) if layer.strict else None)
    try:
        return spec.check(raw), None
    except (ValueError, TypeError) as exc:
        return _IGNORED, f"{layer.spell(key)} {exc}, got {_shown(key, raw)}"


def build_settings(*layers: Layer, environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve defaults < environment < ``layers`` (in order) into a :class:`Settings`."""
    resolved: dict[str, Any] = {}
    for layer in (env_layer(environ), *layers):
        for key, raw in layer.values.items():
            value, message = _checked(layer, key, raw)
            if message is not None:
                raise ConfigurationError(message)
            if value is not _IGNORED:
                resolved[key] = value
    serverless = resolved.get("serverless", False)
    # serverless changes only the defaults: explicit values win, each on its own.
    resolved.setdefault("flush_at", 10 if serverless else 20)
    resolved.setdefault("flush_interval", 2.0 if serverless else 10.0)
    for spec in SPECS:
        resolved.setdefault(spec.name, spec.default)
    return Settings(**resolved)


def resolve(
    *sources: Layer, explicit: Layer | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Settings, list[str]]:
    """Settings for a process that must go on serving whatever its configuration says.

    A wrong value among the ``explicit`` arguments raises :class:`ConfigurationError`: it is a
    developer's call, met the first time the code runs. A wrong or unknown value in the
    environment or in ``sources`` (deployment configuration, changed without a code review) does
    not raise: the settings returned have export off, and every problem is returned, one message
    each, for the caller to log. Export stays off until the configuration is fixed."""
    if explicit is not None:
        build_settings(explicit, environ={})
    layers = (*sources, explicit) if explicit is not None else sources
    try:
        return build_settings(*layers, environ=environ), []
    except ConfigurationError as exc:
        problems = environment_problems(environ)
        for layer in sources:
            problems += layer_problems(layer)
        return build_settings(Layer({"export": "off"}), environ={}), problems or [str(exc)]


def _unknown(layer: Layer, key: str) -> str:
    """The error for an unknown key, suggesting the closest setting spelled as its source
    spells it (``flush_at``, ``POSTHOG_LLM_TRACE['FLUSH_AT']``, ``POSTHOG_LLM_TRACE_FLUSH_AT``)."""
    close = difflib.get_close_matches(str(key), list(_BY_NAME), n=1)
    hint = f"; did you mean {layer.spell(close[0])}?" if close else ""
    return f"{layer.spell(key)} is not a posthog-llm-trace setting{hint}"


def from_mapping_upper(values: Mapping[str, Any], spelled_as: str) -> Layer:
    """A layer from a dict with upper-case keys (Django's ``POSTHOG_LLM_TRACE = {...}``)."""
    return Layer(
        {str(k).lower(): v for k, v in values.items()},
        lambda name: f"{spelled_as}[{name.upper()!r}]",
    )


def from_prefixed(config: Mapping[str, Any], prefix: str = "POSTHOG_LLM_TRACE_") -> Layer:
    """A layer from flat prefixed keys (Flask's ``app.config``), plus ``POSTHOG_API_KEY`` and
    ``POSTHOG_HOST`` as they are."""
    values: dict[str, Any] = {}
    for key, value in config.items():
        if key.startswith(prefix):
            values[key[len(prefix) :].lower()] = value
    for spec in SPECS:
        if spec.env and spec.env in config:
            values[spec.name] = config[spec.env]

    def spell(name: str) -> str:
        spec = _BY_NAME.get(name)
        if spec and spec.env and spec.env in config and (prefix + name.upper()) not in config:
            return spec.env
        return prefix + name.upper()

    return Layer(values, spell)


def settings_table(specs: Iterable[Spec] = SPECS) -> str:
    """The README's settings table, in Markdown."""
    rows = [
        "| setting | Django key | Flask key | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for spec in specs:
        default = spec.shown_default or (
            "none" if spec.default is None else f"`{spec.default!r}`".replace("'", '"')
        )
        flask_key = spec.env if spec.env else "POSTHOG_LLM_TRACE_" + spec.name.upper()
        rows.append(
            f"| `{spec.name}` | `{spec.name.upper()}` | `{flask_key}` | {default} | {spec.doc} |"
        )
    return "\n".join(rows)
