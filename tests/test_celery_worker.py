"""The Celery integration against a real prefork worker on the real Redis broker.

One worker (``-P prefork -c 2``) serves the module; the test process plays the web process:
it records traces with ``export="celery"`` and starts tasks, and a loopback capture server
plays PostHog. The worker has an API key of its own, so every request the capture server
receives says which process sent it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from capture_server import CaptureServer
from celery import group
from celery.signals import before_task_publish
from celery_worker import (
    REDIS_URL,
    WEB_API_KEY,
    WORKER_API_KEY,
    Names,
    Worker,
    by_name,
    delete_keys,
    events_of,
    require_broker,
    wait_for_trace,
    web_process,
)

import posthog_llm_trace.celery as plt_celery
from posthog_llm_trace import generation, span, trace
from posthog_llm_trace.export.celery import EXPORT_TASK

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def names() -> Iterator[Names]:
    require_broker(REDIS_URL)
    run = Names()
    yield run
    delete_keys(run)


@pytest.fixture(scope="module")
def server() -> Iterator[CaptureServer]:
    with CaptureServer() as capture:
        yield capture


@pytest.fixture(scope="module")
def worker(
    names: Names, server: CaptureServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    with Worker(REDIS_URL, names, server.url, tmp_path_factory.mktemp("celery")) as running:
        yield running


@pytest.fixture(scope="module")
def module_app(names: Names) -> Iterator[Any]:
    from tests.celery_app import make_app

    yield make_app(REDIS_URL, names.queue, names.export_queue, names.keyprefix)
    plt_celery.uninstrument()


@pytest.fixture
def app(module_app: Any) -> Any:
    """The module's app, instrumented (again): export batches are published through it."""
    plt_celery.instrument(module_app)
    return module_app


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    """Every export message this process publishes: its headers and body, as Celery sends them."""
    seen: list[dict[str, Any]] = []

    def record(sender: Any = None, body: Any = None, headers: Any = None, **kwargs: Any) -> None:
        if sender == EXPORT_TASK:
            seen.append({"headers": dict(headers or {}), "body": body})

    before_task_publish.connect(record, weak=False)
    yield seen
    before_task_publish.disconnect(record)


def test_a_traced_request_reaches_posthog_only_through_the_worker(
    server: CaptureServer, worker: Worker, app: Any, names: Names, published: list[dict[str, Any]]
) -> None:
    with web_process(host=server.url, celery_queue=names.export_queue, flush_at=50) as web:
        with (
            trace("POST /chat/", distinct_id="user-1", session_id="conv-1") as t,
            generation("answer", model="gpt-4o-mini", provider="openai", input="hi") as g,
        ):
            g.set_output("hello")
        assert web.flush(5.0)
        received = wait_for_trace(server, t.id, 2, worker=worker)
        counters = web.stats.snapshot()

    assert sorted(e["event"] for e in received) == ["$ai_generation", "$ai_trace"]
    # The web process published the batch and sent nothing over HTTP itself ...
    assert counters["celery_published"] == 2
    assert counters["sent"] == 0
    assert "celery_fallback" not in counters
    # ... every request came from the worker, with the worker's key ...
    keys = {r.api_key for r in server.requests if r.status == 200}
    assert keys == {WORKER_API_KEY}
    # ... and the message held the events, not the key.
    [message] = published
    uuids = {e["uuid"] for e in received}
    args = message["body"][0]
    assert {e["uuid"] for e in args[0]} == uuids
    assert WEB_API_KEY not in repr(message)
    assert message["headers"]["task"] == EXPORT_TASK
    assert message["headers"].get(plt_celery.H_TRACE) is None  # export tasks are never traced


def test_tasks_started_in_a_trace_are_spans_of_it(
    server: CaptureServer, worker: Worker, app: Any, names: Names
) -> None:
    summarise, fan_out = app.tasks["tests.summarise"], app.tasks["tests.fan_out"]
    with web_process(host=server.url, celery_queue=names.export_queue) as web:
        with (
            trace("POST /documents/", distinct_id="user-7", session_id="conv-3") as t,
            span("plan", kind="agent") as plan,
        ):
            by_delay = summarise.delay("delay")
            by_send_task = app.send_task("tests.summarise", args=["send_task"])
            by_group = group(summarise.s("group-1"), summarise.s("group-2")).apply_async()
            by_fan_out = fan_out.delay("from a task")
        assert web.flush(5.0)
        # Web: $ai_trace + plan. Worker: 4 summarise tasks x (span + generation), fan_out's span,
        # and the summarise task fan_out started (span + generation).
        received = wait_for_trace(server, t.id, 2 + 4 * 2 + 1 + 2, worker=worker)
    time.sleep(0.3)  # anything extra (a second $ai_trace, say) would show up now
    received = events_of(server, t.id)

    assert len(received) == 13, [e["properties"].get("$ai_span_name") for e in received]
    assert [e["event"] for e in received].count("$ai_trace") == 1
    for event in received:
        assert event["distinct_id"] == "user-7"
        assert event["properties"]["$ai_session_id"] == "conv-3"
    spans = {e["properties"]["$ai_span_id"]: e for e in received if e["event"] != "$ai_trace"}
    task_spans = {
        e["properties"]["celery_task_id"]: e for e in by_name(received, "tests.summarise")
    }
    direct = [by_delay.id, by_send_task.id, *(r.id for r in by_group.results)]
    for task_id in direct:
        task_span = task_spans[task_id]
        assert task_span["properties"]["$ai_span_type"] == "workflow"
        assert task_span["properties"]["$ai_parent_id"] == plan.id
    [fan_out_span] = by_name(received, "tests.fan_out")
    assert fan_out_span["properties"]["celery_task_id"] == by_fan_out.id
    assert fan_out_span["properties"]["$ai_parent_id"] == plan.id
    [grandchild] = [s for i, s in task_spans.items() if i not in direct]
    assert grandchild["properties"]["$ai_parent_id"] == fan_out_span["properties"]["$ai_span_id"]
    # Each generation hangs under the span of the task that recorded it.
    generations = [e for e in received if e["event"] == "$ai_generation"]
    assert len(generations) == 5
    for gen in generations:
        parent = spans[gen["properties"]["$ai_parent_id"]]
        assert parent["properties"]["$ai_span_name"] == "tests.summarise"


