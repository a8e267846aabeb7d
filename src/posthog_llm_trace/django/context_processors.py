"""A template context processor: ``llm_trace`` is the request's trace (or None).

Add ``"posthog_llm_trace.django.context_processors.llm_trace"`` to the ``context_processors`` of
``TEMPLATES``,
then ``{{ llm_trace.id }}`` and ``{{ llm_trace.feedback_token }}`` in a template rendered by the
view (a ``TemplateResponse`` renders inside the middleware too, so it works the same).
"""

from __future__ import annotations

from typing import Any

from ..context import current_trace

__all__ = ["llm_trace"]


def llm_trace(request: Any) -> dict[str, Any]:
    return {"llm_trace": current_trace()}
