"""HttpTransport against a real loopback capture server that behaves like PostHog's."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from capture_server import CaptureServer, make_items, render_simple

from posthog_llm_trace.export import http as http_module
from posthog_llm_trace.export.http import HttpTransport, parse_retry_after
from posthog_llm_trace.settings import Settings
from posthog_llm_trace.stats import Stats

SettingsFor = Callable[..., Settings]


def events_of(n: int, payload: str = "hello", name: str = "$ai_generation") -> list[dict[str, Any]]:
    events = [e for item in make_items(n, payload=payload) for e in render_simple(item)]
    for event in events:
        event["event"] = name
    return events


class FakeTime:
    """An injected clock whose sleep advances it instantly, recording every pause."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(autouse=True)
def _forget_ai_lane_fallbacks() -> Iterator[None]:
    # The 404 fallback is process-wide by design; a reused port must not inherit it.
    http_module._AI_LANE_MISSING.clear()
    yield
    http_module._AI_LANE_MISSING.clear()


#: The tests below run twice: with events as dicts (the sync exporter, the Celery task, replay)
#: and encoded by the transport first, as the background exporter hands them over.
FORMS = pytest.mark.parametrize("form", ["dicts", "encoded"])


def given(transport: HttpTransport, events: list[dict[str, Any]], form: str) -> list[Any]:
    return list(events) if form == "dicts" else transport.encode(events)


def far() -> float:
    return time.monotonic() + 30


@FORMS
def test_posts_a_posthog_batch_with_gzip(
    capture_server: CaptureServer, settings_for: SettingsFor, form: str
):
    stats = Stats()
    transport = HttpTransport(settings_for(capture_server), stats)
    events = events_of(3)
    before = datetime.now(UTC)

    assert transport.send(given(transport, events, form), far()) is True

    [request] = capture_server.requests
    assert request.path == "/batch/"
    assert request.status == 200
    assert request.api_key == "phc_test"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-encoding"] == "gzip"
    assert request.gzip_magic, "Content-Encoding says gzip: the body must really be gzip"
    assert request.headers["user-agent"].startswith("posthog-llm-trace/")
    assert request.sent_at is not None
    sent_at = datetime.fromisoformat(request.sent_at.replace("Z", "+00:00"))
    assert sent_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= sent_at <= datetime.now(UTC)
    assert capture_server.events == events
    assert stats.snapshot()["sent"] == 3


def test_plain_json_when_gzip_is_off(capture_server: CaptureServer, settings_for: SettingsFor):
    transport = HttpTransport(settings_for(capture_server, gzip=False), Stats())
    assert transport.send(events_of(2), far())
    [request] = capture_server.requests
    assert "content-encoding" not in request.headers
    assert not request.gzip_magic


def test_keeps_one_connection_alive(capture_server: CaptureServer, settings_for: SettingsFor):
    transport = HttpTransport(settings_for(capture_server), Stats())
    for _ in range(5):
        assert transport.send(events_of(1), far())
    # One kept-alive connection served all five requests.
    assert capture_server.connections_opened == 1


