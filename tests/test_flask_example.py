"""The Flask example app works as its README says: sign in, chat, stream."""

from __future__ import annotations

import pytest
from flask_testapp import isolate

from example_flask import DEMO_PASSWORD, DEMO_USERNAME, create_app
from posthog_llm_trace.testing import capture_events


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch)


def test_sign_in_chat_and_stream() -> None:
    app = create_app({"POSTHOG_LLM_TRACE_EXPORT": "off"})
    browser = app.test_client()

    with capture_events() as events:
        signed_in = browser.post(
            "/login", data={"username": DEMO_USERNAME, "password": DEMO_PASSWORD}
        )
        chat = browser.post("/chat", json={"message": "What is the weather in Paris?"})
        streamed = browser.get("/chat/stream?message=hello there")
        text = streamed.get_data(as_text=True)
        streamed.close()

    assert signed_in.status_code == 302
    assert chat.json["answer"] == "It is 17 °C in Paris."  # type: ignore[index]
    assert text == "You said: hello there"
    names = [t["properties"]["$ai_span_name"] for t in events.named("$ai_trace")]
    assert names == ["POST /chat", "GET /chat/stream"]
    assert len(events.named("$ai_generation")) == 3  # tool call, answer, streamed answer
    assert {e["distinct_id"] for e in events} == {DEMO_USERNAME}
    assert len({e["properties"]["$ai_session_id"] for e in events}) == 1
