"""The posthog-python bridge: what an AI event captured by posthog-python costs the caller's
thread when it is taken into one of our traces, next to posthog-python capturing it itself.

Run from the repository root::

    .venv/bin/python bench/bench_posthog_bridge.py           # a few seconds
    .venv/bin/python bench/bench_posthog_bridge.py --quick   # smaller counts

Both sides call the same ``ph.capture("$ai_generation", properties=...)`` (~1 KB of prompt and
answer, the properties posthog-python's OpenAI wrapper sends), on one real ``posthog.Posthog``
client, in alternating rounds of one run: outside any trace (posthog-python builds, cleans and
queues the event; ``send=False`` so that nothing leaves the process), and inside a trace of ours
(the bridge takes it into the trace; the trace's end hands it to our background exporter, which
renders it off the measured path as in production -- here towards a closed loopback port, with
no retries, so that delivery costs nothing). The figure is the median per-call cost of each and
their ratio.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import posthog  # noqa: E402

import posthog_llm_trace as plt  # noqa: E402
from posthog_llm_trace.client import Client  # noqa: E402
from posthog_llm_trace.settings import Layer, build_settings  # noqa: E402

PROPERTIES = {
    "$ai_provider": "openai",
    "$ai_model": "gpt-4o-mini",
    "$ai_model_parameters": {"temperature": 0.2},
    "$ai_input": [
        {"role": "system", "content": "You are a helpful support agent. " * 6},
        {"role": "user", "content": "Where is my parcel? It was due on Monday. " * 5},
    ],
    "$ai_output_choices": [
        {"role": "assistant", "content": "Your parcel left the depot this morning. " * 5}
    ],
    "$ai_http_status": 200,
    "$ai_input_tokens": 120,
    "$ai_output_tokens": 40,
    "$ai_latency": 0.8,
    "$ai_trace_id": "5d0f3a9e-2a9d-4c1e-9a53-6f0b9a1f4e21",
    "$ai_base_url": "https://api.openai.com/v1",
    "$ai_lib": "posthog-ai",
}


def posthog_side(ph: posthog.Posthog, n: int) -> float:
    ph.send = False  # posthog-python builds and accepts each event, and sends nothing
    start = time.perf_counter()
    for _ in range(n):
        ph.capture("$ai_generation", properties=PROPERTIES)
    return (time.perf_counter() - start) / n


def bridged_side(ph: posthog.Posthog, client: Client, n: int) -> float:
    # One trace per 50 events, as a request holding a few calls would; the trace's end (the
    # hand-over to the exporter) is inside the measurement.
    ph.send = True  # a client with send=False is left alone by the bridge
    start = time.perf_counter()
    done = 0
    while done < n:
        with plt.trace("bench", client=client, distinct_id="user-1"):
            for _ in range(min(50, n - done)):
                ph.capture("$ai_generation", properties=PROPERTIES)
        done += 50
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (500, 3) if args.quick else (2000, 7)
    logging.getLogger("posthog_llm_trace").setLevel(logging.ERROR)  # the closed port's drops
    plt.instrument("posthog")
    ph = posthog.Posthog("phc_bench", host="http://127.0.0.1:9", send=False)
    settings = {"api_key": "phc_bench", "host": "http://127.0.0.1:9", "max_retries": 0}
    client = Client(build_settings(Layer(settings), environ={}))
    ours, theirs = [], []
    for _ in range(rounds):
        theirs.append(posthog_side(ph, n))
        ours.append(bridged_side(ph, client, n))
    them, us = statistics.median(theirs), statistics.median(ours)
    print(f"posthog-python capture of one $ai_generation:   {them * 1e6:7.1f} µs")
    print(f"the same capture taken into a trace of ours:   {us * 1e6:7.1f} µs")
    print(f"ratio (ours / posthog-python):                 {us / them:7.2f}")
    client.shutdown(1)
    ph.shutdown()


if __name__ == "__main__":
    main()
