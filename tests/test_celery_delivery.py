"""Delivery through Celery when things go wrong, and in every pool and broker: a worker killed
mid-export, a broker that is down, RabbitMQ, the solo and threads pools, and the flush when a
pool process exits."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from capture_server import CaptureServer
from celery.signals import before_task_publish
from celery_worker import (
    AMQP_URL,
    DEAD_BROKER_URL,
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
from tests.celery_app import make_app

pytestmark = pytest.mark.service


@pytest.fixture
def redis_names() -> Iterator[Names]:
    require_broker(REDIS_URL)
    names = Names()
    yield names
    delete_keys(names)


@pytest.fixture(autouse=True)
def _uninstrument() -> Iterator[None]:
    yield
    plt_celery.uninstrument()


@pytest.fixture
def exported_uuids() -> Iterator[list[str]]:
    """The uuid of every event this process hands to the broker."""
    uuids: list[str] = []

    def record(sender: Any = None, body: Any = None, **kwargs: Any) -> None:
        if sender == EXPORT_TASK:
            uuids.extend(e["uuid"] for e in body[0][0])

    before_task_publish.connect(record, weak=False)
    yield uuids
    before_task_publish.disconnect(record)


def test_a_worker_killed_in_the_middle_of_an_export_loses_nothing(
    capture_server: CaptureServer, redis_names: Names, tmp_path: Path, exported_uuids: list[str]
) -> None:
    names = redis_names
    make_app(REDIS_URL, names.queue, names.export_queue, names.keyprefix)
    # The first batch to reach "PostHog" gets no answer: its worker process is stuck in the
    # request when the whole worker is killed.
    capture_server.hang(times=1)
    slow = {"POSTHOG_LLM_TRACE_TIMEOUT": "60"}
    first = Worker(REDIS_URL, names, capture_server.url, tmp_path, env=slow).start()
    try:
        with web_process(host=capture_server.url, celery_queue=names.export_queue, flush_at=5):
            for n in range(4):
                with trace(f"request-{n}", distinct_id="user-1"):
                    for i in range(4):
                        with generation(f"answer-{i}", model="m", provider="p", input="hi") as g:
                            g.set_output("hello")
            assert plt_celery.get_client().flush(5.0)
        assert len(exported_uuids) == 20
        assert capture_server.wait_for_requests(1, timeout=15), first.log()[-3000:]
        assert capture_server.requests[0].fault == "hang"
    finally:
        first.kill()  # SIGKILL, the whole process group: no warm shutdown, no ack
    capture_server.release()

    with Worker(REDIS_URL, names, capture_server.url, tmp_path) as second:
        # The unacknowledged batch comes back once Redis's visibility timeout has passed.
        delivered = capture_server.wait_for(20, timeout=30)
        assert delivered, second.log()[-3000:]
    assert set(exported_uuids) <= set(capture_server.uuids())


def test_a_pool_child_killed_mid_export_is_replaced_and_its_batch_redone(
    capture_server: CaptureServer, redis_names: Names, tmp_path: Path, exported_uuids: list[str]
) -> None:
    """Only the pool processes die (OOM killer, say): the main process sees the worker lost,
    rejects the unacknowledged batch back to the queue and a new pool process posts it."""
    names = redis_names
    make_app(REDIS_URL, names.queue, names.export_queue, names.keyprefix)
    capture_server.hang(times=1)
    slow = {"POSTHOG_LLM_TRACE_TIMEOUT": "60"}
    with Worker(REDIS_URL, names, capture_server.url, tmp_path, env=slow) as worker:
        with web_process(host=capture_server.url, celery_queue=names.export_queue, flush_at=5):
            for n in range(2):
                with trace(f"request-{n}", distinct_id="user-1"):
                    for i in range(4):
                        with generation(f"answer-{i}", model="m", provider="p", input="hi") as g:
                            g.set_output("hello")
            assert plt_celery.get_client().flush(5.0)
        assert capture_server.wait_for_requests(1, timeout=15), worker.log()[-3000:]
        children = worker.pool_children()
        assert len(children) == 2
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        capture_server.release()
        assert capture_server.wait_for(10, timeout=20), worker.log()[-3000:]
        deadline = time.monotonic() + 5
        while "WorkerLostError" not in worker.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "WorkerLostError" in worker.log()  # the main process saw its children die
    assert len(exported_uuids) == 10
    assert set(exported_uuids) <= set(capture_server.uuids())


def test_with_the_broker_down_batches_fall_back_to_http_and_are_counted(
    capture_server: CaptureServer,
) -> None:
    make_app(DEAD_BROKER_URL, "plt-unreachable", "plt-unreachable-export")
    with web_process(host=capture_server.url, celery_queue="plt-unreachable-export") as web:
        with trace("POST /chat/", distinct_id="user-5") as t, generation("a", model="m") as g:
            g.set_output("ok")
        started = time.monotonic()
        assert web.flush(10.0)
        took = time.monotonic() - started
        # The broker is then left alone for a while: the next batch goes straight to HTTP.
        with trace("POST /chat/", distinct_id="user-5") as t2, generation("b", model="m") as g:
            g.set_output("ok")
        started = time.monotonic()
        assert web.flush(10.0)
        took_second = time.monotonic() - started
        counters = web.stats.snapshot()

    assert len(events_of(capture_server, t.id)) == 2
    assert len(events_of(capture_server, t2.id)) == 2
    assert {r.api_key for r in capture_server.requests} == {WEB_API_KEY}
    assert counters["celery_fallback"] == 4
    assert counters["sent"] == 4
    assert counters.get("celery_published", 0) == 0
    assert took < 5.0
    assert took_second < 0.5


def test_rabbitmq_carries_traces_and_batches(capture_server: CaptureServer, tmp_path: Path) -> None:
    require_broker(AMQP_URL)
    names = Names()
    app = make_app(AMQP_URL, names.queue, names.export_queue)
    worker = Worker(AMQP_URL, names, capture_server.url, tmp_path).start()
    # (Killed at the end, not stopped: a warm shutdown on AMQP takes seconds and adds nothing.)
    with (
        contextlib.closing(SimpleNamespace(close=worker.kill)),
        web_process(host=capture_server.url, celery_queue=names.export_queue) as web,
    ):
        with (
            trace("POST /chat/", distinct_id="user-6", session_id="conv-6") as t,
            span("plan") as plan,
        ):
            result = app.tasks["tests.summarise"].delay("over amqp")
        assert web.flush(5.0)
        received = wait_for_trace(capture_server, t.id, 4, worker=worker)
        counters = web.stats.snapshot()

    [task_span] = by_name(received, "tests.summarise")
    [gen] = by_name(received, "summarise")
    assert task_span["properties"]["celery_task_id"] == result.id
    assert task_span["properties"]["$ai_parent_id"] == plan.id
    assert gen["properties"]["$ai_parent_id"] == task_span["properties"]["$ai_span_id"]
    assert {e["distinct_id"] for e in received} == {"user-6"}
    assert counters["celery_published"] == 2 and counters["sent"] == 0
    assert {r.api_key for r in capture_server.requests} == {WORKER_API_KEY}


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_other_pools_continue_traces_too(
    pool: str, capture_server: CaptureServer, redis_names: Names, tmp_path: Path
) -> None:
    names = redis_names
    app = make_app(REDIS_URL, names.queue, names.export_queue, names.keyprefix)
    with (
        Worker(REDIS_URL, names, capture_server.url, tmp_path, pool=pool) as worker,
        web_process(host=capture_server.url, celery_queue=names.export_queue) as web,
    ):
        with trace("POST /chat/", distinct_id="user-8") as t, span("plan") as plan:
            app.tasks["tests.summarise"].delay("one")
            app.tasks["tests.fan_out"].delay("two")
        assert web.flush(5.0)
        # Web: $ai_trace, plan. Worker: summarise (2), fan_out (1), its summarise (2).
        received = wait_for_trace(capture_server, t.id, 7, worker=worker)

    summarise_spans = by_name(received, "tests.summarise")
    [fan_out] = by_name(received, "tests.fan_out")
    parents = sorted(s["properties"]["$ai_parent_id"] for s in summarise_spans)
    assert parents == sorted([plan.id, fan_out["properties"]["$ai_span_id"]])
    assert fan_out["properties"]["$ai_parent_id"] == plan.id


def test_a_pool_process_flushes_what_is_left_when_it_exits(
    capture_server: CaptureServer, redis_names: Names, tmp_path: Path
) -> None:
    """A span that ends after its task (a thread the task started) is exported by the next
    periodic batch -- an hour away here -- or by the flush when the pool process exits."""
    names = redis_names
    app = make_app(REDIS_URL, names.queue, names.export_queue, names.keyprefix)
    env = {"POSTHOG_LLM_TRACE_FLUSH_INTERVAL": "3600"}
    worker = Worker(REDIS_URL, names, capture_server.url, tmp_path, env=env).start()
    try:
        app.tasks["tests.late"].delay("after the task", 0.3)
        time.sleep(1.5)
        assert not late_generations(capture_server)
    finally:
        code = worker.stop()
    assert code == 0, worker.log()[-3000:]
    assert len(late_generations(capture_server)) == 1, worker.log()[-3000:]


def late_generations(server: CaptureServer) -> list[dict[str, Any]]:
    return [
        e
        for e in server.events
        if e["event"] == "$ai_generation" and e["properties"]["$ai_span_name"] == "late"
    ]
