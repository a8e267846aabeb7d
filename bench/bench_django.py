"""Per-request cost of the Django middleware, next to no middleware and to posthog-python's
``PosthogContextMiddleware`` on the same app.

Run from the repository root::

    .venv/bin/python bench/bench_django.py            # under a minute on a slow machine
    .venv/bin/python bench/bench_django.py --quick    # smaller counts, a smoke test

One Django project, called in-process through Django's ``WSGIHandler`` (``handler(environ,
start_response)``, body iterated and closed, as a WSGI server would; no sockets and no test
client, so the figures are Django's and the middleware's, not a harness's). Every stack has
``SessionMiddleware`` and ``AuthenticationMiddleware``; requests are anonymous (no database).

- ``/plain/`` records nothing: what every health check or static file pays for the middleware.
- ``/chat/`` does the work of a chat turn (builds ~1 KB of prompt and answer). Under our
  middleware it records one generation and two tool spans; under posthog-python's it captures the
  same three events (``$ai_generation``, two ``$ai_span``) with ``posthog.Client.capture()``;
  with no middleware it only does the work.

Export is configured so that nothing drains while we measure. Ours: the default background
thread, with batches of 10^9 events, a one-hour interval and a queue that holds every event, so
each request pays exactly what it pays in production (building the trace record and appending
it to the queue) and the worker does not compete for the GIL. The memory sink would be wrong: it
renders events inline, on the request thread, which the real exporters never do. posthog-python:
``send=False``, which skips only its final queue put (so it is, if anything, favoured). Both point
at a closed loopback port.

Rounds alternate between the stacks, so a drift in the machine's speed hits all alike, and the
best round of each is shown (as ``timeit`` does: slower rounds measure other processes).
"""

from __future__ import annotations

import argparse
import gc
import io
import logging
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src")]

import django  # noqa: E402
from django.conf import settings  # noqa: E402

PROMPT = "Summarise the refund policy for orders shipped to Paris, with citations. " * 7
ANSWER = "Orders shipped to Paris can be refunded within 30 days of delivery [1]. " * 7
OURS = "posthog_llm_trace.django.LLMTraceMiddleware"
THEIRS = "posthog.integrations.django.PosthogContextMiddleware"
BASE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


HOST = f"http://127.0.0.1:{closed_port()}"
settings.configure(
    DEBUG=False,
    SECRET_KEY="bench",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "posthog_llm_trace.django",
    ],
    MIDDLEWARE=BASE,
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    USE_TZ=True,
    POSTHOG_LLM_TRACE={
        "API_KEY": "phc_bench",
        "HOST": HOST,
        "FLUSH_AT": 10**9,
        "FLUSH_INTERVAL": 3600,
        "MAX_QUEUE_SIZE": 10**9,
        "SHUTDOWN_TIMEOUT": 0.1,  # what was queued is dropped at exit: the host is closed
    },
    POSTHOG_MW_CAPTURE_EXCEPTIONS=False,
)
django.setup()

import posthog  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from posthog_llm_trace import generation, get_client, tool  # noqa: E402

POSTHOG = posthog.Client("phc_bench", host=HOST, send=False)
settings.POSTHOG_MW_CLIENT = POSTHOG


def chat_turn() -> dict[str, Any]:
    """The work a chat view does besides recording it (the model call is not ours to time)."""
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": PROMPT},
    ]
    return {
        "messages": messages,
        "policy": {"days": 30, "region": "FR"},
        "sources": [{"id": 1, "title": "Refunds"}],
        "answer": ANSWER,
    }


def record_ours(turn: dict[str, Any]) -> None:
    with generation("answer", model="gpt-4o-mini", provider="openai", input=turn["messages"]) as g:
        with tool("refund_policy", input={"region": "FR"}) as t:
            t.set_output(turn["policy"])
        with tool("search_docs", input={"query": "refund"}) as t:
            t.set_output(turn["sources"])
        g.set_output({"role": "assistant", "content": turn["answer"]})
        g.set_usage(input_tokens=180, output_tokens=120)


