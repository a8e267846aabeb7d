"""Bracketing posthog-python's wrapper calls (see :mod:`.posthog`): one call, one generation.

Each wrapper method (``chat.completions.create``, ``messages.create`` / ``stream``, Gemini's
``generate_content``...) runs with a generation of ours current -- the application's own
``generation(...)`` when one is open around the call -- so that our SDK instrumentation
underneath fills it instead of opening a second, and the wrapper's event is tied to it by a
private property in ``posthog_properties``. The generation ends when the call has returned and
its event has been captured (for a stream, at the stream's end).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .. import context
from ..captured import LINK_PROPERTIES
from ..export.posthog import delivering
from ..generations import Embedding, Generation, _ModelCall

__all__ = ["MARKER", "bracketed"]

logger = logging.getLogger("posthog_llm_trace")


class _State:
    """Whether the bridge is installed, and the methods it replaced (to put back)."""

    def __init__(self) -> None:
        self.active = False
        self.saved: list[tuple[type, str, Any]] = []
        self.lock = threading.Lock()


_state = _State()

#: Set while a wrapper call runs outside any recording trace: its SDK call and its event are
#: then posthog-python's alone (our SDK instrumentation records nothing underneath it).
_bypass: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "posthog_llm_trace_posthog_bypass", default=False
)
#: The private property that ties a wrapper's captured event to the bracket of its call.
MARKER = "$posthog_llm_trace_call"

# --- brackets: one wrapper call, one generation ------------------------------------------------

_brackets: OrderedDict[str, _Bracket] = OrderedDict()
_brackets_lock = threading.Lock()
_keys = itertools.count(1)
#: Streams abandoned before their end never capture: forget the oldest brackets past this.
MAX_OPEN_BRACKETS = 10_000


class _Bracket:
    """A wrapper call in flight: the generation it fills, and whether its call has returned
    and its event been captured (for a stream the event comes at the stream's end)."""

    __slots__ = ("captured", "done", "gen", "key", "kind", "owned", "returned", "streams")

    def __init__(self, gen: _ModelCall, owned: bool, kind: str, streams: bool) -> None:
        self.gen = gen
        self.owned = owned
        self.kind = kind
        self.streams = streams
        self.returned = self.captured = self.done = False
        self.key = f"{next(_keys)}"
        with _brackets_lock:
            _brackets[self.key] = self
            while len(_brackets) > MAX_OPEN_BRACKETS:
                _brackets.popitem(last=False)

    def capture(self, props: dict[str, Any]) -> str:
        from ..events import _event_uuid

        self.gen.captured = {k: v for k, v in props.items() if k not in LINK_PROPERTIES}
        self.captured = True
        if self.returned:
            self.finish()
        return _event_uuid(self.gen.id)

    def release(self) -> None:
        """No event will come (a disabled client, sampling): end on what our side has."""
        self.captured = True
        if self.returned:
            self.finish()

    def returned_(self, error: BaseException | None) -> None:
        self.returned = True
        if error is not None or self.captured or not self.streams:
            self.finish(error)

    def finish(self, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        with _brackets_lock:
            _brackets.pop(self.key, None)
        gen = self.gen
        if not self.owned:
            if error is not None:
                gen.set_error(error)
            return
        if gen.captured is None and not getattr(gen, "provider_call", False) and error is None:
            return  # nothing was learned about the call: no empty generation
        gen.end(error)


def _open(kind: str, name: str, provider: str | None) -> tuple[_ModelCall, bool]:
    current = context.current_span()
    cls: type[_ModelCall] = Embedding if kind == "embedding" else Generation
    if (
        isinstance(current, _ModelCall)
        and type(current) is cls
        and not current._end_perf
        and not getattr(current, "provider_call", False)
        and current.captured is None
    ):
        return current, False  # the application's own generation(...) around the call
    gen: _ModelCall = (
        Embedding(name, provider=provider)
        if kind == "embedding"
        else Generation(name, provider=provider)
    )
    gen.start()
    return gen, True


#: The span name of a bracketed call, by wrapper class: what our SDK instrumentation names it.
_NAMES = {
    "WrappedCompletions": "chat.completions",
    "WrappedBetaCompletions": "chat.completions",
    "WrappedResponses": "responses",
    "WrappedEmbeddings": "embeddings",
    "WrappedMessages": "messages",
    "AsyncWrappedMessages": "messages",
    "Models": "models",
    "AsyncModels": "models",
}


def _provider_of(wrapper: Any) -> str | None:
    module = type(wrapper).__module__
    for provider in ("openai", "anthropic", "gemini"):
        if f".{provider}." in module:
            return provider
    return None


def bracketed(original: Callable[..., Any], *, kind: str, name: str) -> Callable[..., Any]:
    streams_always = name in ("stream", "generate_content_stream")

    def prepare(wrapper: Any, kwargs: dict[str, Any]) -> tuple[_Bracket | None, Any]:
        """The bracket of this call (None: not ours to record), and what to restore after."""
        if not _state.active or delivering():
            return None, None
        node = context.current_node()
        if node is None or node.trace.ended:
            return None, _bypass.set(True)
        if not node.trace.recording:
            return None, None
        provider = _provider_of(wrapper)
        gen, owned = _open(kind, _NAMES.get(type(wrapper).__name__, name), provider)
        streams = streams_always or bool(kwargs.get("stream"))
        bracket = _Bracket(gen, owned, kind, streams)
        extra = kwargs.get("posthog_properties")
        kwargs["posthog_properties"] = {
            **(extra if isinstance(extra, dict) else {}),
            MARKER: bracket.key,
        }
        return bracket, (node, context.activate(gen))

    def done(
        bracket: _Bracket | None, undo: Any, error: BaseException | None, result: Any = None
    ) -> None:
        if bracket is None:
            if undo is not None:
                _bypass.reset(undo)
            return
        previous, token = undo
        context.restore(token, previous)
        try:
            if streams_always and error is None:
                _run_request_in(result, bracket.gen)
            bracket.returned_(error)
        except Exception:
            logger.debug("posthog-llm-trace could not end a wrapper call", exc_info=True)

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def acall(self: Any, *args: Any, **kwargs: Any) -> Any:
            bracket, undo = _safe_prepare(prepare, self, kwargs)
            try:
                result = await original(self, *args, **kwargs)
            except BaseException as exc:
                done(bracket, undo, exc)
                raise
            done(bracket, undo, None, result)
            return result

        return acall

    @functools.wraps(original)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        bracket, undo = _safe_prepare(prepare, self, kwargs)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            done(bracket, undo, exc)
            raise
        done(bracket, undo, None, result)
        return result

    return call


#: Where Anthropic's stream managers keep the request they make when entered.
_LAZY_REQUESTS = ("_MessageStreamManager__api_request", "_AsyncMessageStreamManager__api_request")


def _run_request_in(manager: Any, gen: _ModelCall) -> None:
    """A ``messages.stream()`` manager makes its request when entered, after the wrapper has
    returned: make it with the bracket's generation current, so that our SDK instrumentation
    underneath fills that one instead of opening a second."""
    for attr in _LAZY_REQUESTS:
        request = getattr(manager, attr, None)
        if request is None:
            continue
        if inspect.isawaitable(request):

            async def arun(pending: Any = request) -> Any:
                previous, token = context.current_node(), context.activate(gen)
                try:
                    return await pending
                finally:
                    context.restore(token, previous)

            setattr(manager, attr, arun())
        elif callable(request):

            def run(pending: Callable[[], Any] = request) -> Any:
                previous, token = context.current_node(), context.activate(gen)
                try:
                    return pending()
                finally:
                    context.restore(token, previous)

            setattr(manager, attr, run)


def _safe_prepare(
    prepare: Callable[[Any, dict[str, Any]], tuple[_Bracket | None, Any]],
    wrapper: Any,
    kwargs: dict[str, Any],
) -> tuple[_Bracket | None, Any]:
    try:
        return prepare(wrapper, kwargs)
    except Exception:  # never break the application's call
        logger.debug("posthog-llm-trace could not bracket a wrapper call", exc_info=True)
        return None, None
