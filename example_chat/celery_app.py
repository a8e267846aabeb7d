"""The examples' Celery app: a background summary job whose LLM call joins the trace of the
request (or script) that started it.

Run a worker (Redis on 127.0.0.1:6379, or set ``CELERY_BROKER_URL``)::

    celery -A example_chat.celery_app worker -l info

then start a job from the Django or Flask example (``POST /summarise/`` in Django,
``POST /summarise`` in Flask), or from a trace of its own::

    python -m example_chat.celery_app "Text to summarise. It has two sentences."

Without ``POSTHOG_API_KEY`` the events are printed as JSON lines (by this script for the trace,
by the worker for the task's spans) instead of being sent to PostHog. With it, set
``POSTHOG_LLM_TRACE_EXPORT=celery`` to have the worker post the script's events too.
"""

from __future__ import annotations

import os
import sys

from celery import Celery
from celery.signals import worker_init

from posthog_llm_trace import configure, generation, span, trace
from posthog_llm_trace.celery import instrument

app = Celery("example_chat", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)
instrument(app)

MODEL = os.environ.get("EXAMPLE_MODEL", "gpt-4o-mini")


@worker_init.connect
def _show_events_without_a_key(**_: object) -> None:
    # Only in the worker: a Django or Flask example importing this module keeps its own settings.
    if not os.environ.get("POSTHOG_API_KEY"):
        configure(export="console")  # no PostHog project: print the events instead


@app.task(name="example_chat.summarise")
def summarise(text: str) -> str:
    """Summarise ``text`` in one sentence (a deterministic fake model: the first sentence)."""
    messages = [
        {"role": "system", "content": "Summarise the user's text in one sentence."},
        {"role": "user", "content": text},
    ]
    with generation("summarise", model=MODEL, provider="openai", input=messages) as gen:
        summary = text.split(". ")[0].rstrip(".") + "."
        gen.set_output({"role": "assistant", "content": summary})
        gen.set_usage(input_tokens=len(text) // 4 + 20, output_tokens=len(summary) // 4 + 1)
    return summary


def main(argv: list[str]) -> None:
    if not os.environ.get("POSTHOG_API_KEY"):
        configure(export="console")
    text = " ".join(argv) or "Celery runs the job. PostHog shows it under the request."
    with (
        trace("summarise-document", distinct_id="example-user", session_id="example-session"),
        span("enqueue", kind="step"),
    ):
        summarise.delay(text)
    print("queued; the worker records the generation under this trace", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
