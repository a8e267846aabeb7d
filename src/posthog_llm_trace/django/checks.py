"""System checks (``manage.py check``, run by ``runserver`` and ``migrate``).

=============================  =========================================================
id                             problem
=============================  =========================================================
``posthog_llm_trace.E001``     a setting in ``POSTHOG_LLM_TRACE`` or the environment (any
                               ``POSTHOG_LLM_TRACE_*`` variable) is unknown or has a wrong
                               type or value; one message per setting
``posthog_llm_trace.E002``     ``POSTHOG_LLM_TRACE`` is not a dict
``posthog_llm_trace.E003``     ``"EXPORT": "celery"`` but Celery cannot be imported
``posthog_llm_trace.W001``     no API key: nothing is exported
``posthog_llm_trace.W002``     the middleware comes before ``AuthenticationMiddleware``
``posthog_llm_trace.W003``     the app is installed but the middleware is not in ``MIDDLEWARE``
=============================  =========================================================
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Warning, register

from ..settings import (
    ConfigurationError,
    Settings,
    build_settings,
    environment_problems,
    from_mapping_upper,
)
from .apps import SETTING, load_settings

__all__ = ["check_middleware", "check_settings"]

TAG = "posthog_llm_trace"
MIDDLEWARE_PATHS = (
    "posthog_llm_trace.django.LLMTraceMiddleware",
    "posthog_llm_trace.django.middleware.LLMTraceMiddleware",
)
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


@register(TAG)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every wrong setting by name, then what the resolved settings cannot do."""
    values = getattr(django_settings, SETTING, None)
    if values is not None and not isinstance(values, Mapping):
        return [
            Error(
                f"{SETTING} must be a dict, got {type(values).__name__}.",
                hint=f'{SETTING} = {{"API_KEY": "phc_...", "PRIVACY_MODE": True}}',
                id="posthog_llm_trace.E002",
            )
        ]
    errors: list[CheckMessage] = []
    # The environment, one variable at a time (unknown POSTHOG_LLM_TRACE_* ones included).
    errors.extend(_invalid(ConfigurationError(problem)) for problem in environment_problems())
    for key, value in (values or {}).items():
        # One key at a time, without the environment, so that every wrong key is reported.
        try:
            build_settings(from_mapping_upper({key: value}, SETTING), environ={})
        except ConfigurationError as exc:
            errors.append(_invalid(exc))
    if errors:
        return errors
    try:
        resolved = load_settings()
    except ConfigurationError as exc:  # pragma: no cover - each key passed on its own
        return [_invalid(exc)]
    return _check_resolved(resolved)


def _invalid(exc: ConfigurationError) -> Error:
    return Error(
        f"{exc}.",
        hint="Nothing is exported until this is fixed. The settings are listed in the "
        "posthog-llm-trace README.",
        obj=SETTING,
        id="posthog_llm_trace.E001",
    )


def _check_resolved(resolved: Settings) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    if resolved.export == "celery":
        try:
            importlib.import_module("celery")
        except ImportError:
            messages.append(
                Error(
                    f"{SETTING}['EXPORT'] is 'celery' but Celery cannot be imported.",
                    hint='pip install "posthog-llm-trace[celery]", or choose "EXPORT": "thread".',
                    obj=SETTING,
                    id="posthog_llm_trace.E003",
                )
            )
    if resolved.export in ("thread", "sync", "celery") and not resolved.api_key:
        messages.append(
            Warning(
                f"No PostHog API key ({SETTING}['API_KEY'] or the POSTHOG_API_KEY environment "
                "variable): LLM events are recorded but not exported.",
                hint='For local development, "EXPORT": "file" writes the events as JSON lines.',
                obj=SETTING,
                id="posthog_llm_trace.W001",
            )
        )
    return messages


@register(TAG)
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The middleware is listed, and after ``AuthenticationMiddleware``."""
    middleware = [str(m) for m in getattr(django_settings, "MIDDLEWARE", None) or ()]
    ours = next((i for i, m in enumerate(middleware) if m in MIDDLEWARE_PATHS), None)
    if ours is None:
        return [
            Warning(
                "posthog_llm_trace.django is installed but its middleware is not in MIDDLEWARE: "
                "requests get no trace, user or session.",
                hint=f'MIDDLEWARE += ["{MIDDLEWARE_PATHS[0]}"]',
                id="posthog_llm_trace.W003",
            )
        ]
    if AUTH_MIDDLEWARE in middleware and ours < middleware.index(AUTH_MIDDLEWARE):
        return [
            Warning(
                f"{middleware[ours]} comes before {AUTH_MIDDLEWARE}: REQUEST_FILTER cannot see "
                "request.user, and spans recorded by the middleware in between are not part of "
                "the request's trace.",
                hint=f"Move it after {AUTH_MIDDLEWARE}.",
                obj="MIDDLEWARE",
                id="posthog_llm_trace.W002",
            )
        ]
    return []
