"""The contract between the core and the delivery layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Event", "Exporter", "Item", "Render"]

#: One PostHog event as the capture API takes it: ``event``, ``distinct_id``, ``properties``,
#: ``timestamp`` (ISO-8601), ``uuid``. Always JSON-serialisable and within the size budget.
Event = dict[str, Any]


class Item(Protocol):
    """What the core submits: a finished trace (or part of one), rendered later."""

    @property
    def event_count(self) -> int:
        """How many events this item renders to (an upper bound), for queue accounting."""
        ...


#: Turns an item into PostHog events. Pure, never raises (the core guarantees it), may be slow.
Render = Callable[[Any], list[Event]]


class Exporter(Protocol):
    """A destination for items. Every method returns promptly and never raises."""

    def submit(self, item: Any) -> bool:
        """Hand ``item`` over. Must be cheap: no serialisation, no I/O on the caller's thread.
        Returns False (and counts the drop) when the item was not accepted."""
        ...

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver what is pending; return within ``timeout`` seconds. True if all went out."""
        ...

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush within ``timeout`` and stop; later submits are counted as ``shutdown`` drops."""
        ...
