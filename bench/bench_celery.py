"""Celery export: what it costs the request, and how fast events get through a worker.

Run from the repository root (Redis on 127.0.0.1:6379)::

    .venv/bin/python bench/bench_celery.py            # about a minute
    .venv/bin/python bench/bench_celery.py --quick    # smaller counts, a smoke test

1. Request-path cost of submitting a finished trace (``Trace.end()`` of a trace holding one
   generation with ~1 KB of prompt and answer), ``export="celery"`` next to ``export="thread"``,
   in alternating rounds of one run. Both hand the trace to the same bounded queue; their
   background threads really work meanwhile (publishing to Redis, posting to a loopback capture
   server), as in production.
2. End to end: events per second from ``Trace.end()`` in this process, through the Redis broker
   and one worker (``-P prefork -c 2``) posting each batch with its own key, into the loopback
   capture server (``tests/capture_server.py``, in its own process), for a burst of traces of
   20 events and one of traces of 2 events, default settings. The clock stops when the server has
   accepted every event; the time at which this process had published everything is shown too.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT)]

from bench_export import ServerProcess  # noqa: E402
from celery_worker import REDIS_URL, Names, Worker, delete_keys, require_broker  # noqa: E402

import posthog_llm_trace.celery as plt_celery  # noqa: E402
from posthog_llm_trace import context, generation  # noqa: E402
from posthog_llm_trace.client import Client  # noqa: E402
from posthog_llm_trace.settings import Layer, build_settings  # noqa: E402
from posthog_llm_trace.spans import Trace  # noqa: E402
from tests.celery_app import make_app  # noqa: E402

PROMPT = [
    {"role": "system", "content": "You are a helpful support agent. " * 6},
    {"role": "user", "content": "Where is my parcel? It was due on Monday. " * 5},
]
ANSWER = "Your parcel left the depot this morning and should arrive tomorrow. " * 4


def make_client(mode: str, host: str, names: Names, **overrides: Any) -> Client:
    values: dict[str, Any] = {
        "api_key": "phc_bench_web",
        "host": host,
        "export": mode,
        "celery_queue": names.export_queue,
        "max_queue_size": 10_000_000,
        **overrides,
    }
    return Client(build_settings(Layer(values), environ={}))


def finished_traces(client: Client, n: int, generations: int = 1) -> list[Trace]:
    """``n`` traces, each holding ``generations`` recorded generations, not yet ended."""
    traces = []
    for i in range(n):
        trace = Trace("POST /chat/", client=client, distinct_id=f"user-{i % 50}")
        token = context.activate(trace)
        try:
            for _ in range(generations):
                with generation(
                    "answer", model="gpt-4o-mini", provider="openai", input=PROMPT
                ) as g:
                    g.set_output(ANSWER)
                    g.set_usage(input_tokens=120, output_tokens=40)
        finally:
            context.restore(token, None)
        traces.append(trace)
    return traces


def end_all(traces: list[Trace]) -> float:
    """Seconds spent ending (submitting) every trace."""
    started = time.perf_counter()
    for trace in traces:
        trace.end()
    return time.perf_counter() - started


def request_path(
    server: ServerProcess, names: Names, rounds: int, per_round: int, *, busy: bool
) -> dict[str, float]:
    """Median microseconds per ``Trace.end()`` for each mode, over alternating rounds. With
    ``busy`` the exporter threads work meanwhile (default batches); without, they sleep (one
    batch of 10^9 events an hour), which isolates what the request thread itself does."""
    idle = {} if busy else {"flush_at": 10**9, "flush_interval": 3600}
    clients = {mode: make_client(mode, server.url, names, **idle) for mode in ("thread", "celery")}
    samples: dict[str, list[float]] = {mode: [] for mode in clients}
    try:
        # A warm-up round, not counted: imports, the broker connection, the HTTP connection.
        for client in clients.values():
            end_all(finished_traces(client, per_round))
            if busy:
                client.flush(30.0)
        for _ in range(rounds):
            for mode, client in clients.items():
                traces = finished_traces(client, per_round)
                samples[mode].append(end_all(traces) / per_round * 1e6)
        if busy:
            for client in clients.values():
                client.flush(30.0)
            published = clients["celery"].stats.snapshot().get("celery_published", 0)
            assert published > 0, "the celery exporter published nothing"
    finally:
        for client in clients.values():
            client.shutdown(5.0 if busy else 0.1)
    return {mode: statistics.median(values) for mode, values in samples.items()}


def end_to_end(
    server: ServerProcess, names: Names, traces: int, per_trace: int
) -> dict[str, float]:
    """A burst of ``traces`` finished traces of ``per_trace`` generations each, default
    settings: seconds until this process has published them, and until the server has them."""
    client = make_client("celery", server.url, names)
    try:
        server.ask("reset")
        batch = finished_traces(client, traces, per_trace)
        n = traces * (per_trace + 1)  # the generations and each trace's $ai_trace
        started = time.perf_counter()
        end_all(batch)
        # When this process is done (rendered and published everything) ...
        while client.stats.snapshot().get("celery_published", 0) < n:
            if time.perf_counter() - started > 120:
                raise SystemExit(f"only {client.stats.snapshot()} of {n} events published")
            time.sleep(0.005)
        published = time.perf_counter() - started
        # ... and when the worker has delivered everything.
        if not server.wait_for(n, timeout=120):
            raise SystemExit(f"only {server.ask('count')} of {n} events arrived")
        took = time.perf_counter() - started
        counts = server.ask("unique")
        assert counts["unique"] == n, counts
        counters = client.stats.snapshot()
        assert "celery_fallback" not in counters, counters
    finally:
        client.shutdown(5.0)
    return {
        "events": n,
        "published": published,
        "seconds": took,
        "rate": n / took,
        "messages": counters["celery_messages"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, a smoke test")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # The idle exporters are stopped with their events still queued, on purpose.
    logging.getLogger("posthog_llm_trace").setLevel(logging.ERROR)
    _require(REDIS_URL)

    rounds, per_round = (4, 500) if args.quick else (10, 2_000)
    e2e_traces = 100 if args.quick else 1_000

    names = Names()
    app = make_app(REDIS_URL, names.queue, names.export_queue, names.keyprefix)
    plt_celery.instrument(app)
    server = ServerProcess()
    try:
        idle = request_path(server, names, rounds, per_round, busy=False)
        busy = request_path(server, names, rounds, per_round, busy=True)
        delete_keys(names)  # nobody consumed the messages of part 1
        with tempfile.TemporaryDirectory() as logs:
            worker = Worker(REDIS_URL, names, server.url, Path(logs)).start()
            try:
                e2e = [
                    (f"{traces:,} x {per_trace + 1}", end_to_end(server, names, traces, per_trace))
                    for traces, per_trace in ((e2e_traces, 19), (e2e_traces * 10, 1))
                ]
            finally:
                worker.stop()
    finally:
        server.close()
        delete_keys(names)
        plt_celery.uninstrument()

    print("request path: us per Trace.end() of a finished trace with one ~1 KB generation")
    head = f"{'exporter idle':>15}{'vs thread':>11}{'exporter busy':>15}{'vs thread':>11}"
    print(f"{'export':<10}{head}")
    for mode in ("thread", "celery"):
        print(
            f"{mode:<10}{idle[mode]:>15.1f}{idle[mode] / idle['thread']:>10.2f}x"
            f"{busy[mode]:>15.1f}{busy[mode] / busy['thread']:>10.2f}x"
        )
    print(
        f"({rounds} alternating rounds of {per_round:,} traces per mode, median of rounds; busy: "
        "the exporter threads render and publish / post meanwhile, sharing the GIL)"
    )
    print()
    print("end to end: Trace.end() -> Redis -> one worker (prefork, 2 processes) -> capture server")
    print(
        f"{'traces x events':<17}{'events':>8}{'messages':>10}{'published s':>13}"
        f"{'delivered s':>13}{'events/s':>10}"
    )
    for label, row in e2e:
        print(
            f"{label:<17}{row['events']:>8,.0f}{row['messages']:>10,.0f}"
            f"{row['published']:>13.2f}{row['seconds']:>13.2f}{row['rate']:>10,.0f}"
        )
    print(
        "(published: this process has rendered and published every event; delivered: the "
        "capture server has them all)"
    )


def _require(url: str) -> None:
    try:
        require_broker(url)
    except BaseException as exc:  # pytest's skip/fail outcomes outside pytest
        raise SystemExit(f"bench_celery: {exc}") from None


if __name__ == "__main__":
    main()
