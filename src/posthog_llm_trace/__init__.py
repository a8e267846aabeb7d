"""PostHog LLM analytics for Django and Flask.

Record what your application does with LLMs; each request becomes one PostHog trace::

    from posthog_llm_trace import generation, tool

    with generation("answer", model="gpt-4o-mini", provider="openai", input=messages) as gen:
        reply = call_the_model(messages)
        gen.set_output(reply)
        gen.set_usage(input_tokens=120, output_tokens=40)

The same API works in Django views, Flask views, Celery tasks and plain scripts (where a span
with no open trace opens a trace of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from .client import Client, client_for, configure, flush, get_client, shutdown, stats
from .context import current_span, current_trace, run_in_context
from .generations import Embedding, Generation
from .instrument import instrument, instrumented, uninstrument
from .settings import ConfigurationError, Settings
from .spans import UNSET, ErrorInfo, Span, Trace
from .trace_feedback import feedback, sign_trace, verify_trace_token

__all__ = [
    "Client",
    "ConfigurationError",
    "Embedding",
    "Generation",
    "Settings",
    "Span",
    "Trace",
    "configure",
    "current_span",
    "current_trace",
    "embedding",
    "feedback",
    "flush",
    "generation",
    "get_client",
    "instrument",
    "instrumented",
    "run_in_context",
    "shutdown",
    "sign_trace",
    "span",
    "stats",
    "tool",
    "trace",
    "uninstrument",
    "verify_trace_token",
]

F = TypeVar("F", bound=Callable[..., Any])


def trace(
    name: str,
    *,
    distinct_id: str | None = None,
    session_id: str | None = None,
    properties: Mapping[str, Any] | None = None,
    groups: Mapping[str, Any] | None = None,
    input: Any = None,
    client: Any = None,
) -> Trace:
    """Open a trace outside a request (scripts, jobs, management commands); a context manager,
    sync or async::

        with trace("nightly-summary", distinct_id="user-1", session_id="conv-9") as t:
            ...
            t.set_output(summary)

    It becomes a ``$ai_trace`` event when it ends, if a span was recorded in it. Spans opened
    inside it export with its ``client`` (default: the one :func:`configure` made). ``client``
    may also be a posthog-python client (``posthog.Posthog``): the trace's events are then
    delivered through it (``export="posthog"``), its ``before_send`` and ``disabled`` applying.
    """
    return Trace(
        name,
        distinct_id=distinct_id,
        session_id=session_id,
        properties=properties,
        groups=groups,
        input=input,
        client=client_for(client),
    )


@overload
def generation(name: F) -> F: ...
@overload
def generation(
    name: str | None = None,
    *,
    model: str | None = None,
    provider: str | None = None,
    input: Any = UNSET,
    model_parameters: Mapping[str, Any] | None = None,
    tools: Any = None,
    base_url: str | None = None,
    stream: bool | None = None,
    properties: Mapping[str, Any] | None = None,
) -> Generation: ...
def generation(
    name: Any = None,
    *,
    model: str | None = None,
    provider: str | None = None,
    input: Any = UNSET,
    model_parameters: Mapping[str, Any] | None = None,
    tools: Any = None,
    base_url: str | None = None,
    stream: bool | None = None,
    properties: Mapping[str, Any] | None = None,
) -> Any:
    """One LLM call (``$ai_generation``). A context manager (sync or async)::

        with generation("answer", model="gpt-4o-mini", provider="openai", input=messages) as g:
            for piece in stream:
                g.chunk(piece)  # time to first token, streamed output
            g.set_usage(input_tokens=120, output_tokens=40)

    or a decorator, whose input is the call's arguments and output the return value (a
    provider response's ``usage`` and ``model`` are read too)::

        @generation(model="gpt-4o-mini", provider="openai")
        def answer(messages): ...
    """
    if callable(name):
        return Generation()(name)
    return Generation(
        name,
        model=model,
        provider=provider,
        input=input,
        model_parameters=model_parameters,
        tools=tools,
        base_url=base_url,
        stream=stream,
        properties=properties,
    )


@overload
def embedding(name: F) -> F: ...
@overload
def embedding(
    name: str | None = None,
    *,
    model: str | None = None,
    provider: str | None = None,
    input: Any = UNSET,
    base_url: str | None = None,
    properties: Mapping[str, Any] | None = None,
) -> Embedding: ...
def embedding(
    name: Any = None,
    *,
    model: str | None = None,
    provider: str | None = None,
    input: Any = UNSET,
    base_url: str | None = None,
    properties: Mapping[str, Any] | None = None,
) -> Any:
    """One embedding call (``$ai_embedding``): a context manager or a decorator, like
    :func:`generation`::

        with embedding("embed-docs", model="text-embedding-3-small", input=texts) as e:
            e.set_usage(input_tokens=42)
    """
    if callable(name):
        return Embedding()(name)
    return Embedding(
        name, model=model, provider=provider, input=input, base_url=base_url, properties=properties
    )


@overload
def tool(name: F) -> F: ...
@overload
def tool(
    name: str | None = None, *, input: Any = UNSET, properties: Mapping[str, Any] | None = None
) -> Span: ...
def tool(
    name: Any = None, *, input: Any = UNSET, properties: Mapping[str, Any] | None = None
) -> Any:
    """A tool call (``$ai_span`` with ``$ai_span_type: tool``). As a decorator, the input is
    the call's arguments and the output its return value::

        @tool()
        def get_weather(city: str) -> dict: ...
    """
    if callable(name):
        return Span(kind="tool")(name)
    return Span(name, kind="tool", input=input, properties=properties)


@overload
def span(name: F) -> F: ...
@overload
def span(
    name: str | None = None,
    *,
    kind: str = "span",
    input: Any = UNSET,
    properties: Mapping[str, Any] | None = None,
) -> Span: ...
def span(
    name: Any = None,
    *,
    kind: str = "span",
    input: Any = UNSET,
    properties: Mapping[str, Any] | None = None,
) -> Any:
    """Any other step (``$ai_span``, ``kind`` in ``$ai_span_type``): ``agent``, ``workflow``,
    ``step``, ``retrieval``, ``tool``, ``chunk``, ``span``, or any other short string an
    integration needs (``handoff``, ``guardrail``, ``mcp_tools``). A kind that is not a string
    or is over 64 characters becomes ``span``: a label never raises into the application."""
    if callable(name):
        return Span(kind=kind)(name)
    return Span(name, kind=kind, input=input, properties=properties)


ErrorInfo = ErrorInfo  # re-exported for type annotations in user code
