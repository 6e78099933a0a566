"""A fake model provider speaking both OpenAI's and Anthropic's wire shapes, under uvicorn.

The model name in the request picks the behaviour, so one server plays every upstream a
test needs:

- any name: a normal answer (non-streamed JSON with usage, or an SSE stream), with
  ``USAGE`` (OpenAI chat), ``RESPONSES_USAGE`` or ``ANTHROPIC_USAGE`` in it;
- ``fail-500`` / ``rate-429``: that status with a JSON body (429 with ``retry-after``);
- ``slow``: waits ``slow_seconds`` before its headers (the gateway's read timeout is hit);
- ``hold``: streams its first event, then waits until :meth:`release` (or until the
  gateway disconnects, which it records in ``disconnects``) before the rest;
- ``break``: streams one event, then drops the connection mid-stream.

Every request is recorded with its headers and raw body; every answer's exact bytes are
kept in ``sent`` so a test can compare what the caller got byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

from openova_sandbox.testing.server import RunningServer, serve_in_thread

USAGE = {
    "prompt_tokens": 100,
    "completion_tokens": 20,
    "total_tokens": 120,
    "prompt_tokens_details": {"cached_tokens": 40},
}
RESPONSES_USAGE = {
    "input_tokens": 80,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 12,
    "total_tokens": 92,
}
ANTHROPIC_USAGE_START = {
    "input_tokens": 50,
    "cache_creation_input_tokens": 5,
    "cache_read_input_tokens": 10,
    "output_tokens": 1,
}
ANTHROPIC_FINAL_OUTPUT = 30
WORDS = ["Hel", "lo", ", ", "wor", "ld", "!"]


class _Gone(Exception):
    pass


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeUpstream:
    slow_seconds: float = 5.0
    requests: list[Seen] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    disconnects: int = 0
    upstream_models: list[str] = field(default_factory=lambda: ["up-model-a", "up-model-b"])
    _release: threading.Event = field(default_factory=threading.Event)
    _held: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    server: RunningServer | None = None

    # ---------------------------------------------------------------- control
    @property
    def origin(self) -> str:
        assert self.server is not None
        return self.server.url

    def release(self) -> None:
        self._release.set()

    def wait_held(self, timeout: float = 10.0) -> None:
        assert self._held.wait(timeout), "no request reached the hold point"

    def completions(self) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    # ---------------------------------------------------------------- ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        seen = Seen(scope["method"], scope["path"], headers, body)
        with self._lock:
            self.requests.append(seen)
        path = scope["path"]
        try:
            if scope["method"] == "GET" and path.endswith("/models"):
                data = [
                    {"id": m, "object": "model", "owned_by": "fake"} for m in self.upstream_models
                ]
                await self._json(send, 200, {"object": "list", "data": data})
                return
            if path.endswith("/count_tokens"):
                await self._json(send, 200, {"input_tokens": 42})
                return
            request = json.loads(body)
            model = request.get("model", "")
            if model == "fail-500":
                await self._json(
                    send, 500, {"error": {"message": "upstream broke", "type": "server_error"}}
                )
                return
            if model == "rate-429":
                await self._json(
                    send,
                    429,
                    {"error": {"message": "slow down", "type": "rate_limit_error"}},
                    extra=[(b"retry-after", b"7")],
                )
                return
            if model == "slow":
                await asyncio.sleep(self.slow_seconds)
            stream = request.get("stream") is True
            if path.endswith("/chat/completions"):
                await (
                    self._chat_stream(send, receive, request)
                    if stream
                    else self._chat(send, request)
                )
            elif path.endswith("/responses"):
                await (
                    self._responses_stream(send, receive, request)
                    if stream
                    else self._responses(send, request)
                )
            elif path.endswith("/v1/messages"):
                await (
                    self._messages_stream(send, receive, request)
                    if stream
                    else self._messages(send, request)
                )
            else:
                await self._json(send, 404, {"error": "no such path"})
        except _Gone:
            with self._lock:
                self.disconnects += 1

    async def _json(
        self, send: Send, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.sent.append(data)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    (b"x-request-id", b"req_upstream_123"),
                    (b"set-cookie", b"edge=1"),
                    (b"openai-organization", b"operator-org"),
                    *(extra or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    # ---------------------------------------------------------------- streams
    async def _stream(self, send: Send, receive: Receive, model: str, events: list[bytes]) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        out = bytearray()
        for index, event in enumerate(events):
            out += event
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if index == 0 and model == "hold":
                await self._hold(receive)
            if index == 0 and model == "break":
                self.sent.append(bytes(out))
                raise RuntimeError("the fake drops the connection mid-stream")
        self.sent.append(bytes(out))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _hold(self, receive: Receive) -> None:
        self._held.set()
        while not self._release.is_set():
            try:
                message = await asyncio.wait_for(receive(), 0.05)
            except TimeoutError:
                continue
            if message["type"] == "http.disconnect":
                raise _Gone

    @staticmethod
    def _sse(payload: Any, event: str | None = None) -> bytes:
        head = f"event: {event}\n" if event else ""
        data = payload if isinstance(payload, str) else json.dumps(payload)
        return f"{head}data: {data}\n\n".encode()

    async def _chat(self, send: Send, request: dict[str, Any]) -> None:
        await self._json(
            send,
            200,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": request["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(WORDS)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": USAGE,
            },
        )

    async def _chat_stream(self, send: Send, receive: Receive, request: dict[str, Any]) -> None:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return self._sse(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "model": request["model"],
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": w}) for w in WORDS]
        events.append(chunk({}, "stop"))
        if (request.get("stream_options") or {}).get("include_usage"):
            events.append(
                self._sse(
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion.chunk",
                        "model": request["model"],
                        "choices": [],
                        "usage": USAGE,
                    }
                )
            )
        events.append(self._sse("[DONE]"))
        await self._stream(send, receive, request["model"], events)

    async def _responses(self, send: Send, request: dict[str, Any]) -> None:
        await self._json(send, 200, self._response_object(request, "completed"))

    def _response_object(self, request: dict[str, Any], status: str) -> dict[str, Any]:
        done = status == "completed"
        return {
            "id": "resp_1",
            "object": "response",
            "status": status,
            "model": request["model"],
            "output": [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "".join(WORDS)}],
                }
            ]
            if done
            else [],
            "usage": RESPONSES_USAGE if done else None,
        }

    async def _responses_stream(
        self, send: Send, receive: Receive, request: dict[str, Any]
    ) -> None:
        events = [
            self._sse(
                {
                    "type": "response.created",
                    "response": self._response_object(request, "in_progress"),
                },
                "response.created",
            )
        ]
        events += [
            self._sse(
                {"type": "response.output_text.delta", "delta": w}, "response.output_text.delta"
            )
            for w in WORDS
        ]
        events.append(
            self._sse(
                {
                    "type": "response.completed",
                    "response": self._response_object(request, "completed"),
                },
                "response.completed",
            )
        )
        await self._stream(send, receive, request["model"], events)

    async def _messages(self, send: Send, request: dict[str, Any]) -> None:
        usage = {**ANTHROPIC_USAGE_START, "output_tokens": ANTHROPIC_FINAL_OUTPUT}
        await self._json(
            send,
            200,
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": request["model"],
                "content": [{"type": "text", "text": "".join(WORDS)}],
                "stop_reason": "end_turn",
                "usage": usage,
            },
        )

    async def _messages_stream(self, send: Send, receive: Receive, request: dict[str, Any]) -> None:
        start = {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": request["model"],
                "content": [],
                "usage": ANTHROPIC_USAGE_START,
            },
        }
        events = [self._sse(start, "message_start")]
        events.append(
            self._sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            )
        )
        events += [
            self._sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": w},
                },
                "content_block_delta",
            )
            for w in WORDS
        ]
        events.append(self._sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        events.append(
            self._sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": ANTHROPIC_FINAL_OUTPUT},
                },
                "message_delta",
            )
        )
        events.append(self._sse({"type": "message_stop"}, "message_stop"))
        await self._stream(send, receive, request["model"], events)


@contextmanager
def running_upstream(**kw: Any) -> Iterator[FakeUpstream]:
    fake = FakeUpstream(**kw)
    with serve_in_thread(fake) as server:
        fake.server = server
        try:
            yield fake
        finally:
            fake.release()
