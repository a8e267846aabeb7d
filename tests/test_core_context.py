"""Nesting through context variables: what inherits the current trace, and what does not."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from core_support import make_client, props

from posthog_llm_trace import current_trace, generation, run_in_context, span, tool, trace
from posthog_llm_trace.testing import capture_events


def test_nested_spans_point_at_their_parent_and_top_level_spans_at_the_trace():
    with capture_events() as events, trace("t", client=make_client()) as t:
        with (
            span("agent", kind="agent") as agent,
            tool("search") as search,
            generation("summarise", model="m", provider="p") as gen,
        ):
            pass
        with tool("top"):
            pass

    parent = {props(e)["$ai_span_name"]: props(e).get("$ai_parent_id") for e in events}
    assert parent == {
        "agent": t.id,
        "search": agent.id,
        "summarise": search.id,
        "top": t.id,
        "t": None,  # the $ai_trace itself has no parent
    }
    assert props(events.by_span_name("summarise"))["$ai_span_id"] == gen.id


def test_a_thread_started_by_the_user_does_not_inherit_the_trace():
    seen: dict[str, object] = {}

    def work() -> None:
        seen["trace"] = current_trace()
        with tool("in-thread"):  # no trace here: this span opens an implicit trace of its own
            seen["implicit"] = current_trace()

    with (
        capture_events() as events,
        trace("request", client=make_client()) as t,
        tool("in-request"),
    ):
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()

    assert seen["trace"] is None
    assert seen["implicit"] is not t
    [in_thread] = [e for e in events.named("$ai_span") if props(e)["$ai_span_name"] == "in-thread"]
    assert props(in_thread)["$ai_trace_id"] != t.id
    assert props(in_thread)["$ai_parent_id"] == props(in_thread)["$ai_trace_id"]
    assert props(events.by_span_name("in-request"))["$ai_trace_id"] == t.id


def test_run_in_context_carries_the_trace_into_a_worker_thread_on_purpose():
    with (
        capture_events() as events,
        trace("request", client=make_client()) as t,
        span("fan-out", kind="workflow") as parent,
        ThreadPoolExecutor(max_workers=4) as pool,
    ):
        futures = [pool.submit(run_in_context(lambda n=n: _tool_call(n))) for n in range(8)]
        assert sorted(f.result() for f in futures) == list(range(8))

    calls = [props(e) for e in events if props(e)["$ai_span_name"] == "call"]
    assert len(calls) == 8
    assert {c["$ai_trace_id"] for c in calls} == {t.id}
    assert {c["$ai_parent_id"] for c in calls} == {parent.id}


def _tool_call(n: int) -> int:
    with tool("call", input=n) as s:
        s.set_output(n)
    return n


def test_asyncio_tasks_inherit_the_trace():
    async def lookup(n: int) -> int:
        with tool("lookup", input=n):
            await asyncio.sleep(0)
        return n

    async def main() -> str:
        async with (
            trace("request", client=make_client()) as t,
            span("gather", kind="workflow"),
        ):
            await asyncio.gather(*(lookup(n) for n in range(5)))
            await asyncio.create_task(lookup(99))
        return t.id

    with capture_events() as events:
        trace_id = asyncio.run(main())
    lookups = [props(e) for e in events if props(e)["$ai_span_name"] == "lookup"]
    gather = props(events.by_span_name("gather"))
    assert len(lookups) == 6
    assert {p["$ai_trace_id"] for p in lookups} == {trace_id}
    assert {p["$ai_parent_id"] for p in lookups} == {gather["$ai_span_id"]}


def test_concurrent_traces_in_threads_never_mix():
    client = make_client()
    barrier = threading.Barrier(8)

    def request(user: int) -> str:
        with trace("request", client=client, distinct_id=f"user-{user}") as t:
            barrier.wait()  # every trace is open at once
            for step in range(5):
                with tool(f"step-{step}") as s:
                    s.set_output(user)
        return t.id

    with capture_events() as events, ThreadPoolExecutor(max_workers=8) as pool:
        trace_ids = dict(zip(range(8), pool.map(request, range(8)), strict=True))

    assert len(events) == 8 * 6
    for user, trace_id in trace_ids.items():
        mine = [e for e in events if props(e)["$ai_trace_id"] == trace_id]
        assert len(mine) == 6
        assert {e["distinct_id"] for e in mine} == {f"user-{user}"}
        assert all(props(e).get("$ai_output_state", user) == user for e in mine)


def test_many_traces_gathered_in_one_event_loop_never_mix():
    client = make_client()

    async def conversation(user: int) -> str:
        async with trace("chat", client=client, session_id=f"conv-{user}") as t:
            for turn in range(3):
                async with generation("answer", model="m", provider="p", input=f"{user}/{turn}"):
                    await asyncio.sleep(0)  # let the other conversations interleave
        return t.id

    async def main() -> list[str]:
        return await asyncio.gather(*(conversation(u) for u in range(50)))

    with capture_events() as events:
        trace_ids = asyncio.run(main())

    assert len(set(trace_ids)) == 50
    for user, trace_id in enumerate(trace_ids):
        mine = [props(e) for e in events if props(e)["$ai_trace_id"] == trace_id]
        assert len(mine) == 4
        assert {p["$ai_session_id"] for p in mine} == {f"conv-{user}"}
        inputs = [p["$ai_input"][0]["content"] for p in mine if "$ai_input" in p]
        assert inputs == [f"{user}/0", f"{user}/1", f"{user}/2"]


def test_a_span_outside_any_trace_opens_an_implicit_trace_of_its_own():
    with capture_events() as events, generation("standalone", model="m", provider="p") as gen:
        assert current_trace() is gen.trace
    assert current_trace() is None
    assert [e["event"] for e in events] == ["$ai_generation", "$ai_trace"]
    assert props(events[0])["$ai_parent_id"] == props(events[1])["$ai_trace_id"] == gen.trace_id


def test_a_span_opened_after_its_trace_ended_is_not_attributed_to_the_stale_trace():
    with capture_events() as events:
        with trace("request", client=make_client()) as t, tool("inside"):
            pass
        holder = run_in_context(lambda: tool("late").start())
    late = holder()  # runs in a copy of the request's context, after the trace ended
    late.end()
    assert props(events.by_span_name("inside"))["$ai_trace_id"] == t.id
    assert late.trace_id != t.id


def test_a_span_that_outlives_its_trace_is_still_exported_in_that_trace():
    started = threading.Event()
    release = threading.Event()

    def background() -> None:
        with tool("slow-follow-up"):
            started.set()
            release.wait(5)

    with capture_events() as events:
        with trace("request", client=make_client()) as t:
            thread = threading.Thread(target=run_in_context(background))
            thread.start()
            started.wait(5)
        assert events == []  # the response is gone; its trace had nothing finished to send
        release.set()
        thread.join()
    late = events.by_span_name("slow-follow-up")
    assert props(late)["$ai_trace_id"] == t.id
    assert props(late)["$ai_parent_id"] == t.id
    [trace_event] = events.named("$ai_trace")  # sent once, with the late span
    assert props(trace_event)["$ai_span_name"] == "request"
