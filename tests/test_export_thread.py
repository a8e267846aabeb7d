"""BatchExporter and SyncExporter with real threads, real HTTP and a real loopback server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from capture_server import CaptureServer, SimpleItem, make_items, render_simple

from posthog_llm_trace.export.base import Exporter
from posthog_llm_trace.export.http import HttpTransport
from posthog_llm_trace.export.sync import SyncExporter
from posthog_llm_trace.export.thread import BatchExporter
from posthog_llm_trace.settings import Settings
from posthog_llm_trace.stats import Stats

SettingsFor = Callable[..., Settings]
ROOT = Path(__file__).resolve().parent.parent


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def exporters() -> Iterator[list[BatchExporter]]:
    """Shuts down every exporter a test made, so that no worker outlives its test."""
    made: list[BatchExporter] = []
    yield made
    for exporter in made:
        exporter.shutdown(1.0)


def build(
    settings: Settings,
    made: list[BatchExporter],
    *,
    render: Callable[[Any], list[dict[str, Any]]] = render_simple,
    **transport_options: Any,
) -> tuple[BatchExporter, Stats]:
    stats = Stats()
    transport = HttpTransport(settings, stats, **transport_options)
    exporter = BatchExporter(render, transport, settings, stats)
    made.append(exporter)
    return exporter, stats


def uuids_of(items: list[SimpleItem]) -> list[str]:
    return [u for item in items for u in item.uuids]


def test_is_an_exporter() -> None:
    def check(exporter: Exporter) -> None: ...

    settings = Settings(api_key="phc_test", host="http://127.0.0.1:9")
    stats = Stats()
    check(BatchExporter(render_simple, HttpTransport(settings, stats), settings, stats))
    check(SyncExporter(render_simple, HttpTransport(settings, stats), settings, stats))


def test_full_batches_go_out_without_waiting(
    capture_server: CaptureServer, settings_for: SettingsFor, exporters: list[BatchExporter]
):
    exporter, stats = build(settings_for(capture_server, flush_at=5, flush_interval=60), exporters)
    items = make_items(10)
    assert all(exporter.submit(item) for item in items)
    assert capture_server.wait_for(10, timeout=5)
    # Full batches leave at once (flush_interval is a minute); queued together, they may share
    # a request.
    assert all(r.events in (5, 10) for r in capture_server.requests)
    assert sorted(capture_server.uuids()) == sorted(uuids_of(items))
    assert stats.snapshot()["queued"] == 10


def test_items_of_several_events_are_rendered_on_the_worker(
    capture_server: CaptureServer, settings_for: SettingsFor, exporters: list[BatchExporter]
):
    threads: set[str] = set()

    def render(item: SimpleItem) -> list[dict[str, Any]]:
        threads.add(threading.current_thread().name)
        return render_simple(item)

    settings = settings_for(capture_server, flush_at=4, flush_interval=60)
    exporter, _ = build(settings, exporters, render=render)
    items = make_items(3, per_item=4)
    for item in items:
        exporter.submit(item)
    assert capture_server.wait_for(12, timeout=5)
    assert threads == {"posthog-llm-trace-export"}  # never the submitting thread
    assert sorted(capture_server.uuids()) == sorted(uuids_of(items))


def test_a_partial_batch_leaves_after_flush_interval(
    capture_server: CaptureServer, settings_for: SettingsFor, exporters: list[BatchExporter]
):
    settings = settings_for(capture_server, flush_at=100, flush_interval=0.3)
    exporter, _ = build(settings, exporters)
    submitted_at = time.monotonic()
    for item in make_items(3):
        exporter.submit(item)
    assert capture_server.wait_for(3, timeout=5)
    assert capture_server.requests[0].at - submitted_at >= 0.29


def test_flush_delivers_what_is_pending(
    capture_server: CaptureServer, settings_for: SettingsFor, exporters: list[BatchExporter]
):
    exporter, stats = build(
        settings_for(capture_server, flush_at=100, flush_interval=60), exporters
    )
    items = make_items(7)
    for item in items:
        exporter.submit(item)
    assert exporter.flush(5.0) is True
    assert sorted(capture_server.uuids()) == sorted(uuids_of(items))
    assert stats.snapshot()["sent"] == 7
    assert exporter.flush(0.1) is True  # nothing pending: immediate


def test_flush_waits_for_a_batch_still_in_flight_on_the_other_worker(
    capture_server: CaptureServer, settings_for: SettingsFor, exporters: list[BatchExporter]
):
    capture_server.hang(times=1)  # the first request hangs until released
    settings = settings_for(capture_server, flush_at=5, flush_interval=60, timeout=30)
    exporter, _ = build(settings, exporters, rand=lambda: 0.0)
    first = make_items(5)
    for item in first:
        exporter.submit(item)
    assert capture_server.wait_for_requests(1, timeout=5)  # one worker is stuck on it
    later = make_items(3)
    for item in later:
        exporter.submit(item)
    # The other worker sends `later` and meets the flush marker; the flush must still wait for
    # the hung batch, which only succeeds (on retry) after the release.
    releaser = threading.Timer(0.5, capture_server.release)
    releaser.start()
    assert exporter.flush(10.0) is True
    assert sorted(capture_server.uuids()) == sorted(uuids_of(first + later))
    releaser.join()


def test_flush_says_false_when_events_were_rejected(
    capture_server: CaptureServer, settings_for: SettingsFor, exporters: list[BatchExporter]
):
    capture_server.fail(400, times=1)
    exporter, stats = build(settings_for(capture_server, flush_at=100), exporters)
    for item in make_items(2):
        exporter.submit(item)
    assert exporter.flush(5.0) is False
    assert stats.snapshot()["dropped_rejected"] == 2


def test_an_outage_then_recovery_delivers_every_event_exactly_once(
    capture_server: CaptureServer, settings_for: SettingsFor, exporters: list[BatchExporter]
):
    capture_server.fail(503, seconds=2.5)
    settings = settings_for(capture_server, flush_at=20, flush_interval=0.1, max_retries=5)
    # rand=0.5: no jitter, so the retries land at +1 s and +3 s, the second after the outage.
    exporter, stats = build(settings, exporters, rand=lambda: 0.5)
    items = make_items(150)
    for item in items:
        assert exporter.submit(item)
    assert exporter.flush(20.0) is True

    uuids = capture_server.uuids()
    assert len(uuids) == len(set(uuids)), "an event was delivered twice"
    assert sorted(uuids) == sorted(uuids_of(items))
    assert any(r.status == 503 for r in capture_server.requests)
    snapshot = stats.snapshot()
    assert snapshot["sent"] == 150
    assert snapshot["dropped"] == 0
    assert snapshot["retried"] >= 20


def test_a_hanging_server_never_slows_submit_and_stops_within_budget(
    capture_server: CaptureServer, settings_for: SettingsFor, exporters: list[BatchExporter]
):
    capture_server.hang()
    settings = settings_for(capture_server, flush_at=10, flush_interval=0.05, timeout=30)
    exporter, stats = build(settings, exporters)
    items = make_items(40)
    slowest = 0.0
    for item in items:
        started = time.perf_counter()
        assert exporter.submit(item)
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.1  # generous: a GIL switch or a preemption, never a network wait
    assert capture_server.wait_for_requests(1, timeout=5)  # the worker is stuck on the server

    started = time.monotonic()
    assert exporter.flush(1.0) is False
    assert time.monotonic() - started < 3

    started = time.monotonic()
    assert exporter.shutdown(1.0) is False
    assert time.monotonic() - started < 3

    assert wait_until(lambda: stats.snapshot().get("dropped_shutdown", 0) == 40, timeout=5)
    assert stats.snapshot()["sent"] == 0
    assert exporter.submit(make_items(1)[0]) is False
    assert stats.snapshot()["dropped_shutdown"] == 41


def test_shutdown_counts_what_a_stuck_transport_never_got(settings_for: SettingsFor) -> None:
    """A transport that cannot be interrupted (no abort): shutdown still returns in time and
    counts every event still queued; the ones in the transport's hands are the transport's."""
    entered = threading.Event()
    unblock = threading.Event()

    class Stuck:
        def send(self, events: list[dict[str, Any]], deadline: float) -> bool:
            entered.set()
            unblock.wait(30)
            return False

        def close(self) -> None:
            pass

    with CaptureServer() as server:
        settings = settings_for(server, flush_at=5, flush_interval=60)
    stats = Stats()
    exporter = BatchExporter(render_simple, Stuck(), settings, stats, workers=1)
    for item in make_items(5):
        exporter.submit(item)
    assert entered.wait(5)  # the worker holds these 5
    for item in make_items(15):
        exporter.submit(item)
    started = time.monotonic()
    assert exporter.shutdown(0.5) is False
    assert time.monotonic() - started < 2
    assert stats.snapshot()["dropped_shutdown"] == 15
    unblock.set()


def test_a_full_queue_drops_and_counts_exactly(
    capture_server: CaptureServer, settings_for: SettingsFor, exporters: list[BatchExporter]
):
    capture_server.hang()  # nothing leaves: the queue fills
    settings = settings_for(capture_server, max_queue_size=100, flush_at=10, timeout=30)
    exporter, stats = build(settings, exporters, rand=lambda: 0.0)
    items = make_items(250)
    accepted = [exporter.submit(item) for item in items]

    assert accepted.count(True) == 100
    assert accepted.count(False) == 150
    assert stats.snapshot()["dropped_queue_full"] == 150
    # queued counts every event handed over: queued == sent + dropped + pending.
    assert stats.snapshot()["queued"] == 250

    capture_server.release()  # the hung request is dropped unanswered, then retried
    assert exporter.flush(10.0) is True
    kept = [item for item, ok in zip(items, accepted, strict=True) if ok]
    assert sorted(capture_server.uuids()) == sorted(uuids_of(kept))


def test_the_queue_bound_is_exact_across_threads(
    capture_server: CaptureServer, settings_for: SettingsFor, exporters: list[BatchExporter]
):
    capture_server.hang()
    settings = settings_for(capture_server, max_queue_size=150, flush_at=10, timeout=30)
    exporter, stats = build(settings, exporters)
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def burst() -> None:
        start.wait()
        mine = [exporter.submit(item) for item in make_items(100, per_item=3)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 50  # 150 events of 3 per item
    assert stats.snapshot()["dropped_queue_full"] == (400 - 50) * 3


def test_a_dead_worker_is_restarted_by_the_next_submit(
    capture_server: CaptureServer, settings_for: SettingsFor, exporters: list[BatchExporter]
):
    settings = settings_for(capture_server, flush_at=1, flush_interval=0.05)
    stats = Stats()
    real = HttpTransport(settings, stats)

    class DiesOnce:
        calls = 0

        def send(self, events: list[dict[str, Any]], deadline: float) -> bool:
            DiesOnce.calls += 1
            if DiesOnce.calls == 1:
                raise SystemExit("simulated thread death")
            return real.send(events, deadline)

        def close(self) -> None:
            real.close()

    exporter = BatchExporter(render_simple, DiesOnce(), settings, stats)
    exporters.append(exporter)
    exporter.submit(make_items(1)[0])
    assert wait_until(lambda: stats.snapshot().get("dropped_invalid", 0) == 1, timeout=5)
    assert wait_until(lambda: exporter._thread_pid == 0, timeout=5)  # a worker is missing

    second = make_items(1)
    assert exporter.submit(second[0])
    assert len(exporter._threads) == 2  # the dead worker was replaced
    assert capture_server.wait_for(1, timeout=5)
    assert capture_server.uuids() == uuids_of(second)


def test_shutdown_delivers_first_and_refuses_afterwards(
    capture_server: CaptureServer, settings_for: SettingsFor, exporters: list[BatchExporter]
):
    exporter, stats = build(
        settings_for(capture_server, flush_at=100, flush_interval=60), exporters
    )
    items = make_items(12)
    for item in items:
        exporter.submit(item)
    assert exporter.shutdown(5.0) is True
    assert sorted(capture_server.uuids()) == sorted(uuids_of(items))
    assert exporter.submit(make_items(1)[0]) is False
    assert stats.snapshot()["dropped_shutdown"] == 1
    assert exporter.shutdown(1.0) is True  # idempotent


def test_sync_exporter_sends_inline_within_its_timeout(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    settings = settings_for(capture_server, timeout=1.5)
    stats = Stats()
    exporter = SyncExporter(render_simple, HttpTransport(settings, stats), settings, stats)
    item = make_items(1, per_item=3)[0]
    assert exporter.submit(item) is True
    assert capture_server.uuids() == list(item.uuids)  # delivered before submit returned

    capture_server.hang()
    started = time.monotonic()
    assert exporter.submit(make_items(1)[0]) is False
    assert time.monotonic() - started < 3
    assert stats.snapshot()["dropped_retries_exhausted"] == 1
    capture_server.release()
    assert exporter.flush() is True
    assert exporter.shutdown() is True
    assert exporter.submit(make_items(1)[0]) is False
    assert stats.snapshot()["dropped_shutdown"] == 1


EXIT_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from capture_server import make_items, render_simple
    from posthog_llm_trace.export.http import HttpTransport
    from posthog_llm_trace.export.thread import BatchExporter
    from posthog_llm_trace.settings import Layer, build_settings
    from posthog_llm_trace.stats import Stats

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = build_settings(Layer({
        "api_key": "phc_test", "host": sys.argv[1], "flush_at": 100, "flush_interval": 60,
        "shutdown_timeout": 1.0, "timeout": 30,
    }), environ={})
    stats = Stats()
    exporter = BatchExporter(render_simple, HttpTransport(settings, stats), settings, stats)
    for item in make_items(int(sys.argv[2])):
        exporter.submit(item)
    print("submitted", flush=True)
    # No flush, no shutdown: the atexit hook must do it.
    """
)


