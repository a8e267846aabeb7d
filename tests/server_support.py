"""Real uvicorn and gunicorn processes for the server tests: start one serving an app of
tests/server_sites.py, find its port in its log, make requests, stop it with a signal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DJANGO_PATH = "/api/v1/chat/{i}/"
FLASK_PATH = "/chat/{i}"

# No control socket: its default path is shared by every gunicorn of the machine.
GUNICORN = [str(BIN / "gunicorn"), "-b", "127.0.0.1:0", "-w", "1", "--no-control-socket"]
SERVERS = {
    "uvicorn-django": (
        [str(BIN / "uvicorn"), "server_sites:django_asgi", "--port", "0"],
        DJANGO_PATH,
    ),
    "uvicorn-2-workers-django": (
        [str(BIN / "uvicorn"), "server_sites:django_asgi", "--port", "0", "--workers", "2"],
        DJANGO_PATH,
    ),
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


def server_env(host: str, **extra: str) -> dict[str, str]:
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
