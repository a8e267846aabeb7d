# ---------------------------------------------------------------------------------------------
# Delivery layer (export) fixtures: `capture_server` and `settings_for`.
# Owned by the delivery layer; other fixtures go outside this block.


from collections.abc import Callable, Iterator
from typing import Any

import pytest
from capture_server import CaptureServer

from posthog_llm_trace.settings import Layer, Settings, build_settings


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
