"""Callables named by dotted path in the Django tests' settings (REQUEST_FILTER, MASK...)."""

from __future__ import annotations

from typing import Any


def mask(value: Any) -> Any:
    return value


def only_api(request: Any) -> bool:
    return bool(request.path.startswith("/api/"))


def by_username(request: Any) -> str | None:
    return f"user:{request.user.username}" if request.user.is_authenticated else None


def nobody(request: Any) -> str | None:
    return None


class _PosthogLike:
    """Stands for a ``posthog.Posthog`` client in the settings tests (nothing is sent)."""

    def capture(self, event: str, **kwargs: object) -> None:
        return None

    def flush(self, timeout_seconds: float | None = None) -> None:
        return None


posthog_client = _PosthogLike()
