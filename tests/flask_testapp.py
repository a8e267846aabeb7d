"""A small Flask chat app for the Flask tests: Flask-Login users, a route that records a
generation and a tool call, one that records nothing, and a WSGI server in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, jsonify, request
from flask_login import LoginManager, UserMixin, login_user, logout_user
from werkzeug.serving import make_server

from posthog_llm_trace import current_trace, generation, tool


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def make_app(**config: Any) -> Flask:
    """An app with its routes but without the extension: tests add it the way they need."""
    app = Flask("flask_testapp")
    app.secret_key = "test-secret-key"
    app.config.update(config)
    login = LoginManager(app)

    @login.user_loader
    def load_user(user_id: str) -> User:
        return User(user_id)

    @app.post("/login/<name>")
    def login_view(name: str) -> str:
        login_user(User(name))
        return "logged in"

    @app.post("/logout")
    def logout_view() -> str:
        logout_user()
        return "logged out"

    @app.route("/chat/<int:conversation>", methods=["GET", "POST"])
    def chat(conversation: int) -> Any:
        answer = record_chat(request.args.get("q", "hello"))
        trace = current_trace()
        return jsonify(answer=answer, trace_id=trace.id if trace else None)

    @app.get("/health")
    def health() -> str:
        return "ok"

    return app


def record_chat(question: str) -> str:
    """What a chat view does: one generation that calls one tool."""
    messages = [{"role": "user", "content": question}]
    with generation("answer", model="gpt-4o-mini", provider="openai", input=messages) as gen:
        with tool("lookup", input={"q": question}) as t:
            t.set_output({"found": 1})
        gen.set_output({"role": "assistant", "content": f"echo: {question}"})
        gen.set_usage(input_tokens=10, output_tokens=3)
    return f"echo: {question}"


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve ``app`` with werkzeug's threaded server on 127.0.0.1 (a free port); yields its URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def isolate(monkeypatch: Any) -> None:
    """No POSTHOG_* variable of the developer's shell, and no default client chosen yet (each
    test's apps may choose it; monkeypatch puts the previous one back)."""
    import os

    from posthog_llm_trace import client

    for name in list(os.environ):
        if name.startswith("POSTHOG_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(client, "_default", None)
    monkeypatch.setattr(client, "_explicit", False)
    monkeypatch.setattr(client, "_reported", set())  # each test sees its own start-up log
