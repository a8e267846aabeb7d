"""Stopping real servers: what was recorded before SIGTERM or SIGINT reaches PostHog.

Each test starts a real uvicorn or gunicorn process serving the Django or the Flask test app
(tests/server_sites.py) against the loopback capture server, makes a few requests that record a
generation and a tool call, then stops the server the way docker, systemd and Kubernetes do. The
batches are far from due when the signal arrives (``flush_at`` 1000, ``flush_interval`` 60 s), so
only the stop can send them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
import pytest
from capture_server import CaptureServer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REQUESTS = 5
EVENTS_PER_REQUEST = 3  # $ai_generation, the tool's $ai_span, $ai_trace

DJANGO_PATH = "/api/v1/chat/{i}/"
FLASK_PATH = "/chat/{i}"

# No control socket: its default path is shared by every gunicorn of the machine.
GUNICORN = [str(BIN / "gunicorn"), "-b", "127.0.0.1:0", "-w", "1", "--no-control-socket"]
SERVERS = {
    "uvicorn-django": ([str(BIN / "uvicorn"), "server_sites:django_asgi", "--port", "0"], DJANGO_PATH),
    "gunicorn-sync-django": (
        [*GUNICORN, "server_sites:django_wsgi"],
        DJANGO_PATH,
    ),
    "gunicorn-gthread-flask": (
        [
            *GUNICORN,
            *("-k", "gthread", "--threads", "4"),
            "server_sites:flask_wsgi",
        ],
        FLASK_PATH,
    ),
    "gunicorn-uvicorn-worker-django": (
        [
            *GUNICORN,
            *("-k", "uvicorn.workers.UvicornWorker"),
            "server_sites:django_asgi",
        ],
        DJANGO_PATH,
    ),
    "gunicorn-uvicorn-worker-preload-django": (
        [
            *GUNICORN,
            *("-k", "uvicorn.workers.UvicornWorker", "--preload"),
            "server_sites:django_asgi",
        ],
        DJANGO_PATH,
    ),
}

_LISTENING = re.compile(rb"(?:running on|Listening at:) http://127\.0\.0\.1:(\d+)")


class Served:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, port: int, path: str) -> None:
        self.process = process
        self.log = log
        self.port = port
        self.path = path

    def get(self, i: int) -> int:
        url = f"http://127.0.0.1:{self.port}{self.path.format(i=i)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
            return int(response.status)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _env(host: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTHOG_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
        POSTHOG_API_KEY="phc_test",
        POSTHOG_HOST=host,
        POSTHOG_LLM_TRACE_FLUSH_AT="1000",
        POSTHOG_LLM_TRACE_FLUSH_INTERVAL="60",
        POSTHOG_LLM_TRACE_SHUTDOWN_TIMEOUT="5",
        POSTHOG_LLM_TRACE_INSTRUMENT="",
    )
    env.update(extra)
    return env


@contextmanager
def serve(name: str, tmp_path: Path, env: dict[str, str]) -> Iterator[Served]:
    command, path = SERVERS[name]
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            found = _LISTENING.search(log.read_bytes())
            if found:
                port = int(found.group(1))
            elif process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{name} did not start:\n{log.read_text()}")
            else:
                time.sleep(0.05)
        served = Served(process, log, port, path)
        _wait_ready(served)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _wait_ready(served: Served) -> None:
    # gunicorn logs "Listening" before its worker has booted; a plain TCP connect is accepted by
    # the master's socket either way, so wait for the first answer instead (records nothing).
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/plain/", timeout=5):
                return
        except urllib.error.HTTPError:
            return  # the Flask app has no /plain/: it answered 404, it is up
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("name", list(SERVERS))
def test_sigterm_delivers_every_event(name: str, tmp_path: Path) -> None:
    with CaptureServer() as capture, serve(name, tmp_path, _env(capture.url)) as served:
        for i in range(REQUESTS):
            assert served.get(i) == 200
        assert capture.event_count == 0  # nothing was due yet

        served.stop(signal.SIGTERM)

        assert capture.event_count == REQUESTS * EVENTS_PER_REQUEST, served.output
        traces = {e["properties"]["$ai_trace_id"] for e in capture.events}
        assert len(traces) == REQUESTS


# Not under gunicorn: its master answers SIGINT by sending SIGQUIT to the workers, which a
# UvicornWorker (gunicorn 27) does not act on before graceful_timeout and the SIGKILL that follows,
# with or without this package; sync and gthread workers leave through sys.exit (atexit).
@pytest.mark.parametrize("name", ["uvicorn-django"])
def test_sigint_delivers_every_event(name: str, tmp_path: Path) -> None:
    with CaptureServer() as capture, serve(name, tmp_path, _env(capture.url)) as served:
        for i in range(REQUESTS):
            assert served.get(i) == 200

        served.stop(signal.SIGINT)

        assert capture.event_count == REQUESTS * EVENTS_PER_REQUEST, served.output


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("name", ["uvicorn-django", "gunicorn-uvicorn-worker-django"])
def test_with_posthog_down_sigterm_logs_what_was_not_sent(name: str, tmp_path: Path) -> None:
    env = _env(_closed_port_url(), POSTHOG_LLM_TRACE_SHUTDOWN_TIMEOUT="1")
    with serve(name, tmp_path, env) as served:
        for i in range(REQUESTS):
            assert served.get(i) == 200

        started = time.monotonic()
        served.stop(signal.SIGTERM)
        took = time.monotonic() - started

    output = served.output
    counts = [int(n) for n in re.findall(r"posthog-llm-trace.*?(\d+) (?:events|at_exit)", output)]
    assert REQUESTS * EVENTS_PER_REQUEST in counts, output
    assert took < 15, output  # bounded by the shutdown budget, not by retries


def test_a_plain_process_stopped_by_sigterm_flushes_and_still_dies_by_sigterm(
    tmp_path: Path,
) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        "import sys, time\n"
        "from posthog_llm_trace import configure, generation\n"
        "configure()\n"
        "for i in range(4):\n"
        "    with generation('step', model='m', provider='p', input='hi'):\n"
        "        pass\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    with CaptureServer() as capture:
        process = subprocess.Popen(
            [sys.executable, str(script)],
            env=_env(capture.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        assert code == -signal.SIGTERM  # the exit status still tells how it ended
        assert capture.event_count == 8  # 4 generations, each in its own trace


def test_an_application_signal_handler_is_kept(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(
        "import signal, sys\n"
        "def mine(signum, frame):\n"
        "    print('mine', flush=True)\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, mine)\n"
        "from posthog_llm_trace import configure, generation\n"
        "configure()\n"
        "with generation('step', model='m', provider='p', input='hi'):\n"
        "    pass\n"
        "assert signal.getsignal(signal.SIGTERM) is mine\n"
        "print('ready', flush=True)\n"
        "signal.pause()\n"
    )
    with CaptureServer() as capture:
        process = subprocess.Popen(
            [sys.executable, str(script)],
            env=_env(capture.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        assert process.returncode == 3, out
        assert b"mine" in out
        assert capture.event_count == 2  # its sys.exit() ran atexit, which flushed


