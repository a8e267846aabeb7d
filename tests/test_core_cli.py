"""The command line: ``python -m posthog_llm_trace``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from capture_server import CaptureServer
from core_support import make_client

from posthog_llm_trace import generation, tool, trace
from posthog_llm_trace.settings import settings_table


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    # The developer's POSTHOG_* variables must not leak into the command.
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTHOG")}
    return subprocess.run(
        [sys.executable, "-m", "posthog_llm_trace", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_settings_table_prints_the_generated_table():
    result = run_cli("settings-table")
    assert result.returncode == 0, result.stderr
    assert result.stdout == settings_table() + "\n"


def write_events(path: Path) -> list[str]:
    """Record a trace with the ``file`` export, as a developer would; returns the uuids."""
    client = make_client(export="file", export_file=str(path))
    with trace("nightly", client=client, distinct_id="user-1"):
        with generation("g", model="gpt-4o-mini", provider="openai", input="hi") as g:
            g.set_output("hello")
        with tool("t"):
            pass
    client.shutdown(1.0)
    return [json.loads(line)["uuid"] for line in path.read_text().splitlines()]


def test_replay_sends_a_file_written_by_the_file_export(
    capture_server: CaptureServer, tmp_path: Path
):
    path = tmp_path / "events.jsonl"
    uuids = write_events(path)
    assert len(uuids) == 3

    result = run_cli("replay", str(path), "--host", capture_server.url, "--api-key", "phc_test")

    assert result.returncode == 0, result.stderr
    assert "sent: 3" in result.stdout.splitlines()
    assert "dropped: 0" in result.stdout.splitlines()
    assert capture_server.uuids() == uuids
    assert {r.api_key for r in capture_server.requests} == {"phc_test"}
    assert "phc_test" not in result.stdout + result.stderr


def test_replay_exits_non_zero_when_events_were_dropped(
    capture_server: CaptureServer, tmp_path: Path
):
    path = tmp_path / "events.jsonl"
    write_events(path)
    capture_server.fail(400)  # PostHog refuses the batch: not retryable

    result = run_cli("replay", str(path), "--host", capture_server.url, "--api-key", "phc_test")

    assert result.returncode == 1
    assert "dropped: 3" in result.stdout.splitlines()


def test_replay_without_an_api_key_is_a_usage_error(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    path.write_text("")
    result = run_cli("replay", str(path))
    assert result.returncode == 2
    assert "no API key" in result.stderr


def test_the_console_script_entry_point_is_main():
    from posthog_llm_trace.__main__ import main

    assert main(["settings-table"]) == 0
