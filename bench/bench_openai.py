"""Added cost of one recorded OpenAI chat completion, ours next to posthog-python's wrapper.

Run from the repository root::

    .venv/bin/python bench/bench_openai.py            # about a minute on a slow machine
    .venv/bin/python bench/bench_openai.py --quick    # smaller counts, a smoke test

Four ways to make the same call with the real ``openai`` client, one after the other in each
round (rounds alternate, so a drift in the machine's speed hits all alike; the best round of
each is shown, as ``timeit`` does):

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
    """Mean microseconds per call over ``n`` calls."""
    call: Callable[[openai.OpenAI, dict[str, Any]], None] = run_call
    begin = time.perf_counter()
    for _ in range(n):
        call(client, kwargs)
    return (time.perf_counter() - begin) / n * 1e6


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
    n, rounds = (100, 3) if args.quick else (400, 7)
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
            run(kwargs, 30)

    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for call, kwargs in CALLS.items():
            for name, run in variants.items():
                gc.collect()
                results.setdefault((call, name), []).append(run(kwargs, n))

    transport = "loopback HTTP" if server else "in-process transport"
    print(f"OpenAI chat completion, recorded: best of {rounds} rounds x {n} calls ({transport})")
    print(f"{'call':<18}{'variant':<28}{'µs/call':>10}{'added µs':>11}{'vs wrapper':>12}")
    for call in CALLS:
        base = min(results[(call, "bare")])
        wrapper_added = min(results[(call, "posthog wrapper")]) - base
        for name in variants:
            best = min(results[(call, name)])
            added = best - base
            ratio = f"{added / wrapper_added:.2f}" if name != "bare" and wrapper_added > 0 else ""
            print(f"{call:<18}{name:<28}{best:>10.1f}{added:>11.1f}{ratio:>12}")
        spread = statistics.pstdev(results[(call, "bare")])
        print(f"{'':<18}{'(bare spread over rounds)':<28}{spread:>10.1f}")
    stats = queued_client.stats.snapshot()
    print(f"our events queued for export: {stats.get('queued', 0)}, sent: {stats.get('sent', 0)}")
    queued_client.shutdown(timeout=0.5)
    inline_client.shutdown(timeout=0.5)
    ph.shutdown()
    if server is not None:
        server.close()


if __name__ == "__main__":
    main()
