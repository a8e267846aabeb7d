"""What the package knows about each SDK: one module per SDK.

Each module reads that SDK's request arguments, response objects, usage, stream events and stop
reasons, for the manual API (``Generation.set_output(response)``, ``set_usage(response.usage)``)
and for the instrumentation (``install()`` / ``uninstall()``, used by :mod:`..instrument`).
The helpers here are what every provider module shares: opening the generation of one call,
and reading an object whatever provider it comes from (``read_usage``, ``read_response``).

Every provider module exposes ``read_usage(usage) -> dict[str, int] | None`` (the package's usage
keys: ``input_tokens`` gross, ``output_tokens``, ``cache_read_input_tokens``,
``cache_creation_input_tokens``, ``cache_creation_5m_input_tokens``,
``cache_creation_1h_input_tokens``, ``reasoning_tokens``, ``web_search_count``) and
``read_response(obj) -> dict[str, Any] | None`` (keys among ``output``, a list of messages as
PostHog renders them, ``stop_reason``, ``model``, ``usage``); both return None for an object
that is not that provider's.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .. import context
from .. import generations as _generations  # a module: generations.py reads through us
from ..spans import UNSET

if TYPE_CHECKING:
    from ..generations import Embedding, Generation

__all__ = ["begin_call", "begin_embedding", "end_call", "read_response", "read_usage", "recording"]

#: The provider modules that can read objects, in the order they are tried.
READERS = ("openai", "anthropic")
_readers: tuple[ModuleType, ...] = ()


def _provider_first(obj: Any) -> tuple[ModuleType, ...]:
    """The readers, the one whose SDK made ``obj`` first (its class's module says so)."""
    global _readers
    if not _readers:  # imported on first use: they import this module
        _readers = tuple(importlib.import_module(f"{__name__}.{name}") for name in READERS)
    module = type(obj).__module__
    for reader in _readers:
        if module.startswith(reader.__name__.rsplit(".", 1)[-1]):
            return (reader, *(r for r in _readers if r is not reader))
    return _readers


def _first(method: str, obj: Any) -> Any:
    for reader in _provider_first(obj):
        read: Callable[[Any], Any] | None = getattr(reader, method, None)
        if read is None:
            continue
        try:
            result = read(obj)
        except Exception:  # a reader must never raise; if one does, try the next
            continue
        if result is not None:
            return result
    return None


def read_usage(usage: Any) -> dict[str, int] | None:
    """Token counts of any supported provider's usage object or dict, in the package's usage
    keys; None when no provider recognises it."""
    counts: dict[str, int] | None = _first("read_usage", usage)
    if counts is None:
        counts = _plain_usage(usage)
    return counts


def _plain_usage(usage: Any) -> dict[str, int] | None:
    """``{"input_tokens", "output_tokens"}`` with nothing to tell the provider: read as is."""
    if not isinstance(usage, Mapping):
        return None
    out = {
        key: value
        for key in ("input_tokens", "output_tokens")
        if type(value := usage.get(key)) is int
    }
    return out or None


def read_response(obj: Any) -> dict[str, Any] | None:
    """What a provider's response object (or its dict) says: ``output``, ``stop_reason``,
    ``model``, ``usage``; None when no provider recognises it."""
    result: dict[str, Any] | None = _first("read_response", obj)
    return result


def recording() -> bool:
    """Whether a call made now would be recorded: the one check a disabled call pays."""
    return _recording()


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
    if (
        isinstance(current, _generations.Generation)
        and not current._end_perf
        and not current.provider_call
    ):
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
    gen = _generations.Generation(
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


def begin_embedding(
    name: str,
    *,
    provider: str,
    model: str | None = None,
    input: Any = UNSET,
    base_url: str | None = None,
) -> tuple[Embedding, bool] | None:
    """:func:`begin_call` for an embeddings call: fills an open application ``embedding(...)``
    or opens one of its own."""
    if not _recording():
        return None
    current = context.current_span()
    if (
        isinstance(current, _generations.Embedding)
        and not current._end_perf
        and not current.provider_call
    ):
        current.provider_call = True
        if current.model is None:
            current.model = model
        if current.provider is None:
            current.provider = provider
        if current.input is UNSET and input is not UNSET:
            current.set_input(input)
        if base_url is not None and current.base_url is None:
            current.base_url = base_url
        return current, False
    emb = _generations.Embedding(
        name, model=model, provider=provider, input=input, base_url=base_url
    )
    emb.provider_call = True
    emb.start()
    return emb, True


def end_call(gen: Generation | Embedding, owned: bool, error: BaseException | None = None) -> None:
    """End the call's generation: the one it opened, or mark the application's one failed (the
    application's ``with`` block ends it)."""
    if owned:
        gen.end(error)
    elif error is not None:
        gen.set_error(error)
