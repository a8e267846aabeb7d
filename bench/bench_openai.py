"""Added cost of one recorded OpenAI chat completion, ours next to posthog-python's wrapper.

Run from the repository root::

    .venv/bin/python bench/bench_openai.py            # about a minute on a slow machine
    .venv/bin/python bench/bench_openai.py --quick    # smaller counts, a smoke test

Four ways to make the same call with the real ``openai`` client, one after the other in each
round: many short rounds, in an order that rotates, so that a drift in the machine's speed
hits all alike; the median round of each is the figure, the best round is shown next to it):

- ``bare``: a plain ``openai.OpenAI``, nothing recorded.
- ``ours``: the same client, instrumented by ``posthog_llm_trace.instrument("openai")``. Each
  call is a script's call: it opens a trace of its own and sends ``$ai_generation`` and
  ``$ai_trace``. The events go to the default background exporter, configured so that it does
  not drain while we measure (batches of 10^9 events, a one-hour interval): each call pays what
  it pays in production, building the trace record and queueing it. Mapping it to PostHog's
  properties and JSON happen later on the export thread; ``ours, events built inline`` shows the
  cost with that work done on the caller's thread too (the ``memory`` export mode).
- ``posthog wrapper``: posthog-python's ``posthog.ai.openai.OpenAI`` (a subclass of
  ``openai.OpenAI``) with a ``posthog.Posthog`` client that queues but does not send (its
  ``flush_at`` is 10^9, its interval an hour): each call pays what it pays in production,
  building the event and queueing it; its consumer thread runs as it does in production.

What is measured is the CPU time of the calling thread (``time.thread_time()``): with the
provider in-process the whole call runs on that thread, so it is the call's cost, and other
processes on a shared machine do not inflate it the way they inflate wall time. Background
threads (our exporter, the wrapper's consumer) are not counted.

The fake provider is ``tests/fake_openai.py``, the same answers as the tests get, served to the
SDK through an in-process ``httpx`` transport (the bytes a real server sends, JSON and SSE):
a loopback round trip costs ten times what we measure and its jitter would bury the figures.
``--loopback`` serves them over 127.0.0.1 instead (``tests/fake_provider.py``).

Two calls: a non-streaming chat completion, and a 50-chunk stream with
``stream_options={"include_usage": True}`` (the wrapper forces that option on; we give it to
all four, so the chunks are the same).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import httpx2  # noqa: E402
import openai  # noqa: E402
import posthog  # noqa: E402
from posthog.ai.openai import OpenAI as PostHogOpenAI  # noqa: E402

import posthog_llm_trace as plt  # noqa: E402
from posthog_llm_trace import client as client_module  # noqa: E402
from posthog_llm_trace.settings import Layer, build_settings  # noqa: E402
from tests import fake_openai  # noqa: E402
from tests.fake_provider import FakeProvider, Json, Request  # noqa: E402

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant for an online shop."},
    {"role": "user", "content": "Summarise the refund policy for orders shipped to Paris."},
]
CALLS: dict[str, dict[str, Any]] = {
    "chat completion": {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.2},
    "50-chunk stream": {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "temperature": 0.2,
        "stream": True,
        "stream_options": {"include_usage": True},
        "extra_body": {"fake_chunks": 50},
    },
}


def in_process_transport() -> httpx2.MockTransport:
    """The fake provider's answers, as the bytes its server would send."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        answer = fake_openai.chat_completions(Request("POST", request.url.path, {}, body))
        if isinstance(answer, Json):
            return httpx2.Response(
                answer.status,
                content=json.dumps(answer.body).encode(),
                headers={"content-type": "application/json"},
            )
        frames = []
        for event, data in answer.events:
            text = data if isinstance(data, str) else json.dumps(data)
            frames.append((f"event: {event}\n" if event else "") + f"data: {text}\n\n")
        return httpx2.Response(
            answer.status,
            content="".join(frames).encode(),
            headers={"content-type": "text/event-stream"},
        )

    return httpx2.MockTransport(handle)


def run_call(client: openai.OpenAI, kwargs: dict[str, Any]) -> None:
    result = client.chat.completions.create(**kwargs)
    if kwargs.get("stream"):
        for _chunk in result:
            pass


def timed(client: openai.OpenAI, kwargs: dict[str, Any], n: int) -> float:
    """Mean CPU microseconds of the calling thread per call over ``n`` calls."""
    call: Callable[[openai.OpenAI, dict[str, Any]], None] = run_call
    begin = time.thread_time()
    for _ in range(n):
        call(client, kwargs)
    return (time.thread_time() - begin) / n * 1e6