def test_an_unsampled_trace_records_nothing_in_its_tasks(
    server: CaptureServer, worker: Worker, app: Any, names: Names
) -> None:
    summarise = app.tasks["tests.summarise"]
    with web_process(host=server.url, celery_queue=names.export_queue, sample_rate=0.0) as web:
        with trace("POST /chat/", distinct_id="user-2") as unsampled, span("plan"):
            summarise.delay("not sampled")
        # A task started outside any trace is sampled by the worker (sample rate 1 there):
        # once its events are in, the unsampled task, published first, has run too.
        marker = summarise.delay("marker")
        web.flush(5.0)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not [
            e for e in server.events if e["properties"].get("celery_task_id") == marker.id
        ]:
            time.sleep(0.05)
        assert [e for e in server.events if e["properties"].get("celery_task_id") == marker.id]
        time.sleep(0.5)
    assert events_of(server, unsampled.id) == []


def test_a_task_started_outside_any_trace_opens_its_own(
    server: CaptureServer, worker: Worker, app: Any
) -> None:
    result = app.tasks["tests.summarise"].delay("standalone")
    quiet = app.tasks["tests.nothing"].delay()
    deadline = time.monotonic() + 15
    task_span = None
    while time.monotonic() < deadline and task_span is None:
        found = [e for e in server.events if e["properties"].get("celery_task_id") == result.id]
        task_span = found[0] if found else None
        time.sleep(0.05)
    assert task_span is not None, worker.log()[-3000:]
    trace_id = task_span["properties"]["$ai_trace_id"]
    received = wait_for_trace(server, trace_id, 3, worker=worker)

    [root] = [e for e in received if e["event"] == "$ai_trace"]
    [gen] = [e for e in received if e["event"] == "$ai_generation"]
    assert root["properties"]["$ai_span_name"] == "tests.summarise"
    assert task_span["properties"]["$ai_parent_id"] == trace_id
    assert gen["properties"]["$ai_parent_id"] == task_span["properties"]["$ai_span_id"]
    assert gen["distinct_id"] == "anonymous"
    assert gen["properties"]["$process_person_profile"] is False
    # A task that records nothing exports nothing.
    time.sleep(0.3)
    assert not [e for e in server.events if e["properties"].get("celery_task_id") == quiet.id]
    assert not [e for e in server.events if e["properties"].get("$ai_span_name") == "tests.nothing"]


def test_a_failing_task_marks_its_span_failed(
    server: CaptureServer, worker: Worker, app: Any, names: Names
) -> None:
    with web_process(host=server.url, celery_queue=names.export_queue) as web:
        with trace("POST /chat/", distinct_id="user-3") as t, span("plan") as plan:
            app.tasks["tests.fail"].delay("boom")
        web.flush(5.0)
        received = wait_for_trace(server, t.id, 4, worker=worker)

    [task_span] = by_name(received, "tests.fail")
    [gen] = by_name(received, "before-failing")
    assert task_span["properties"]["$ai_parent_id"] == plan.id
    assert task_span["properties"]["$ai_is_error"] is True
    assert "ValueError" in str(task_span["properties"]["$ai_error"])
    assert task_span["properties"]["celery_state"] == "FAILURE"
    assert gen["properties"]["$ai_parent_id"] == task_span["properties"]["$ai_span_id"]
    assert not gen["properties"].get("$ai_is_error")


def test_the_api_key_never_travels_through_the_broker(capture_server: CaptureServer) -> None:
    """Nobody consumes these queues: the raw messages stay in Redis for us to read."""
    import base64
    import json

    import redis

    from tests.celery_app import make_app

    require_broker(REDIS_URL)
    own = Names()
    make_app(REDIS_URL, own.queue, own.export_queue, own.keyprefix)
    r = redis.Redis.from_url(REDIS_URL)
    try:
        with web_process(host=capture_server.url, celery_queue=own.export_queue) as web:
            with (
                trace("POST /chat/", distinct_id="user-4") as t,
                generation("answer", model="m", provider="p", input="hello") as g,
            ):
                g.set_output("ok")
            assert web.flush(5.0)
        raw_messages = r.lrange(own.keyprefix + own.export_queue, 0, -1)
        assert len(raw_messages) == 1
        raw = raw_messages[0]
        envelope = json.loads(raw)
        body = (
            base64.b64decode(envelope["body"])
            if envelope["properties"].get("body_encoding") == "base64"
            else envelope["body"].encode()
        )
        assert t.id.encode() in body  # the right message: it holds this trace's events
        assert WEB_API_KEY.encode() not in raw
        assert WEB_API_KEY.encode() not in body
        assert envelope["headers"]["task"] == EXPORT_TASK
        assert envelope["content-type"] == "application/json"
        assert capture_server.requests == []  # and nothing went over HTTP from here
    finally:
        delete_keys(own)
