"""A wrong deployment setting under real servers: the site answers as if the package were not
installed, and the server's log names the variable once, at start-up, before any request."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from capture_server import CaptureServer
from server_support import serve, server_env

CASES = [
    ("POSTHOG_LLM_TRACE_FLUSH_AT", "abc", "POSTHOG_LLM_TRACE_FLUSH_AT must be a positive integer"),
    ("POSTHOG_HOST", "eu.i.posthog.com", "POSTHOG_HOST must be a URL"),
    ("POSTHOG_LLM_TRACE_SAMPLE_RATE", "50%", "POSTHOG_LLM_TRACE_SAMPLE_RATE must be a number"),
    (
        "POSTHOG_LLM_TRACE_PRIVACY_MOD",
        "true",
        "POSTHOG_LLM_TRACE_PRIVACY_MOD is not a posthog-llm-trace setting; "
        "did you mean POSTHOG_LLM_TRACE_PRIVACY_MODE?",
    ),
]


@pytest.mark.parametrize("server", ["uvicorn-django", "gunicorn-sync-django"])
@pytest.mark.parametrize(("variable", "value", "message"), CASES, ids=[c[0] for c in CASES])
def test_a_wrong_environment_variable_never_reaches_a_request(
    server: str, variable: str, value: str, message: str, tmp_path: Path
) -> None:
    with CaptureServer() as capture:
        env = server_env(capture.url, **{variable: value})
        with serve(server, tmp_path, env) as served:
            before_requests = served.output
            for i in range(3):
                assert served.get(i) == 200
            served.stop(signal.SIGTERM)
        assert capture.event_count == 0  # export stays off until it is fixed

    assert message in before_requests  # logged at start-up, where the server shows it
    lines = [line for line in served.output.splitlines() if message in line]
    assert len(lines) == 1, served.output
    assert "nothing is exported until this is fixed" in lines[0]
    assert "phc_test" not in served.output


def test_flask_under_gunicorn_with_a_wrong_variable_serves_untraced(tmp_path: Path) -> None:
    with CaptureServer() as capture:
        env = server_env(capture.url, POSTHOG_LLM_TRACE_PRIVACY_MOD="true")
        with serve("gunicorn-gthread-flask", tmp_path, env) as served:
            for i in range(3):
                assert served.get(i) == 200
            served.stop(signal.SIGTERM)
        assert capture.event_count == 0
    lines = [line for line in served.output.splitlines() if "PRIVACY_MOD " in line]
    assert len(lines) == 1 and "did you mean POSTHOG_LLM_TRACE_PRIVACY_MODE?" in lines[0]