def run_exit_script(
    tmp_path: Path, url: str, n: int
) -> tuple[subprocess.CompletedProcess[str], float]:
    script = tmp_path / "exit_flush.py"
    script.write_text(EXIT_SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script), url, str(n)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    return done, time.monotonic() - started


def test_the_exit_flush_delivers_what_was_submitted(capture_server: CaptureServer, tmp_path: Path):
    done, _ = run_exit_script(tmp_path, capture_server.url, 37)
    assert done.returncode == 0, done.stderr
    assert capture_server.event_count == 37
    assert "not delivered" not in done.stderr


def test_the_exit_flush_is_bounded_and_says_what_it_left(
    capture_server: CaptureServer, tmp_path: Path
):
    capture_server.hang()
    done, elapsed = run_exit_script(tmp_path, capture_server.url, 5)
    assert done.returncode == 0, done.stderr
    assert "5 events were not delivered at exit" in done.stderr
    assert elapsed < 10  # 1 s exit budget plus interpreter start-up, generously
    assert capture_server.event_count == 0


def test_each_trace_is_encoded_as_it_is_mapped_and_large_content_without_orjsons_buffer(
    capture_server: CaptureServer, settings_for: SettingsFor, exporters: list[BatchExporter]
):
    """The workers hold JSON, not mapped dicts, through the round trip; a record whose content
    is large is encoded with the lean encoder (orjson's transient is ~8x its longest string)."""
    from dataclasses import dataclass

    from posthog_llm_trace import jsonenc
    from posthog_llm_trace.export.thread import LEAN_ITEM_BYTES

    @dataclass
    class SizedItem:  # what render_simple reads, and the size the core's records report
        uuids: tuple[str, ...]
        payload: str
        approx_bytes: int
        name: str = "$ai_generation"
        distinct_id: str = "user-1"

        @property
        def event_count(self) -> int:
            return len(self.uuids)

    lean_at_encode: list[bool] = []
    handed: list[type] = []

    class Recording(HttpTransport):
        def encode(self, events: list[dict[str, Any]]) -> list[Any]:
            lean_at_encode.append(jsonenc._lean.active)
            return super().encode(events)

        def send(self, events: Any, deadline: float) -> bool:
            handed.extend(type(e) for e in events)
            return super().send(events, deadline)

    settings = settings_for(capture_server, flush_at=100, flush_interval=60)
    stats = Stats()
    exporter = BatchExporter(render_simple, Recording(settings, stats), settings, stats)
    exporters.append(exporter)
    [small] = make_items(1, per_item=2, payload="small")
    [large] = make_items(1, payload="L" * (LEAN_ITEM_BYTES + 1))
    exporter.submit(SizedItem(small.uuids, small.payload, 2_000))
    exporter.submit(SizedItem(large.uuids, large.payload, LEAN_ITEM_BYTES + 600))
    assert exporter.flush(10)

    assert lean_at_encode == [False, True]
    assert handed == [tuple, tuple, tuple]
    assert sorted(capture_server.uuids()) == sorted(small.uuids + large.uuids)
    assert max(len(e["properties"]["$ai_input"]) for e in capture_server.events) > LEAN_ITEM_BYTES