def test_reconnects_when_the_server_closed_an_idle_connection(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    stats = Stats()
    transport = HttpTransport(settings_for(capture_server), stats)
    assert transport.send(events_of(1), far())
    capture_server.disconnect_all()
    assert transport.send(events_of(1), far())
    # Resent at once on a fresh connection: not a retry, and no backoff.
    assert stats.snapshot()["retried"] == 0
    assert capture_server.event_count == 2


def test_sent_at_is_restamped_on_every_attempt(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    capture_server.fail(503, times=1)
    pauses: list[float] = []

    def short_real_sleep(seconds: float) -> None:
        pauses.append(seconds)
        time.sleep(0.02)  # long enough for a different millisecond in sent_at

    transport = HttpTransport(settings_for(capture_server), Stats(), sleep=short_real_sleep)
    assert transport.send(events_of(2), far())
    failed, accepted = capture_server.requests
    assert failed.status == 503 and accepted.status == 200
    assert failed.sent_at is not None and accepted.sent_at is not None
    first = datetime.fromisoformat(failed.sent_at.replace("Z", "+00:00"))
    second = datetime.fromisoformat(accepted.sent_at.replace("Z", "+00:00"))
    assert second > first, "sent_at must be stamped again for the retry"
    assert abs((datetime.now(UTC) - second).total_seconds()) < 5
    assert len(pauses) == 1


def test_backoff_is_exponential_and_bounded_by_max_retries(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    capture_server.fail(503)
    fake = FakeTime()
    stats = Stats()
    transport = HttpTransport(
        settings_for(capture_server, max_retries=6),
        stats,
        clock=fake.clock,
        sleep=fake.sleep,
        rand=lambda: 0.5,  # no jitter: the bare schedule
    )
    assert transport.send(events_of(4), fake.now + 1000) is False
    assert fake.sleeps == [1, 2, 4, 8, 16, 30]
    assert len(capture_server.requests) == 7
    snapshot = stats.snapshot()
    assert snapshot["retried"] == 6 * 4
    assert snapshot["dropped_retries_exhausted"] == 4
    assert snapshot["sent"] == 0


def test_jitter_stays_within_a_quarter_of_the_step(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    capture_server.fail(500, times=2)
    fake = FakeTime()
    transport = HttpTransport(
        settings_for(capture_server), Stats(), clock=fake.clock, sleep=fake.sleep, rand=lambda: 0.0
    )
    assert transport.send(events_of(1), fake.now + 1000)
    assert fake.sleeps == [0.75, 1.5]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried(
    capture_server: CaptureServer, settings_for: SettingsFor, status: int
):
    capture_server.fail(status, times=2)
    fake = FakeTime()
    stats = Stats()
    transport = HttpTransport(
        settings_for(capture_server), stats, clock=fake.clock, sleep=fake.sleep
    )
    events = events_of(3)
    assert transport.send(events, fake.now + 1000)
    assert [r.status for r in capture_server.requests] == [status, status, 200]
    assert capture_server.uuids() == [e["uuid"] for e in events]
    assert stats.snapshot()["retried"] == 6


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 415])
def test_other_client_errors_are_rejected_without_retry(
    capture_server: CaptureServer, settings_for: SettingsFor, status: int
):
    capture_server.fail(status, times=1)
    fake = FakeTime()
    stats = Stats()
    transport = HttpTransport(
        settings_for(capture_server), stats, clock=fake.clock, sleep=fake.sleep
    )
    assert transport.send(events_of(5), fake.now + 1000) is False
    assert len(capture_server.requests) == 1
    assert fake.sleeps == []
    assert stats.snapshot()["dropped_rejected"] == 5


def test_network_errors_are_retried_and_delivered_once(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    capture_server.drop_connections(times=2)
    fake = FakeTime()
    transport = HttpTransport(
        settings_for(capture_server), Stats(), clock=fake.clock, sleep=fake.sleep
    )
    events = events_of(3)
    assert transport.send(events, fake.now + 1000)
    assert sorted(capture_server.uuids()) == sorted(e["uuid"] for e in events)
    assert len(fake.sleeps) == 2


def test_unreachable_host_counts_retries_exhausted(settings_for: SettingsFor):
    with CaptureServer() as server:
        settings = settings_for(server, max_retries=2)
    # The server is gone: connections are refused.
    fake = FakeTime()
    stats = Stats()
    transport = HttpTransport(settings, stats, clock=fake.clock, sleep=fake.sleep)
    assert transport.send(events_of(2), fake.now + 1000) is False
    assert stats.snapshot()["dropped_retries_exhausted"] == 2
    assert len(fake.sleeps) == 2


def test_retry_after_is_honoured_on_the_server_clock(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    capture_server.rate_limit("1", times=1)
    # rand=0 makes our own backoff 0.75 s: only Retry-After can explain a longer wait.
    transport = HttpTransport(settings_for(capture_server), Stats(), rand=lambda: 0.0)
    assert transport.send(events_of(1), far())
    limited, accepted = capture_server.requests
    assert limited.status == 429 and accepted.status == 200
    assert accepted.at - limited.at >= 0.99


def test_retry_after_as_http_date_and_clamped(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    in_ten = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    capture_server.fail(429, times=1, retry_after=in_ten)
    capture_server.fail(503, times=1, retry_after="3600")
    fake = FakeTime()
    transport = HttpTransport(
        settings_for(capture_server), Stats(), clock=fake.clock, sleep=fake.sleep, rand=lambda: 0.0
    )
    assert transport.send(events_of(1), fake.now + 1000)
    date_wait, clamped = fake.sleeps
    assert 8.5 <= date_wait <= 10.0
    assert clamped == 30.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("2", 2.0), ("0.5", 0.5), ("-3", 0.0), ("soon", 0.0), (None, 0.0), ("99999", 30.0)],
)
def test_parse_retry_after(header: str | None, seconds: float) -> None:
    assert parse_retry_after(header) == seconds


def test_never_retries_past_the_deadline(capture_server: CaptureServer, settings_for: SettingsFor):
    capture_server.fail(503)
    fake = FakeTime()
    stats = Stats()
    transport = HttpTransport(
        settings_for(capture_server), stats, clock=fake.clock, sleep=fake.sleep, rand=lambda: 0.5
    )
    assert transport.send(events_of(2), fake.now + 2.5) is False
    # 1 s fits before the deadline; the next 2 s would end past it.
    assert fake.sleeps == [1.0]
    assert len(capture_server.requests) == 2
    assert stats.snapshot()["dropped_retries_exhausted"] == 2


def test_retry_after_beyond_the_deadline_gives_up_at_once(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    capture_server.rate_limit("20", times=1)
    fake = FakeTime()
    stats = Stats()
    transport = HttpTransport(
        settings_for(capture_server), stats, clock=fake.clock, sleep=fake.sleep
    )
    assert transport.send(events_of(1), fake.now + 5) is False
    assert fake.sleeps == []
    assert stats.snapshot()["dropped_retries_exhausted"] == 1


@FORMS
def test_a_413_batch_is_split_until_it_fits(
    capture_server: CaptureServer, settings_for: SettingsFor, form: str
):
    capture_server.max_body_bytes = 6_000
    stats = Stats()
    transport = HttpTransport(settings_for(capture_server, gzip=False), stats)
    events = events_of(16, payload="p" * 900)  # ~1 KB each: ~17 KB in one body

    assert transport.send(given(transport, events, form), far())

    assert 413 in [r.status for r in capture_server.requests]
    assert sorted(capture_server.uuids()) == sorted(e["uuid"] for e in events)
    assert all(r.body_bytes <= 6_000 for r in capture_server.requests if r.status == 200)
    assert stats.snapshot()["sent"] == 16
    assert stats.snapshot()["dropped"] == 0


@FORMS
def test_one_oversized_event_does_not_sink_its_batch(
    capture_server: CaptureServer, settings_for: SettingsFor, form: str
):
    capture_server.max_event_bytes = 4_000
    stats = Stats()
    transport = HttpTransport(settings_for(capture_server), stats)
    events = events_of(9, payload="small")
    events.insert(4, events_of(1, payload="x" * 10_000)[0])

    assert transport.send(given(transport, events, form), far()) is False

    expected = [e["uuid"] for e in events if len(e["properties"]["$ai_input"]) < 100]
    assert sorted(capture_server.uuids()) == sorted(expected)
    snapshot = stats.snapshot()
    assert snapshot["sent"] == 9
    assert snapshot["dropped_too_large"] == 1


def shrink_payload(event: dict[str, Any], budget: int) -> dict[str, Any] | None:
    """What the core's shrink does, roughly: truncate the content to fit the budget."""
    smaller = json.loads(json.dumps(event))
    overhead = len(json.dumps(event)) - len(event["properties"]["$ai_input"])
    keep = budget - overhead - 100
    if keep <= 0:
        return None
    smaller["properties"]["$ai_input"] = event["properties"]["$ai_input"][:keep] + "[truncated]"
    return smaller


@FORMS
def test_a_refused_single_event_is_shrunk_and_sent(
    capture_server: CaptureServer, settings_for: SettingsFor, form: str
):
    capture_server.max_event_bytes = 8_000
    calls: list[int] = []

    def shrink(event: dict[str, Any], budget: int) -> dict[str, Any] | None:
        calls.append(budget)
        return shrink_payload(event, budget)

    stats = Stats()
    transport = HttpTransport(settings_for(capture_server), stats, shrink=shrink)
    big = events_of(1, payload="y" * 12_000)[0]

    assert transport.send(given(transport, [big], form), far())

    [received] = capture_server.events
    assert received["uuid"] == big["uuid"]
    assert received["properties"]["$ai_input"].endswith("[truncated]")
    assert calls and calls[0] < len(json.dumps(big))
    assert stats.snapshot()["sent"] == 1


@FORMS
def test_a_shrink_that_cannot_help_counts_too_large(
    capture_server: CaptureServer, settings_for: SettingsFor, form: str
):
    capture_server.max_event_bytes = 3_000
    stats = Stats()
    transport = HttpTransport(settings_for(capture_server), stats, shrink=lambda e, b: None)
    assert transport.send(given(transport, events_of(1, payload="z" * 5_000), form), far()) is False
    assert stats.snapshot()["dropped_too_large"] == 1
    assert capture_server.event_count == 0


@FORMS
def test_an_event_over_max_event_bytes_is_shrunk_before_sending(
    capture_server: CaptureServer, settings_for: SettingsFor, form: str
):
    budgets: list[int] = []

    def shrink(event: dict[str, Any], budget: int) -> dict[str, Any] | None:
        budgets.append(budget)
        return shrink_payload(event, budget)

    settings = settings_for(capture_server, max_event_bytes=5_000)
    transport = HttpTransport(settings, Stats(), shrink=shrink)
    events = events_of(1, payload="w" * 20_000) + events_of(2)
    assert transport.send(given(transport, events, form), far())
    assert budgets == [5_000]
    # Shrunk client-side: the server never had to refuse anything.
    assert [r.status for r in capture_server.requests] == [200]
    assert capture_server.event_count == 3


@FORMS
def test_non_latin_text_is_measured_and_sent_as_utf8(
    capture_server: CaptureServer, settings_for: SettingsFor, form: str
):
    text = "日本語のテキストです。" * 200  # 6,600 bytes of UTF-8; 13,200 once \u-escaped
    budgets: list[int] = []

    def shrink(event: dict[str, Any], budget: int) -> dict[str, Any] | None:
        budgets.append(budget)
        return None

    settings = settings_for(capture_server, max_event_bytes=8_000)
    transport = HttpTransport(settings, Stats(), shrink=shrink)
    assert transport.send(given(transport, events_of(1, payload=text), form), far())
    assert budgets == [], "an event within budget in UTF-8 must not be shrunk"
    assert capture_server.events[0]["properties"]["$ai_input"] == text


@FORMS
def test_a_lone_surrogate_does_not_sink_the_batch(
    capture_server: CaptureServer, settings_for: SettingsFor, form: str
):
    events = events_of(3)
    events[1]["properties"]["$ai_input"] = "bad \ud800 text"
    stats = Stats()
    transport = HttpTransport(settings_for(capture_server), stats)
    assert transport.send(given(transport, events, form), far())
    assert capture_server.events[1]["properties"]["$ai_input"] == "bad \ufffd text"
    assert stats.snapshot()["sent"] == 3


@FORMS
def test_large_batches_are_split_under_five_mib(
    capture_server: CaptureServer, settings_for: SettingsFor, form: str
):
    settings = settings_for(capture_server, ai_endpoint=True)
    transport = HttpTransport(settings, Stats())
    events = events_of(6, payload="q" * 1_200_000)  # 7.2 MB: allowed per event on the AI lane
    assert transport.send(given(transport, events, form), far())
    requests = capture_server.requests
    assert len(requests) == 2
    assert all(r.path == "/i/v0/ai/batch/" and r.events <= 4 for r in requests)
    assert capture_server.event_count == 6


@FORMS
def test_ai_endpoint_carries_ai_events_and_batch_the_rest(
    capture_server: CaptureServer, settings_for: SettingsFor, form: str
):
    transport = HttpTransport(settings_for(capture_server, ai_endpoint=True), Stats())
    ai = events_of(3)
    custom = events_of(2, name="signed_up")
    assert transport.send(given(transport, ai[:2] + custom + ai[2:], form), far())
    by_path = {r.path: r.events for r in capture_server.requests}
    # A non-AI event on the AI lane would make PostHog refuse the whole request.
    assert by_path == {"/i/v0/ai/batch/": 3, "/batch/": 2}


@FORMS
def test_ai_endpoint_404_falls_back_to_batch_for_good(
    capture_server: CaptureServer,
    settings_for: SettingsFor,
    form: str,
    caplog: pytest.LogCaptureFixture,
):
    capture_server.ai_endpoint_missing = True
    stats = Stats()
    transport = HttpTransport(settings_for(capture_server, ai_endpoint=True), stats)
    with caplog.at_level(logging.WARNING, logger="posthog_llm_trace"):
        assert transport.send(given(transport, events_of(2), form), far())
        assert transport.send(given(transport, events_of(2), form), far())
    assert [(r.path, r.status) for r in capture_server.requests] == [
        ("/i/v0/ai/batch/", 404),
        ("/batch/", 200),
        ("/batch/", 200),
    ]
    assert capture_server.event_count == 4
    assert stats.snapshot()["retried"] == 0
    warnings = [r for r in caplog.records if "AI endpoint" in r.getMessage()]
    assert len(warnings) == 1


def test_abort_cuts_a_backoff_short(capture_server: CaptureServer, settings_for: SettingsFor):
    capture_server.fail(503)
    stats = Stats()
    transport = HttpTransport(settings_for(capture_server), stats)
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(transport.send(events_of(4), far())))
    started = time.monotonic()
    worker.start()
    assert capture_server.wait_for_requests(1, timeout=5)
    transport.abort("shutdown")  # the transport is now sleeping its first 1 s backoff
    worker.join(5)
    assert result == [False]
    assert time.monotonic() - started < 3
    assert stats.snapshot()["dropped_shutdown"] == 4


def test_abort_interrupts_a_request_to_a_hanging_server(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    capture_server.hang()
    stats = Stats()
    transport = HttpTransport(settings_for(capture_server, timeout=30), stats)
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(transport.send(events_of(3), far())))
    worker.start()
    assert capture_server.wait_for_requests(1, timeout=5)
    started = time.monotonic()
    transport.abort("at_exit")
    worker.join(5)
    assert result == [False]
    assert time.monotonic() - started < 3
    assert stats.snapshot()["dropped_at_exit"] == 3


def test_http_proxy_from_the_environment(
    capture_server: CaptureServer, settings_for: SettingsFor, monkeypatch: pytest.MonkeyPatch
):
    # The capture server stands in for the proxy: it receives absolute-URI requests.
    monkeypatch.setenv("HTTP_PROXY", capture_server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    settings = settings_for(capture_server, host="http://posthog.example.invalid")
    transport = HttpTransport(settings, Stats())
    assert transport.send(events_of(2), far())
    assert capture_server.event_count == 2


def test_the_api_key_never_reaches_logs_or_reprs(
    capture_server: CaptureServer, settings_for: SettingsFor, caplog: pytest.LogCaptureFixture
):
    key = "phc_SECRET_do_not_log_4242"
    settings = settings_for(capture_server, api_key=key, max_retries=1)
    stats = Stats()
    stats.LOG_EVERY = 0.0  # log every drop, so that every message is seen
    fake = FakeTime()
    transport = HttpTransport(settings, stats, clock=fake.clock, sleep=fake.sleep)
    with caplog.at_level(logging.DEBUG, logger="posthog_llm_trace"):
        # A server that echoes the key in its error body, then every other failure mode.
        capture_server.fail(400, times=1, body=json.dumps({"error": f"bad key {key}"}).encode())
        transport.send(events_of(1), fake.now + 100)
        capture_server.fail(503, times=2)
        transport.send(events_of(1), fake.now + 100)
        capture_server.max_event_bytes = 500
        transport.send(events_of(1, payload="k" * 2_000), fake.now + 100)
        capture_server.drop_connections(times=2)
        transport.send(events_of(1), fake.now + 100)
        transport.send([{"event": "x", "uuid": "u", "properties": {"bad": object()}}], fake.now)
        transport.abort()
        transport.send(events_of(1), fake.now + 100)
    assert stats.snapshot()["dropped"] >= 5
    assert "bad key" in caplog.text, "the server's reason is worth logging, redacted"
    assert key not in caplog.text
    assert key not in repr(transport)
    assert key not in repr(settings)


def test_an_encoded_event_is_shrunk_with_its_floats_as_they_were_written(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    """An encoded event over the limit is decoded for the shrink: its floats come back as the
    ReprFloats they were, so the smaller event encodes them as the original did."""
    from posthog_llm_trace.jsonenc import ReprFloat, dumps_stdlib, json_float

    seen: list[Any] = []

    def shrink(event: dict[str, Any], budget: int) -> dict[str, Any] | None:
        seen.append(event["properties"]["$ai_latency"])
        return shrink_payload(event, budget)

    transport = HttpTransport(settings_for(capture_server, max_event_bytes=5_000), Stats(), shrink)
    [big] = events_of(1, payload="w" * 20_000)
    big["properties"]["$ai_latency"] = json_float(3.2e-06)
    [encoded] = transport.encode([big])
    assert encoded == ("$ai_generation", dumps_stdlib(big))

    assert transport.send([encoded], far())
    assert [type(v) for v in seen] == [ReprFloat] and seen == [3.2e-06]
    [received] = capture_server.events
    assert received["properties"]["$ai_input"].endswith("[truncated]")
    assert received["properties"]["$ai_latency"] == 3.2e-06


def test_what_cannot_be_encoded_stays_a_dict_and_is_counted_at_send(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    stats = Stats()
    transport = HttpTransport(settings_for(capture_server), stats)
    events = events_of(3)
    events[1]["properties"]["bad"] = object()
    encoded = transport.encode(events)
    assert [type(e) for e in encoded] == [tuple, dict, tuple]

    assert transport.send(encoded, far()) is False
    assert sorted(capture_server.uuids()) == sorted([events[0]["uuid"], events[2]["uuid"]])
    assert stats.snapshot()["sent"] == 2 and stats.snapshot()["dropped_invalid"] == 1
