"""Deployment faults of the export path: memory bounded in bytes, trimming instead of dropping,
counters and logs that agree, no credential in any message, hostile values that never raise.

Each test reproduces a fault found by deploying the package (PostHog down with 1 MB prompts, a
self-hosted PostHog without the AI lane, huge custom properties, drops at the end of a rate-limit
window, ...) against the real exporter, the real HTTP transport and the loopback capture server.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import tracemalloc
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from capture_server import CaptureServer, SimpleItem, render_simple
from core_support import make_client, props

from posthog_llm_trace import Client, ConfigurationError, generation, trace
from posthog_llm_trace import messages as messages_module
from posthog_llm_trace.export.http import HttpTransport
from posthog_llm_trace.export.thread import BatchExporter
from posthog_llm_trace.messages import TRUNCATION_MARKER, json_size, shrink_event
from posthog_llm_trace.replay import replay
from posthog_llm_trace.settings import Layer, Settings, build_settings
from posthog_llm_trace.stats import Stats
from posthog_llm_trace.testing import capture_events
from posthog_llm_trace.web import clean_header

ROOT = Path(__file__).resolve().parent.parent
SettingsFor = Callable[..., Settings]
MARKER_START = TRUNCATION_MARKER.split("{")[0]


def closed_port_url() -> str:
    """A loopback URL where nothing listens: PostHog down, connections refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def http_client(settings: Settings) -> Client:
    return Client(settings)


# --- memory bounded in bytes ----------------------------------------------------------------


def test_memory_is_bounded_in_bytes_when_posthog_is_down(caplog: pytest.LogCaptureFixture):
    budget = 8 * 1024 * 1024
    settings = build_settings(
        Layer(
            {
                "api_key": "phc_test",
                "host": closed_port_url(),
                "max_queue_bytes": budget,
                "flush_at": 2,
                "flush_interval": 0.05,
                "max_retries": 10,
            }
        ),
        environ={},
    )
    client = http_client(settings)
    offered = 100
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for i in range(offered):
            prompt = f"{i:05d}" + "x" * 1_000_000  # a fresh 1 MB prompt per request
            with trace("chat", client=client), generation("g", model="m", provider="p") as gen:
                gen.set_input([{"role": "user", "content": prompt}])
                gen.set_output("ok")
            del prompt
        time.sleep(1.0)  # the workers render, serialise and retry what they took
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
        client.shutdown(1.0)
    counts = client.stats.snapshot()
    # Without a byte bound all 100 MB are held (max_queue_size is 10,000 events). With it: the
    # budget, plus what each of the two workers builds from the batch it holds (a quarter of
    # the budget: its events, their JSON, a trimmed copy), about 2.6 times the budget here.
    assert peak < 4 * budget, f"peak {peak / 2**20:.1f} MiB for a {budget / 2**20:.0f} MiB budget"
    assert counts["dropped_queue_bytes"] > 0
    assert counts["queued"] == 2 * offered
    assert counts["queued"] == counts["sent"] + counts["dropped"]
    assert any("queue_bytes" in r.getMessage() for r in caplog.records)


