"""Helpers shared by the core's tests (tests/test_core_*.py)."""

from __future__ import annotations

import json
from typing import Any

from posthog_llm_trace import Client
from posthog_llm_trace.settings import Layer, build_settings


def make_client(**settings: Any) -> Client:
    """A client of its own, independent of the process's default client and of the developer's
    environment. ``export="off"`` unless given: nothing leaves the process, and
    ``capture_events()`` still sees every event."""
    settings.setdefault("export", "off")
    return Client(build_settings(Layer(settings), environ={}))


def props(event: dict[str, Any]) -> dict[str, Any]:
    return event["properties"]  # type: ignore[no-any-return]


def strict_json(event: Any) -> str:
    """The event as PostHog's capture API would receive it; raises if it is not valid JSON."""
    return json.dumps(event, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
