"""Running a real Celery worker for the tests: a subprocess in a process group of its own, started
on unique queues, stopped (or killed) reliably.

Also the check that the brokers are there: without them the Celery tests fail with a clear
message in CI (``CI`` set) and are skipped on a developer machine that lacks them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from capture_server import CaptureServer

from posthog_llm_trace.client import Client
from posthog_llm_trace.settings import Layer, build_settings

ROOT = Path(__file__).resolve().parent.parent
CELERY = [sys.executable, "-m", "celery"]  # the celery of this interpreter, whatever its venv

#: A Redis database of its own for these tests; keys are also prefixed per run.
REDIS_URL = os.environ.get("PLT_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
AMQP_URL = os.environ.get("PLT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
#: A port nothing listens on: a broker that is down.
DEAD_BROKER_URL = "redis://127.0.0.1:6390/0"

WORKER_API_KEY = "phc_worker_key_for_tests"


def require_broker(url: str) -> None:
    """Fail (in CI) or skip (elsewhere) when the broker at ``url`` does not answer."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (6379 if parts.scheme.startswith("redis") else 5672)
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = (
            f"the Celery tests need the broker at {host}:{port} ({exc}); "
            "start it (./run test starts Redis and RabbitMQ) or set PLT_TEST_REDIS_URL / "
            "PLT_TEST_AMQP_URL"
        )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass
class Names:
    """Queue names and a key prefix unique to one test module (or test)."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def queue(self) -> str:
        return f"plt-tasks-{self.run}"

    @property
    def export_queue(self) -> str:
        return f"plt-export-{self.run}"

    @property
    def keyprefix(self) -> str:
        return f"plt-{self.run}:"


class Worker:
    """``celery -A tests.celery_app:app worker`` in its own process group."""

    def __init__(
        self,
        broker: str,
        names: Names,
        host: str,
        log_dir: Path,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        env: dict[str, str] | None = None,
    ) -> None:
        self.broker = broker
        self.names = names
        self.host = host
        self.pool = pool
        self.concurrency = concurrency
        self.extra_env = env or {}
        self.log_path = log_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("POSTHOG_", "CELERY_", "PLT_", "DJANGO_SETTINGS"))
        }
        env.update(
            PLT_BROKER=self.broker,
            PLT_QUEUE=self.names.queue,
            PLT_EXPORT_QUEUE=self.names.export_queue,
            PLT_KEYPREFIX=self.names.keyprefix,
            POSTHOG_API_KEY=WORKER_API_KEY,
            POSTHOG_HOST=self.host,
            # As in a Django project whose web and worker processes share one settings module.
            POSTHOG_LLM_TRACE_EXPORT="celery",
            POSTHOG_LLM_TRACE_CELERY_QUEUE=self.names.export_queue,
            POSTHOG_LLM_TRACE_FLUSH_INTERVAL="0.5",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> Worker:
        command = [
            *CELERY,
            "-A",
            "tests.celery_app:app",
            "worker",
            "-l",
            os.environ.get("PLT_WORKER_LOGLEVEL", "info"),
            "-P",
            self.pool,
            "-c",
            str(self.concurrency),
            "-Q",
            f"{self.names.queue},{self.names.export_queue}",
            "-n",
            f"plt-{uuid.uuid4().hex[:8]}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own: killpg reaches the children
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log():
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"the Celery worker did not start:\n{self.log()[-4000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pgid(self) -> int:
        assert self.process is not None
        return self.process.pid  # the session leader's pid is the group id

    def pool_children(self) -> list[int]:
        """Pids of the pool processes (children of the main worker process)."""
        assert self.process is not None
        found = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
            capture_output=True,
            text=True,
            check=False,
        )
        return [int(pid) for pid in found.stdout.split()]

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and every pool child."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Warm shutdown (SIGTERM), then SIGKILL if it takes longer than ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        with contextlib.suppress(ProcessLookupError):
            # The main process only: it stops its pool children itself (warm shutdown).
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        finally:
            # Children that outlived their parent (they should not) go with the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


WEB_API_KEY = "phc_web_process_secret_key"


@contextlib.contextmanager
def web_process(**settings: object) -> Iterator[Client]:
    """Configure this (the "web") process's default client for the duration of a block, then
    stop it and restore whatever was the default before."""
    from posthog_llm_trace import client as client_module

    saved = client_module._default, client_module._explicit
    values: dict[str, object] = {"api_key": WEB_API_KEY, "export": "celery", **settings}
    configured = Client(build_settings(Layer(values), environ={}))
    with client_module._lock:
        client_module._default, client_module._explicit = configured, True
    try:
        yield configured
    finally:
        configured.shutdown(timeout=2.0)
        with client_module._lock:
            client_module._default, client_module._explicit = saved


def events_of(server: CaptureServer, trace_id: str) -> list[dict[str, Any]]:
    return [e for e in server.events if e["properties"].get("$ai_trace_id") == trace_id]


def wait_for_trace(
    server: CaptureServer,
    trace_id: str,
    n: int,
    timeout: float = 15.0,
    worker: Worker | None = None,
) -> list[dict[str, Any]]:
    """The events of ``trace_id`` once at least ``n`` of them arrived (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events_of(server, trace_id)
        if len(found) >= n:
            return found
        time.sleep(0.05)
    found = events_of(server, trace_id)
    names = [(e["event"], e["properties"].get("$ai_span_name")) for e in found]
    log = "" if worker is None else "\nworker log:\n" + worker.log()[-3000:]
    raise AssertionError(f"{len(found)} of {n} events of trace {trace_id} arrived: {names}{log}")


def by_name(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["properties"].get("$ai_span_name") == name]


def delete_keys(names: Names, url: str = REDIS_URL) -> None:
    """Remove what a test run left in Redis (its keys all carry the run's prefix)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=names.keyprefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