def our_client(export: str) -> client_module.Client:
    settings = {
        "api_key": "phc_bench",
        "host": "http://127.0.0.1:9",  # never contacted while measuring
        "export": export,
        "flush_at": 10**9,
        "flush_interval": 3600,
        "max_queue_size": 10**9,
        "shutdown_timeout": 0.5,
    }
    return client_module.Client(build_settings(Layer(settings), environ={}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke test)")
    parser.add_argument("--loopback", action="store_true", help="serve over 127.0.0.1")
    args = parser.parse_args()
    # Short rounds, many of them (a 50-chunk stream takes ~7 ms): on a shared machine the
    # median round of each variant is steadier than any single long measurement.
    rounds = 5 if args.quick else 60
    counts = {
        "chat completion": 20 if args.quick else 50,
        "50-chunk stream": 4 if args.quick else 10,
    }
    logging.getLogger("posthog_llm_trace").setLevel(logging.ERROR)
    logging.getLogger("posthog").setLevel(logging.CRITICAL)

    server = FakeProvider() if args.loopback else None

    def sdk_options() -> dict[str, Any]:
        if server is not None:
            return {"base_url": server.url + "/v1", "api_key": "sk-bench", "max_retries": 0}
        return {
            "base_url": "http://fake-openai.invalid/v1",
            "api_key": "sk-bench",
            "max_retries": 0,
            "http_client": httpx2.Client(transport=in_process_transport()),
        }

    bare = openai.OpenAI(**sdk_options())
    ph = posthog.Posthog(
        "phc_bench",
        host="http://127.0.0.1:9",
        flush_at=10**9,
        flush_interval=3600,
        max_queue_size=10**9,
    )
    wrapped = PostHogOpenAI(posthog_client=ph, **sdk_options())
    queued_client, inline_client = our_client("thread"), our_client("memory")

    def with_ours(client: client_module.Client) -> Callable[[dict[str, Any], int], float]:
        def run(kwargs: dict[str, Any], count: int) -> float:
            client_module._default = client
            plt.instrument("openai")
            try:
                return timed(bare, kwargs, count)
            finally:
                plt.uninstrument("openai")

        return run

    variants: dict[str, Callable[[dict[str, Any], int], float]] = {
        "bare": lambda kwargs, count: timed(bare, kwargs, count),
        "ours": with_ours(queued_client),
        "ours, events built inline": with_ours(inline_client),
        "posthog wrapper": lambda kwargs, count: timed(wrapped, kwargs, count),
    }
    plt.uninstrument()
    for run in variants.values():  # warm up: imports, first-call work
        for kwargs in CALLS.values():
            run(kwargs, 10)

    results: dict[tuple[str, str], list[float]] = {}
    order = list(variants.items())
    for index in range(rounds):
        for call, kwargs in CALLS.items():
            # The order rotates too: no variant always runs right after another.
            for name, run in order[index % 4 :] + order[: index % 4]:
                gc.collect()
                results.setdefault((call, name), []).append(run(kwargs, counts[call]))

    transport = "loopback HTTP" if server else "in-process transport"
    sizes = ", ".join(f"{c}: {k} calls" for c, k in counts.items())
    print(f"OpenAI call, recorded: {rounds} rounds ({sizes}; {transport})")
    print("CPU µs per call on the calling thread: median of the rounds (best round)")
    print(f"{'call':<18}{'variant':<28}{'µs/call':>16}{'added µs':>18}{'vs wrapper':>14}")
    for call in CALLS:
        median = {name: statistics.median(results[(call, name)]) for name in variants}
        best = {name: min(results[(call, name)]) for name in variants}
        wrapper_added = median["posthog wrapper"] - median["bare"]
        wrapper_best = best["posthog wrapper"] - best["bare"]
        for name in variants:
            added = median[name] - median["bare"]
            added_best = best[name] - best["bare"]
            ratio = (
                f"{added / wrapper_added:.2f} ({added_best / wrapper_best:.2f})"
                if name != "bare" and wrapper_added > 0 and wrapper_best > 0
                else ""
            )
            timing = f"{median[name]:.1f} ({best[name]:.1f})"
            extra = f"{added:.1f} ({added_best:.1f})"
            print(f"{call:<18}{name:<28}{timing:>16}{extra:>18}{ratio:>14}")
    stats = queued_client.stats.snapshot()
    print(f"our events queued for export: {stats.get('queued', 0)}, sent: {stats.get('sent', 0)}")
    queued_client.shutdown(timeout=0.5)
    inline_client.shutdown(timeout=0.5)
    ph.shutdown()
    if server is not None:
        server.close()


if __name__ == "__main__":
    main()
