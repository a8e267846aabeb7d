"""The README's Provider SDKs section runs as written, with the real ``openai`` client pointed
at the fake provider through the environment variables the SDK reads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import posthog_llm_trace as plt
from posthog_llm_trace.testing import capture_events
from tests.core_support import props
from tests.fake_provider import FakeProvider
from tests.test_core_readme import python_blocks, section


@pytest.fixture
def openai_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    before = plt.instrumented()
    plt.uninstrument()
    with FakeProvider() as fake:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-readme")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
        yield fake
    plt.uninstrument()
    if before:
        plt.instrument(*before)


def test_the_provider_sdk_examples_run(openai_env: FakeProvider) -> None:
    blocks = python_blocks(section("instrumentation"))
    assert len(blocks) == 2
    namespace: dict[str, Any] = {"__name__": "readme"}
    with capture_events() as events:
        for block in blocks:
            exec(compile(block, "README.md (instrumentation)", "exec"), namespace)
    assert namespace["text"] == "echo: And the refund?"
    chat, streamed, responses, manual = (props(e) for e in events.named("$ai_generation"))
    draft = props(events.by_span_name("draft"))
    assert chat["$ai_parent_id"] == draft["$ai_span_id"]
    assert chat["$ai_input"][0] == {"role": "system", "content": "Be brief."}
    assert chat["$ai_model_parameters"] == {"temperature": 0.2}
    assert chat["$ai_stop_reason"] == "stop" and chat["$ai_http_status"] == 200
    assert streamed["$ai_input_tokens"] > 0 and streamed["$ai_stream"] is True
    assert responses["$ai_input"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Thanks!"},
    ]
    [embedded] = events.named("$ai_embedding")
    assert props(embedded)["$ai_input"] == ["refund policy"]
    # The manual loop, instrumented: one generation, its text once, its tokens.
    assert manual["$ai_span_name"] == "answer"
    assert manual["$ai_output_choices"] == [
        {"role": "assistant", "content": "echo: Weather in Paris?"}
    ]
    assert manual["$ai_input_tokens"] > 0 and manual["$ai_stop_reason"] == "stop"
    assert {props(e)["$ai_trace_id"] for e in events.named("$ai_trace")} == {
        chat["$ai_trace_id"],
        manual["$ai_trace_id"],
    }


def test_the_manual_streaming_loop_is_right_without_instrumentation(
    openai_env: FakeProvider,
) -> None:
    [_, manual_block] = python_blocks(section("instrumentation"))
    from openai import OpenAI

    namespace: dict[str, Any] = {"__name__": "readme", "client": OpenAI(), "trace": plt.trace}
    with capture_events() as events:
        exec(compile(manual_block, "README.md (instrumentation)", "exec"), namespace)
    [manual] = (props(e) for e in events.named("$ai_generation"))
    assert manual["$ai_output_choices"] == [
        {"role": "assistant", "content": "echo: Weather in Paris?"}
    ]
    assert manual["$ai_input_tokens"] > 0
    assert 0 < manual["$ai_time_to_first_token"] <= manual["$ai_latency"]
