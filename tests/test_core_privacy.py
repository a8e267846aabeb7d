"""Privacy mode and the mask: what content may leave the process."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from core_support import make_client, props

from posthog_llm_trace import embedding, generation, span, tool, trace
from posthog_llm_trace.testing import capture_events

SECRET = "my card is 4242 4242 4242 4242"


class ProviderError(Exception):
    status_code = 400


def record_everything(client: Any) -> list[dict[str, Any]]:
    """A trace that puts SECRET into every content field there is."""
    with (
        capture_events() as events,
        pytest.raises(ProviderError),
        trace("t", client=client, input=SECRET) as t,
    ):
        t.set_output(SECRET)
        with generation(
            "g",
            model="gpt-4o",
            provider="openai",
            input=[{"role": "user", "content": SECRET}],
            tools=[{"name": "lookup", "description": "Look up an order"}],
        ) as g:
            g.chunk(SECRET)
            g.chunk(SECRET, kind="tool_call", tool_call_id="c1", tool_name="lookup")
            g.set_usage(input_tokens=10, output_tokens=5)
        with tool("lookup", input={"q": SECRET}) as s:
            s.set_output(SECRET)
        with span("retrieve", kind="retrieval", input=SECRET):
            pass
        with embedding("embed", model="e", provider="openai", input=[SECRET]):
            pass
        with generation("failing", model="gpt-4o", provider="openai"):
            raise ProviderError(f"invalid request: {SECRET}")
    return list(events)


def test_privacy_mode_removes_every_piece_of_content():
    events = record_everything(make_client(privacy_mode=True, chunk_spans=True))
    assert len(events) == 8  # 2 generations, 2 chunks, tool, retrieval, embedding, trace
    assert SECRET not in json.dumps(events)
    for event in events:
        p = props(event)
        for key in ("$ai_input", "$ai_output_choices", "$ai_input_state", "$ai_output_state"):
            assert p.get(key) is None  # the key may stay, its value is null
    gen = props(events[0])
    assert gen["$ai_input_tokens"] == 10  # metrics still flow
    assert gen["$ai_tools"][0]["function"]["name"] == "lookup"  # tool definitions are not content
    failing = props(next(e for e in events if props(e)["$ai_span_name"] == "failing"))
    assert failing["$ai_is_error"] is True
    assert failing["$ai_error"] == "ProviderError: 400"  # type and status only
    assert failing["$ai_http_status"] == 400


def test_without_privacy_mode_the_same_trace_carries_its_content():
    events = record_everything(make_client(chunk_spans=True))
    text = json.dumps(events)
    assert text.count(SECRET) >= 10


def test_a_mask_sees_every_content_field_before_export():
    seen: list[Any] = []

    def mask(value: Any) -> Any:
        seen.append(value)
        return json.loads(json.dumps(value).replace("4242", "****"))

    events = record_everything(make_client(mask=mask, chunk_spans=True))
    assert "4242" not in json.dumps(events)
    assert "**** **** **** ****" in json.dumps(events)
    # the trace's input, output and error; the generation's input and output; both chunks;
    # the tool's input and output; the retrieval's input; the embedding's input; the error of
    # the failing generation
    assert len(seen) == 12


def test_a_mask_given_as_a_dotted_path_is_imported():
    client = make_client(mask="tests.test_core_privacy.redact_cards")
    mask = client.settings.mask
    assert mask is not None and mask.__qualname__ == "redact_cards"
    with capture_events() as events, trace("t", client=client), tool("x", input=SECRET):
        pass
    assert props(events[0])["$ai_input_state"] == "[redacted]"


def redact_cards(value: Any) -> Any:
    return "[redacted]"


def test_a_raising_mask_withholds_the_field_and_never_sends_it_unmasked(caplog):
    def broken(value: Any) -> Any:
        raise RuntimeError("mask bug")

    with caplog.at_level(logging.WARNING, logger="posthog_llm_trace"):
        events = record_everything(make_client(mask=broken))
    assert SECRET not in json.dumps(events)
    assert props(events[0])["$ai_input"] == "[withheld: mask failed]"
    assert any("mask raised" in r.getMessage() for r in caplog.records)
    assert all(SECRET not in r.getMessage() for r in caplog.records)