def test_a_trace_larger_than_the_whole_budget_still_goes_when_nothing_else_is_held(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    client = http_client(settings_for(capture_server, max_queue_bytes=100_000))
    with trace("chat", client=client), generation("g", model="m", provider="p") as gen:
        gen.set_input("y" * 300_000)
    assert client.flush(10.0) is True
    assert capture_server.event_count == 2
    assert client.stats.snapshot()["dropped"] == 0
    client.shutdown(1.0)


@dataclass(frozen=True)
class SizedItem(SimpleItem):
    """A SimpleItem that tells its size, as a TraceRecord does."""

    size: int = 0

    @property
    def approx_bytes(self) -> int:
        return self.size


def test_batches_being_sent_count_against_the_byte_budget_until_they_are_done(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    capture_server.hang()  # the first batch stays in flight
    settings = settings_for(
        capture_server, max_queue_bytes=100_000, flush_at=1, flush_interval=0.05, timeout=30
    )
    stats = Stats()
    exporter = BatchExporter(render_simple, HttpTransport(settings, stats), settings, stats)
    try:
        first = SizedItem((str(uuid.uuid4()),), size=30_000)
        assert exporter.submit(first) is True
        deadline = time.monotonic() + 10
        while not capture_server.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # the worker holds it, waiting for an answer
        items = [SizedItem((str(uuid.uuid4()),), size=30_000) for _ in range(5)]
        accepted = [exporter.submit(item) for item in items]
        # 30 kB in flight + 2 x 30 kB queued = 90 kB; a third would pass 100 kB.
        assert accepted == [True, True, False, False, False]
        assert stats.snapshot()["dropped_queue_bytes"] == 3
        capture_server.release()
        assert exporter.flush(15.0) is True
        assert exporter._bytes == 0  # everything held was given back
        assert exporter.submit(SizedItem((str(uuid.uuid4()),), size=90_000)) is True
    finally:
        exporter.shutdown(1.0)


# --- trimming instead of dropping -----------------------------------------------------------


def test_a_batch_refused_by_a_missing_ai_lane_is_trimmed_for_batch(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    capture_server.ai_endpoint_missing = True  # self-hosted PostHog: /i/v0/ai/batch/ is a 404
    client = http_client(settings_for(capture_server, ai_endpoint=True))
    with trace("chat", client=client):
        with generation("big", model="m", provider="p") as gen:
            # 2.4 MB: over /batch/'s limit, within the AI lane's 8 MiB.
            gen.set_input([{"role": "user", "content": "a" * 800_000} for _ in range(3)])
        with generation("huge", model="m", provider="p") as gen:
            gen.set_input("b" * 8_300_000)
    assert client.flush(20.0) is True
    counts = client.stats.snapshot()
    assert counts["dropped"] == 0, counts
    generations = [e for e in capture_server.events if e["event"] == "$ai_generation"]
    assert len(generations) == 2
    for event in generations:
        assert json_size(event) <= capture_server.max_event_bytes
        assert MARKER_START in json.dumps(event["properties"]["$ai_input"])
    client.shutdown(1.0)


def test_the_ai_lane_keeps_strings_up_to_its_own_limit(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    client = http_client(settings_for(capture_server, ai_endpoint=True))
    with trace("chat", client=client), generation("g", model="m", provider="p") as gen:
        gen.set_input("c" * 3_000_000)  # 3 MB: the AI lane takes it whole
    assert client.flush(20.0) is True
    [event] = [e for e in capture_server.events if e["event"] == "$ai_generation"]
    assert event["properties"]["$ai_input"] == [{"role": "user", "content": "c" * 3_000_000}]
    client.shutdown(1.0)


def test_huge_dollar_properties_and_huge_keys_are_shortened_not_dropped(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    client = http_client(settings_for(capture_server))
    long_key = "k" * 2_000_000
    with trace("chat", client=client) as t, generation("g", model="m", provider="p") as gen:
        t.set_property("$blob", "d" * 2_000_000)
        gen.set_property(long_key, 1)
        gen.set_input("hello")
    assert client.flush(20.0) is True
    counts = client.stats.snapshot()
    assert counts["dropped"] == 0, counts
    [event] = [e for e in capture_server.events if e["event"] == "$ai_generation"]
    assert json_size(event) <= client.settings.max_event_bytes
    assert event["properties"]["$blob"].startswith("ddd")
    assert MARKER_START in event["properties"]["$blob"]
    [cut_key] = [k for k in event["properties"] if k.startswith("kkk")]
    assert len(cut_key) < 1000
    client.shutdown(1.0)


class _CountingJson:
    """Stands in for the json module in messages.py and counts the bytes it serialises."""

    def __init__(self) -> None:
        self.serialised = 0

    def dumps(self, value: Any, **kwargs: Any) -> str:
        text = json.dumps(value, **kwargs)
        self.serialised += len(text)
        return text

    def loads(self, text: str) -> Any:
        return json.loads(text)


@pytest.mark.parametrize(
    "properties",
    [
        {f"prop_{i}": f"value number {i}" for i in range(8000)},  # many small properties
        {f"prop_{i}": "v" * 300 for i in range(8000)},  # many medium strings
        {"$ai_input": [{"role": "user", "content": "w" * 100} for _ in range(20_000)]},
    ],
    ids=["small-properties", "medium-strings", "many-messages"],
)
def test_trimming_is_linear_in_the_size_of_the_event(
    monkeypatch: pytest.MonkeyPatch, properties: dict[str, Any]
):
    event = {"event": "$ai_generation", "distinct_id": "u", "properties": dict(properties)}
    event["properties"]["$ai_trace_id"] = "trace-1"
    size = json_size(event)
    counting = _CountingJson()
    monkeypatch.setattr(messages_module, "json", counting)
    smaller = shrink_event(event, 100_000)
    assert smaller is not None
    assert json_size(smaller) <= 100_000
    assert smaller["properties"]["$ai_trace_id"] == "trace-1"
    # A bounded number of passes over the event, whatever its number of properties (the
    # quadratic version serialised the whole event again after every change: 8,000 times).
    assert counting.serialised <= 12 * size


# --- counters and logs ----------------------------------------------------------------------


def drop_log_counts(records: list[logging.LogRecord], reason: str) -> int:
    total = 0
    for record in records:
        message = record.getMessage()
        if "dropped events (" in message:
            total += sum(int(n) for n in re.findall(rf"(\d+) {reason}\b", message))
    return total


def test_drops_inside_the_log_window_are_logged_when_it_ends(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="posthog_llm_trace")
    stats = Stats()
    stats.LOG_EVERY = 0.3
    for _ in range(6):
        stats.dropped("rejected", 1, "HTTP 400")
    assert drop_log_counts(caplog.records, "rejected") == 1  # the first, at once
    deadline = time.monotonic() + 10
    while drop_log_counts(caplog.records, "rejected") < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    # The five later drops are logged once the window ends, though no drop follows them.
    assert drop_log_counts(caplog.records, "rejected") == 6
    time.sleep(0.5)
    assert drop_log_counts(caplog.records, "rejected") == 6  # and only once


def test_a_streamed_generation_is_queued_once_per_event(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    client = http_client(settings_for(capture_server))  # chunk_spans off: no chunk events
    with trace("chat", client=client), generation("g", model="m", provider="p") as gen:
        for piece in ("Hel", "lo"):
            gen.chunk(piece, kind="reasoning")
        for piece in (" wor", "ld"):
            gen.chunk(piece)
    assert client.flush(10.0) is True
    counts = client.stats.snapshot()
    assert capture_server.event_count == 2
    assert counts["queued"] == counts["sent"] == 2, counts
    client.shutdown(1.0)


def test_chunk_spans_are_counted_as_the_events_they_are(
    capture_server: CaptureServer, settings_for: SettingsFor
):
    client = http_client(settings_for(capture_server, chunk_spans=True))
    with trace("chat", client=client), generation("g", model="m", provider="p") as gen:
        gen.chunk("think", kind="reasoning")
        gen.chunk("answer")
    assert client.flush(10.0) is True
    counts = client.stats.snapshot()
    assert capture_server.event_count == 4  # trace, generation, two chunk spans
    assert counts["queued"] == counts["sent"] == 4, counts
    client.shutdown(1.0)


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
        "api_key": "phc_test", "host": sys.argv[1], "flush_at": 2, "flush_interval": 60,
        "shutdown_timeout": 1.0, "timeout": 30,
    }), environ={})
    stats = Stats()
    exporter = BatchExporter(render_simple, HttpTransport(settings, stats), settings, stats)
    for item in make_items(int(sys.argv[2])):
        exporter.submit(item)
    # No flush, no shutdown: the atexit hook must do it (two batches in flight, one queued).
    """
)


def test_the_exit_drop_is_logged_once_with_one_count(capture_server: CaptureServer, tmp_path):
    capture_server.hang()
    script = tmp_path / "exit_drop.py"
    script.write_text(EXIT_SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])
    done = subprocess.run(
        [sys.executable, str(script), capture_server.url, "5"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "exit" in line or "at_exit" in line]
    assert lines == [
        "WARNING:posthog_llm_trace:posthog-llm-trace: 5 events were not delivered at exit "
        "(shutdown_timeout=1.0 s ran out)"
    ], done.stderr


def test_replay_logs_every_invalid_line_its_stats_count(
    capture_server: CaptureServer, settings_for: SettingsFor, tmp_path: Path, caplog
):
    caplog.set_level(logging.WARNING, logger="posthog_llm_trace")
    good = {"event": "$ai_trace", "distinct_id": "u", "properties": {}, "uuid": "u-1"}
    path = tmp_path / "events.jsonl"
    path.write_text("not json\n" + json.dumps(good) + "\n[1, 2]\n")
    counts = replay(str(path), settings_for(capture_server), Stats())
    assert counts["dropped_invalid"] == 2
    assert drop_log_counts(caplog.records, "invalid") == 2


# --- secrets and hostile values -------------------------------------------------------------


def test_credentials_in_the_host_url_never_appear(
    capture_server: CaptureServer, settings_for: SettingsFor, caplog
):
    caplog.set_level(logging.WARNING, logger="posthog_llm_trace")
    host = capture_server.url.replace("http://", "http://alice:s3cr3t-pw@")
    settings = settings_for(capture_server, host=host, ai_endpoint=True)
    client = http_client(settings)
    capture_server.ai_endpoint_missing = True  # a warning naming the host
    capture_server.fail(400)  # and a drop naming it
    with trace("chat", client=client), generation("g", model="m", provider="p"):
        pass
    client.flush(10.0)
    exporter = client.exporter
    texts = [repr(settings), repr(client), repr(exporter), str(settings)]
    texts += [r.getMessage() for r in caplog.records]
    assert client.stats.snapshot()["dropped_rejected"] >= 1
    assert any("***@127.0.0.1" in text for text in texts)
    assert not [text for text in texts if "s3cr3t" in text or "alice" in text]
    client.shutdown(1.0)


@pytest.mark.parametrize("value", ["phc_Zx81kLmQ02pRtY7wq9eN3vB", "ftp://bob:hunter22@example.com"])
def test_a_refused_host_is_not_echoed_when_it_may_be_a_credential(value: str):
    with pytest.raises(ConfigurationError) as caught:
        build_settings(Layer({"host": value}), environ={})
    message = str(caught.value)
    assert "host" in message
    assert "Zx81kLmQ02pRtY7wq9eN3vB" not in message
    assert "hunter22" not in message


def test_a_bare_host_name_is_still_shown_in_the_error():
    with pytest.raises(ConfigurationError, match=r"eu\.i\.posthog\.com"):
        build_settings(Layer({"host": "eu.i.posthog.com"}), environ={})


def test_a_key_echoed_by_the_server_is_redacted_across_the_snippet_boundary(
    capture_server: CaptureServer, settings_for: SettingsFor, caplog
):
    caplog.set_level(logging.WARNING, logger="posthog_llm_trace")
    key = "phc_" + "Q7" * 20
    for offset in (280, 296):  # the key straddles the 300th character of the body
        capture_server.fail(400, times=1, body=b"e" * offset + key.encode() + b" is invalid")
        stats = Stats()
        stats.LOG_EVERY = 0.0
        transport = HttpTransport(settings_for(capture_server, api_key=key), stats)
        event = {"event": "$ai_trace", "distinct_id": "u", "properties": {}, "uuid": "x"}
        assert transport.send([event], time.monotonic() + 5) is False
        transport.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP 400" in logged
    assert key[:8] not in logged


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    __repr__ = __str__


def test_set_error_with_an_object_whose_str_raises_does_not_raise():
    with capture_events() as events, trace("t", client=make_client()) as t:
        with generation("g", model="m", provider="p") as gen:
            gen.set_error(_Unprintable())  # type: ignore[arg-type]
        t.set_error(_Unprintable())  # type: ignore[arg-type]
    generation_event = events.named("$ai_generation")[0]
    assert props(generation_event)["$ai_is_error"] is True
    assert props(events.named("$ai_trace")[0])["$ai_is_error"] is True


class ArrayLike:
    """Behaves like a numpy array: no truth value, no JSON form, a tolist()."""

    def __init__(self, items: list[Any]) -> None:
        self._items = items

    def __bool__(self) -> bool:
        raise ValueError("The truth value of an array with more than one element is ambiguous")

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Any:
        return iter(self._items)

    def tolist(self) -> list[Any]:
        return list(self._items)


def test_an_array_as_tools_keeps_the_generation():
    tools = ArrayLike([{"name": "lookup", "description": "find", "parameters": {}}])
    with (
        capture_events() as events,
        trace("t", client=make_client()),
        generation("g", model="m", provider="p", tools=tools) as gen,
    ):
        gen.set_input("hi")
    [event] = events.named("$ai_generation")
    function = {"name": "lookup", "description": "find", "parameters": {}}
    assert props(event)["$ai_tools"] == [{"type": "function", "function": function}]
    assert props(event)["$ai_input"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("char", ["\x85", "\x9b", "\u2028", "\u2029", "\x00", "\x1b"])
def test_header_cleaning_removes_c1_controls_and_line_separators(char: str):
    assert clean_header(f"sess{char}ion-1") == "session-1"


def test_a_hostile_session_header_does_not_reach_session_id():
    from flask import Flask

    from posthog_llm_trace.flask import LLMTrace

    app = Flask(__name__)
    app.config["POSTHOG_LLM_TRACE"] = {"export": "off"}
    LLMTrace(app)

    @app.get("/")
    def index() -> str:
        with generation("g", model="m", provider="p"):
            pass
        return "ok"

    with capture_events() as events:
        app.test_client().get("/", headers={"X-POSTHOG-SESSION-ID": "abc\u2028def\x85"})
    [event] = events.named("$ai_generation")
    assert props(event)["$session_id"] == "abcdef"


def test_the_size_estimate_sees_prompts_wherever_they_sit():
    from pydantic import BaseModel

    from posthog_llm_trace.spans import TraceRecord

    class Message(BaseModel):
        role: str
        content: str

    seen: list[TraceRecord] = []

    class Recording(Client):
        def submit(self, record: TraceRecord) -> None:
            seen.append(record)

    client = Recording(build_settings(Layer({"export": "memory"}), environ={}))
    big = "z" * 1_000_000
    with trace("t", client=client) as t:
        t.set_property("context", {"documents": [{"text": big}]})
        with generation("g", model="m", provider="p") as gen:
            gen.set_input([Message(role="user", content=big)])  # an SDK object
            gen.chunk(big[:500_000])
        with generation("h", model="m", provider="p", tools=[{"name": "x", "doc": big}]):
            pass
    [record] = seen
    # context on three events (3 MB), the prompt, the streamed text (twice), the tools.
    assert 6_000_000 <= record.approx_bytes <= 6_200_000
