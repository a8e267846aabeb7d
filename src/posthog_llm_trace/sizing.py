"""A cheap estimate of the memory a finished trace holds, for the exporter's byte bound.

It runs on the request thread (at hand-over), so it never serialises: it adds up the lengths of
the strings it meets, a few levels deep, and a flat cost per other value. It looks at a bounded
number of values per field and scales up what it did not look at, so its cost does not grow
with the size of a prompt. It is an estimate of the JSON the content will become, close enough
to bound memory in bytes (a 1 MB prompt counts about 1 MB), not an exact measure.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EVENT_OVERHEAD", "approx_size"]

#: What an event costs besides its content: ids, timestamps, names, computed properties.
EVENT_OVERHEAD = 600
_SCALAR = 8  # a number, a boolean, null
_OTHER = 64  # an object of unknown shape (it becomes its repr or a small dict)
_MAX_DEPTH = 4
_MAX_ITEMS = 64  # values looked at per container; the rest is extrapolated


def approx_size(value: Any) -> int:
    """About how many bytes of JSON ``value`` becomes."""
    kind = type(value)
    if kind is str:
        return len(value) + 2
    if kind is list and len(value) <= _MAX_ITEMS:
        # The usual content, a list of messages, without a call per value (this runs on the
        # request thread for every span).
        total = 2
        for item in value:
            if type(item) is dict:
                total += 16 * len(item)  # keys, quotes, separators
                for field in item.values():
                    total += len(field) if type(field) is str else _size(field, 2)
            else:
                total += _size(item, 1)
        return total
    return _size(value, 0)


def _size(value: Any, depth: int) -> int:
    kind = type(value)
    if kind is str:
        return len(value) + 2
    if value is None or kind is int or kind is float or kind is bool:
        return _SCALAR
    if depth >= _MAX_DEPTH:
        return _OTHER
    # Strings, the usual leaves, are counted in the loops rather than by a call each.
    if kind is dict:
        n = len(value)
        total = 0
        for seen, (key, item) in enumerate(value.items(), 1):
            total += (len(key) if type(key) is str else _SCALAR) + 4
            total += len(item) + 2 if type(item) is str else _size(item, depth + 1)
            if seen == _MAX_ITEMS:
                return total * n // seen
        return total + 2
    if kind is list or kind is tuple:
        n = len(value)
        total = 0
        for seen, item in enumerate(value, 1):
            total += (len(item) + 2 if type(item) is str else _size(item, depth + 1)) + 1
            if seen == _MAX_ITEMS:
                return total * n // seen
        return total + 2
    if kind is bytes or kind is bytearray:
        return 32  # rendered as "[n bytes]"
    # SDK response objects and pydantic models keep their fields in __dict__.
    fields = getattr(value, "__dict__", None)
    if type(fields) is dict:
        return _size(fields, depth + 1)
    return _OTHER
