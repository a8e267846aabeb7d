"""The ``anthropic`` SDK: reading its objects and recording its calls."""

from __future__ import annotations


def install() -> None:
    """Patch the SDK so its calls are recorded. Called once by :func:`..instrument.instrument`."""


def uninstall() -> None:
    """Undo :func:`install`."""
