"""A fake OpenAI-compatible model server: real HTTP on 127.0.0.1, in a thread.

Real agent CLIs (qwen-code, opencode, aider) are pointed at it with ``OPENAI_BASE_URL``
(= :attr:`FakeLLM.base_url`, which ends in ``/v1``) and any ``OPENAI_API_KEY``. It answers

- ``GET /v1/models`` (and ``/models``): one model, :data:`MODEL`, plus any model asked for;
- ``POST /v1/chat/completions`` (and ``/chat/completions``): streaming (SSE chunks ending
  in ``data: [DONE]``) or not, as the request's ``stream`` says;
- ``POST /v1/responses`` (and ``/responses``): the Responses API, streaming or not.

The answer is fixed and recognisable: when the last user message contains ``ping-<word>``
the reply is ``PONG-<word>`` (so a test that types a unique word knows exactly what must
appear on screen, and can tell it from the echo of what it typed); otherwise
``PONG-<n>`` with ``n`` the number of completion requests so far. Every request is
recorded (method, path, headers, parsed body) so a test can assert the agent really
called it, with the key it was given.

Scripted tool calls (:meth:`FakeLLM.script_tool_call`): a chat-completions request whose
last user message holds the trigger word, and that offers a tool of that name, is
answered with a call of that tool (the agent's own name for it: agents prefix the tools
of an MCP server, so the offered tool whose name ends with the wanted one is called);
once the conversation's last message is the tool's result, the answer is text again,
``TOOL-DONE-<trigger>``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from support.threaded_server import ThreadedServer

MODEL = "fake-model"
_PING = re.compile(r"ping-([A-Za-z0-9]+)", re.IGNORECASE)
# the function names OpenAI's chat completions accept (a dot is refused with a 400)
_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_CHUNK = 4  # characters per streamed chunk: the answer arrives in several pieces
SEARCH_TOOL = "tool_search"  # qwen-code's: reveals deferred (MCP) tools by query


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")

    @property
    def is_completion(self) -> bool:
        return self.method == "POST" and self.path.rstrip("/").endswith(
            ("/chat/completions", "/responses")
        )


def _text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("text") or part.get("content") or ""
                parts.append(_text_of(text))
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def last_user_text(body: Any) -> str:
    """The last user message of a chat-completions or responses request."""
    if not isinstance(body, dict):
        return ""
    items = body.get("messages")
    if items is None:
        items = body.get("input")
        if isinstance(items, str):
            return items
    if not isinstance(items, list):
        return ""
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            return _text_of(item.get("content"))
    return ""


@dataclass
class FakeLLM(ThreadedServer):
    """Start with :meth:`start` (or as a context manager); stop with :meth:`stop`."""

    host: str = "127.0.0.1"
    requests: list[Recorded] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _completions: int = 0
    # trigger word -> (the tool's name as the server names it, its arguments)
    _scripts: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeLLM:
        fake = self

        class Handler(_Handler):
            llm = fake

        self._thread = self._serve(ThreadingHTTPServer((self.host, 0), Handler), "fake-llm")
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "start the fake model server first"
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What ``OPENAI_BASE_URL`` is set to."""
        return f"{self.origin}/v1"

    # ------------------------------------------------------------------ answers
    def record(self, entry: Recorded) -> int:
        with self._lock:
            self.requests.append(entry)
            if entry.is_completion:
                self._completions += 1
            return self._completions

    def script_tool_call(
        self, trigger: str, tool: str, arguments: dict[str, Any] | None = None
    ) -> None:
        """Answer a user message holding ``trigger`` with a call of ``tool``."""
        with self._lock:
            self._scripts[trigger] = (tool, dict(arguments or {}))

    def tool_call_for(self, body: Any) -> tuple[str, dict[str, Any]] | None:
        """The scripted call this request gets: (the offered tool's name, arguments);
        ``None`` when no script applies or the tool's result is already there. A script
        whose tool is not offered answers ``("", {"offered": [...]})``."""
        if not isinstance(body, dict) or not self._scripts:
            return None
        trigger = self.trigger_in(body)
        if trigger is None:
            return None
        with self._lock:
            tool, arguments = self._scripts[trigger]
        offered, called = offered_tools(body), called_tools(body)
        wanted = _plain(tool)
        if any(_plain(name).endswith(wanted) for name in called):
            return None  # called: its result is in, the answer is text
        for name in offered:
            if _plain(name).endswith(wanted):
                return name, arguments
        # an agent that lists an MCP server's tools only once they are searched for
        # (qwen-code 0.15 defers them behind tool_search): search first
        if SEARCH_TOOL in offered and SEARCH_TOOL not in called:
            # keywords, as a model searches (it does not know the listed name yet)
            return SEARCH_TOOL, {"query": " ".join(re.split(r"[^A-Za-z0-9]+", tool))}
        return "", {"offered": offered}

    def trigger_in(self, body: Any) -> str | None:
        """The scripted trigger word the request's last user message holds."""
        text = last_user_text(body)
        with self._lock:
            return next((t for t in self._scripts if t in text), None)

    def tool_results(self) -> list[tuple[Recorded, list[dict[str, Any]]]]:
        """The completion requests that carried tool results, with those messages."""
        out = []
        for r in self.completions():
            messages = r.body.get("messages") if isinstance(r.body, dict) else None
            found = [m for m in (messages or []) if isinstance(m, dict) and m.get("role") == "tool"]
            if found:
                out.append((r, found))
        return out

    def answer_for(self, body: Any, count: int) -> str:
        match = _PING.search(last_user_text(body))
        return f"PONG-{match.group(1)}" if match else f"PONG-{count}"

    def completions(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.is_completion]

    def answered(self, word: str) -> list[Recorded]:
        """The completion requests whose last user message asked ``ping-<word>``."""
        return [
            r
            for r in self.completions()
            if re.search(rf"ping-{re.escape(word)}\b", last_user_text(r.body), re.IGNORECASE)
        ]

    def wait_for(self, word: str, timeout: float = 30.0) -> Recorded:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.answered(word)
            if found:
                return found[0]
            time.sleep(0.05)
        paths = [f"{r.method} {r.path}" for r in self.requests]
        raise AssertionError(f"no completion request asked ping-{word}; requests: {paths}")


