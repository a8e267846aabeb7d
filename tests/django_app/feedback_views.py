"""Views and URLs for tests/test_django_feedback.py: an answer, a page that shows its trace, a
feedback endpoint, streamed answers. Used with ``override_settings(ROOT_URLCONF=__name__)``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import path

from posthog_llm_trace import current_trace, feedback, generation

PAGE = "<p data-trace='{{ llm_trace.id }}' data-token='{{ llm_trace.feedback_token }}'>{{ a }}</p>"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "OPTIONS": {
            "loaders": [("django.template.loaders.locmem.Loader", {"answer.html": PAGE})],
            "context_processors": ["posthog_llm_trace.django.context_processors.llm_trace"],
        },
    }
]


def _answer(question: str) -> str:
    with generation("answer", model="gpt-4o-mini", provider="openai", input=question) as gen:
        reply = f"echo: {question}"
        gen.set_output(reply)
    return reply


def answer(request: HttpRequest) -> JsonResponse:
    reply = _answer(request.GET.get("q", "hi"))
    trace = current_trace()
    assert trace is not None
    return JsonResponse({"answer": reply, "trace_id": trace.id, "token": trace.feedback_token})


def answer_page(request: HttpRequest) -> HttpResponse:
    return render(request, "answer.html", {"a": _answer("hi")})


def own_header(request: HttpRequest) -> HttpResponse:
    _answer("hi")
    response = HttpResponse("ok")
    response["X-PostHog-Trace-Id"] = "set-by-the-view"
    return response


def nothing(request: HttpRequest) -> HttpResponse:
    return HttpResponse("nothing recorded")


def send_feedback(request: HttpRequest) -> JsonResponse:
    data: Any = json.loads(request.body or b"{}")
    accepted = feedback(
        data.get("trace_id"),
        data.get("value"),
        token=data.get("token"),
        comment=data.get("comment"),
    )
    return JsonResponse({"accepted": accepted})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def body() -> Iterator[str]:
        with generation("stream", model="m", provider="p", stream=True) as gen:
            for piece in ("a", "b"):
                gen.chunk(piece)
                yield piece

    return StreamingHttpResponse(body())


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    async def body() -> AsyncIterator[str]:
        with generation("stream", model="m", provider="p", stream=True) as gen:
            for piece in ("a", "b"):
                gen.chunk(piece)
                yield piece

    return StreamingHttpResponse(body())


async def asend_feedback(request: HttpRequest) -> JsonResponse:
    from tests.django_app.views import auser

    await auser(request)  # under ASGI the token check sees only a user already loaded
    data: Any = json.loads(request.body or b"{}")
    return JsonResponse({"accepted": feedback(None, data.get("value"), token=data.get("token"))})


async def aanswer(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"answer": _answer("hi")})


urlpatterns = [
    path("answer/", answer),
    path("answer-page/", answer_page),
    path("own-header/", own_header),
    path("nothing/", nothing),
    path("feedback/", send_feedback),
    path("stream/", stream),
    path("astream/", astream),
    path("async/answer/", aanswer),
    path("async/feedback/", asend_feedback),
]
