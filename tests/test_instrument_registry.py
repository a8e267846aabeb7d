"""The ``instrument`` setting and the instrument()/uninstrument() registry."""

from __future__ import annotations

import pytest

import posthog_llm_trace as plt
from posthog_llm_trace.settings import ConfigurationError, Layer, build_settings


def test_the_setting_reads_lists_and_comma_strings() -> None:
    assert build_settings(Layer({"instrument": ["OpenAI", "anthropic"]})).instrument == (
        "openai",
        "anthropic",
    )
    assert build_settings(
        environ={"POSTHOG_LLM_TRACE_INSTRUMENT": "openai, posthog"}
    ).instrument == (
        "openai",
        "posthog",
    )
    assert build_settings(environ={"POSTHOG_LLM_TRACE_INSTRUMENT": ""}).instrument == ()
    assert build_settings(Layer({"instrument": []})).instrument == ()
    assert build_settings(environ={}).instrument is None


def test_an_unknown_sdk_is_a_configuration_error_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match=r"POSTHOG_LLM_TRACE_INSTRUMENT.*'opneai'"):
        build_settings(environ={"POSTHOG_LLM_TRACE_INSTRUMENT": "opneai"})
    with pytest.raises(ValueError, match="cannot instrument 'gemini'"):
        plt.instrument("gemini")


def test_instrument_is_idempotent_and_undone() -> None:
    before = plt.instrumented()
    try:
        plt.uninstrument("openai")
        assert "openai" not in plt.instrumented()
        assert "openai" in plt.instrument("openai")
        assert plt.instrument("openai") == plt.instrumented()
        plt.uninstrument("openai")
        assert "openai" not in plt.instrumented()
    finally:
        if before:
            plt.instrument(*before)
