"""Feedback and scores through Celery: ``export="celery"`` in the web process carries them to a
real prefork worker on the real Redis broker, and a score computed by a task in that worker
reaches the capture server too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from capture_server import CaptureServer
from celery_worker import (
    REDIS_URL,
    WORKER_API_KEY,
    Names,
    Worker,
    delete_keys,
    require_broker,
    wait_for_trace,
    web_process,
)

import posthog_llm_trace.celery as plt_celery
from posthog_llm_trace import feedback, trace

pytestmark = pytest.mark.service

SCORED = "7d1f2c3b-0a4e-4b5c-8d6e-9f0a1b2c3d4e"


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
def app(names: Names) -> Iterator[Any]:
    from tests.celery_app import make_app

    yield make_app(REDIS_URL, names.queue, names.export_queue, names.keyprefix)
    plt_celery.uninstrument()


def test_feedback_from_the_web_process_is_posted_by_the_worker(
    server: CaptureServer, worker: Worker, app: Any, names: Names
) -> None:
    with web_process(host=server.url, celery_queue=names.export_queue) as web:
        with trace("POST /feedback/", distinct_id="user-1", session_id="conv-1"):
            assert feedback(SCORED, 1, name="thumbs", comment="Right answer")
        assert web.flush(5.0)
        received = wait_for_trace(server, SCORED, 2, worker=worker)
        counters = web.stats.snapshot()

    assert sorted(e["event"] for e in received) == ["$ai_feedback", "$ai_metric"]
    for event in received:
        assert event["distinct_id"] == "user-1"
        assert event["properties"]["$ai_session_id"] == "conv-1"
    assert counters["celery_published"] == 2 and counters["sent"] == 0
    assert {r.api_key for r in server.requests if r.status == 200} == {WORKER_API_KEY}


def test_a_score_computed_by_a_task_reaches_posthog(
    server: CaptureServer, worker: Worker, app: Any, names: Names
) -> None:
    later = "9e8d7c6b-5a49-4382-b1a0-f9e8d7c6b5a4"
    with web_process(host=server.url, celery_queue=names.export_queue):
        app.tasks["tests.score"].delay(later, 0.8)  # no result backend: wait for the events
        received = wait_for_trace(server, later, 2, worker=worker)
    [metric] = [e for e in received if e["event"] == "$ai_metric"]
    assert metric["properties"]["$ai_metric_name"] == "eval_relevance"
    assert metric["properties"]["$ai_metric_value"] == 0.8
    assert metric["distinct_id"] == "anonymous"
    [text] = [e for e in received if e["event"] == "$ai_feedback"]
    assert text["properties"]["$ai_feedback_text"] == "scored by a worker"
    # The task recorded nothing but the score: it sent no $ai_trace of its own.
    assert [e for e in server.events if e["event"] == "$ai_trace"] == []
