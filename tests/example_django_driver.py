"""Drives the Django example (``example_django``) through Django's test client, in a process of
its own: its settings module is not the test suite's. The posthog-llm-trace settings come from the
environment, as the example documents (``POSTHOG_API_KEY``, ``POSTHOG_HOST``). Prints what the
test needs as one JSON line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "example_django"), str(ROOT)]
os.environ["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"

import chatsite.settings as example_settings  # noqa: E402

# The example keeps its users in example_django/db.sqlite3; the test must not touch it.
example_settings.DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
}

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

import posthog_llm_trace  # noqa: E402


def main() -> None:
    setup_test_environment()
    call_command("migrate", interactive=False, verbosity=0)
    users = get_user_model().objects
    demo, other = users.create_user("demo", password="pw"), users.create_user("eve", password="pw")
    browser, intruder = Client(), Client()
    browser.force_login(demo)
    intruder.force_login(other)

    def post(client: Client, url: str, data: dict[str, object]) -> tuple[int, object]:
        response = client.post(url, json.dumps(data), content_type="application/json")
        return response.status_code, response.json()

    chat = browser.post(
        "/chat/",
        json.dumps({"message": "What is the weather in Paris?"}),
        content_type="application/json",
    )
    streamed = browser.get("/chat/stream/?message=hello")
    stream_token = streamed["X-Feedback-Token"]
    stream_header = streamed["X-PostHog-Trace-Id"]
    body = b"".join(streamed.streaming_content).decode()
    streamed.close()
    token = chat.json()["token"]
    results = {
        "demo_pk": str(demo.pk),
        "chat_header": chat["X-PostHog-Trace-Id"],
        "chat_token": token,
        "stream_header": stream_header,
        "stream_token": stream_token,
        "stream_body": body,
        "up": post(browser, "/feedback/", {"token": token, "vote": "up"}),
        "down": post(
            browser, "/feedback/", {"token": stream_token, "vote": "down", "comment": "Too short"}
        ),
        "stolen": post(intruder, "/feedback/", {"token": token, "vote": "down"}),
        "bad_vote": post(browser, "/feedback/", {"token": token, "vote": "maybe"}),
    }
    results["flushed"] = posthog_llm_trace.flush(10.0)
    results["stats"] = posthog_llm_trace.stats()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
