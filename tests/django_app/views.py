"""Views of the test app: each one is a user story of tests/test_django_*.py."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.contrib.auth import get_user_model, login
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)

from posthog_llm_trace import current_trace, generation, span, tool

try:
    from django.contrib.auth import alogin
except ImportError:  # Django 4.2
    from asgiref.sync import sync_to_async

    alogin = sync_to_async(login)


async def auser(request: HttpRequest) -> Any:
    """``await request.auser()``, also on Django 4.2 (which has no ``auser``)."""
    if hasattr(request, "auser"):
        return await request.auser()
    from asgiref.sync import sync_to_async

    def load() -> Any:
        request.user._setup()  # evaluate the lazy user in a thread, where queries are allowed
        return request.user

    return await sync_to_async(load)()


#: Gates a streamed body waits on, by the ``gate`` query parameter: the test decides when the
#: body goes on, so "the trace is still open" is checked at a known point, without sleeps.
GATES: dict[str, threading.Event] = {}
GATE_TIMEOUT = 10.0

#: Set by ``probe``; read by an outer middleware and by the streamed body.
PROBE: contextvars.ContextVar[str] = contextvars.ContextVar("probe", default="unset")


def _record(name: str = "answer") -> None:
    with generation(name, model="gpt-4o-mini", provider="openai", input="hi") as gen:
        with tool("get_weather", input={"city": "Paris"}) as t:
            t.set_output({"temp": 21})
        gen.set_output("Sunny")
        gen.set_usage(input_tokens=3, output_tokens=1)


def chat(request: HttpRequest, id: int) -> JsonResponse:
    _record()
    return JsonResponse({"id": id})


def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("no spans here")


def root(request: HttpRequest) -> HttpResponse:
    _record()
    return HttpResponse("root")


def whoami(request: HttpRequest) -> JsonResponse:
    _record()
    return JsonResponse({"pk": request.user.pk})


def login_inside(request: HttpRequest) -> HttpResponse:
    """Records a span first, then logs the user in (a login form, a magic link...)."""
    _record()
    user = get_user_model().objects.get(username=request.POST["username"])
    login(request, user)
    return HttpResponse("logged in")


def token_auth(request: HttpRequest) -> JsonResponse:
    """What Django REST framework does: authenticate from a header inside the view and set
    ``request.user`` on the Django request (DRF's ``Request.user`` setter does exactly that)."""
    assert not request.user.is_authenticated  # the session knows nobody
    _record()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme == "Token":
        request.user = get_user_model().objects.get(username=token)
    return JsonResponse({"pk": request.user.pk})


def override(request: HttpRequest) -> HttpResponse:
    trace = current_trace()
    assert trace is not None
    trace.session_id = "conversation-7"
    trace.distinct_id = "app-chosen"
    trace.properties["plan"] = "pro"
    _record()
    return HttpResponse("ok")


class Boom(Exception):
    pass


def boom(request: HttpRequest) -> HttpResponse:
    _record()
    raise Boom("the view failed")


def server_error(request: HttpRequest) -> HttpResponse:
    _record()
    return HttpResponse("unavailable", status=503)


def not_found(request: HttpRequest) -> HttpResponse:
    _record()
    raise Http404("no such conversation")


def session_touch(request: HttpRequest) -> HttpResponse:
    """Stores something in the session, so an anonymous visitor gets one."""
    request.session["seen"] = True
    _record()
    return HttpResponse("ok")


def probe(request: HttpRequest) -> HttpResponse:
    PROBE.set("set-by-the-view")
    _record()
    if "stream" in request.GET:

        def body() -> Iterator[str]:
            with span("streamed"):
                yield PROBE.get()  # the body goes on where the view left off

        return StreamingHttpResponse(body(), content_type="text/plain")
    return HttpResponse("ok")


# --- streaming ---------------------------------------------------------------------------------


def _gate(request: HttpRequest) -> threading.Event | None:
    return GATES.get(request.GET.get("gate", ""))


def stream_sync(request: HttpRequest) -> StreamingHttpResponse:
    """Streams a generation: one piece, then waits for the gate, then the rest (``n`` pieces)."""
    gate = _gate(request)
    pieces = int(request.GET.get("n", "3"))

    def body() -> Iterator[str]:
        with generation(
            "stream", model="gpt-4o-mini", provider="openai", input="hi", stream=True
        ) as gen:
            gen.chunk("first")
            yield "first"
            if gate is not None:
                gate.wait(GATE_TIMEOUT)
            for i in range(pieces):
                piece = f" piece-{i}" + "." * 1000
                gen.chunk(piece)
                yield piece

    return StreamingHttpResponse(body(), content_type="text/plain")


def stream_failing(request: HttpRequest) -> StreamingHttpResponse:
    def body() -> Iterator[str]:
        with generation("stream", model="gpt-4o-mini", provider="openai", input="hi"):
            yield "first"
            raise Boom("the stream broke")

    return StreamingHttpResponse(body(), content_type="text/plain")


async def stream_async(request: HttpRequest) -> StreamingHttpResponse:
    gate = _gate(request)
    pieces = int(request.GET.get("n", "3"))
    user = await auser(request)
    who = user.pk

    async def body() -> AsyncIterator[str]:
        async with generation(
            "stream",
            model="gpt-4o-mini",
            provider="openai",
            input="hi",
            stream=True,
            properties={"who": who},
        ) as gen:
            gen.chunk("first")
            yield "first"
            if gate is not None:
                await asyncio.to_thread(gate.wait, GATE_TIMEOUT)
            for i in range(pieces):
                piece = f" piece-{i}"
                gen.chunk(piece)
                yield piece

    return StreamingHttpResponse(body(), content_type="text/plain")


# --- async views ------------------------------------------------------------------------------


async def async_whoami(request: HttpRequest) -> JsonResponse:
    user = await auser(request)
    async with generation("answer", model="gpt-4o-mini", provider="openai", input="hi") as gen:
        gen.set_output("Sunny")
    return JsonResponse({"pk": user.pk})


async def async_plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("nothing recorded")


async def async_login_inside(request: HttpRequest) -> HttpResponse:
    async with span("step"):
        pass
    user = await get_user_model().objects.aget(username=request.POST["username"])
    await alogin(request, user)
    return HttpResponse("logged in")


async def async_boom(request: HttpRequest) -> HttpResponse:
    async with span("step"):
        pass
    raise Boom("the async view failed")


# --- isolation ----------------------------------------------------------------------------------


def _who(request: HttpRequest, user: Any) -> dict[str, Any]:
    trace = current_trace()
    assert trace is not None
    return {
        "who": user.pk if user.is_authenticated else None,
        "session": request.session.session_key,
        "trace": trace.id,
    }


def isolation_sync(request: HttpRequest) -> JsonResponse:
    who = _who(request, request.user)
    with span("outer", kind="agent", properties={"who": who["who"]}):
        time.sleep(0.002)  # let other requests' spans interleave with this one
        with tool("inner", properties={"who": who["who"]}):
            time.sleep(0.001)
    return JsonResponse(who)


async def isolation_async(request: HttpRequest) -> JsonResponse:
    who = _who(request, await auser(request))
    async with span("outer", kind="agent", properties={"who": who["who"]}):
        await asyncio.sleep(0.002)
        async with tool("inner", properties={"who": who["who"]}):
            await asyncio.sleep(0.001)
    return JsonResponse(who)


def task_headers(request: HttpRequest) -> JsonResponse:
    """What a Celery task published from this view would carry (no span recorded yet)."""
    from posthog_llm_trace.celery import trace_headers
    from posthog_llm_trace.context import current_node

    return JsonResponse(trace_headers(current_node()))


async def async_task_headers(request: HttpRequest) -> JsonResponse:
    from posthog_llm_trace.celery import trace_headers
    from posthog_llm_trace.context import current_node

    await auser(request)  # an authenticated async view has looked its user up
    return JsonResponse(trace_headers(current_node()))
