"""The core modules import one another without cycles: ``spans`` finds the default client
through ``registry``, never by importing ``client`` (which imports ``spans``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import posthog_llm_trace

SRC = Path(posthog_llm_trace.__file__).parent


def _runtime_imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports at run time (``TYPE_CHECKING`` blocks
    excluded), at any depth: inside functions too."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for body in node.body for child in ast.walk(body))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level and id(node) not in skipped:
            found.add(node.module or "")
            found.update(alias.name for alias in node.names if not node.module)
    return found


def test_spans_never_imports_the_client_module() -> None:
    assert "client" not in _runtime_imports(SRC / "spans.py")
    assert "client" not in _runtime_imports(SRC / "registry.py")


def test_a_trace_opened_first_thing_finds_the_default_client() -> None:
    code = (
        "from posthog_llm_trace.spans import Trace\n"
        "from posthog_llm_trace.client import get_client\n"
        "assert Trace('t').client is get_client()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
