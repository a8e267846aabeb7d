"""The chat views. Nothing here knows about PostHog except ``current_trace()``: the middleware
opens the request's trace and binds the signed-in user and their session; the ``openai`` calls
of ``example_chat.llm`` (a plain client, instrumented by the app) and its tool call are recorded
inside it."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from example_chat.feedback import FEEDBACK_JS, TOKEN_HEADER, answer_token, record_vote
from example_chat.llm import answer, stream_answer
from posthog_llm_trace import current_trace, span

HISTORY_TURNS = 10


@login_required
def index(request: HttpRequest) -> HttpResponse:
    history = request.session.get("history", [])
    return render(request, "chat/chat.html", {"history": history, "feedback_js": FEEDBACK_JS})


def _data(request: HttpRequest) -> Any:
    if request.content_type == "application/json":
        try:
            return json.loads(request.body or b"{}")
        except ValueError:
            return {}
    return request.POST


def _message(request: HttpRequest) -> str:
    return str(_data(request).get("message", "")).strip()


@login_required
@require_POST
def chat(request: HttpRequest) -> JsonResponse:
    """``POST /chat/`` with ``message``: one turn of the conversation kept in the session."""
    message = _message(request)
    if not message:
        return JsonResponse({"error": "message is required"}, status=400)
    history: list[dict[str, Any]] = request.session.get("history", [])
    trace = current_trace()
    if trace is not None:
        trace.set_input(message)  # $ai_input_state of the $ai_trace event
    reply = answer(message, history)
    if trace is not None:
        trace.set_output(reply)
    history += [{"role": "user", "content": message}, {"role": "assistant", "content": reply}]
    request.session["history"] = history[-2 * HISTORY_TURNS :]
    # The signed reference to this answer's trace, for the thumbs under it.
    return JsonResponse({"answer": reply, "token": answer_token()})


@login_required
@require_GET
def chat_stream(request: HttpRequest) -> StreamingHttpResponse:
    """``GET /chat/stream/?message=...``: the answer as it is generated. The request's trace
    stays open until the last piece is sent, so the streamed generation is part of it."""
    message = request.GET.get("message", "").strip() or "Hello!"
    response = StreamingHttpResponse(
        stream_answer(message), content_type="text/plain; charset=utf-8"
    )
    token = answer_token()  # headers go before the body: the trace is known already
    if token:
        response[TOKEN_HEADER] = token
    return response


@login_required
@require_POST
def rate(request: HttpRequest) -> JsonResponse:
    """``POST /feedback/`` with ``token`` and ``vote`` (``up`` / ``down``), optionally
    ``comment``: the thumbs under an answer. The token must have been made for this user."""
    body, status = record_vote(_data(request))
    return JsonResponse(body, status=status)


@login_required
@require_POST
def summarise(request: HttpRequest) -> JsonResponse:
    """``POST /summarise/`` with ``message``: a Celery job (run a worker:
    ``celery -A example_chat.celery_app worker -l info``). Its generation joins this request's
    trace, under the signed-in user."""
    from example_chat.celery_app import summarise as summarise_task

    text = _message(request) or "Celery runs the job. PostHog shows it under the request."
    with span("enqueue-summary", kind="step"):
        result = summarise_task.delay(text)
    return JsonResponse({"task_id": result.id})
