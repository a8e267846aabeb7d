"""Recording ``anthropic`` calls: the patched ``Messages`` methods and the streams they return,
followed in place (see :mod:`.._calls`)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ...spans import UNSET
from .. import _calls, recording
from . import _begin, output_message, read_response

if TYPE_CHECKING:
    from ...generations import Generation

logger = logging.getLogger("posthog_llm_trace")


# --- streams ----------------------------------------------------------------------------------


def _stream_event(gen: Generation, state: dict[str, Any], event: Any) -> None:
    """One raw stream event. Usage: ``message_start`` carries the input side, each
    ``message_delta`` cumulative totals that replace what came before."""
    kind = event.type
    if kind == "content_block_delta":
        delta = event.delta
        dtype = delta.type
        if dtype == "text_delta":
            piece, chunk_kind = delta.text, "text"
        elif dtype == "input_json_delta":
            piece, chunk_kind = delta.partial_json, "tool_call"
        elif dtype == "thinking_delta":
            piece, chunk_kind = delta.thinking, "reasoning"
        else:  # signature and citations: nothing to show, no content for the first token
            return
        if not piece:
            return
        block = state["blocks"].get(event.index)
        if block is None:  # a delta before its block started: keep it anyway
            block = state["blocks"][event.index] = _Block({"type": _DELTA_BLOCK[dtype]})
        block.pieces.append(piece)
        if chunk_kind == "tool_call":
            gen._chunk(piece, "tool_call", block.get("id"), block.get("name"))
        else:
            gen._chunk(piece, chunk_kind, None, None)
    elif kind == "content_block_start":
        block = event.content_block
        data = block.to_dict()
        data.pop("signature", None)
        data.pop("citations", None)
        state["blocks"][event.index] = _Block(data)
    elif kind == "message_start":
        message = event.message
        usage = state["usage"] = message.usage.to_dict()
        gen.set_usage(usage)
        if gen.model is None and message.model:
            gen.model = message.model
    elif kind == "message_delta":
        reason = event.delta.stop_reason
        if reason:
            gen.stop_reason = reason
        usage = state["usage"]
        usage.update(event.usage.to_dict(exclude_none=True))
        gen.set_usage(usage)


#: The block a delta belongs to, when its ``content_block_start`` was not seen.
_DELTA_BLOCK = {"text_delta": "text", "input_json_delta": "tool_use", "thinking_delta": "thinking"}
#: Where a block's streamed pieces go.
_PIECES_KEY = {"text": "text", "thinking": "thinking"}


class _Block(dict[str, Any]):
    """A content block being streamed: its start, and the pieces its deltas carried."""

    __slots__ = ("pieces",)

    def __init__(self, start: dict[str, Any]) -> None:
        super().__init__(start)
        self.pieces: list[str] = []

    def final(self) -> dict[str, Any]:
        block = dict(self)
        if self.pieces:
            joined = "".join(self.pieces)
            key = _PIECES_KEY.get(block.get("type", ""))
            if key is not None:
                block[key] = (block.get(key) or "") + joined
            else:  # a tool call's input, as the JSON text the model wrote
                block["input"] = joined
        return block


def _stream_end(gen: Generation, state: dict[str, Any], owned: bool) -> None:
    """The streamed blocks as the output, in order (a stream ended early: what came)."""
    blocks = state["blocks"]
    if not blocks or not (owned or gen.output is UNSET):
        return
    gen.output = [output_message([blocks[index].final() for index in sorted(blocks)])]


def _follow(stream: Any, gen: Generation, owned: bool) -> bool:
    state: dict[str, Any] = {"blocks": {}, "usage": {}}

    def on_item(gen: Generation, _state: dict[str, Any], event: Any) -> None:
        _stream_event(gen, state, event)

    def on_end(gen: Generation, _state: dict[str, Any]) -> None:
        _stream_end(gen, state, owned)

    return _calls.follow_stream(stream, gen, owned, on_item, on_end)


# --- recording ----------------------------------------------------------------------------------

_patches = _calls.Patches()


def _raw_mode(kwargs: Mapping[str, Any]) -> str | None:
    """``"raw"`` under ``with_raw_response``, ``"stream"`` under ``with_streaming_response``."""
    headers = kwargs.get("extra_headers")
    if headers:
        mode = headers.get("X-Stainless-Raw-Response")
        return mode if isinstance(mode, str) else None
    return None


def _settle(gen: Generation, owned: bool, result: Any, stream: bool, raw: str | None) -> None:
    """Record a call's result; streams are followed and end their generation themselves."""
    if raw is not None and getattr(result, "http_response", None) is not None:
        gen.http_status = result.status_code
        if raw != "raw":  # the application reads the body itself; we do not
            _calls.end(gen, owned)
            return
        result = result.parse()  # cached: the application's parse() gets this very object
    if stream:
        response = getattr(result, "response", None)
        if gen.http_status is None and response is not None:
            gen.http_status = response.status_code
        if _follow(result, gen, owned):
            return
    if gen.http_status is None:
        gen.http_status = 200
    read = read_response(result)
    if read is not None:
        gen._fill(read, output=owned or gen.output is UNSET)
    _calls.end(gen, owned)


