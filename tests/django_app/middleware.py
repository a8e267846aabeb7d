"""A middleware placed before ours in some tests: it reads, after the response, a context
variable that the view set (as LocaleMiddleware reads the language a view activated)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import views


class OuterProbe:
    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        response["X-Probe"] = views.PROBE.get()
        return response
