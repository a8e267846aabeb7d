"""Views that call the real ``openai`` client, with no hand-written span around the call: the
instrumentation must put it in the request's trace. ``OPENAI_BASE_URL_FOR_TESTS`` (a Django
setting) points the client at the fake provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
from django.conf import settings
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import path

from posthog_llm_trace import current_trace

from .urls import urlpatterns as base_urlpatterns


def _client() -> openai.OpenAI:
    return openai.OpenAI(base_url=settings.OPENAI_BASE_URL_FOR_TESTS, api_key="x", max_retries=0)


def _messages(request: HttpRequest) -> list[dict[str, str]]:
    return [{"role": "user", "content": request.GET.get("q", "hello")}]


def ask(request: HttpRequest) -> JsonResponse:
    reply = _client().chat.completions.create(model="gpt-4o-mini", messages=_messages(request))
    trace = current_trace()
    return JsonResponse(
        {"answer": reply.choices[0].message.content, "trace_id": trace.id if trace else None}
    )


async def aask(request: HttpRequest) -> JsonResponse:
    client = openai.AsyncOpenAI(
        base_url=settings.OPENAI_BASE_URL_FOR_TESTS, api_key="x", max_retries=0
    )
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=_messages(request))
    trace = current_trace()
    return JsonResponse(
        {"answer": reply.choices[0].message.content, "trace_id": trace.id if trace else None}
    )


def stream(request: HttpRequest) -> StreamingHttpResponse:
    chunks = _client().chat.completions.create(
        model="gpt-4o-mini",
        messages=_messages(request),
        stream=True,
        stream_options={"include_usage": True},
    )

    def body() -> Iterator[str]:
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    return StreamingHttpResponse(body(), content_type="text/plain")


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    client = openai.AsyncOpenAI(
        base_url=settings.OPENAI_BASE_URL_FOR_TESTS, api_key="x", max_retries=0
    )
    chunks = await client.chat.completions.create(
        model="gpt-4o-mini", messages=_messages(request), stream=True
    )

    async def body() -> AsyncIterator[str]:
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    return StreamingHttpResponse(body(), content_type="text/plain")


urlpatterns = [
    path("openai/ask/", ask),
    path("openai/aask/", aask),
    path("openai/stream/", stream),
    path("openai/astream/", astream),
    *base_urlpatterns,
]
