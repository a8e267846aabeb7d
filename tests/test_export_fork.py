"""Fork safety with a real ``os.fork()``: gunicorn --preload and Celery prefork fork a process
whose exporter may be mid-operation, its lock held by another thread."""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from capture_server import CaptureServer, make_items, render_simple

from posthog_llm_trace.export.http import HttpTransport
from posthog_llm_trace.export.thread import BatchExporter
from posthog_llm_trace.settings import Settings
from posthog_llm_trace.stats import Stats

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

SettingsFor = Callable[..., Settings]


def run_child(body: Callable[[], dict[str, Any]], timeout: float = 20.0) -> dict[str, Any]:
    """Fork; run ``body`` in the child and return its JSON report. A child that deadlocks is
    killed and reported as such, so the test fails instead of hanging."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(read_end)
            report = body()
            os.write(write_end, json.dumps(report).encode())
        except BaseException as exc:
            os.write(write_end, json.dumps({"error": repr(exc)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(read_end)
            pytest.fail("the forked child deadlocked")
        time.sleep(0.01)
    with os.fdopen(read_end, "rb") as pipe:
        raw = pipe.read()
    assert os.waitstatus_to_exitcode(status) == 0, raw.decode()
    report: dict[str, Any] = json.loads(raw)
    return report


def test_fork_while_the_lock_is_held_leaves_both_processes_delivering_their_own(
    capture_server: CaptureServer, settings_for: SettingsFor
) -> None:
    settings = settings_for(capture_server, flush_at=100, flush_interval=60)
    stats = Stats()
    exporter = BatchExporter(render_simple, HttpTransport(settings, stats), settings, stats)

    # The parent has already talked to the server (a kept-alive connection exists) ...
    sent_before = make_items(4, prefix="parent-")
    for item in sent_before:
        exporter.submit(item)
    assert exporter.flush(5.0)
    # ... and has events pending when it forks: they are the parent's to deliver.
    pending = make_items(6, prefix="parent-")
    for item in pending:
        exporter.submit(item)

    held = threading.Event()
    release = threading.Event()

    def hold_the_lock() -> None:
        with exporter._lock, stats._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert held.wait(5)

    def child() -> dict[str, Any]:
        fresh = exporter._size == 0 and exporter._threads == []
        mine = make_items(3, prefix="child-")
        accepted = [exporter.submit(item) for item in mine]  # would deadlock on the old lock
        flushed = exporter.flush(10.0)
        return {
            "fresh": fresh,
            "accepted": accepted,
            "flushed": flushed,
            "uuids": [u for item in mine for u in item.uuids],
            "sent": stats.snapshot()["sent"],
            "dropped": stats.snapshot()["dropped"],
        }

    try:
        report = run_child(child)
    finally:
        release.set()
        holder.join(5)

    assert report["fresh"], "the child inherited the parent's queue or thread"
    assert report["accepted"] == [True, True, True]
    assert report["flushed"] is True
    # A forked child's counters describe the child only: the parent's 4 are not its own.
    assert report["sent"] == 3
    assert report["dropped"] == 0

    assert exporter.flush(5.0), "the parent must still deliver after the fork"
    exporter.shutdown(2.0)

    events = capture_server.events
    uuids = [e["uuid"] for e in events]
    assert len(uuids) == len(set(uuids)), "an event was delivered twice"
    parent_uuids = {u for item in sent_before + pending for u in item.uuids}
    assert set(uuids) == parent_uuids | set(report["uuids"])
    senders = {e["uuid"]: e["properties"]["pid"] for e in events}
    assert all(senders[u] == os.getpid() for u in parent_uuids), "the child sent parent events"
    assert all(senders[u] != os.getpid() for u in report["uuids"])
    assert stats.snapshot()["sent"] == 10


def test_fork_while_the_transport_is_mid_request(
    capture_server: CaptureServer, settings_for: SettingsFor
) -> None:
    """The parent's worker is blocked in a request when the fork happens: the child must use a
    connection of its own, and the parent's request must still complete."""
    capture_server.hang(times=1)
    settings = settings_for(capture_server, flush_at=1, flush_interval=60, timeout=30)
    stats = Stats()
    exporter = BatchExporter(render_simple, HttpTransport(settings, stats), settings, stats)
    parent = make_items(1, prefix="parent-")
    exporter.submit(parent[0])
    assert capture_server.wait_for_requests(1, timeout=5)

    def child() -> dict[str, Any]:
        mine = make_items(2, prefix="child-")
        for item in mine:
            exporter.submit(item)
        return {"flushed": exporter.flush(10.0), "uuids": [u for i in mine for u in i.uuids]}

    report = run_child(child)
    assert report["flushed"] is True
    capture_server.release()  # the parent's hung request fails and is retried
    assert exporter.flush(10.0)
    exporter.shutdown(2.0)
    uuids = capture_server.uuids()
    assert sorted(uuids) == sorted(list(parent[0].uuids) + report["uuids"])


def test_a_collected_exporter_makes_the_fork_hook_a_no_op(
    capture_server: CaptureServer, settings_for: SettingsFor
) -> None:
    settings = settings_for(capture_server)
    stats = Stats()
    exporter = BatchExporter(render_simple, HttpTransport(settings, stats), settings, stats)
    exporter.shutdown(1.0)
    del exporter
    gc.collect()
    assert run_child(lambda: {"ok": True}) == {"ok": True}
