"""Added cost of one recorded Anthropic message, ours next to posthog-python's wrapper.

Run from the repository root::

    .venv/bin/python bench/bench_anthropic.py            # about a minute on a slow machine
    .venv/bin/python bench/bench_anthropic.py --quick    # smaller counts, a smoke test

The same method as ``bench_openai.py``: four ways to make the same call with the real
``anthropic`` client, one after the other in each round, best round shown:

- ``bare``: a plain ``anthropic.Anthropic``, nothing recorded.
- ``ours``: the same client, instrumented by ``posthog_llm_trace.instrument("anthropic")``; each
  call opens a trace of its own, its events are queued for the background exporter (which does
  not drain while we measure). ``ours, events built inline`` maps them on the caller's thread
  (the ``memory`` export mode).
- ``posthog wrapper``: posthog-python's ``posthog.ai.anthropic.Anthropic`` with a
  ``posthog.Posthog`` client that queues but does not send.

The answers are ``tests/fake_anthropic.py``'s, served through an in-process ``httpx``
transport (the bytes the real API sends, JSON and SSE). Two calls: a message, and a stream of
50 text deltas (``stream=True``; the wrapper records streams of ``create(stream=True)``).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import anthropic  # noqa: E402
import httpx2  # noqa: E402
import posthog  # noqa: E402
from posthog.ai.anthropic import Anthropic as PostHogAnthropic  # noqa: E402

import posthog_llm_trace as plt  # noqa: E402
from posthog_llm_trace import client as client_module  # noqa: E402
from posthog_llm_trace.settings import Layer, build_settings  # noqa: E402
from tests import fake_anthropic  # noqa: E402
from tests.fake_provider import Json, Request  # noqa: E402

QUESTION = " ".join(f"word{i}" for i in range(49))  # echoed back: 50 text deltas
ASK = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "system": "You are a helpful assistant for an online shop.",
    "messages": [{"role": "user", "content": QUESTION}],
}
CALLS: dict[str, dict[str, Any]] = {"message": ASK, "50-delta stream": {**ASK, "stream": True}}


def in_process_transport() -> httpx2.MockTransport:
    def handle(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        answer = fake_anthropic.messages(Request("POST", request.url.path, {}, body))
        if isinstance(answer, Json):
            data = json.dumps(answer.body).encode()
            return httpx2.Response(
                answer.status, content=data, headers={"content-type": "application/json"}
            )
        frames = "".join(
            (f"event: {event}\n" if event else "") + f"data: {json.dumps(data)}\n\n"
            for event, data in answer.events
        )
        return httpx2.Response(
            answer.status, content=frames.encode(), headers={"content-type": "text/event-stream"}
        )

    return httpx2.MockTransport(handle)


def timed(client: anthropic.Anthropic, kwargs: dict[str, Any], n: int) -> float:
    """Mean microseconds per call over ``n`` calls."""
    begin = time.perf_counter()
    for _ in range(n):
        result = client.messages.create(**kwargs)
        if kwargs.get("stream"):
            for _event in result:
                pass
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
    args = parser.parse_args()
    n, rounds = (100, 3) if args.quick else (400, 7)
    logging.getLogger("posthog_llm_trace").setLevel(logging.ERROR)
    logging.getLogger("posthog").setLevel(logging.CRITICAL)
    options: dict[str, Any] = {
        "base_url": "http://fake-anthropic.invalid",
        "api_key": "sk-ant-bench",
        "max_retries": 0,
    }
    bare = anthropic.Anthropic(
        **options, http_client=httpx2.Client(transport=in_process_transport())
    )
    ph = posthog.Posthog(
        "phc_bench",
        host="http://127.0.0.1:9",
        flush_at=10**9,
        flush_interval=3600,
        max_queue_size=10**9,
    )
    wrapped = PostHogAnthropic(
        posthog_client=ph, **options, http_client=httpx2.Client(transport=in_process_transport())
    )
    queued_client, inline_client = our_client("thread"), our_client("memory")

    def with_ours(client: client_module.Client) -> Callable[[dict[str, Any], int], float]:
        def run(kwargs: dict[str, Any], count: int) -> float:
            client_module._default = client
            plt.instrument("anthropic")
            try:
                return timed(bare, kwargs, count)
            finally:
                plt.uninstrument("anthropic")

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

    print(f"Anthropic message, recorded: best of {rounds} rounds x {n} calls (in-process)")
    print(f"{'call':<18}{'variant':<28}{'µs/call':>10}{'added µs':>11}{'vs wrapper':>12}")
    for call in CALLS:
        base = min(results[(call, "bare")])
        wrapper_added = min(results[(call, "posthog wrapper")]) - base
        for name in variants:
            best = min(results[(call, name)])
            added = best - base
            ratio = f"{added / wrapper_added:.2f}" if name != "bare" and wrapper_added > 0 else ""
            print(f"{call:<18}{name:<28}{best:>10.1f}{added:>11.1f}{ratio:>12}")
    queued_client.shutdown(timeout=0.5)
    inline_client.shutdown(timeout=0.5)
    ph.shutdown()


if __name__ == "__main__":
    main()
