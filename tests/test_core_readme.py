"""The README's core sections stay true: the settings table is the generated one, the examples
of the API and testing sections run, and every property the mapping sends is documented."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from posthog_llm_trace import client as client_module
from posthog_llm_trace import events as events_module
from posthog_llm_trace.settings import settings_table
from posthog_llm_trace.testing import capture_events

README = Path(__file__).resolve().parent.parent / "README.md"


def section(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- section:{name} -->\n(.*?)<!-- /section:{name} -->", text, re.S)
    assert match, f"README has no {name} section"
    return match.group(1)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_readme_settings_table_is_the_generated_one():
    assert settings_table() in section("settings")


@pytest.fixture
def default_client_set_aside(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The README calls configure(): give it a default client of its own for this test, and
    put the process's back afterwards (configure() would shut down the one it replaces)."""
    monkeypatch.setattr(client_module, "_default", None)
    monkeypatch.setattr(client_module, "_explicit", False)
    monkeypatch.delenv("POSTHOG_API_KEY", raising=False)
    yield
    if client_module._default is not None:
        client_module._default.shutdown(0.1)


def test_the_api_examples_run(default_client_set_aside: Any, capsys: pytest.CaptureFixture[str]):
    blocks = python_blocks(section("api"))
    assert len(blocks) >= 6
    namespace: dict[str, Any] = {"__name__": "readme"}
    with capture_events() as events:
        for block in blocks:
            exec(compile(block, "README.md (api)", "exec"), namespace)
    assert client_module.get_client().settings.api_key == "phc_..."  # configure() was called
    names = {e["event"] for e in events}
    assert names == {"$ai_trace", "$ai_generation", "$ai_embedding", "$ai_span"}
    plan = events.by_span_name("plan")["properties"]
    assert plan["$ai_input_tokens"] == 52 and plan["$ai_cache_read_input_tokens"] == 32
    assert plan["$ai_output_choices"][0]["content"][0]["type"] == "function"
    run = events.by_span_name("run")["properties"]
    assert run["$ai_span_type"] == "agent" and run["$ai_input_state"] == {"goal": "greet the user"}
    flaky = events.by_span_name("flaky")["properties"]
    assert flaky["$ai_error"] == "TimeoutError: upstream did not answer"
    assert "Hello!" in capsys.readouterr().out


def test_the_testing_examples_run(default_client_set_aside: Any):
    blocks = python_blocks(section("testing"))
    assert len(blocks) >= 2
    namespace: dict[str, Any] = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, "README.md (testing)", "exec"), namespace)
    tests = {name: fn for name, fn in namespace.items() if name.startswith("test_")}
    assert len(tests) >= 2
    for fn in tests.values():
        if "llm_events" in inspect.signature(fn).parameters:
            with capture_events() as llm_events:
                fn(llm_events)
        else:
            fn()


def test_every_property_the_mapping_sends_is_documented():
    documented = section("events")
    source = inspect.getsource(events_module)
    sent = set(re.findall(r'"(\$[a-z_]+)"', source)) | {"chunk_type", "chunk_sequence_number"}
    sent -= {"$ai_trace", "$ai_span", "$ai_generation", "$ai_embedding"}  # event names
    missing = sorted(p for p in sent if f"`{p}`" not in documented)
    assert not missing, f"undocumented properties: {missing}"
