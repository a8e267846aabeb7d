"""Thumbs up / down under each answer, shared by the Django and Flask examples.

The page receives, with each answer, a signed reference to the answer's trace
(``current_trace().feedback_token``: the JSON answer carries it, a streamed answer sends it in
the ``X-Feedback-Token`` header). A click posts it back with the vote; the app's feedback
endpoint passes it to :func:`posthog_llm_trace.feedback`, which checks that the reference was
made for the user who sends it. PostHog then shows a ``thumbs`` metric (1 or -1), and the
comment if one was typed, on the answer's trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from posthog_llm_trace import current_trace, feedback

__all__ = ["FEEDBACK_JS", "TOKEN_HEADER", "answer_token", "record_vote"]

#: The response header of a streamed answer that carries its signed trace reference.
TOKEN_HEADER = "X-Feedback-Token"

_VOTES = {"up": 1, "down": -1}


def answer_token() -> str | None:
    """The signed reference to the current request's trace, for the page."""
    trace = current_trace()
    return None if trace is None else trace.feedback_token


def record_vote(data: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """The feedback endpoint's work: ``{"token": ..., "vote": "up" | "down", "comment": ...}``
    in, a JSON body and a status out. A bad or foreign token is refused (and counted by
    posthog-llm-trace), never an exception."""
    vote = _VOTES.get(str(data.get("vote", "")))
    if vote is None:
        return {"error": "vote must be 'up' or 'down'"}, 400
    comment = data.get("comment")
    accepted = feedback(
        None,
        vote,
        token=data.get("token"),
        name="thumbs",
        comment=str(comment)[:2000] if comment else None,
    )
    if not accepted:
        return {"error": "this answer cannot be rated by you"}, 403
    return {"ok": True}, 200


#: ``addFeedback(element, token, url, headers)``: thumbs under an answer.
FEEDBACK_JS = """
function addFeedback(element, token, url, headers) {
  if (!token) return;
  const bar = document.createElement("div");
  bar.className = "feedback";
  for (const [label, vote] of [["\\u{1F44D}", "up"], ["\\u{1F44E}", "down"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.title = vote === "up" ? "Good answer" : "Bad answer";
    button.onclick = async () => {
      const comment = vote === "down" ? (prompt("What was wrong? (optional)") || "") : "";
      const response = await fetch(url, {
        method: "POST",
        headers: {"Content-Type": "application/json", ...(headers || {})},
        body: JSON.stringify({token, vote, comment}),
      });
      bar.textContent = response.ok ? "Thanks for the feedback." : "Feedback not recorded.";
    };
    bar.appendChild(button);
  }
  element.after(bar);
}
"""
