"""Token usage out of the upstream's own answers: pure code, no I/O.

Three wire shapes (``Api``): OpenAI chat completions, OpenAI responses and Anthropic
messages, each non-streamed (one JSON body) or streamed (server-sent events).

Counts are normalised so one formula prices them all: ``input_tokens`` are the input
tokens billed at the input price (OpenAI's ``prompt_tokens``/``input_tokens`` minus the
cached ones; Anthropic's ``input_tokens`` already are), ``cache_read_tokens`` the cached
input, ``cache_write_tokens`` input written to the cache (Anthropic only).

:class:`StreamMeter` reads a stream incrementally as its chunks pass through the proxy,
wherever the chunk boundaries fall. It keeps only the unfinished last line and parses
JSON only for the events that carry usage (a cheap byte search picks them), so metering
costs little per chunk. A stream cut short (the client went away, the upstream failed)
has no final usage: :meth:`StreamMeter.usage` then estimates the output from the number
of events received (one token per delta: what OpenAI chat streams send; a lower bound for
the other two) and the caller estimates the input from the request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

Api = Literal["openai-chat", "openai-responses", "anthropic-messages"]
# a line longer than this (a huge final event) is dropped rather than held in memory
MAX_LINE_BYTES = 8 * 1024 * 1024
# a non-streamed body longer than this is passed through but not parsed for usage
MAX_BODY_BYTES = 16 * 1024 * 1024
_USAGE_KEY = b'"usage"'


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    estimated: bool = False

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = usage.get(key)
    return value if isinstance(value, dict) else {}


def openai_chat_usage(usage: Mapping[str, Any]) -> Usage:
    prompt = _count(usage.get("prompt_tokens"))
    cached = min(_count(_details(usage, "prompt_tokens_details").get("cached_tokens")), prompt)
    return Usage(
        input_tokens=prompt - cached,
        output_tokens=_count(usage.get("completion_tokens")),
        cache_read_tokens=cached,
    )


def openai_responses_usage(usage: Mapping[str, Any]) -> Usage:
    given = _count(usage.get("input_tokens"))
    cached = min(_count(_details(usage, "input_tokens_details").get("cached_tokens")), given)
    return Usage(
        input_tokens=given - cached,
        output_tokens=_count(usage.get("output_tokens")),
        cache_read_tokens=cached,
    )


def anthropic_usage(usage: Mapping[str, Any]) -> Usage:
    return Usage(
        input_tokens=_count(usage.get("input_tokens")),
        output_tokens=_count(usage.get("output_tokens")),
        cache_read_tokens=_count(usage.get("cache_read_input_tokens")),
        cache_write_tokens=_count(usage.get("cache_creation_input_tokens")),
    )


_READERS = {
    "openai-chat": openai_chat_usage,
    "openai-responses": openai_responses_usage,
    "anthropic-messages": anthropic_usage,
}


def usage_from_body(api: Api, body: bytes) -> Usage | None:
    """The usage of a non-streamed answer; None when it has none (an error body)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    return _READERS[api](usage)


class StreamMeter:
    """Feed every chunk of an SSE stream as it passes; read :meth:`usage` at the end."""

    __slots__ = ("_anthropic", "_api", "_final", "_skipping", "_tail", "events")

    def __init__(self, api: Api) -> None:
        self._api = api
        self._tail = b""
        self._skipping = False  # inside an over-long line, dropped up to its end
        self._final: Usage | None = None
        self._anthropic: dict[str, Any] = {}
        self.events = 0  # data lines seen

    def feed(self, chunk: bytes) -> None:
        if self._skipping:
            end = chunk.find(b"\n")
            if end < 0:
                return
            self._skipping = False
            chunk = chunk[end + 1 :]
        data = self._tail + chunk if self._tail else chunk
        end = data.rfind(b"\n")
        if end < 0:
            self._hold(data)
            return
        self._hold(data[end + 1 :])
        self._lines(data[: end + 1])

    def finish(self) -> None:
        """The stream ended: a last line without a newline is still read."""
        if self._tail:
            self._lines(self._tail)
            self._tail = b""

    def _hold(self, tail: bytes) -> None:
        if len(tail) > MAX_LINE_BYTES:
            self._tail = b""
            self._skipping = True
        else:
            self._tail = tail

    def _lines(self, block: bytes) -> None:
        self.events += block.count(b"\ndata:") + (1 if block.startswith(b"data:") else 0)
        if _USAGE_KEY not in block:
            return
        for line in block.split(b"\n"):
            if line.startswith(b"data:") and _USAGE_KEY in line:
                self._event(line[5:])

    def _event(self, payload: bytes) -> None:
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(data, dict):
            return
        if self._api == "openai-chat":
            usage = data.get("usage")
            if isinstance(usage, dict):
                self._final = openai_chat_usage(usage)
        elif self._api == "openai-responses":
            response = data.get("response")
            usage = response.get("usage") if isinstance(response, dict) else None
            if isinstance(usage, dict):
                self._final = openai_responses_usage(usage)
        else:
            self._anthropic_event(data)

    def _anthropic_event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            if isinstance(usage, dict):
                self._anthropic.update(usage)
        elif kind == "message_delta":
            usage = data.get("usage")
            if isinstance(usage, dict):
                # cumulative counts: a field present here replaces message_start's
                self._anthropic.update({k: v for k, v in usage.items() if v is not None})
                self._final = anthropic_usage(self._anthropic)

    @property
    def complete(self) -> bool:
        """Whether the stream's own final usage was seen."""
        return self._final is not None

    def usage(self) -> Usage | None:
        """The stream's usage; for a stream cut short, an estimate (``estimated``) of
        the output with whatever input the stream told (Anthropic: at its start)."""
        if self._final is not None:
            return self._final
        started = anthropic_usage(self._anthropic) if self._anthropic else None
        if started is None and self.events == 0:
            return None
        base = started or Usage()
        return replace(base, output_tokens=max(base.output_tokens, self.events), estimated=True)

    @property
    def input_known(self) -> bool:
        return self._final is not None or bool(self._anthropic)
