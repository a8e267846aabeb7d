"""Per-request cost of the Flask extension, next to the same app without it.

Run from the repository root::

    .venv/bin/python bench/bench_flask.py            # under a minute on a slow machine
    .venv/bin/python bench/bench_flask.py --quick    # smaller counts, a smoke test

Two apps with the same routes, called in-process as WSGI applications (``app(environ,
start_response)``, body iterated and closed, as a server would; no sockets, no test client, so
the figures are the framework's and ours, not the harness's):

- ``/health`` records no span: what every static file or health check pays for the middleware.
- ``/chat`` does the work of a chat turn (builds the messages, ~1 KB of prompt and answer). The
  bare app does only that; the traced app also records it as one generation with two tool spans.

Every request carries the session cookie of a returning browser. (A browser's first traced
request also stores the random id ``$ai_session_id`` is derived from in its session, which
costs one signed ``Set-Cookie``: Flask's price for a modified session, paid once per session.)

The traced app exports with the default background thread, configured so that it does not
drain while we measure (batches of 10^9 events, a one-hour interval, a queue that holds every
event): each request pays exactly what it pays in production -- building the trace record and
appending it to the queue -- and the worker thread does not compete for the GIL. The memory
sink would be wrong here: it renders the events inline, on the request thread, which the real
exporters never do. What was queued is dropped at the end (the host is a closed port).

Rounds alternate between the apps, so that a drift in the machine's speed hits both alike, and
the best round of each is shown (as ``timeit`` does: slower rounds measure other processes).
"""

from __future__ import annotations

import argparse
import gc
import io
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src")]

from flask import Flask  # noqa: E402

from posthog_llm_trace import generation, tool  # noqa: E402
from posthog_llm_trace.flask import EXTENSION_KEY, LLMTrace  # noqa: E402

PROMPT = "Summarise the refund policy for orders shipped to Paris, with citations. " * 7
ANSWER = "Orders shipped to Paris can be refunded within 30 days of delivery [1]. " * 7


def chat_turn() -> dict[str, Any]:
    """The work a chat view does besides recording it (the model call is not ours to time)."""
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": PROMPT},
    ]
    policy = {"days": 30, "region": "FR"}
    sources = [{"id": 1, "title": "Refunds"}]
    return {"messages": messages, "policy": policy, "sources": sources, "answer": ANSWER}


def recorded_chat_turn() -> dict[str, Any]:
    """The same turn, recorded: one generation with two tool spans."""
    turn = chat_turn()
    with generation(
        "answer", model="gpt-4o-mini", provider="openai", input=turn["messages"]
    ) as gen:
        with tool("refund_policy", input={"region": "FR"}) as t:
            t.set_output(turn["policy"])
        with tool("search_docs", input={"query": "refund"}) as t:
            t.set_output(turn["sources"])
        gen.set_output({"role": "assistant", "content": turn["answer"]})
        gen.set_usage(input_tokens=180, output_tokens=120)
    return turn


def make_app(traced: bool) -> Flask:
    app = Flask(f"bench_{'traced' if traced else 'bare'}")
    app.secret_key = "bench"
    work = recorded_chat_turn if traced else chat_turn

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.get("/chat")
    def chat() -> dict[str, Any]:
        return {"answer": work()["answer"]}

    if traced:
        LLMTrace(
            app,
            api_key="phc_bench",
            host="http://127.0.0.1:9",  # never contacted while measuring
            flush_at=10**9,
            flush_interval=3600,
            max_queue_size=10**9,
            shutdown_timeout=0.5,
        )
    return app


def environ_for(path: str, cookie: str = "") -> dict[str, Any]:
    return {
        "HTTP_COOKIE": cookie,
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "5000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:5000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return lambda data: None


def session_cookie(app: Flask) -> str:
    """The cookie a browser holds after its first traced chat turn (its session then carries
    the id ``$ai_session_id`` is derived from, so later requests do not write the session)."""
    headers: list[tuple[str, str]] = []

    def keep_headers(status: str, h: list[tuple[str, str]], exc_info: Any = None) -> Any:
        headers.extend(h)
        return lambda data: None

    body = app(environ_for("/chat"), keep_headers)
    b"".join(body)
    getattr(body, "close", lambda: None)()
    [cookie] = [v.split(";", 1)[0] for k, v in headers if k == "Set-Cookie"]
    return cookie


def timed(app: Flask, path: str, n: int, cookie: str) -> float:
    """Mean microseconds per request over ``n`` requests."""
    template = environ_for(path, cookie)
    call: Callable[..., Any] = app
    begin = time.perf_counter()
    for _ in range(n):
        body = call(dict(template), start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.perf_counter() - begin) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke test)")
    args = parser.parse_args()
    n, rounds = (1_000, 3) if args.quick else (4_000, 5)
    logging.getLogger("posthog_llm_trace").setLevel(logging.ERROR)

    bare, traced = make_app(traced=False), make_app(traced=True)
    client = traced.extensions[EXTENSION_KEY]
    cookie = session_cookie(traced)  # both apps get it: Flask loads the session for each
    for app in (bare, traced):  # warm up: imports, url map, first-request work
        for path in ("/health", "/chat"):
            timed(app, path, 200, cookie)

    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for path in ("/health", "/chat"):
            for name, app in (("bare", bare), ("traced", traced)):
                gc.collect()
                results.setdefault((path, name), []).append(timed(app, path, n, cookie))

    queued = client.stats.snapshot().get("queued", 0)
    sent = client.stats.snapshot().get("sent", 0)
    print(f"Flask request overhead: best of {rounds} rounds x {n} requests each")
    print(f"{'request':<44}{'bare µs':>10}{'traced µs':>12}{'added µs':>11}{'ratio':>8}")
    labels = {
        "/health": "no span (/health)",
        "/chat": "1 generation + 2 tool spans (/chat)",
    }
    for path in ("/health", "/chat"):
        b = min(results[(path, "bare")])
        t = min(results[(path, "traced")])
        print(f"{labels[path]:<44}{b:>10.1f}{t:>12.1f}{t - b:>11.1f}{t / b:>8.2f}")
    print(f"events queued for export: {queued}, sent while measuring: {sent}")
    client.shutdown(timeout=0.5)


if __name__ == "__main__":
    main()
