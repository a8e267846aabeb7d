"""Views written the way posthog-python's documentation shows: one ``posthog.Posthog`` client,
handed to ``posthog.ai.openai.OpenAI``, and ``ph.capture(...)`` for product events. No span of
ours is written by hand. The tests set ``POSTHOG_CLIENT_FOR_TESTS`` and
``OPENAI_BASE_URL_FOR_TESTS`` (Django settings)."""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import path
from posthog.ai.openai import AsyncOpenAI, OpenAI

from posthog_llm_trace import current_trace

from .urls import urlpatterns as base_urlpatterns


def _llm() -> OpenAI:
    return OpenAI(
        posthog_client=settings.POSTHOG_CLIENT_FOR_TESTS,
        base_url=settings.OPENAI_BASE_URL_FOR_TESTS,
        api_key="x",
        max_retries=0,
    )


def _ask(request: HttpRequest) -> list[dict[str, str]]:
    return [{"role": "user", "content": request.GET.get("q", "hello")}]


def _answer(text: str | None) -> JsonResponse:
    trace = current_trace()
    return JsonResponse({"answer": text, "trace_id": trace.id if trace else None})


def ask(request: HttpRequest) -> JsonResponse:
    settings.POSTHOG_CLIENT_FOR_TESTS.capture("asked", properties={"where": "sync view"})
    reply = _llm().chat.completions.create(model="gpt-4o-mini", messages=_ask(request))
    return _answer(reply.choices[0].message.content)


def signup_and_ask(request: HttpRequest) -> JsonResponse:
    """A user signs in during the view: the product event and the generation are theirs."""
    user = get_user_model().objects.create_user(request.GET["name"])
    login(request, user)
    settings.POSTHOG_CLIENT_FOR_TESTS.capture("signed up")
    reply = _llm().chat.completions.create(model="gpt-4o-mini", messages=_ask(request))
    return _answer(reply.choices[0].message.content)


async def aask(request: HttpRequest) -> JsonResponse:
    settings.POSTHOG_CLIENT_FOR_TESTS.capture("asked", properties={"where": "async view"})
    llm = AsyncOpenAI(
        posthog_client=settings.POSTHOG_CLIENT_FOR_TESTS,
        base_url=settings.OPENAI_BASE_URL_FOR_TESTS,
        api_key="x",
        max_retries=0,
    )
    reply = await llm.chat.completions.create(model="gpt-4o-mini", messages=_ask(request))
    return _answer(reply.choices[0].message.content)


def stream(request: HttpRequest) -> StreamingHttpResponse:
    chunks = _llm().chat.completions.create(
        model="gpt-4o-mini", messages=_ask(request), stream=True
    )

    def body() -> Iterator[str]:
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    return StreamingHttpResponse(body(), content_type="text/plain")


urlpatterns = [
    path("ph/ask/", ask),
    path("ph/aask/", aask),
    path("ph/signup/", signup_and_ask),
    path("ph/stream/", stream),
    *base_urlpatterns,
]
