"""Two users, many concurrent requests: sync views on a threaded WSGI server and async views on
one ASGI event loop, all at once. Not one span may be attributed to the wrong user or session."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client as DjangoClient

from posthog_llm_trace.testing import capture_events
from posthog_llm_trace.web import session_hash
from tests.django_app.fixtures import Server, asgi_server, llm_settings, wait_for, wsgi_server

pytestmark = pytest.mark.usefixtures("llm_settings")
SECRET = "test-secret-key-not-for-production"
REQUESTS_PER_KIND = 24  # per user (and anonymous) and per server

__all__ = ["asgi_server", "llm_settings", "wsgi_server"]


def test_concurrent_requests_never_mix_users_or_sessions(
    wsgi_server: Server, asgi_server: Server, transactional_db: None
) -> None:
    users = {}
    for name in ("alice", "bob"):
        user = get_user_model().objects.create_user(name, password="pw")
        client = DjangoClient()
        client.force_login(user)
        users[name] = (user, client.cookies["sessionid"].value)

    # (server, path, cookie session key or None, expected pk or None, spoofed header)
    plan: list[tuple[Server, str, str | None, int | None]] = []
    for server, path in ((wsgi_server, "/iso/"), (asgi_server, "/aiso/")):
        for _ in range(REQUESTS_PER_KIND):
            for user, key in users.values():
                plan.append((server, path, key, user.pk))
            plan.append((server, path, None, None))
    random.Random(7).shuffle(plan)
    other = {
        alice_or_bob.pk: next(u.pk for u, _ in users.values() if u.pk != alice_or_bob.pk)
        for alice_or_bob, _ in users.values()
    }

    def call(step: tuple[Server, str, str | None, int | None]) -> tuple[dict[str, Any], Any]:
        server, path, key, pk = step
        headers = {}
        if key:
            headers["Cookie"] = f"sessionid={key}"
            # A browser claiming to be the other user: ignored (DISTINCT_ID_HEADER is off).
            headers["X-POSTHOG-DISTINCT-ID"] = str(other[pk])
        status, body = server.request("GET", path, headers)
        assert status == 200, body
        return json.loads(body), step

    with capture_events() as events:
        with ThreadPoolExecutor(max_workers=24) as pool:
            answers = list(pool.map(call, plan))
        wait_for(lambda: len(events) >= 3 * len(plan))

    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_trace[event["properties"]["$ai_trace_id"]].append(event)
    assert len(by_trace) == len(plan) and len(events) == 3 * len(plan)

    for answer, (_, path, key, pk) in answers:
        assert answer["who"] == pk  # the view saw the right user
        trace_events = by_trace[answer["trace"]]
        assert sorted(e["event"] for e in trace_events) == ["$ai_span", "$ai_span", "$ai_trace"]
        expected_id = str(pk) if pk is not None else "anonymous"
        expected_session = session_hash(SECRET, key) if key else None
        for event in trace_events:
            props = event["properties"]
            assert event["distinct_id"] == expected_id
            assert props.get("$ai_session_id") == expected_session
            if event["event"] == "$ai_trace":
                assert props["$ai_span_name"] == f"GET {path}"
            else:
                assert props["who"] == pk
        outer = next(e for e in trace_events if e["properties"]["$ai_span_name"] == "outer")
        inner = next(e for e in trace_events if e["properties"]["$ai_span_name"] == "inner")
        assert outer["properties"]["$ai_parent_id"] == answer["trace"]
        assert inner["properties"]["$ai_parent_id"] == outer["properties"]["$ai_span_id"]
