"""Thumbs up / down in the example apps, through the real apps, to the capture server: the page
gets the answer's signed trace reference (JSON for a plain answer, a header for a streamed one),
posts it back with the vote, and PostHog receives the vote on the answer's trace, under the user
who gave it. Another user's vote with that reference is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from capture_server import CaptureServer
from flask_testapp import isolate

import posthog_llm_trace
from example_flask import DEMO_PASSWORD, DEMO_USERNAME, create_app

ROOT = Path(__file__).resolve().parent.parent


def metrics_of(server: CaptureServer, trace_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in server.events
        if e["event"] in ("$ai_metric", "$ai_feedback")
        and e["properties"]["$ai_trace_id"] == trace_id
    ]


def test_the_flask_example_records_thumbs_under_each_answer(
    capture_server: CaptureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate(monkeypatch)
    app = create_app(
        {
            "POSTHOG_API_KEY": "phc_test",
            "POSTHOG_HOST": capture_server.url,
            "POSTHOG_LLM_TRACE_EXPORT": "thread",
            "POSTHOG_LLM_TRACE_FLUSH_INTERVAL": 0.05,
        }
    )
    client = app.extensions["posthog_llm_trace"]
    try:
        demo, anonymous = app.test_client(), app.test_client()
        demo.post("/login", data={"username": DEMO_USERNAME, "password": DEMO_PASSWORD})
        page = demo.get("/").get_data(as_text=True)
        assert "addFeedback" in page  # the thumbs are on the page

        chat = demo.post("/chat", json={"message": "What is the weather in Paris?"})
        token = chat.json["token"]  # type: ignore[index]
        trace_id = chat.headers["X-PostHog-Trace-Id"]
        assert token.startswith(trace_id + ".")
        streamed = demo.get("/chat/stream?message=hi")
        stream_token = streamed.headers["X-Feedback-Token"]
        stream_trace = streamed.headers["X-PostHog-Trace-Id"]
        assert streamed.get_data(as_text=True) == "You said: hi"
        streamed.close()

        up = demo.post("/feedback", json={"token": token, "vote": "up"})
        down = demo.post(
            "/feedback", json={"token": stream_token, "vote": "down", "comment": "Too short"}
        )
        stolen = anonymous.post("/feedback", json={"token": token, "vote": "down"})
        assert (up.status_code, down.status_code, stolen.status_code) == (200, 200, 403)
        assert client.flush(10.0)
    finally:
        client.shutdown(2.0)

    [vote] = metrics_of(capture_server, trace_id)
    assert vote["event"] == "$ai_metric" and vote["distinct_id"] == DEMO_USERNAME
    assert vote["properties"]["$ai_metric_name"] == "thumbs"
    assert vote["properties"]["$ai_metric_value"] == 1
    on_stream = {e["event"]: e for e in metrics_of(capture_server, stream_trace)}
    assert on_stream["$ai_metric"]["properties"]["$ai_metric_value"] == -1
    assert on_stream["$ai_feedback"]["properties"]["$ai_feedback_text"] == "Too short"
    assert {e["distinct_id"] for e in on_stream.values()} == {DEMO_USERNAME}
    # The answers' traces arrived too, under the same ids the page was given.
    traces = {e["properties"]["$ai_trace_id"] for e in capture_server.events}
    assert {trace_id, stream_trace} <= traces
    assert client.stats.snapshot()["dropped_feedback_bad_token"] == 1


@pytest.mark.service
def test_the_django_example_records_thumbs_under_each_answer(
    capture_server: CaptureServer,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTHOG_", "DJANGO_"))}
    env.update(POSTHOG_API_KEY="phc_test", POSTHOG_HOST=capture_server.url)
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "example_django_driver.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["flushed"] is True
    assert out["up"] == [200, {"ok": True}] and out["down"] == [200, {"ok": True}]
    assert out["stolen"][0] == 403 and out["bad_vote"][0] == 400
    assert out["chat_token"].startswith(out["chat_header"] + ".")
    assert out["stream_token"].startswith(out["stream_header"] + ".")
    assert out["stream_body"] == "You said: hello"
    assert out["stats"]["dropped_feedback_bad_token"] == 1

    [vote] = metrics_of(capture_server, out["chat_header"])
    assert vote["distinct_id"] == out["demo_pk"]
    assert (vote["properties"]["$ai_metric_name"], vote["properties"]["$ai_metric_value"]) == (
        "thumbs",
        1,
    )
    on_stream = {e["event"]: e for e in metrics_of(capture_server, out["stream_header"])}
    assert on_stream["$ai_metric"]["properties"]["$ai_metric_value"] == -1
    assert on_stream["$ai_feedback"]["properties"]["$ai_feedback_text"] == "Too short"
    assert {e["distinct_id"] for e in on_stream.values()} == {out["demo_pk"]}
    sessions = {e["properties"].get("$ai_session_id") for e in [vote, *on_stream.values()]}
    assert len(sessions) == 1 and None not in sessions


assert posthog_llm_trace.feedback  # the examples use the public API only