def offered_tools(body: Any) -> list[str]:
    """The function names a chat-completions request offers."""
    tools = body.get("tools") if isinstance(body, dict) else None
    names = []
    for tool in tools or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def called_tools(body: Any) -> list[str]:
    """The function names the conversation's assistant messages called."""
    messages = body.get("messages") if isinstance(body, dict) else None
    names = []
    for message in messages or []:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                names.append(function["name"])
    return names


def _plain(name: str) -> str:
    """A tool name with every character an agent may replace as ``_``."""
    return re.sub(r"[^A-Za-z0-9]", "_", name)


def _chunks(text: str) -> Iterator[str]:
    for start in range(0, len(text), _CHUNK):
        yield text[start : start + _CHUNK]


class _Handler(BaseHTTPRequestHandler):
    llm: FakeLLM
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    # ------------------------------------------------------------------ plumbing
    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def _record(self, body: Any) -> int:
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = self.path.split("?", 1)[0]
        return self.llm.record(Recorded(self.command, path, headers, body))

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse_start(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _sse(self, payload: Any, event: str | None = None) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        head = f"event: {event}\n" if event else ""
        self.wfile.write(f"{head}data: {data}\n\n".encode())
        self.wfile.flush()

    @property
    def _route(self) -> str:
        path = self.path.split("?", 1)[0].rstrip("/")
        return path[len("/v1") :] if path.startswith("/v1/") or path == "/v1" else path

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:
        self._record(None)
        if self._route == "/models":
            self._json(200, {"object": "list", "data": [_model(MODEL)]})
        elif self._route.startswith("/models/"):
            self._json(200, _model(self._route.split("/", 2)[2]))
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        body = self._read_body()
        count = self._record(body)
        if self._route == "/chat/completions":
            self._chat(body, count)
        elif self._route == "/responses":
            self._responses(body, count)
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def _chat(self, body: Any, count: int) -> None:
        body = body if isinstance(body, dict) else {}
        for index, name in enumerate(offered_tools(body)):
            if not _FUNCTION_NAME.fullmatch(name):  # as OpenAI's API refuses it
                message = (
                    f"Invalid 'tools[{index}].function.name': string does not match pattern. "
                    "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."
                )
                self._json(400, {"error": {"message": message, "type": "invalid_request_error"}})
                return
        call = self.llm.tool_call_for(body)
        if call is not None and call[0]:
            self._tool_call(body, count, *call)
            return
        text = self.llm.answer_for(body, count)
        if call is not None:  # scripted, but the tool is not among those offered
            text = "NO-SUCH-TOOL offered: " + ", ".join(call[1]["offered"])
        elif _last_role(body) == "tool":
            text = f"TOOL-DONE-{self.llm.trigger_in(body)}"
        model = str(body.get("model") or MODEL)
        ident, created = f"chatcmpl-{count}", int(time.time())
        usage = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
        if not body.get("stream"):
            self._json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
            return

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        self._sse_start()
        self._sse(chunk({"role": "assistant", "content": ""}, None))
        for piece in _chunks(text):
            self._sse(chunk({"content": piece}, None))
        self._sse(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            self._sse(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        self._sse("[DONE]")

    def _tool_call(self, body: Any, count: int, name: str, arguments: dict[str, Any]) -> None:
        """One call of ``name``, streamed the way OpenAI streams tool calls (or whole)."""
        model = str(body.get("model") or MODEL)
        ident, created = f"chatcmpl-{count}", int(time.time())
        call_id = f"call_{count}"
        args = json.dumps(arguments)
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            self._json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                },
            )
            return

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        self._sse_start()
        self._sse(
            chunk(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"index": 0, **call, "function": {"name": name, "arguments": ""}}
                    ],
                },
                None,
            )
        )
        self._sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}, None))
        self._sse(chunk({}, "tool_calls"))
        if (body.get("stream_options") or {}).get("include_usage"):
            self._sse(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        self._sse("[DONE]")

    def _responses(self, body: Any, count: int) -> None:
        body = body if isinstance(body, dict) else {}
        text = self.llm.answer_for(body, count)
        model = str(body.get("model") or MODEL)
        rid, mid = f"resp_{count}", f"msg_{count}"
        usage = {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13}
        message = {
            "id": mid,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        done = {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": model,
            "output": [message],
            "usage": usage,
        }
        if not body.get("stream"):
            self._json(200, done)
            return
        self._sse_start()
        started = {**done, "status": "in_progress", "output": [], "usage": None}
        self._sse({"type": "response.created", "response": started}, "response.created")
        item = {**message, "status": "in_progress", "content": []}
        self._sse(
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            "response.output_item.added",
        )
        part = {"type": "output_text", "text": "", "annotations": []}
        self._sse(
            {
                "type": "response.content_part.added",
                "item_id": mid,
                "output_index": 0,
                "content_index": 0,
                "part": part,
            },
            "response.content_part.added",
        )
        for piece in _chunks(text):
            self._sse(
                {
                    "type": "response.output_text.delta",
                    "item_id": mid,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": piece,
                },
                "response.output_text.delta",
            )
        self._sse(
            {
                "type": "response.output_text.done",
                "item_id": mid,
                "output_index": 0,
                "content_index": 0,
                "text": text,
            },
            "response.output_text.done",
        )
        self._sse(
            {"type": "response.output_item.done", "output_index": 0, "item": message},
            "response.output_item.done",
        )
        self._sse({"type": "response.completed", "response": done}, "response.completed")


def _last_role(body: Any) -> str:
    messages = body.get("messages") if isinstance(body, dict) else None
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return str(messages[-1].get("role") or "")
    return ""


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "fake-llm"}
