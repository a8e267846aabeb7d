"""``manage.py runexample``: migrate, create the demo user, serve on 127.0.0.1:$PORT (8000)."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

DEMO_USERNAME = "demo"
DEMO_PASSWORD = os.environ.get("EXAMPLE_PASSWORD", "demo-password")


class Command(BaseCommand):
    help = "Set up and serve the example chat app (sqlite database in example_django/)."

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        user, _ = get_user_model().objects.get_or_create(username=DEMO_USERNAME)
        user.set_password(DEMO_PASSWORD)
        user.save()
        port = os.environ.get("PORT", "8000")
        base = f"http://127.0.0.1:{port}"
        out = self.stdout.write
        out(f"Demo user: {DEMO_USERNAME} / {DEMO_PASSWORD}   (sign in at {base}/login/)")
        if settings.POSTHOG_LLM_TRACE.get("EXPORT") == "file":
            out(f"No POSTHOG_API_KEY: events are written to {settings.EVENTS_FILE}")
        else:
            out("Events go to PostHog (POSTHOG_API_KEY is set).")
        out(
            "From a shell:\n"
            f"  curl -s -c /tmp/jar {base}/login/ >/dev/null\n"
            f"  curl -s -b /tmp/jar -c /tmp/jar -H \"X-CSRFToken: $(awk '/csrftoken/ {{print $7}}' "
            f"/tmp/jar)\" -H 'Referer: {base}/login/' -d username={DEMO_USERNAME} "
            f"-d password={DEMO_PASSWORD} {base}/login/\n"
            f"  curl -s -b /tmp/jar -H \"X-CSRFToken: $(awk '/csrftoken/ {{print $7}}' /tmp/jar)\" "
            f"-d 'message=What is the weather in Paris?' {base}/chat/\n"
            f"  curl -N -b /tmp/jar '{base}/chat/stream/?message=hello'"
        )
        # skip_checks=False: the system checks (ours included) run, as with a plain runserver.
        call_command("runserver", f"127.0.0.1:{port}", use_reloader=False, skip_checks=False)
