"""Sustained rate: which event rate does the whole pipeline keep up with, in one process?

``bench_export.py`` offers one burst as fast as the caller can and times its delivery: the queue
then holds tens of thousands of recorded traces at once, and Python's cyclic garbage collector
walks all of them again and again (about 40 % of that run's CPU). A web worker rarely sees
that: it records at some rate, and the question is whether export keeps up. This benchmark asks
exactly that, for us and for posthog.Client side by side, with each client's DEFAULT queue
bounds (ours: 10,000 events and ``max_queue_bytes``; posthog.Client: 10,000 per lane):

- the calling thread offers traces at a fixed rate for a few seconds (one ~1 KB generation and
  one ~1 KB tool span each, so three events with the ``$ai_trace``; for posthog.Client, the same
  three events through ``capture()``), paced in 5 ms steps;
- a rate is *kept up* when the caller achieved it (within 3 %), nothing was dropped, and every
  event reached the loopback capture server (a process of its own) within one second of the
  last offer;
- the ladder climbs until a rate is not kept up; the highest kept-up rate is the figure, with
  the CPU per event of all the sending process's threads at that rate.

Figures move with the machine's load: compare the two clients' figures from the same run.
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from typing import Any

from bench_export import TIMESTAMP, ServerProcess, _load, make_properties, our_settings

SECONDS = 3.0
STEP = 0.005


def _offer(rate: float, seconds: float, record: Any) -> tuple[int, float]:
    """Call ``record(i)`` (three events each) on schedule for ``rate`` events/s; returns how
    many traces were recorded and the achieved event rate."""
    traces_per_s = rate / 3
    started = time.perf_counter()
    done = 0
    while True:
        now = time.perf_counter() - started
        if now >= seconds:
            break
        due = min(int(now * traces_per_s) + 1, int(seconds * traces_per_s))
        while done < due:
            record(done)
            done += 1
        time.sleep(max(0.0, STEP - (time.perf_counter() - started - now)))
    elapsed = time.perf_counter() - started
    return done, 3 * done / elapsed


def _step(server: ServerProcess, rate: float, make: Any) -> dict[str, Any]:
    server.ask("reset")
    record, dropped, close = make()
    cpu = time.process_time()
    traces, achieved = _offer(rate, SECONDS, record)
    n = 3 * traces
    delivered = server.wait_for(n, timeout=1.0)
    cpu = time.process_time() - cpu
    unique = server.ask("unique")["unique"]
    lost = dropped()
    close()
    kept_up = delivered and unique == n and lost == 0 and achieved >= 0.97 * rate
    return {
        "rate": rate,
        "achieved": achieved,
        "kept_up": kept_up,
        "cpu_us": cpu / max(n, 1) * 1e6,
        "dropped": lost,
        "missing": n - unique,
    }


def ours(server: ServerProcess, props: list[dict[str, Any]]) -> Any:
    from posthog_llm_trace import Client, generation, tool, trace

    tool_io = [
        ({"query": p["$ai_input"][0]["content"][:300]}, {"rows": p["$ai_output_choices"]})
        for p in props
    ]

    def make() -> tuple[Any, Any, Any]:
        # Defaults but for a short flush interval, as in bench_export (both clients alike).
        client = Client(our_settings(server.url, flush_interval=0.5))

        def record(i: int) -> None:
            p = props[i % len(props)]
            tool_input, tool_output = tool_io[i % len(props)]
            with trace("bench", distinct_id="user-1", client=client):
                with generation(
                    "answer", model="gpt-4o-mini", provider="openai", input=p["$ai_input"]
                ) as g:
                    g.set_output(p["$ai_output_choices"])
                    g.set_usage(
                        input_tokens=p["$ai_input_tokens"], output_tokens=p["$ai_output_tokens"]
                    )
                with tool("lookup", input=tool_input) as t:
                    t.set_output(tool_output)

        return record, lambda: client.stats.snapshot()["dropped"], lambda: client.shutdown(5)

    return make


def theirs(server: ServerProcess, props: list[dict[str, Any]]) -> Any:
    import posthog

    logging.getLogger("posthog").disabled = True

    def make() -> tuple[Any, Any, Any]:
        client = posthog.Client("phc_bench", host=server.url, gzip=True, flush_interval=0.5)
        refused = [0]

        def capture(event: str, properties: dict[str, Any]) -> None:
            if (
                client.capture(
                    event,
                    distinct_id="user-1",
                    properties=properties,
                    timestamp=TIMESTAMP,
                    uuid=str(uuid.uuid4()),
                )
                is None
            ):
                refused[0] += 1  # queue full: posthog.Client drops and returns None

        def record(i: int) -> None:
            p = props[i % len(props)]
            trace_id = str(uuid.uuid4())
            capture("$ai_generation", {**p, "$ai_trace_id": trace_id})
            capture(
                "$ai_span",
                {
                    "$ai_trace_id": trace_id,
                    "$ai_span_name": "lookup",
                    "$ai_input_state": {"query": p["$ai_input"][0]["content"][:300]},
                    "$ai_output_state": {"rows": p["$ai_output_choices"]},
                },
            )
            capture("$ai_trace", {"$ai_trace_id": trace_id, "$ai_span_name": "bench"})

        return record, lambda: refused[0], client.shutdown

    return make


def ladder(server: ServerProcess, make: Any, rates: list[int]) -> list[dict[str, Any]]:
    steps = []
    for rate in rates:
        step = _step(server, rate, make)
        steps.append(step)
        if not step["kept_up"]:
            break
    return steps


def _show(name: str, steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    print(f"{name}:")
    for s in steps:
        verdict = "kept up" if s["kept_up"] else "FELL BEHIND"
        print(
            f"  offered {s['rate']:>7,} events/s  achieved {s['achieved']:>9,.0f}  "
            f"CPU {s['cpu_us']:6.1f} µs/event  dropped {s['dropped']:>6,}  "
            f"missing {s['missing']:>6,}  {verdict}"
        )
    kept = [s for s in steps if s["kept_up"]]
    if kept and kept[-1] is steps[-1]:
        print("  (kept up with every rate offered: the figure is a lower bound)")
    return kept[-1] if kept else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rates (smoke run)")
    args = parser.parse_args()
    props = make_properties(1000)
    ours_rates = [20_000, 30_000] if args.quick else list(range(15_000, 100_001, 5_000))
    theirs_rates = [2_000, 4_000] if args.quick else list(range(2_000, 30_001, 1_000))
    print(f"sustained rates, {SECONDS:.0f} s per step, load average {_load()}")
    server = ServerProcess()
    try:
        best_ours = _show(
            "posthog-llm-trace (recorded via the API)",
            ladder(server, ours(server, props), ours_rates),
        )
        best_theirs = _show(
            "posthog.Client (capture)", ladder(server, theirs(server, props), theirs_rates)
        )
    finally:
        server.close()
    print(f"load average at the end: {_load()}")
    if best_ours and best_theirs:
        print(
            f"highest rate kept up: ours {best_ours['rate']:,} events/s, posthog.Client "
            f"{best_theirs['rate']:,} events/s ({best_ours['rate'] / best_theirs['rate']:.1f}x); "
            f"CPU per event at those rates {best_ours['cpu_us']:.1f} vs "
            f"{best_theirs['cpu_us']:.1f} µs ({best_ours['cpu_us'] / best_theirs['cpu_us']:.2f}x)"
        )
    else:
        print("one of the clients kept up with none of the rates offered")


if __name__ == "__main__":
    main()
