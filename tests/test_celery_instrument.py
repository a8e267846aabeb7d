"""The Celery integration in-process: the headers a published task carries, eager tasks, the
export task's retry decisions, message splitting, idempotence, and handlers that never break a
task. (The worker tests run the same code in a real worker; these pin the details quickly.)"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from capture_server import CaptureServer
from celery import Celery, group
from celery.exceptions import Retry
from celery.signals import before_task_publish
from celery_worker import web_process

import posthog_llm_trace.celery as plt_celery
import posthog_llm_trace.export.celery as export_celery
from posthog_llm_trace import generation, span, trace
from posthog_llm_trace.export.celery import EXPORT_TASK, CeleryTransport
from posthog_llm_trace.settings import Settings
from posthog_llm_trace.stats import Stats
from posthog_llm_trace.testing import capture_events


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("plt_unit", broker="memory://", set_as_current=False)
    app.conf.task_default_queue = "plt-unit"

    @app.task(name="unit.summarise", shared=False)
    def summarise(text: str) -> str:
        with generation("summarise", model="m", provider="p", input=text) as gen:
            gen.set_output(text[:5])
        return text[:5]

    @app.task(name="unit.fail", shared=False)
    def fail() -> None:
        raise ValueError("nope")

    @app.task(name="unit.nothing", shared=False)
    def nothing() -> int:
        return 42

    plt_celery.instrument(app)
    yield app
    plt_celery.uninstrument()


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    """Headers and body of every message published, after our handler ran."""
    seen: list[dict[str, Any]] = []

    def record(sender: Any = None, headers: Any = None, body: Any = None, **kw: Any) -> None:
        seen.append({"task": sender, "headers": dict(headers or {}), "body": body})

    before_task_publish.connect(record, weak=False)
    yield seen
    before_task_publish.disconnect(record)


def test_a_task_published_in_a_trace_carries_it_top_level_and_nested(
    app: Celery, published: list[dict[str, Any]]
) -> None:
    with trace("POST /chat/", distinct_id="user-1", session_id="conv-1") as t, span("p") as s:
        app.tasks["unit.summarise"].delay("a")
        app.send_task("unit.summarise", args=["b"])
        group(app.tasks["unit.summarise"].s("c"), app.tasks["unit.summarise"].s("d")).delay()
    app.tasks["unit.summarise"].delay("outside")

    assert len(published) == 5
    expected = {
        "posthog_llm_trace_id": t.id,
        "posthog_llm_parent_id": s.id,
        "posthog_llm_distinct_id": "user-1",
        "posthog_llm_session_id": "conv-1",
        "posthog_llm_sampled": "1",
    }
    for message in published[:4]:
        headers = message["headers"]
        assert {k: headers[k] for k in plt_celery.HEADERS} == expected
        assert {k: headers["headers"][k] for k in plt_celery.HEADERS} == expected
    assert not set(plt_celery.HEADERS) & set(published[4]["headers"])


def test_the_parent_is_the_trace_when_no_span_is_open(
    app: Celery, published: list[dict[str, Any]]
) -> None:
    with trace("job") as t:
        app.tasks["unit.summarise"].delay("a")
    assert published[0]["headers"]["posthog_llm_parent_id"] == t.id
    assert "posthog_llm_distinct_id" not in published[0]["headers"]


def test_an_eager_task_is_a_span_of_the_callers_trace(app: Celery) -> None:
    with (
        capture_events() as events,
        trace("POST /chat/", distinct_id="user-2") as t,
        span("plan") as plan,
    ):
        result = app.tasks["unit.summarise"].apply(args=["hello world"])
    assert result.get() == "hello"
    [task_span] = [e for e in events if e["properties"]["$ai_span_name"] == "unit.summarise"]
    [gen] = events.named("$ai_generation")
    assert task_span["properties"]["$ai_trace_id"] == t.id
    assert task_span["properties"]["$ai_parent_id"] == plan.id
    assert task_span["properties"]["$ai_span_type"] == "workflow"
    assert task_span["properties"]["celery_task_id"] == result.id
    assert gen["properties"]["$ai_parent_id"] == task_span["properties"]["$ai_span_id"]
    assert len(events.named("$ai_trace")) == 1


def test_a_task_outside_any_trace_opens_its_own_and_an_empty_one_sends_nothing(
    app: Celery,
) -> None:
    with capture_events() as events:
        app.tasks["unit.summarise"].apply(args=["hello"])
    [root] = events.named("$ai_trace")
    assert root["properties"]["$ai_span_name"] == "unit.summarise"
    assert len(events) == 3
    assert len({e["properties"]["$ai_trace_id"] for e in events}) == 1

    with capture_events() as quiet:
        assert app.tasks["unit.nothing"].apply().get() == 42
    assert list(quiet) == []


def test_a_failing_eager_task_marks_its_span_failed(app: Celery) -> None:
    with capture_events() as events, trace("POST /chat/"):
        result = app.tasks["unit.fail"].apply()
    assert result.failed()
    [task_span] = [e for e in events if e["properties"]["$ai_span_name"] == "unit.fail"]
    assert task_span["properties"]["$ai_is_error"] is True
    assert task_span["properties"]["celery_state"] == "FAILURE"
    assert "nope" in str(task_span["properties"]["$ai_error"])


def test_instrumentation_errors_never_break_a_task(
    app: Celery,
    published: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("instrumentation bug")

    monkeypatch.setattr(plt_celery, "Span", broken)
    monkeypatch.setattr(plt_celery, "trace_headers", broken)
    caplog.set_level(logging.ERROR, logger="posthog_llm_trace")
    with capture_events(), trace("POST /chat/"), span("plan"):
        assert app.tasks["unit.summarise"].apply(args=["still works"]).get() == "still"
        app.tasks["unit.summarise"].delay("still published")
    assert len(published) == 1
    assert "could not open the span of a task" in caplog.text
    assert "could not add trace headers" in caplog.text


def test_instrument_uninstrument_and_shutdown_are_idempotent(app: Celery) -> None:
    def ours() -> int:
        return sum(
            1
            for lookup, _ in before_task_publish.receivers
            if "posthog_llm_trace" in str(lookup[0])
        )

    plt_celery.instrument(app)
    plt_celery.instrument(app)
    assert ours() == 1
    assert EXPORT_TASK in app.tasks
    plt_celery.uninstrument()
    plt_celery.uninstrument()
    assert ours() == 0
    assert EXPORT_TASK in app.tasks  # batches still queued are delivered
    plt_celery.instrument(app)
    assert ours() == 1
    assert plt_celery.shutdown(1.0) is True
    assert plt_celery.shutdown(1.0) is True
    assert ours() == 0


# --- the export task's decisions ------------------------------------------------------------


def _events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "event": "$ai_generation",
            "distinct_id": "user-1",
            "properties": {"$ai_trace_id": "t", "$ai_model": "m"},
            "timestamp": "2024-05-01T12:00:00.000Z",
            "uuid": f"00000000-0000-4000-8000-{i:012d}",
        }
        for i in range(n)
    ]


def _task(retries: int = 0) -> Any:
    def retry(countdown: float, exc: BaseException) -> Retry:
        return Retry(exc=exc, when=countdown)

    return SimpleNamespace(request=SimpleNamespace(retries=retries), retry=retry)


def test_the_export_task_posts_with_the_workers_own_key(capture_server: CaptureServer) -> None:
    with web_process(api_key="phc_worker", host=capture_server.url, export="thread") as worker:
        assert plt_celery.export_batch(_task(), _events(3)) == 3
        counters = worker.stats.snapshot()
    assert counters["sent"] == 3
    assert [r.api_key for r in capture_server.requests] == ["phc_worker"]


def test_a_failed_post_is_retried_by_celery_then_counted_when_retries_run_out(
    capture_server: CaptureServer,
) -> None:
    capture_server.fail(503)
    with web_process(api_key="phc_worker", host=capture_server.url, export="thread") as worker:
        with pytest.raises(Retry) as raised:
            plt_celery.export_batch(_task(retries=0), _events(4))
        assert raised.value.when is not None and 1.0 <= float(raised.value.when) <= 2.0
        assert worker.stats.snapshot().get("dropped", 0) == 0
        assert worker.stats.snapshot()["celery_retried"] == 4
        # The last allowed attempt fails too: now the events are lost, and counted.
        last = plt_celery.EXPORT_MAX_RETRIES
        assert plt_celery.export_batch(_task(retries=last), _events(4)) == 0
        counters = worker.stats.snapshot()
    assert counters["dropped_retries_exhausted"] == 4
    assert len(capture_server.requests) == 2  # one request per attempt: Celery owns retries


def test_a_rejected_batch_is_not_retried(capture_server: CaptureServer) -> None:
    capture_server.fail(400)
    with web_process(api_key="phc_worker", host=capture_server.url, export="thread") as worker:
        assert plt_celery.export_batch(_task(), _events(2)) == 0
        counters = worker.stats.snapshot()
    assert counters["dropped_rejected"] == 2
    assert "celery_retried" not in counters


def test_a_worker_without_an_api_key_retries_instead_of_losing_events(
    capture_server: CaptureServer,
) -> None:
    with web_process(api_key=None, host=capture_server.url, export="thread"), pytest.raises(Retry):
        plt_celery.export_batch(_task(), _events(1))
    assert capture_server.requests == []


# --- publishing ----------------------------------------------------------------------------


def test_big_batches_are_split_over_several_messages(
    app: Celery,
    published: list[dict[str, Any]],
    settings_for: Callable[..., Settings],
    capture_server: CaptureServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(export_celery, "MAX_MESSAGE_BYTES", 2_000)
    stats = Stats()
    transport = CeleryTransport(settings_for(capture_server), stats, app=app)
    events = _events(20)
    for event in events:
        event["properties"]["$ai_input"] = "x" * 300
    assert transport.send(events, deadline=float("inf"))
    transport.close()
    batches = [m["body"][0][0] for m in published if m["task"] == EXPORT_TASK]
    assert len(batches) > 3
    assert [e["uuid"] for batch in batches for e in batch] == [e["uuid"] for e in events]
    assert stats.snapshot()["celery_published"] == 20
    assert capture_server.requests == []


def test_inside_a_worker_batches_are_posted_directly(
    app: Celery,
    published: list[dict[str, Any]],
    settings_for: Callable[..., Settings],
    capture_server: CaptureServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Web and worker processes share their settings (export="celery"): a worker does not send
    its own tasks' events around the broker."""
    monkeypatch.setattr(export_celery, "_in_worker", True)
    stats = Stats()
    transport = CeleryTransport(settings_for(capture_server), stats, app=app)
    assert transport.send(_events(3), deadline=time.monotonic() + 10)
    transport.close()
    assert published == []
    assert capture_server.event_count == 3
    assert stats.snapshot()["sent"] == 3


