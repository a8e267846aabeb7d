"""Spans as decorators: each call of a decorated function (sync or async, plain or generator)
runs in a fresh copy of the decorating span.

A generator's span is current only while the generator's own code runs: between items the
caller's context must not see it, since the caller may never resume the generator.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import context

if TYPE_CHECKING:
    from .spans import Span

__all__ = ["decorate"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def decorate(template: Span, fn: F) -> F:
    """``fn`` wrapped so that each call runs in a fresh copy of ``template``: the call's
    arguments are its input, the return value (or the yielded items) its output."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            span = template._copy()
            span._record_call(fn, args, kwargs)
            with span:
                result = await fn(*args, **kwargs)
                span._record_result(result)
                return result

        return cast("F", async_wrapper)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            # The span is current only while the generator's own code runs: between items
            # the caller's context must not see it (the caller may never resume it).
            span = template._copy()
            span._record_call(fn, args, kwargs)
            span.start()
            error: BaseException | None = None
            try:
                gen = fn(*args, **kwargs)
                step: Callable[[Any], Any] = gen.send
                value: Any = None
                while True:
                    try:
                        item = _in_span(span, step, value)
                    except StopIteration as stop:
                        return stop.value
                    step, value = gen.send, None
                    span._record_item(item)
                    try:
                        value = yield item
                    except GeneratorExit:
                        _in_span(span, gen.close)
                        raise
                    except BaseException as exc:
                        step, value = gen.throw, exc
            except GeneratorExit:
                raise
            except BaseException as exc:
                error = exc
                raise
            finally:
                span.end(error)

        return cast("F", gen_wrapper)

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
            # As for generators: current only while the generator's own code runs.
            span = template._copy()
            span._record_call(fn, args, kwargs)
            span.start()
            error: BaseException | None = None
            try:
                agen = fn(*args, **kwargs)
                step: Callable[[Any], Any] = agen.asend
                value: Any = None
                while True:
                    previous = context.current_node()
                    token = context.activate(span)
                    try:
                        item = await step(value)
                    except StopAsyncIteration:
                        return
                    finally:
                        context.restore(token, previous)
                    step, value = agen.asend, None
                    span._record_item(item)
                    try:
                        value = yield item
                    except GeneratorExit:
                        await agen.aclose()
                        raise
                    except BaseException as exc:
                        step, value = agen.athrow, exc
            except GeneratorExit:
                raise
            except BaseException as exc:
                error = exc
                raise
            finally:
                span.end(error)

        return cast("F", agen_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        span = template._copy()
        span._record_call(fn, args, kwargs)
        with span:
            result = fn(*args, **kwargs)
            span._record_result(result)
            return result

    return cast("F", wrapper)


def _in_span(span: Span, fn: Callable[..., T], *args: Any) -> T:
    previous = context.current_node()
    token = context.activate(span)
    try:
        return fn(*args)
    finally:
        context.restore(token, previous)
