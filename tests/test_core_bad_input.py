"""Whatever the application passes, recording never raises into it and every event is valid
JSON within the size budget."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid
from typing import Any

from core_support import make_client, props, strict_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posthog_llm_trace import generation, tool, trace
from posthog_llm_trace.messages import TRUNCATION_MARKER
from posthog_llm_trace.testing import capture_events

BUDGET = 20_000  # a small max_event_bytes, so that shrinking is exercised often


class NoJsonForm:
    __slots__ = ()


class RaisingRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr is broken")

    def __str__(self) -> str:
        raise RuntimeError("str is broken")


class RaisingModelDump:
    def model_dump(self, **kwargs: Any) -> Any:
        raise ValueError("cannot dump")


class HostileGetattr:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name} for you")


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50),
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(["\ud800", "a\udfffb", "\x00\x1f", "é" * 40, "x" * 3000]),
    st.binary(max_size=40),
    st.datetimes(),
    st.dates(),
    st.timedeltas(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.uuids(),
    st.builds(NoJsonForm),
    st.builds(RaisingRepr),
    st.builds(RaisingModelDump),
    st.builds(HostileGetattr),
    st.frozensets(st.integers(), max_size=3),
)

values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.tuples(children, children),
        st.sets(st.integers(), max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=5),
        st.dictionaries(st.integers() | st.tuples(st.integers()), children, max_size=3),
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant"]), "content": children}
        ),
        st.fixed_dictionaries({"messages": st.lists(children, max_size=3)}),
    ),
    max_leaves=25,
)


def record(value: Any, **client_settings: Any) -> list[dict[str, Any]]:
    """Put ``value`` everywhere the application can put something."""
    client = make_client(max_event_bytes=BUDGET, chunk_spans=True, **client_settings)
    with (
        capture_events() as events,
        trace(
            value,
            client=client,
            distinct_id=value,
            session_id=value,  # type: ignore[arg-type]
            properties={"custom": value, value if isinstance(value, str) else "k": 1},
            groups={"company": value},
            input=value,
        ) as t,
    ):
        t.set_output(value)
        with generation(
            value,
            model=value,
            provider=value,
            input=value,  # type: ignore[arg-type]
            model_parameters={"temperature": value},
            tools=value,
            base_url=value,
            properties={"p": value},
        ) as g:
            g.chunk(value)
            g.chunk(".")  # an empty value alone makes no chunk
            g.set_output(value, stop_reason=value)
            g.set_usage(value, input_tokens=value, output_tokens=7)
            g.set_cost(input_usd=value, output_usd=value)
            g.set_property("q", value)
        with tool("t", input=value) as s:
            s.set_output(value)
    return list(events)


def check(events: list[dict[str, Any]], budget: int = BUDGET) -> None:
    assert [e["event"] for e in events] == [
        "$ai_generation",
        "$ai_span",
        "$ai_span",
        "$ai_trace",
    ] or len(events) == 4
    for event in events:
        text = strict_json(event)  # valid JSON: no NaN, no lone surrogates
        text.encode("utf-8")
        assert len(text.encode("utf-8")) <= budget
        assert isinstance(event["distinct_id"], str) and event["distinct_id"]
        assert str(uuid.UUID(event["uuid"])) == event["uuid"]
        assert isinstance(props(event)["$ai_trace_id"], str)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_any_value_anywhere_gives_valid_events_within_budget(value: Any):
    check(record(value))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_any_value_is_also_safe_in_privacy_mode_and_through_a_mask(value: Any):
    check(record(value, privacy_mode=True))
    check(record(value, mask=lambda v: {"masked": v, "again": [v, v]}))


def test_cyclic_structures_are_cut():
    cyclic_list: list[Any] = [1]
    cyclic_list.append(cyclic_list)
    cyclic_dict: dict[str, Any] = {"role": "user"}
    cyclic_dict["content"] = cyclic_dict
    for value in (cyclic_list, cyclic_dict, {"messages": cyclic_list}):
        events = record(value)
        check(events)
        assert "[cycle]" in json.dumps(events)


def test_deep_nesting_is_cut():
    deep: Any = "bottom"
    for _ in range(5_000):
        deep = [deep]
    deep_dict: Any = {}
    for _ in range(5_000):
        deep_dict = {"a": deep_dict}
    for value in (deep, deep_dict):
        events = record(value)
        check(events)
        assert "[max depth]" in json.dumps(events)


def test_special_numbers_and_types_are_converted():
    value = {
        "nan": math.nan,
        "inf": -math.inf,
        "dec": decimal.Decimal("1.5"),
        "when": dt.datetime(2025, 1, 2, 3, 4, 5),
        "raw": b"\x00\xff",
        "ids": {3, 1},
    }
    events = record(value)
    check(events)
    tool_input = props(events[-2])["$ai_input_state"]
    assert tool_input == {
        "nan": "nan",
        "inf": "-inf",
        "dec": 1.5,
        "when": "2025-01-02T03:04:05",
        "raw": "[2 bytes]",
        "ids": [1, 3],
    }


def test_a_50_mb_prompt_is_truncated_with_the_marker_and_the_event_stays_under_budget():
    huge = "x" * 50_000_000
    client = make_client()  # the default budget, 900 000 bytes
    with (
        capture_events() as events,
        trace("t", client=client),
        generation("g", model="m", provider="p", input=huge) as g,
    ):
        g.set_output("short answer")
        g.set_usage(input_tokens=12_500_000)
    gen = events[0]
    size = len(strict_json(gen).encode("utf-8"))
    assert size <= client.settings.max_event_bytes
    content = props(gen)["$ai_input"][0]["content"]
    assert content.startswith("xxxx")
    assert TRUNCATION_MARKER.split("{n}")[0] in content
    # what matters most survives: ids, model, tokens and the (short) completion
    assert props(gen)["$ai_input_tokens"] == 12_500_000
    assert props(gen)["$ai_output_choices"] == [{"role": "assistant", "content": "short answer"}]
    assert props(gen)["$ai_span_id"] == g.id


def test_many_medium_fields_are_shrunk_until_the_event_fits():
    client = make_client(max_event_bytes=50_000)
    big = {f"k{i}": "é" * 2_000 for i in range(100)}
    with (
        capture_events() as events,
        trace("t", client=client, properties=big),
        tool("x", input=big, properties=big) as s,
    ):
        s.set_output([big, big])
    for event in events:
        assert len(strict_json(event).encode("utf-8")) <= 50_000
        assert props(event)["$ai_trace_id"]


def test_mutating_the_messages_after_the_call_does_not_change_what_was_recorded():
    messages = [{"role": "user", "content": "first question"}]
    with capture_events() as events, trace("t", client=make_client()):
        with generation("g", model="m", provider="p", input=messages) as g:
            reply = {"role": "assistant", "content": "first answer"}
            g.set_output(reply)
        # the usual chat loop: the application keeps appending to the same list
        messages.append(reply)
        messages.append({"role": "user", "content": "second question"})
        messages[0] = {"role": "user", "content": "replaced"}
    gen = props(events[0])
    assert gen["$ai_input"] == [{"role": "user", "content": "first question"}]
    assert gen["$ai_output_choices"] == [{"role": "assistant", "content": "first answer"}]
