"""orjson, when installed, writes events byte for byte as the standard library would."""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import json
import math
import tracemalloc
import uuid
from typing import Any

import orjson
import pytest
from core_support import make_client
from hypothesis import given, settings
from hypothesis import strategies as st

from posthog_llm_trace import feedback, generation, span, tool, trace
from posthog_llm_trace.jsonenc import (
    BACKEND,
    ReprFloat,
    canonical,
    dumps,
    dumps_stdlib,
    json_float,
)
from posthog_llm_trace.messages import jsonable, shrink_event
from posthog_llm_trace.replay import _parse
from posthog_llm_trace.testing import capture_events

# Any character, lone surrogates included: valid in a Python string, refused by JSON parsers.
TEXT = st.text(st.characters(exclude_categories=()), max_size=20)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: orjson refuses integers past 64 bits
    st.floats(),  # NaN, infinities, subnormals, 1e-05, 1e+16...
    TEXT,
)
KEYS = st.one_of(TEXT, st.integers(), st.floats(), st.booleans(), st.none())
DATA = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(TEXT, inner, max_size=4),
        st.dictionaries(KEYS, inner, max_size=3),
    ),
    max_leaves=25,
)


def test_the_fast_encoder_is_orjson_here():
    # The test extra installs orjson; without it every comparison below compares json to json.
    assert BACKEND == "orjson"
    assert dumps is not dumps_stdlib


@settings(max_examples=500, deadline=None)
@given(DATA)
def test_the_encoders_agree_on_what_the_mapping_makes(value: Any):
    data = jsonable(value)
    assert dumps(data) == dumps_stdlib(data)


@settings(max_examples=500, deadline=None)
@given(DATA)
def test_the_encoders_agree_on_canonical_data(value: Any):
    data = canonical(value)
    encoded = dumps(data)
    assert encoded == dumps_stdlib(data)
    assert data == value or _has_nan(value)  # canonical() changes no value


def _has_nan(value: Any) -> bool:
    return "NaN" in dumps_stdlib(value).decode()


@given(st.floats())
def test_every_float_is_written_as_python_writes_it(x: float):
    assert dumps([json_float(x)]) == dumps_stdlib([x])
    if math.isfinite(x):
        assert json.loads(dumps(json_float(x))) == x
        assert dumps(json_float(x)) == repr(x).encode()


def test_orjson_writes_small_floats_differently_unless_wrapped():
    # What json_float exists for.
    assert orjson.dumps(1e-05) == b"0.00001"
    assert dumps_stdlib(1e-05) == b"1e-05"
    assert dumps(json_float(1e-05)) == b"1e-05"
    assert dumps([json_float(1e16), json_float(-5e-324)]) == b"[1e+16,-5e-324]"
    wrapped = json_float(2.5e-7)
    assert type(wrapped) is ReprFloat and wrapped == 2.5e-7 and repr(wrapped) == "2.5e-07"
    assert type(json_float(0.25)) is float


def test_non_finite_floats_are_written_as_the_standard_library_writes_them():
    values = [json_float(float("nan")), json_float(float("inf")), json_float(float("-inf"))]
    assert dumps(values) == dumps_stdlib(values) == b"[NaN,Infinity,-Infinity]"


class Colour(enum.Enum):
    RED = "red"
    DEEP = ("deep", 2)


Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize(
    "value",
    [
        {1: "a", 2.5: "b", False: "c", None: "d"},  # keys that are not strings
        {"big": 2**70, "small": -(2**64)},  # integers past 64 bits
        {"text": "caf\u00e9 \ud800 \udfff end", "\ud83d": 1},  # lone surrogates, keys too
        '\x00\x1f\x7f\u2028\u2029</script>"\\',  # control and special characters
        [[[[[[[[[[[[]]]]]]]]]]]] * 3,
        Point(1, 2),
        (1, (2, [3])),
        uuid.UUID(int=7),
        {"colour": Colour.RED, "deep": Colour.DEEP},
        collections.OrderedDict(b=1, a=2),
    ],
)
def test_what_orjson_refuses_or_treats_alone_is_written_as_json_writes_it(value: Any):
    assert dumps(value) == dumps_stdlib(value)


def test_nesting_past_orjsons_limit_is_left_to_the_standard_library():
    value: Any = "leaf"
    for _ in range(300):  # orjson stops at 255 levels
        value = {"k": [value]}
    assert dumps(value) == dumps_stdlib(value)


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {"when": datetime.datetime(2024, 1, 1)},
        {"amount": decimal.Decimal("1.5")},
        {b"bytes": 1},
        {"set": {1, 2}},
    ],
)
def test_what_is_not_json_is_an_error_for_both(value: Any):
    with pytest.raises(TypeError):
        dumps_stdlib(value)
    with pytest.raises(TypeError):
        dumps(value)


