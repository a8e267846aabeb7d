"""Where spans find the default client, without importing the client module.

``client`` imports ``events`` and ``spans`` (to render finished traces); ``spans`` needs the
default client when a trace opens without one. Rather than an import inside a function of
``spans`` (a cycle), ``client`` registers its ``get_client`` here when it is imported, which the
package's ``__init__`` always does first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .client import Client

__all__ = ["default_client", "register"]


def _unregistered() -> Client:  # pragma: no cover - the package's __init__ imports client
    raise RuntimeError("posthog_llm_trace.client was not imported")


#: The default client's getter; ``client`` puts ``get_client`` here.
default_client: Callable[[], Client] = _unregistered


def register(getter: Callable[[], Client]) -> None:
    global default_client
    default_client = getter
