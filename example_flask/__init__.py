"""The example chat app, Flask edition: Flask-Login sign-in, a chat endpoint and a streamed one,
every request traced with posthog-llm-trace.

    python -m example_flask          # or ./run example-flask

Without ``POSTHOG_API_KEY`` the events go to ``example_flask/events.jsonl`` instead of PostHog
(send them later with ``python -m posthog_llm_trace replay example_flask/events.jsonl``).
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import (
    Flask,
    Response,
    redirect,
    render_template_string,
    request,
    session,
    stream_with_context,
)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user

from example_chat.feedback import FEEDBACK_JS, TOKEN_HEADER, answer_token, record_vote
from example_chat.llm import answer, stream_answer
from posthog_llm_trace import span
from posthog_llm_trace.flask import LLMTrace

EVENTS_FILE = Path(__file__).with_name("events.jsonl")
DEMO_USERNAME = "demo"
DEMO_PASSWORD = os.environ.get("EXAMPLE_PASSWORD", "demo-password")

llm_trace = LLMTrace()
login_manager = LoginManager()


class DemoUser(UserMixin):
    def __init__(self, username: str) -> None:
        self.id = username


@login_manager.user_loader
def load_user(user_id: str) -> DemoUser | None:
    return DemoUser(user_id) if user_id == DEMO_USERNAME else None


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The application factory."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ.get("FLASK_SECRET_KEY") or secrets.token_hex(32)
    if not os.environ.get("POSTHOG_API_KEY"):
        # No PostHog project: write the events as JSON lines to look at.
        app.config["POSTHOG_LLM_TRACE_EXPORT"] = "file"
        app.config["POSTHOG_LLM_TRACE_EXPORT_FILE"] = str(EVENTS_FILE)
    app.config.update(config or {})

    login_manager.init_app(app)
    llm_trace.init_app(app)

    @app.get("/")
    def index() -> str:
        return render_template_string(PAGE, user=current_user, feedback_js=FEEDBACK_JS)

    @app.post("/login")
    def login() -> Any:
        username = request.form.get("username", "")
        password = request.form.get("password", "")
        if username == DEMO_USERNAME and hmac.compare_digest(password, DEMO_PASSWORD):
            login_user(DemoUser(username))
            return redirect("/")
        return "Unknown user or wrong password\n", 401

    @app.post("/logout")
    def logout() -> Any:
        logout_user()
        return redirect("/")

    @app.post("/chat")
    def chat() -> Any:
        data = request.get_json(silent=True) or request.form
        message = str(data.get("message", "")).strip()
        if not message:
            return {"error": "message is required"}, 400
        # The conversation so far, kept short: a cookie session holds about 4 KB.
        history = session.get("history", [])
        reply = answer(message, history)
        session["history"] = [
            *history,
            {"role": "user", "content": message[:300]},
            {"role": "assistant", "content": reply[:300]},
        ][-6:]
        # The signed reference to this answer's trace, for the thumbs under it.
        return {"answer": reply, "token": answer_token()}

    @app.get("/chat/stream")
    def chat_stream() -> Response:
        message = request.args.get("message", "").strip() or "hello"
        # The trace stays open while the answer streams; the generation lands in it.
        response = Response(stream_with_context(stream_answer(message)), mimetype="text/plain")
        token = answer_token()  # headers go before the body: the trace is known already
        if token:
            response.headers[TOKEN_HEADER] = token
        return response

    @app.post("/feedback")
    def rate() -> Any:
        """``token`` and ``vote`` (``up`` / ``down``), optionally ``comment``: the thumbs under
        an answer. The token must have been made for this user (or this browser session)."""
        return record_vote(request.get_json(silent=True) or request.form)

    @app.post("/summarise")
    def summarise() -> Any:
        """A Celery job (run a worker: ``celery -A example_chat.celery_app worker -l info``);
        its generation joins this request's trace, under the signed-in user."""
        from example_chat.celery_app import summarise as summarise_task

        data = request.get_json(silent=True) or request.form
        text = str(data.get("message", "")).strip() or "Celery runs the job. It is traced."
        with span("enqueue-summary", kind="step"):
            result = summarise_task.delay(text)
        return {"task_id": result.id}

    return app


PAGE = """<!doctype html>
<title>posthog-llm-trace: Flask example</title>
<h1>Chat</h1>
{% if user.is_authenticated %}
  <p>Signed in as <b>{{ user.id }}</b>.
  <form method="post" action="/logout" style="display:inline"><button>Sign out</button></form>
{% else %}
  <form method="post" action="/login">
    <input name="username" placeholder="user"> <input name="password" type="password"
    placeholder="password"> <button>Sign in</button> (anonymous chat works too)
  </form>
{% endif %}
<form id="chat"><input name="message" size="50" value="What is the weather in Paris?">
  <button>Send</button> <button type="button" id="stream">Stream</button></form>
<div id="out"></div>
<script>{{ feedback_js|safe }}</script>
<script>
const form = document.getElementById("chat"), out = document.getElementById("out");
function turn(question) {
  const q = document.createElement("p"), a = document.createElement("pre");
  q.textContent = "> " + question;
  out.append(q, a);
  return a;
}
form.onsubmit = async (e) => {
  e.preventDefault();
  const a = turn(form.message.value);
  const r = await fetch("/chat", {method: "POST", body: new FormData(form)});
  const data = await r.json();
  a.textContent = data.answer;
  addFeedback(a, data.token, "/feedback");
};
document.getElementById("stream").onclick = async () => {
  const a = turn(form.message.value);
  const r = await fetch("/chat/stream?message=" + encodeURIComponent(form.message.value));
  // The answer's signed trace reference comes in a header, before the body.
  addFeedback(a, r.headers.get("X-Feedback-Token"), "/feedback");
  const reader = r.body.getReader(), text = new TextDecoder();
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    a.textContent += text.decode(value);
  }
};
</script>
"""
