"""What the posthog-python bridge tests share: a real ``posthog.Posthog`` client pointed at the
capture server, the real ``posthog.ai`` wrappers pointed at the fake provider, and the minimal
Anthropic Messages routes those wrappers need (``/v1/messages``, JSON and SSE)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import posthog

import posthog_llm_trace as plt
from tests.capture_server import CaptureServer
from tests.fake_provider import FakeProvider, Json, Request, Sse

__all__ = ["add_anthropic_routes", "instrumented", "posthog_client", "wait_ai_events"]


def posthog_client(server: CaptureServer, **options: Any) -> posthog.Posthog:
    """posthog-python's client as its documentation builds it, delivering to ``server``."""
    options.setdefault("flush_at", 1)
    options.setdefault("flush_interval", 0.05)
    return posthog.Posthog("phc_app", host=server.url, **options)


def wait_ai_events(server: CaptureServer, ph: posthog.Posthog) -> list[dict[str, Any]]:
    """Everything posthog-python delivered to ``server`` so far (after a flush)."""
    ph.flush(5)
    return list(server.events)


@contextmanager
def instrumented(*names: str) -> Iterator[None]:
    """Exactly these SDKs instrumented for the block; the suite's state is put back after."""
    before = plt.instrumented()
    plt.uninstrument()
    plt.instrument(*names)
    try:
        yield
    finally:
        plt.uninstrument()
        if before:
            plt.instrument(*before)


def _anthropic_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return f"echo: {content}"


def _message(request: Request) -> Json | Sse:
    body = request.body
    text = _anthropic_text(body)
    usage = {"input_tokens": 7, "output_tokens": len(text.split())}
    if not body.get("stream"):
        return Json(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": usage,
            }
        )
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_2",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 7, "output_tokens": 0},
        },
    }
    events: list[tuple[str | None, Any]] = [("message_start", start)]
    events.append(
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
    )
    for word in text.split(" "):
        delta = {"type": "text_delta", "text": word if word == text.split(" ")[0] else " " + word}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return Sse(events)


def add_anthropic_routes(provider: FakeProvider) -> None:
    """``POST /v1/messages`` unless the provider already answers it (tests/fake_anthropic.py)."""
    if ("POST", "/v1/messages") not in provider.routes:
        provider.route("POST", "/v1/messages", _message)
