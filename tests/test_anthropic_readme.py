"""The README's Anthropic section runs as written, with the real ``anthropic`` client pointed at
the fake provider through the environment variables the SDK reads."""

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
def anthropic_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    before = plt.instrumented()
    plt.uninstrument()
    with FakeProvider() as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-readme")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        yield fake
    plt.uninstrument()
    if before:
        plt.instrument(*before)


def check_manual(answer: dict[str, Any], streamed: dict[str, Any]) -> None:
    assert answer["$ai_span_name"] == "answer" and streamed["$ai_span_name"] == "streamed"
    for gen in (answer, streamed):
        assert gen["$ai_output_choices"] == [
            {"role": "assistant", "content": [{"type": "text", "text": "echo: Weather in Oslo?"}]}
        ]
        assert gen["$ai_stop_reason"] == "end_turn"
        assert gen["$ai_input_tokens"] > 0 and gen["$ai_output_tokens"] > 0
        assert gen["$ai_cache_reporting_exclusive"] is False
    assert 0 < streamed["$ai_time_to_first_token"] <= streamed["$ai_latency"]


def test_the_anthropic_examples_run(anthropic_env: FakeProvider) -> None:
    blocks = python_blocks(section("instrumentation-anthropic"))
    assert len(blocks) == 2
    namespace: dict[str, Any] = {"__name__": "readme"}
    with capture_events() as events:
        for block in blocks:
            exec(compile(block, "README.md (anthropic)", "exec"), namespace)
    assert namespace["advice"] == "echo: Pack for Oslo"
    created, streamed, answer, manual_streamed = (props(e) for e in events.named("$ai_generation"))
    assert created["$ai_input"][0] == {"role": "system", "content": "Be brief."}
    assert created["$ai_stop_reason"] == "tool_use"
    assert created["$ai_output_choices"][0]["content"][1]["function"]["name"] == "weather"
    assert created["$ai_tools"][0]["function"]["parameters"]["properties"] == {
        "q": {"type": "string"}
    }
    assert streamed["$ai_stream"] is True and streamed["$ai_reasoning_tokens"] > 0
    assert streamed["$ai_model_parameters"]["thinking"] == {
        "type": "enabled",
        "budget_tokens": 1024,
    }
    assert streamed["$ai_output_choices"][0]["content"][0]["type"] == "thinking"
    check_manual(answer, manual_streamed)  # instrumented: the calls filled them, once each


def test_the_manual_example_is_right_without_instrumentation(anthropic_env: FakeProvider) -> None:
    [_, manual_block] = python_blocks(section("instrumentation-anthropic"))
    from anthropic import Anthropic

    namespace: dict[str, Any] = {"__name__": "readme", "claude": Anthropic(), "trace": plt.trace}
    with capture_events() as events:
        exec(compile(manual_block, "README.md (anthropic)", "exec"), namespace)
    answer, streamed = (props(e) for e in events.named("$ai_generation"))
    check_manual(answer, streamed)
