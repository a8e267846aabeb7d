"""A small OpenAI-compatible server for the examples when there is no ``OPENAI_API_KEY``.

It answers ``POST /v1/chat/completions`` as the real API does (JSON, or server-sent events with
``stream=True``, the role-only first chunk and, with ``stream_options.include_usage``, the
usage chunk whose ``choices`` is empty), deterministically: a question about the weather in a
city gets a ``get_weather`` tool call, a tool result gets a sentence about it, anything else is
echoed. The real ``openai`` client talks to it, so the example records exactly what it would
against OpenAI.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["reply_to", "url"]

_lock = threading.Lock()
_server: ThreadingHTTPServer | None = None


def url() -> str:
    """The base URL of the server (``http://127.0.0.1:<port>/v1``), started on first use."""
    global _server
    with _lock:
        if _server is None:
            _server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            _server.daemon_threads = True
            threading.Thread(target=_server.serve_forever, name="fake-openai", daemon=True).start()
        host, port = _server.server_address[:2]
    return f"http://{host}:{port}/v1"


def reply_to(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message: a tool call when asked about the weather, text otherwise."""
    last = messages[-1]
    if last.get("role") == "tool":
        data = json.loads(last["content"])
        return {
            "role": "assistant",
            "content": f"It is {data['temperature_c']} °C in {data['city']}.",
        }
    match = re.search(r"weather in ([A-Za-z ]+)", str(last.get("content")), re.I)
    if match:
        arguments = json.dumps({"city": match.group(1).strip()})
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": arguments},
        }
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    return {"role": "assistant", "content": f"You said: {last.get('content')}"}


def _usage(messages: list[dict[str, Any]], reply: dict[str, Any]) -> dict[str, Any]:
    prompt = sum(len(str(m.get("content"))) // 4 + 1 for m in messages)
    completion = len(json.dumps(reply)) // 4 + 1
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path.split("?")[0] != "/v1/chat/completions":
            self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        messages = body.get("messages") or [{"role": "user", "content": ""}]
        reply = reply_to(messages)
        reason = "tool_calls" if reply.get("tool_calls") else "stop"
        head = {
            "id": "chatcmpl-example",
            "created": 1767225600,
            "model": body.get("model", "gpt-4o-mini"),
        }
        if not body.get("stream"):
            choice = {"index": 0, "message": reply, "finish_reason": reason}
            self._json(
                200,
                {
                    **head,
                    "object": "chat.completion",
                    "choices": [choice],
                    "usage": _usage(messages, reply),
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = {**head, "object": "chat.completion.chunk"}
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        words = str(reply.get("content") or "").split(" ")
        deltas += [{"content": w if i == 0 else " " + w} for i, w in enumerate(words)]
        frames = [
            {**chunk, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas
        ]
        frames.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            frames.append({**chunk, "choices": [], "usage": _usage(messages, reply)})
        try:
            for frame in frames:
                self.wfile.write(f"data: {json.dumps(frame)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