def record_theirs(turn: dict[str, Any]) -> None:
    """The same three events through posthog-python, as an app using it by hand would."""
    common = {"$ai_trace_id": "trace-1", "$ai_session_id": "s-1"}
    for name, tool_input, output in (
        ("refund_policy", {"region": "FR"}, turn["policy"]),
        ("search_docs", {"query": "refund"}, turn["sources"]),
    ):
        POSTHOG.capture(
            "$ai_span",
            distinct_id="anonymous",
            properties={
                **common,
                "$ai_span_name": name,
                "$ai_span_type": "tool",
                "$ai_input_state": tool_input,
                "$ai_output_state": output,
                "$ai_latency": 0.001,
            },
        )
    POSTHOG.capture(
        "$ai_generation",
        distinct_id="anonymous",
        properties={
            **common,
            "$ai_model": "gpt-4o-mini",
            "$ai_provider": "openai",
            "$ai_input": turn["messages"],
            "$ai_output_choices": [{"role": "assistant", "content": turn["answer"]}],
            "$ai_input_tokens": 180,
            "$ai_output_tokens": 120,
            "$ai_latency": 0.002,
        },
    )


MODE = {"record": None}  # which recorder /chat/ uses; set per stack


def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def chat(request: HttpRequest) -> HttpResponse:
    turn = chat_turn()
    recorder = MODE["record"]
    if recorder is not None:
        recorder(turn)
    return HttpResponse(turn["answer"])


urlpatterns = [path("plain/", plain), path("chat/", chat)]


def handler_for(middleware: list[str]) -> WSGIHandler:
    settings.MIDDLEWARE = middleware
    return WSGIHandler()  # loads MIDDLEWARE now


def environ_for(url: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": url,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "bench",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
    }


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    assert status.startswith("200"), status


def per_request_us(handler: WSGIHandler, url: str, recorder: Any, n: int) -> float:
    MODE["record"] = recorder
    base = environ_for(url)
    gc.collect()
    start = time.perf_counter()
    for _ in range(n):
        env = base.copy()
        env["wsgi.input"] = io.BytesIO()
        response = handler(env, start_response)
        for _chunk in response:
            pass
        response.close()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, a smoke test")
    args = parser.parse_args()
    n, rounds = (300, 2) if args.quick else (1500, 5)
    logging.getLogger("posthog").setLevel(logging.ERROR)

    bare, ours, theirs = handler_for(BASE), handler_for([*BASE, OURS]), handler_for([*BASE, THEIRS])
    stacks: list[tuple[str, WSGIHandler, str, Callable[[dict[str, Any]], None] | None]] = [
        ("no middleware, /plain/", bare, "/plain/", None),
        ("posthog-python middleware, /plain/", theirs, "/plain/", None),
        ("posthog-llm-trace, /plain/ (no span)", ours, "/plain/", None),
        ("no middleware, /chat/ (the work only)", bare, "/chat/", None),
        ("posthog-python middleware, /chat/ (3 capture())", theirs, "/chat/", record_theirs),
        ("posthog-llm-trace, /chat/ (1 generation + 2 tools)", ours, "/chat/", record_ours),
    ]
    for _, handler, url, recorder in stacks:  # warm up: imports, caches, the worker thread
        per_request_us(handler, url, recorder, max(50, n // 20))
    best = {label: float("inf") for label, *_ in stacks}
    for _ in range(rounds):
        for label, handler, url, recorder in stacks:
            best[label] = min(best[label], per_request_us(handler, url, recorder, n))

    stats = get_client().stats.snapshot()
    print(f"Django request cost: best of {rounds} rounds x {n} requests, WSGIHandler in-process")
    print(f"{'stack, request':<52}{'µs/request':>11}{'added µs':>10}{'ratio':>8}")
    for label, _, url, _ in stacks:
        baseline = best[
            "no middleware, /plain/"
            if url == "/plain/"
            else "no middleware, /chat/ (the work only)"
        ]
        value = best[label]
        print(f"{label:<52}{value:>11.1f}{value - baseline:>10.1f}{value / baseline:>8.2f}")
    ours_added = best[stacks[5][0]] - best[stacks[3][0]]
    theirs_added = best[stacks[4][0]] - best[stacks[3][0]]
    print(
        f"recording the chat turn: ours adds {ours_added:.1f} µs, posthog-python's "
        f"middleware + capture() adds {theirs_added:.1f} µs "
        f"({ours_added / theirs_added:.2f}x)"
    )
    print(
        f"events queued for export: {stats.get('queued', 0)}, sent while measuring: "
        f"{stats.get('sent', 0)} (dropped at exit: the host is a closed port)"
    )
    logging.getLogger("posthog_llm_trace").setLevel(logging.CRITICAL)
    get_client().shutdown(timeout=0.1)


if __name__ == "__main__":
    main()
