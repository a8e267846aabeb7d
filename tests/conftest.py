# ---------------------------------------------------------------------------------------------
# Delivery layer (export) fixtures: `capture_server` and `settings_for`.
# Owned by the delivery layer; other fixtures go outside this block.


from collections.abc import Callable, Iterator
from typing import Any

import pytest
from capture_server import CaptureServer

import posthog_llm_trace as plt
from posthog_llm_trace.settings import Layer, Settings, build_settings
from tests.fake_provider import FakeProvider


@pytest.fixture
def capture_server() -> Iterator[CaptureServer]:
    """A loopback PostHog capture server (see tests/capture_server.py), stopped after the test."""
    with CaptureServer() as server:
        yield server


def _settings_for(server: CaptureServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"api_key": "phc_test", "host": server.url, **overrides}
    # environ={}: the developer's POSTHOG_* variables must not leak into tests.
    return build_settings(Layer(values), environ={})


@pytest.fixture
def settings_for() -> Callable[..., Settings]:
    """``settings_for(server, **overrides)``: Settings pointing at ``server`` with api_key
    ``phc_test``, built through ``build_settings`` like the real sources."""
    return _settings_for


# End of the delivery layer (export) fixtures.
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Provider SDK fixtures: the fake provider (OpenAI and Anthropic routes) and a clean slate of
# instrumentation.


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    """The fake LLM provider on 127.0.0.1, for the real ``openai`` and ``anthropic`` clients."""
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
def not_instrumented() -> Iterator[None]:
    """Start uninstrumented: the framework's setup must be what instruments the SDK."""
    before = plt.instrumented()
    plt.uninstrument()
    yield
    plt.uninstrument()
    if before:
        plt.instrument(*before)
