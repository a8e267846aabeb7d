"""The applications that the server tests (tests/test_server_stop.py) run under real uvicorn and
gunicorn processes: the Django test project (ASGI and WSGI) and the Flask test app.

``uvicorn server_sites:django_asgi``, ``gunicorn server_sites:flask_wsgi``...; each is built on
first access, so that a Flask server never imports Django. Settings come from the environment
(``POSTHOG_API_KEY``, ``POSTHOG_HOST``, ``POSTHOG_LLM_TRACE_*``), as in a deployment.
"""

from __future__ import annotations

import os
from typing import Any


def _django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_app.settings")


def __getattr__(name: str) -> Any:
    if name == "django_asgi":
        _django_setup()
        from django.core.asgi import get_asgi_application

        return get_asgi_application()
    if name == "django_wsgi":
        _django_setup()
        from django.core.wsgi import get_wsgi_application

        return get_wsgi_application()
    if name == "flask_wsgi":
        from flask_testapp import make_app

        from posthog_llm_trace.flask import LLMTrace

        app = make_app()
        LLMTrace(app)
        return app
    raise AttributeError(name)
