"""The Django app: settings from ``POSTHOG_LLM_TRACE``, the default client, the system checks."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.apps import AppConfig
from django.conf import settings as django_settings
from django.core.signals import setting_changed

from ..client import Client, report_problems, set_default_client
from ..settings import (
    ConfigurationError,
    Layer,
    Settings,
    build_settings,
    environment_problems,
    from_mapping_upper,
    resolve,
)

__all__ = ["SETTING", "LLMTraceConfig", "configure_from_settings", "load_settings"]

logger = logging.getLogger("posthog_llm_trace")

#: The Django setting that holds the dict of upper-case keys.
SETTING = "POSTHOG_LLM_TRACE"


_HINT = " (`manage.py check` lists every problem)"


def settings_layer() -> Layer:
    """The ``POSTHOG_LLM_TRACE`` dict as a settings layer (empty when it is not set)."""
    values = getattr(django_settings, SETTING, None)
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigurationError(f"{SETTING} must be a dict, got {type(values).__name__}")
    return from_mapping_upper(values, SETTING)


def load_settings() -> Settings:
    """Settings from defaults, the environment and ``POSTHOG_LLM_TRACE``, in that order.

    Raises :class:`~posthog_llm_trace.ConfigurationError` naming the first wrong setting."""
    return build_settings(settings_layer())


def configure_from_settings(*, if_unset: bool = False) -> Client:
    """Make a client built from Django's settings the process default and return the default.

    With ``if_unset``, a default chosen earlier by :func:`~posthog_llm_trace.configure` stays.
    Wrong settings are logged (``manage.py check`` lists them all) and export is turned off until
    they are fixed: a mistyped ``PRIVACY_MODE`` must not fall back to sending prompts."""
    try:
        resolved, problems = resolve(settings_layer())
    except ConfigurationError as exc:  # POSTHOG_LLM_TRACE is not a dict
        resolved, problems = build_settings(Layer({"export": "off"}), environ={}), [str(exc)]
    report_problems(problems, _HINT)
    return set_default_client(Client(resolved), if_unset=if_unset)


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # override_settings(POSTHOG_LLM_TRACE=...) in an application's tests takes effect at once.
    if setting == SETTING:
        configure_from_settings()


class LLMTraceConfig(AppConfig):
    """``INSTALLED_APPS += ["posthog_llm_trace.django"]``."""

    name = "posthog_llm_trace.django"
    label = "posthog_llm_trace"
    verbose_name = "PostHog LLM analytics"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

        setting_changed.connect(_on_setting_changed, dispatch_uid="posthog_llm_trace.settings")
        # Without the dict, the default client that the first trace builds from the
        # environment is the same thing; leave the choice to configure() or that first use,
        # but say now, at start-up, what is wrong in the environment.
        if hasattr(django_settings, SETTING):
            configure_from_settings(if_unset=True)
        else:
            report_problems(environment_problems(), _HINT)