def test_tasks_stop_waiting_for_delivery_while_posthog_hangs(
    capture_server: CaptureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plt_celery, "_wait_again_at", 0.0)
    capture_server.hang()
    try:
        with web_process(
            api_key="phc_worker", host=capture_server.url, export="thread", timeout=0.5
        ) as worker:
            waits = []
            for _ in range(2):
                with trace("job"), generation("g", model="m") as g:
                    g.set_output("ok")
                started = time.monotonic()
                plt_celery._deliver_now(worker)
                waits.append(time.monotonic() - started)
    finally:
        capture_server.release()
    assert waits[0] >= 0.4  # the first task waited for its bounded delivery ...
    assert waits[1] < 0.1  # ... the next one did not


def test_each_export_thread_publishes_through_a_connection_of_its_own(
    app: Celery,
    published: list[dict[str, Any]],
    settings_for: Callable[..., Settings],
    capture_server: CaptureServer,
) -> None:
    """Kombu connections are not thread-safe, and the exporter sends from several threads."""
    stats = Stats()
    transport = CeleryTransport(settings_for(capture_server), stats, app=app)
    start = threading.Barrier(4)

    def send_some() -> None:
        start.wait()
        for _ in range(25):
            assert transport.send(_events(2), deadline=time.monotonic() + 10)

    threads = [threading.Thread(target=send_some) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(connection) for _, connection in transport._open}) == 4
    transport.close()
    assert transport._open == []
    assert stats.snapshot()["celery_published"] == 200
    assert stats.snapshot()["celery_messages"] == 100
    assert len([m for m in published if m["task"] == EXPORT_TASK]) == 100


def test_an_event_that_is_not_json_is_counted_and_does_not_stop_the_broker(
    app: Celery,
    published: list[dict[str, Any]],
    settings_for: Callable[..., Settings],
    capture_server: CaptureServer,
) -> None:
    stats = Stats()
    transport = CeleryTransport(settings_for(capture_server), stats, app=app)
    events = _events(3)
    events[1]["properties"]["oops"] = object()
    assert not transport.send(events, deadline=time.monotonic() + 10)
    assert transport.send(_events(2), deadline=time.monotonic() + 10)  # the broker is still used
    transport.close()
    counters = stats.snapshot()
    assert counters["dropped_invalid"] == 1
    assert counters["celery_published"] == 4
    assert "celery_fallback" not in counters
    assert capture_server.requests == []