def _start(resource: Any, kwargs: dict[str, Any], stream: bool) -> tuple[Generation, bool] | None:
    try:
        return _begin(resource, kwargs, stream)
    except Exception:
        logger.warning("posthog-llm-trace could not read a call", exc_info=True)
        return None


def _settle_safely(
    gen: Generation, owned: bool, result: Any, stream: bool, raw: str | None = None
) -> None:
    try:
        _settle(gen, owned, result, stream, raw)
    except Exception:
        logger.warning("posthog-llm-trace could not read a response", exc_info=True)
        _calls.end(gen, owned)


def _wrap_create(original: Any) -> Any:
    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _patches.active or not recording():
            return original(self, *args, **kwargs)
        stream = kwargs.get("stream") is True
        call = _start(self, kwargs, stream)
        if call is None:
            return original(self, *args, **kwargs)
        gen, owned = call
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            _calls.end(gen, owned, exc)
            raise
        _settle_safely(gen, owned, result, stream, _raw_mode(kwargs))
        return result

    return create


def _wrap_async_create(original: Any) -> Any:
    @functools.wraps(original)
    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _patches.active or not recording():
            return await original(self, *args, **kwargs)
        stream = kwargs.get("stream") is True
        call = _start(self, kwargs, stream)
        if call is None:
            return await original(self, *args, **kwargs)
        gen, owned = call
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            _calls.end(gen, owned, exc)
            raise
        raw = _raw_mode(kwargs)
        if raw == "raw":  # the async parse() is awaited here; it is cached for the application
            gen.http_status = result.status_code
            try:
                parsed = await result.parse()
            except Exception:
                _calls.end(gen, owned)
                return result
            _settle_safely(gen, owned, parsed, stream)
            return result
        _settle_safely(gen, owned, result, stream, raw)
        return result

    return create


def _request_attribute(manager: Any) -> str | None:
    """Where a stream manager (``MessageStreamManager``, its async and beta twins) keeps the
    request it makes on ``__enter__``: ``messages.stream()`` posts itself, not through
    ``create``. A private, name-mangled attribute: None if a version has none."""
    name: str
    for name in vars(manager):
        if name.endswith("__api_request"):
            return name
    return None


def _wrap_stream(original: Any) -> Any:
    """``messages.stream()``: the call is recorded when the manager is entered (when the request
    is made), and its raw stream followed in place under the ``MessageStream``."""

    @functools.wraps(original)
    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        manager = original(self, *args, **kwargs)
        if not _patches.active or not recording():  # checked again when the request is made
            return manager
        attribute = _request_attribute(manager)
        if attribute is None:
            return manager
        request: Callable[[], Any] = getattr(manager, attribute)

        def traced_request() -> Any:
            if not _patches.active or not recording():
                return request()
            call = _start(self, kwargs, True)
            if call is None:
                return request()
            gen, owned = call
            try:
                raw = request()
            except BaseException as exc:
                _calls.end(gen, owned, exc)
                raise
            _settle_safely(gen, owned, raw, True)
            return raw

        setattr(manager, attribute, traced_request)
        return manager

    return stream


class _Deferred:
    """An awaitable that makes its coroutine only when awaited: a manager never entered then
    leaves only the SDK's own un-awaited request behind, as it would without us."""

    __slots__ = ("_make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make

    def __await__(self) -> Any:
        return self._make().__await__()


def _wrap_async_stream(original: Any) -> Any:
    @functools.wraps(original)
    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        manager = original(self, *args, **kwargs)
        if not _patches.active or not recording():  # checked again when the request is made
            return manager
        attribute = _request_attribute(manager)
        if attribute is None:
            return manager
        request = getattr(manager, attribute)

        async def traced_request() -> Any:
            if not _patches.active or not recording():
                return await request
            call = _start(self, kwargs, True)
            if call is None:
                return await request
            gen, owned = call
            try:
                raw = await request
            except BaseException as exc:
                _calls.end(gen, owned, exc)
                raise
            _settle_safely(gen, owned, raw, True)
            return raw

        setattr(manager, attribute, _Deferred(traced_request))
        return manager

    return stream


def patch() -> None:
    """Wrap the `Messages` methods (see :func:`..install`)."""
    from anthropic.resources.messages import messages

    patches = _patches
    resources: list[tuple[type, type]] = [(messages.Messages, messages.AsyncMessages)]
    try:  # ``client.beta.messages``: the same calls, beta types of the same shape
        from anthropic.resources.beta.messages import messages as beta
    except ImportError:
        pass
    else:
        resources.append((beta.Messages, beta.AsyncMessages))
    for sync, async_ in resources:
        patches.patch(sync, "create", _wrap_create)
        patches.patch(async_, "create", _wrap_async_create)
        patches.patch(sync, "parse", _wrap_create)
        patches.patch(async_, "parse", _wrap_async_create)
        patches.patch(sync, "stream", _wrap_stream)
        patches.patch(async_, "stream", _wrap_async_stream)
    patches.active = True


def unpatch() -> None:
    """Put the SDK's own methods back."""
    _patches.restore()
