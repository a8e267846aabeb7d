"""The Celery app of the Celery tests, instrumented with posthog-llm-trace.

The worker subprocess builds it from the environment (``celery -A tests.celery_app:app worker``);
the test process calls :func:`make_app` with the same values, so both sides agree on the broker,
the queues and the task names:

- ``PLT_BROKER``: broker URL (a Redis DB of its own, or RabbitMQ);
- ``PLT_QUEUE``: the queue of the application's tasks;
- ``PLT_EXPORT_QUEUE``: the queue of ``posthog_llm_trace.export_batch`` (``celery_queue``);
- ``PLT_KEYPREFIX``: a Redis key prefix unique to the test run, so that runs never collide.

The worker's posthog-llm-trace settings come from its environment as in production
(``POSTHOG_API_KEY``, ``POSTHOG_HOST``, ``POSTHOG_LLM_TRACE_*``).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from posthog_llm_trace import feedback, generation, run_in_context
from posthog_llm_trace.celery import instrument

#: How long an unacknowledged Redis message stays invisible after its worker died.
VISIBILITY_TIMEOUT = 3


def make_app(broker: str, queue: str, export_queue: str, keyprefix: str = "") -> Celery:
    """A Celery app on ``broker`` with the test tasks, instrumented."""
    app = Celery("plt_tests", broker=broker, set_as_current=False)
    if broker.startswith("redis"):
        queues = [_queue(queue), _queue(export_queue)]
        transport_options: dict[str, Any] = {
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        }
        if keyprefix:
            transport_options["global_keyprefix"] = keyprefix
    else:
        # RabbitMQ keeps queues: let the broker delete ours a minute after their last use.
        args = {"x-expires": 60_000}
        queues = [_queue(queue, args), _queue(export_queue, args)]
        transport_options = {}
    app.conf.update(
        task_default_queue=queue,
        task_queues=queues,
        broker_transport_options=transport_options,
        broker_connection_timeout=2,
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
    )
    _register_tasks(app)
    instrument(app)
    return app


def _queue(name: str, arguments: dict[str, Any] | None = None) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name, queue_arguments=arguments)


def _register_tasks(app: Celery) -> None:
    @app.task(name="tests.summarise", shared=False)
    def summarise(text: str) -> str:
        """A task that records one generation: what an LLM summary job does."""
        with generation(
            "summarise", model="fake-1", provider="test", input=[{"role": "user", "content": text}]
        ) as gen:
            summary = text[:20]
            gen.set_output(summary)
            gen.set_usage(input_tokens=len(text), output_tokens=len(summary))
        return summary

    @app.task(name="tests.fan_out", shared=False)
    def fan_out(text: str) -> None:
        """A task that starts another task (propagation from worker to worker)."""
        summarise.delay(text)

    @app.task(name="tests.fail", shared=False)
    def fail(text: str) -> None:
        """A task that records a generation, then fails."""
        with generation("before-failing", model="fake-1", provider="test", input=text) as gen:
            gen.set_output("ok")
        raise ValueError("the task failed on purpose")

    @app.task(name="tests.nothing", shared=False)
    def nothing() -> str:
        """A task that records nothing (an e-mail task, say)."""
        return "done"

    @app.task(name="tests.score", shared=False)
    def score(trace_id: str, value: float) -> bool:
        """A later evaluation of a trace, computed by a worker."""
        return feedback(trace_id, value, name="eval_relevance", comment="scored by a worker")

    @app.task(name="tests.late", shared=False)
    def late(text: str, delay: float) -> None:
        """Records a generation from a thread that outlives the task: only the worker's exit
        flush can deliver it (the export interval is long in the test that uses it)."""

        def record() -> None:
            time.sleep(delay)
            with generation("late", model="fake-1", provider="test", input=text) as gen:
                gen.set_output("late")

        threading.Thread(target=run_in_context(record)).start()


def app_from_env() -> Celery:
    return make_app(
        os.environ["PLT_BROKER"],
        os.environ["PLT_QUEUE"],
        os.environ["PLT_EXPORT_QUEUE"],
        os.environ.get("PLT_KEYPREFIX", ""),
    )


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    # ``app`` is built on first use, from the environment: the worker asks for it, while the
    # test process only imports make_app (and must not instrument an app it does not use).
    global _app
    if name == "app":
        if _app is None:
            _app = app_from_env()
        return _app
    raise AttributeError(name)
