"""What the package knows about each SDK: one module per SDK.

Each module reads that SDK's request arguments, response objects, usage, stream events and stop
reasons, for the manual API (``Generation.set_output(response)``, ``set_usage(response.usage)``)
and for the instrumentation (``install()`` / ``uninstall()``, used by :mod:`..instrument`).
The helpers here are what every provider module shares: opening the generation of one call.
"""

from __future__ import annotations

from typing import Any

from .. import context
from ..generations import Generation
from ..spans import UNSET

__all__ = ["begin_call", "end_call"]


def _recording() -> bool:
    node = context.current_node()
    if node is not None:
        return node.trace.recording and not node.trace.ended
    from ..client import get_client

    return get_client().recording


def begin_call(
    name: str,
    *,
    provider: str,
    model: str | None = None,
    input: Any = UNSET,
    model_parameters: dict[str, Any] | None = None,
    tools: Any = None,
    base_url: str | None = None,
    stream: bool | None = None,
) -> tuple[Generation, bool] | None:
    """The generation that one SDK call fills, and whether the call owns it (must end it).

    None when nothing is being recorded (export disabled, an unsampled trace): the SDK call then
    runs as if it were not instrumented. When the application has a ``generation(...)`` open
    around the call, that generation is filled instead of a second one being opened, so one
    provider call is one ``$ai_generation``. Values the application gave win.
    """
    if not _recording():
        return None
    current = context.current_span()
    if isinstance(current, Generation) and not current._end_perf and not current.provider_call:
        current.provider_call = True
        if current.model is None:
            current.model = model
        if current.provider is None:
            current.provider = provider
        if current.input is UNSET and input is not UNSET:
            current.set_input(input)
        if model_parameters and current.model_parameters is None:
            current.model_parameters = dict(model_parameters)
        if tools is not None and current.tools is None:
            current.tools = tools
        if base_url is not None and current.base_url is None:
            current.base_url = base_url
        if stream is not None and current.stream is None:
            current.stream = stream
        return current, False
    gen = Generation(
        name,
        model=model,
        provider=provider,
        input=input,
        model_parameters=model_parameters,
        tools=tools,
        base_url=base_url,
        stream=stream,
    )
    gen.provider_call = True
    gen.start()
    return gen, True


def end_call(gen: Generation, owned: bool, error: BaseException | None = None) -> None:
    """End the call's generation: the one it opened, or mark the application's one failed (the
    application's ``with`` block ends it)."""
    if owned:
        gen.end(error)
    elif error is not None:
        gen.set_error(error)
