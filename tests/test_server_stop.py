"""Stopping real servers: what was recorded before SIGTERM or SIGINT reaches PostHog.

Each test starts a real uvicorn or gunicorn process serving the Django or the Flask test app
(tests/server_sites.py) against the loopback capture server, makes a few requests that record a
generation and a tool call, then stops the server the way docker, systemd and Kubernetes do. The
batches are far from due when the signal arrives (``flush_at`` 1000, ``flush_interval`` 60 s), so
only the stop can send them.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from capture_server import CaptureServer
from server_support import SERVERS, serve, server_env

REQUESTS = 5
EVENTS_PER_REQUEST = 3  # $ai_generation, the tool's $ai_span, $ai_trace


@pytest.mark.parametrize("name", list(SERVERS))
def test_sigterm_delivers_every_event(name: str, tmp_path: Path) -> None:
    with CaptureServer() as capture, serve(name, tmp_path, server_env(capture.url)) as served:
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
    with CaptureServer() as capture, serve(name, tmp_path, server_env(capture.url)) as served:
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
    env = server_env(_closed_port_url(), POSTHOG_LLM_TRACE_SHUTDOWN_TIMEOUT="1")
    with serve(name, tmp_path, env) as served:
        for i in range(REQUESTS):
            assert served.get(i) == 200

        served.stop(signal.SIGTERM)

    output = served.output
    counts = [int(n) for n in re.findall(r"posthog-llm-trace.*?(\d+) (?:events|at_exit)", output)]
    assert REQUESTS * EVENTS_PER_REQUEST in counts, output


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
            env=server_env(capture.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        assert code == -signal.SIGTERM  # the exit status still tells how it ended
        assert capture.event_count == 8  # 4 generations, each in its own trace


def _ready_then_sigterm(script: Path, capture: CaptureServer) -> tuple[int, bytes]:
    """Run ``script`` until it prints ``ready``, send it SIGTERM; its exit code and output."""
    process = subprocess.Popen(
        [sys.executable, str(script)],
        env=server_env(capture.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    first = process.stdout.readline().strip()
    assert first == b"ready", first + process.stdout.read()
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    return process.returncode, out


def test_an_application_signal_handler_is_kept(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(
        "import signal, sys, time\n"
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
        # Not signal.pause(): the kernel may deliver the signal to an export thread, and
        # pause() in the main thread would then never return. Python runs the handler in the
        # main thread between two sleeps.
        "while True:\n"
        "    time.sleep(0.05)\n"
    )
    with CaptureServer() as capture:
        returncode, out = _ready_then_sigterm(script, capture)
        assert returncode == 3, out
        assert b"mine" in out
        assert capture.event_count == 2  # its sys.exit() ran atexit, which flushed


def test_the_handler_is_installed_only_from_the_main_thread_and_only_over_the_default(
    tmp_path: Path,
) -> None:
    script = tmp_path / "where.py"
    script.write_text(
        "import signal, threading\n"
        "from posthog_llm_trace import Client\n"
        "from posthog_llm_trace.settings import Layer, build_settings\n"
        "s = build_settings(Layer({'api_key': 'phc_test'}), environ={})\n"
        "t = threading.Thread(target=Client, args=(s,)); t.start(); t.join()\n"
        "assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, 'installed from a thread'\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "Client(s)\n"
        "assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, 'SIG_IGN replaced'\n"
        "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
        "Client(build_settings(Layer({'export': 'memory'}), environ={}))\n"
        "assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, 'nothing to flush'\n"
        "Client(s)\n"
        "assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, 'not installed'\n"
    )
    subprocess.run([sys.executable, str(script)], check=True, timeout=60)


def test_process_signals_reach_the_application_not_our_threads(tmp_path: Path) -> None:
    """Our threads start with SIGTERM & co blocked (Linux shows each thread's mask), so a main
    thread waiting in ``signal.pause()`` is the one woken, and its handler runs."""
    script = tmp_path / "pause.py"
    script.write_text(
        "import signal, sys, threading\n"
        "def mine(signum, frame):\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, mine)\n"
        "from posthog_llm_trace import configure, generation\n"
        "configure()\n"
        "with generation('step', model='m', provider='p', input='hi'):\n"
        "    pass\n"
        "ours = [t for t in threading.enumerate() if t.name.startswith('posthog-llm-trace')]\n"
        "assert ours, 'no export thread started'\n"
        "for t in ours:\n"
        "    status = open(f'/proc/self/task/{t.native_id}/status').read()\n"
        "    blocked = int(status.split('SigBlk:')[1].split()[0], 16)\n"
        "    assert blocked & (1 << (signal.SIGTERM - 1)), f'{t.name} can take SIGTERM'\n"
        "print('ready', flush=True)\n"
        "signal.pause()\n"
    )
    with CaptureServer() as capture:
        returncode, out = _ready_then_sigterm(script, capture)
        assert returncode == 3, out