def _record_a_varied_trace(client: Any) -> None:
    with trace(
        "POST /chat/",
        client=client,
        distinct_id="user-1",
        properties={"ratio": 1e-05, "huge": 3e20, "nested": {"tiny": [2.5e-9, 0.5]}},
    ):
        with generation(
            "answer",
            model="gpt-4o-mini",
            provider="openai",
            input=[{"role": "user", "content": "Wie spät ist es? 🕰"}],
            model_parameters={"temperature": 1e-06},
        ) as gen:
            gen.chunk("It is ")
            gen.chunk("noon.")
            gen.set_usage(input_tokens=12, output_tokens=3)
            gen.set_cost(input_usd=1.5e-05, output_usd=3e-06)
        with tool("lookup", input={"city": "Zürich", "at": datetime.timedelta(microseconds=3)}):
            pass
        with span("step") as step:
            step.set_output({"score": decimal.Decimal("1e-7"), "tags": ("a", "b")})


@pytest.mark.parametrize("chunk_spans", [False, True])
def test_rendered_events_are_the_same_bytes_with_either_encoder(chunk_spans: bool):
    client = make_client(chunk_spans=chunk_spans)
    with capture_events() as events:
        _record_a_varied_trace(client)
    assert len(events) >= 4
    # The spans took microseconds: their latencies are floats like 3e-06.
    assert any(type(e["properties"]["$ai_latency"]) is ReprFloat for e in events)
    for event in events:
        assert dumps(event) == dumps_stdlib(event)
    assert dumps(list(events)) == dumps_stdlib(list(events))


@settings(max_examples=200, deadline=None)
@given(properties=st.dictionaries(TEXT, DATA, max_size=4), output=DATA, cost=st.floats())
def test_any_recorded_content_renders_to_the_same_bytes(properties: Any, output: Any, cost: Any):
    client = make_client()
    with capture_events() as events:
        with trace("t", client=client, properties=properties), tool("t") as t:
            t.set_output(output)
        with trace("g", client=client), generation("g", input=output, model="m") as gen:
            gen.set_output(output)
            gen.set_cost(total_usd=cost)
    for event in events:
        assert dumps(event) == dumps_stdlib(event)


@pytest.mark.parametrize("score", [1e-05, 2.5e17, 0.75, 3])
def test_feedback_scores_are_the_same_bytes_with_either_encoder(score: float):
    client = make_client()
    with capture_events() as events:
        feedback("0b1e8f9a-5c1d-4c6e-9a51-2f6f3a0c7d11", score, comment="ok", client=client)
    [metric] = events.named("$ai_metric")
    assert metric["properties"]["$ai_metric_value"] == score
    assert dumps(list(events)) == dumps_stdlib(list(events))


def test_a_shrunk_event_is_the_same_bytes_with_either_encoder():
    event = {
        "event": "$ai_span",
        "distinct_id": "d",
        "properties": {"$ai_latency": json_float(3e-06), "$ai_input_state": "x" * 5000},
    }
    smaller = shrink_event(event, 2000)
    assert smaller is not None and len(dumps_stdlib(smaller)) <= 2000
    assert dumps(smaller) == dumps_stdlib(smaller)


def test_the_encoded_batch_holds_no_more_memory_than_its_length():
    # orjson's own result keeps its whole write buffer (several times the length): a batch
    # held through a long outage must cost what its JSON weighs, as with the standard library.
    batch = [{"event": "$ai_generation", "properties": {"$ai_input": "x" * 1_000_000}}]
    tracemalloc.start()
    try:
        encoded = dumps(batch)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert encoded == dumps_stdlib(batch)
    assert held < 1.2 * len(encoded)


def test_replayed_events_are_written_as_they_were_read():
    line = '{"event":"$ai_span","distinct_id":"d","uuid":"u","properties":{"$ai_latency":1e-05}}'
    event = _parse(line)
    assert event is not None
    assert dumps(event) == dumps_stdlib(event) == line.encode()


def test_the_lean_encoder_gives_the_same_bytes_without_orjsons_large_buffer() -> None:
    """Large batches are encoded under ``lean()``: same bytes, a transient of about twice the
    output instead of orjson's eight times (what ``max_queue_bytes`` must not be dwarfed by)."""
    from posthog_llm_trace import jsonenc

    batch = [{"properties": {"$ai_input": [{"role": "user", "content": "é" * 500_000}]}}] * 2
    with jsonenc.lean():
        tracemalloc.start()
        try:
            encoded = jsonenc.dumps(batch)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert encoded == jsonenc.dumps_stdlib(batch) == jsonenc.dumps(batch)
    assert peak < 3 * len(encoded)
