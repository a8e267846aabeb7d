"""Compact UTF-8 JSON for PostHog events: orjson when it is installed, the standard library
otherwise, and the same bytes either way.

The framework extras (``posthog-llm-trace[django]``, ``[flask]``, ``[celery]``) install orjson: it
encodes a batch of ~1 KB events about ten times faster than :mod:`json`, and the export thread
shares the GIL with the application's requests. Without it, :func:`dumps` is the standard
library's encoder. Which one ran never shows in what PostHog receives:

- compact separators, UTF-8 text rather than ``\\u`` escapes (PostHog measures an event's size in
  UTF-8 bytes, and escaping would triple the size of non-Latin text), control characters
  escaped as ``\\u00XX`` by both;
- lone surrogates (valid in Python strings, refused by JSON parsers and with them the whole
  request) become U+FFFD; orjson refuses such a string, so that value is encoded by the standard
  library;
- whatever orjson refuses (keys that are not strings, integers beyond 64 bits, nesting past 255
  levels, objects with no JSON form) goes to the standard library as well, which encodes it or
  raises the error the caller counts;
- floats: both write the shortest text that reads back as the same number, but orjson writes
  ``1e-05`` as ``0.00001`` and ``5e-06`` as ``5e-6``, and ``NaN`` as ``null``. The two agree on
  every finite float from 1e-4 to 1e16 (and zero), which is checked; any other float (those
  past 1e16 too, where the two agree today, to depend on no library's choice of notation) must
  be a :class:`ReprFloat`
  (:func:`json_float` makes one), which orjson writes as the standard library does. The core's
  mapping does this for every float it puts in an event (``messages.jsonable`` and the computed
  properties), and :func:`canonical` does it for data that arrives from elsewhere (a Celery
  message).

``tests/test_jsonenc.py`` checks the two encoders byte for byte on generated data and rendered
events.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["BACKEND", "ReprFloat", "canonical", "dumps", "dumps_stdlib", "json_float"]


class ReprFloat(float):
    """A float whose JSON text is Python's ``repr`` (``1e-05``, ``1e+16``), as the standard
    library writes it, whichever encoder runs. Equal to, and printed as, the plain float."""

    __slots__ = ()


def json_float(value: float) -> float:
    """``value`` itself when every encoder writes it alike, else the same number as a
    :class:`ReprFloat`."""
    # NaN fails both comparisons, so it is wrapped too.
    if 1e-4 <= abs(value) < 1e16 or value == 0.0:
        return value
    return ReprFloat(value)


def canonical(value: Any) -> Any:
    """``value`` with every float :func:`json_float` would wrap wrapped, its lists, tuples and
    dicts rebuilt (for JSON data decoded elsewhere, say a Celery message)."""
    kind = type(value)
    if kind is float:
        return json_float(value)
    if kind is dict:
        return {k: canonical(v) for k, v in value.items()}
    if kind is list:
        return [canonical(v) for v in value]
    if kind is tuple:
        return tuple(canonical(v) for v in value)
    return value


# The standard library's encoder, the reference: compact, UTF-8 (no \u escapes), NaN as NaN. No
# circular-reference bookkeeping: the core hands us plain JSON data, and a cycle still ends in a
# RecursionError.
def _stdlib_default(value: Any) -> Any:
    # The two objects orjson encodes natively that the standard library would refuse, encoded
    # as orjson does, so that the encoders never disagree on whether a value is JSON.
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(
    separators=(",", ":"), check_circular=False, ensure_ascii=False, default=_stdlib_default
)


def dumps_stdlib(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON with the standard library. Raises TypeError, ValueError
    or RecursionError when it is not JSON data."""
    text = _ENCODER.encode(value)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


def _float_text(value: float) -> str:
    if math.isfinite(value):
        return float.__repr__(value)
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


class _Lean(threading.local):
    active = False


_lean = _Lean()


@contextlib.contextmanager
def lean() -> Iterator[None]:
    """Encode with the standard library in this thread for the block (the same bytes).

    orjson's write buffer peaks at about eight times the JSON it produces: for a batch of
    megabyte prompts that transient would dwarf the ``max_queue_bytes`` bound, so the exporter
    encodes large batches this way; the standard library's peak is about twice the output."""
    previous, _lean.active = _lean.active, True
    try:
        yield
    finally:
        _lean.active = previous


def _load_orjson() -> Callable[[Any], bytes] | None:
    try:
        import orjson
    except ImportError:
        return None

    fragment = orjson.Fragment
    # Dataclasses and datetimes go to ``default`` (which refuses them), as the standard library
    # would refuse them; the mapping has turned them into JSON data already.
    options = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
    encode = orjson.dumps

    def default(value: Any) -> Any:
        if type(value) is ReprFloat:
            return fragment(_float_text(value))
        raise TypeError

    def dumps_orjson(value: Any) -> bytes:
        if _lean.active:
            return dumps_stdlib(value)
        try:
            encoded = encode(value, default, options)
        except TypeError:  # orjson.JSONEncodeError too: the standard library decides
            return dumps_stdlib(value)
        # orjson hands back its whole write buffer, about eight times the JSON's length (seen
        # with tracemalloc): a batch held through retries would hold that much. A copy of the
        # right size costs a memcpy.
        return memoryview(encoded).tobytes()

    return dumps_orjson


_dumps_orjson = _load_orjson()

#: The encoder :func:`dumps` uses: ``"orjson"`` or ``"json"``.
BACKEND = "json" if _dumps_orjson is None else "orjson"

#: ``value`` as compact UTF-8 JSON, with orjson when installed (see the module docstring).
#: Raises TypeError, ValueError or RecursionError when ``value`` is not JSON data.
dumps: Callable[[Any], bytes] = _dumps_orjson or dumps_stdlib
