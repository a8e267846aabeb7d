"""Test support for applications that use posthog-llm-trace.

``capture_events()`` collects the events your code produces, exactly as PostHog would receive
them (dicts with ``event``, ``distinct_id``, ``properties``, ``timestamp``, ``uuid``), instead of
exporting them::

    from posthog_llm_trace.testing import capture_events

    def test_chat_view_records_a_generation(client):
        with capture_events() as events:
            client.post("/chat/", {"message": "hi"})
        [gen] = events.named("$ai_generation")
        assert gen["properties"]["$ai_model"] == "gpt-4o-mini"

With pytest, the ``llm_events`` fixture does the same for the whole test (the plugin is
registered automatically when the package is installed)::

    def test_summary(llm_events):
        summarise("...")
        assert llm_events.named("$ai_trace")

Events arrive when their trace ends: at the end of the request, of the ``trace(...)`` block, or
of a span opened outside any trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .client import capturing

__all__ = ["CapturedEvents", "capture_events", "llm_events"]


class CapturedEvents(list[dict[str, Any]]):
    """A list of captured events with a few helpers."""

    def named(self, event: str) -> list[dict[str, Any]]:
        """The events called ``event`` (``"$ai_generation"``, ``"$ai_span"``...)."""
        return [e for e in self if e["event"] == event]

    def by_span_name(self, name: str) -> dict[str, Any]:
        """The one span event (``$ai_generation``, ``$ai_span``...) whose ``$ai_span_name`` is
        ``name``; the ``$ai_trace`` of that name only if no span has it (the implicit trace
        around a lone span is named after it)."""
        named = [e for e in self if e["properties"].get("$ai_span_name") == name]
        found = [e for e in named if e["event"] != "$ai_trace"] or named
        if len(found) != 1:
            raise LookupError(f"{len(found)} events are named {name!r}")
        return found[0]

    def trace_ids(self) -> set[str]:
        return {e["properties"]["$ai_trace_id"] for e in self}


class _Live(CapturedEvents):
    """A view that always reflects the list being filled."""

    def __init__(self, source: list[dict[str, Any]]) -> None:
        super().__init__()
        self._source = source

    def _sync(self) -> None:
        if len(self._source) != list.__len__(self):
            list.clear(self)
            list.extend(self, list(self._source))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._sync()
        return list.__iter__(self)

    def __len__(self) -> int:
        self._sync()
        return list.__len__(self)

    def __getitem__(self, index: Any) -> Any:
        self._sync()
        return list.__getitem__(self, index)

    def __eq__(self, other: object) -> bool:
        self._sync()
        return list.__eq__(self, other)

    def __repr__(self) -> str:
        self._sync()
        return list.__repr__(self)

    __hash__ = None  # type: ignore[assignment]


@contextmanager
def capture_events() -> Iterator[CapturedEvents]:
    """Collect, instead of exporting, every event produced inside the block (in any thread or
    task of this process)."""
    with capturing() as target:
        yield _Live(target)


try:  # the pytest fixture, when pytest is there
    import pytest

    @pytest.fixture
    def llm_events() -> Iterator[CapturedEvents]:
        """The events produced during the test, as PostHog would receive them."""
        with capture_events() as events:
            yield events

except ImportError:  # pragma: no cover
    pass
