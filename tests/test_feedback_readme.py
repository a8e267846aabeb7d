"""The README's feedback section stays true: its examples run, and every property and drop
reason the feedback code produces is documented there."""

from __future__ import annotations

import inspect
import re
from typing import Any

from test_core_readme import python_blocks, section

from posthog_llm_trace import stats
from posthog_llm_trace import trace_feedback as feedback_module
from posthog_llm_trace.stats import DROP_REASONS
from posthog_llm_trace.testing import capture_events


def test_the_feedback_examples_run() -> None:
    blocks = python_blocks(section("feedback"))
    assert len(blocks) >= 2
    namespace: dict[str, Any] = {"__name__": "readme"}
    before = stats().get("dropped_feedback_bad_token", 0)
    with capture_events() as events:
        for block in blocks:
            exec(compile(block, "README.md (feedback)", "exec"), namespace)
    metrics = events.named("$ai_metric")
    assert [m["properties"]["$ai_metric_name"] for m in metrics] == [
        "eval_relevance",
        "thumbs",
        "thumbs",
    ]
    [text] = events.named("$ai_feedback")
    assert text["properties"]["$ai_feedback_text"] == "Wrong city"
    assert text["properties"]["$ai_parent_id"] == "gen-1"
    # The signed reference: accepted from user-42, about the chat trace; user-7's was dropped.
    [chat] = events.named("$ai_trace")
    assert metrics[2]["properties"]["$ai_trace_id"] == chat["properties"]["$ai_trace_id"]
    assert metrics[2]["distinct_id"] == "user-42"
    assert stats()["dropped_feedback_bad_token"] == before + 1


def test_every_feedback_property_and_drop_reason_is_documented() -> None:
    documented = section("feedback")
    source = inspect.getsource(feedback_module)
    props = set(re.findall(r'"(\$ai_[a-z_]+)"', source))
    assert {"$ai_metric_name", "$ai_metric_value", "$ai_feedback_text"} <= props
    found = set(re.findall(r'"(feedback_[a-z_]+)"', source))
    assert len(found) >= 6
    assert found <= set(DROP_REASONS)  # the list of every reason there is
    reasons = {"dropped_" + r for r in found}
    missing = sorted(p for p in props | reasons if f"`{p}`" not in documented)
    assert not missing, f"undocumented: {missing}"
