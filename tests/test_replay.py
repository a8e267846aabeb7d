"""Replaying a JSON-lines file of events (the ``file`` export's output) into PostHog."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from capture_server import CaptureServer, make_items, render_simple

from posthog_llm_trace.replay import replay
from posthog_llm_trace.settings import Settings
from posthog_llm_trace.stats import Stats

SettingsFor = Callable[..., Settings]


def write_lines(path: Path, lines: list[Any]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def dev_sink_events(n: int) -> list[dict[str, Any]]:
    return [e for item in make_items(n, payload="a prompt") for e in render_simple(item)]


def test_replays_every_event_in_batches_of_flush_at(
    capture_server: CaptureServer, settings_for: SettingsFor, tmp_path: Path
):
    events = dev_sink_events(25)
    path = tmp_path / "events.jsonl"
    write_lines(path, events)

    snapshot = replay(str(path), settings_for(capture_server, flush_at=10), Stats())

    assert capture_server.events == events  # unchanged: uuid, timestamp, properties
    assert [r.events for r in capture_server.requests] == [10, 10, 5]
    assert snapshot["sent"] == 25
    assert snapshot["queued"] == 25
    assert snapshot["dropped"] == 0


def test_bad_lines_are_skipped_and_counted(
    capture_server: CaptureServer, settings_for: SettingsFor, tmp_path: Path
):
    good = dev_sink_events(4)
    path = tmp_path / "events.jsonl"
    write_lines(
        path,
        [
            good[0],
            "{not json",
            [1, 2, 3],
            {"distinct_id": "u", "properties": {}},  # no event name
            good[1],
            {"event": "$ai_span", "properties": {}},  # no distinct id: PostHog would drop it
            {"event": "$ai_span", "distinct_id": "u", "properties": "nope"},
            "",
            good[2],
            good[3],
        ],
    )

    snapshot = replay(str(path), settings_for(capture_server), Stats())

    assert capture_server.uuids() == [e["uuid"] for e in good]
    assert snapshot["dropped_invalid"] == 5
    assert snapshot["sent"] == 4


def test_replay_survives_an_outage(
    capture_server: CaptureServer, settings_for: SettingsFor, tmp_path: Path
):
    capture_server.fail(503, times=1)
    events = dev_sink_events(6)
    path = tmp_path / "events.jsonl"
    write_lines(path, events)

    snapshot = replay(str(path), settings_for(capture_server, flush_at=3), Stats())

    uuids = capture_server.uuids()
    assert sorted(uuids) == sorted(e["uuid"] for e in events)
    assert len(uuids) == len(set(uuids))
    assert snapshot["retried"] == 3
    assert snapshot["dropped"] == 0


def test_lines_without_uuid_get_the_same_uuid_on_every_replay(
    capture_server: CaptureServer, settings_for: SettingsFor, tmp_path: Path
):
    path = tmp_path / "events.jsonl"
    write_lines(
        path,
        [
            {"event": "$ai_trace", "distinct_id": "u1", "properties": {"$ai_trace_id": "t1"}},
            {"event": "$ai_trace", "distinct_id": "u1", "properties": {"$ai_trace_id": "t2"}},
        ],
    )
    settings = settings_for(capture_server)
    replay(str(path), settings, Stats())
    replay(str(path), settings, Stats())
    first, second, again_first, again_second = capture_server.uuids()
    assert first != second
    assert (first, second) == (again_first, again_second)


def test_rejections_are_counted_not_raised(
    capture_server: CaptureServer, settings_for: SettingsFor, tmp_path: Path
):
    capture_server.fail(401)
    path = tmp_path / "events.jsonl"
    write_lines(path, dev_sink_events(3))
    snapshot = replay(str(path), settings_for(capture_server), Stats())
    assert snapshot["dropped_rejected"] == 3
    assert snapshot["sent"] == 0
