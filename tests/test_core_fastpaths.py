"""The mapping's shortcuts give exactly what the general path gives."""

from __future__ import annotations

import datetime
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from posthog_llm_trace.events import iso
from posthog_llm_trace.jsonenc import dumps_stdlib
from posthog_llm_trace.messages import _messages, jsonable, normalize_messages

TEXT = st.text(st.characters(exclude_categories=()), max_size=40)  # lone surrogates too
ROLE = st.one_of(st.sampled_from(["user", "assistant", "system", "tool", ""]), TEXT)
PLAIN = st.fixed_dictionaries({"role": ROLE, "content": TEXT})
# Near misses the shortcut must hand to the general path: a third key, content that is not a
# string, a role that is None, keys in the other order, a subclass of dict.
NEAR_MISS = st.one_of(
    st.fixed_dictionaries({"role": ROLE, "content": TEXT, "name": TEXT}),
    st.fixed_dictionaries({"role": ROLE, "content": st.one_of(st.none(), st.integers())}),
    st.fixed_dictionaries({"role": st.none(), "content": TEXT}),
    st.fixed_dictionaries({"content": TEXT, "role": ROLE}),
    st.fixed_dictionaries({"role": ROLE, "text": TEXT}),
    PLAIN.map(lambda m: type("Message", (dict,), {})(m)),
    TEXT,
)


def _general(value: Any, role: str, limit: int) -> Any:
    """What normalize_messages did before it had a shortcut."""
    return _messages(jsonable(value, limit), role)


@settings(max_examples=400, deadline=None)
@given(
    messages=st.lists(st.one_of(PLAIN, PLAIN, NEAR_MISS), max_size=5),
    role=st.sampled_from(["user", "assistant"]),
    limit=st.sampled_from([5, 30, 1_000_000]),  # small limits cut the content with a marker
)
@example(messages=[], role="user", limit=10)
@example(messages=[{"role": "", "content": "x"}], role="assistant", limit=10)
@example(messages=[{"role": "user", "content": "caf\u00e9 \ud800"}], role="user", limit=100)
def test_plain_messages_map_as_the_general_path_maps_them(messages: Any, role: str, limit: int):
    fast = normalize_messages(messages, role, limit)
    slow = _general(messages, role, limit)
    assert fast == slow
    assert dumps_stdlib(fast) == dumps_stdlib(slow)


def _iso_reference(ts: float) -> str:
    moment = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@settings(max_examples=2000, deadline=None)
@given(st.floats(min_value=-62_135_596_800.0, max_value=253_402_300_799.0))
@example(1_700_000_000.9999995)  # rounds up into the next second
@example(1_700_000_000.0005)
@example(-0.0000005)
@example(-1.5)
@example(0.0)
def test_timestamps_are_formatted_as_datetime_formats_them(ts: float):
    assert iso(ts) == _iso_reference(ts)


@given(st.floats(min_value=1.7e9, max_value=1.7e9 + 3.0))
def test_timestamps_within_the_same_few_seconds(ts: float):
    # The case the per-second cache serves: every event of a busy process.
    assert iso(ts) == _iso_reference(ts)
