"""Views that call the real ``anthropic`` client, with no hand-written span around the call: the
instrumentation must put it in the request's trace. ``ANTHROPIC_BASE_URL_FOR_TESTS`` (a Django
setting) points the client at the fake provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
from django.conf import settings
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import path

from posthog_llm_trace import current_trace

from .urls import urlpatterns as base_urlpatterns

MODEL = "claude-sonnet-4-5"


def _client() -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=settings.ANTHROPIC_BASE_URL_FOR_TESTS, api_key="x", max_retries=0
    )


def _async_client() -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=settings.ANTHROPIC_BASE_URL_FOR_TESTS, api_key="x", max_retries=0
    )


def _ask(request: HttpRequest) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": request.GET.get("q", "hello")}],
    }


def _answer(message: anthropic.types.Message) -> JsonResponse:
    trace = current_trace()
    text = "".join(b.text for b in message.content if b.type == "text")
    return JsonResponse({"answer": text, "trace_id": trace.id if trace else None})


def ask(request: HttpRequest) -> JsonResponse:
    return _answer(_client().messages.create(**_ask(request)))


async def aask(request: HttpRequest) -> JsonResponse:
    return _answer(await _async_client().messages.create(**_ask(request)))


def stream(request: HttpRequest) -> StreamingHttpResponse:
    manager = _client().messages.stream(**_ask(request))

    def body() -> Iterator[str]:
        with manager as events:
            yield from events.text_stream

    return StreamingHttpResponse(body(), content_type="text/plain")


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    events = await _async_client().messages.create(**_ask(request), stream=True)

    async def body() -> AsyncIterator[str]:
        async for event in events:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                yield event.delta.text

    return StreamingHttpResponse(body(), content_type="text/plain")


urlpatterns = [
    path("anthropic/ask/", ask),
    path("anthropic/aask/", aask),
    path("anthropic/stream/", stream),
    path("anthropic/astream/", astream),
    *base_urlpatterns,
]
