"""Celery on Redis: a process that exports through Celery is told, once, how late an export
batch held by a killed worker comes back (Redis's ``visibility_timeout``) and what to set; with
that set, the batches of a worker whose main process was killed come back to another worker."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from capture_server import CaptureServer
from celery import Celery
from celery_worker import REDIS_URL, Names, Worker, web_process
from test_celery_delivery import exported_uuids, redis_names

import posthog_llm_trace.celery as plt_celery
import posthog_llm_trace.export.celery as export_celery
from posthog_llm_trace import client as client_module
from posthog_llm_trace import generation, trace
from tests.celery_app import make_app

__all__ = ["exported_uuids", "redis_names"]


pytestmark = pytest.mark.service


@pytest.fixture(autouse=True)
def _once_per_test(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(export_celery, "_warned_redelivery", False)
    yield
    plt_celery.uninstrument()


def _publish_through(
    broker: str, names: Names, caplog: pytest.LogCaptureFixture, **options: Any
) -> list[str]:
    """Export two traces through a real broker; the warnings about redelivery that were logged."""
    app = Celery("redelivery", broker=broker, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": names.keyprefix, **options}
    plt_celery.instrument(app)
    with (
        caplog.at_level(logging.WARNING, logger="posthog_llm_trace"),
        web_process(celery_queue=names.export_queue, flush_at=1) as web,
    ):
        for n in range(2):
            with trace(f"request-{n}"), generation("g", model="m", provider="p", input="hi"):
                pass
        assert web.flush(10.0)
        assert web.stats.snapshot()["celery_published"] == 4
    return [r.getMessage() for r in caplog.records if "visibility_timeout" in r.getMessage()]


def test_redis_with_the_default_visibility_timeout_is_reported_once(
    redis_names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    [message] = _publish_through(REDIS_URL, redis_names, caplog)
    assert "visibility_timeout=3600 s" in message
    assert "'visibility_timeout': 600" in message


def test_a_short_visibility_timeout_needs_no_warning(
    redis_names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    assert _publish_through(REDIS_URL, redis_names, caplog, visibility_timeout=300) == []


def test_batches_of_a_killed_main_process_come_back_after_the_visibility_timeout(
    capture_server: CaptureServer,
    redis_names: Names,
    tmp_path: Path,
    exported_uuids: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGKILL of the worker's main process only (its pool children live on, orphaned): the
    batch in flight and the prefetched ones stay unacknowledged in Redis. With the short
    ``visibility_timeout`` the README recommends (the test app uses a few seconds) another
    worker posts every one of them."""
    monkeypatch.setattr(client_module, "_default", None)
    names = redis_names
    make_app(REDIS_URL, names.queue, names.export_queue, names.keyprefix)
    capture_server.hang(times=1)
    slow = {"POSTHOG_LLM_TRACE_TIMEOUT": "60"}
    first = Worker(REDIS_URL, names, capture_server.url, tmp_path, env=slow).start()
    try:
        with web_process(host=capture_server.url, celery_queue=names.export_queue, flush_at=5):
            for n in range(6):
                with trace(f"request-{n}", distinct_id="user-1"):
                    for i in range(4):
                        with generation(f"answer-{i}", model="m", provider="p", input="hi") as g:
                            g.set_output("hello")
            assert plt_celery.get_client().flush(5.0)
        assert len(exported_uuids) == 30
        assert capture_server.wait_for_requests(1, timeout=15), first.log()[-3000:]
        assert first.process is not None
        os.kill(first.process.pid, signal.SIGKILL)  # the main process only
        first.process.wait(10)
    finally:
        first.kill()  # the orphaned pool children too, before the batch is released
    capture_server.release()

    with Worker(REDIS_URL, names, capture_server.url, tmp_path) as second:
        assert capture_server.wait_for(30, timeout=60), second.log()[-3000:]
    assert set(exported_uuids) <= set(capture_server.uuids())
