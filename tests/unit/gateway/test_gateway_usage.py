"""Usage out of the three wire shapes, streamed and not: the stream meter gives the same
answer wherever the chunk boundaries fall (hypothesis), estimates a stream cut short,
and does not hold an over-long line in memory."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from openova_sandbox.gateway.usage import (
    MAX_LINE_BYTES,
    Api,
    StreamMeter,
    Usage,
    usage_from_body,
)


def sse(payload: Any, event: str | None = None, crlf: bool = False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    head = f"event: {event}{nl}" if event else ""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"{head}data: {data}{nl}{nl}".encode()


CHAT_STREAM = (
    b"".join(
        sse({"choices": [{"index": 0, "delta": {"content": w}}]}) for w in ["a", '"usage"', "c"]
    )
    + sse(
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 100,
                "completion_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 30},
            },
        }
    )
    + sse("[DONE]")
)
RESPONSES_STREAM = (
    sse({"type": "response.created", "response": {"usage": None}}, "response.created")
    + sse({"type": "response.output_text.delta", "delta": "hi"}, "response.output_text.delta")
    + sse(
        {
            "type": "response.completed",
            "response": {
                "usage": {
                    "input_tokens": 50,
                    "input_tokens_details": {"cached_tokens": 20},
                    "output_tokens": 9,
                }
            },
        },
        "response.completed",
    )
)
ANTHROPIC_STREAM = (
    sse(
        {
            "type": "message_start",
            "message": {
                "usage": {
                    "input_tokens": 12,
                    "cache_read_input_tokens": 1000,
                    "cache_creation_input_tokens": 200,
                    "output_tokens": 1,
                }
            },
        },
        "message_start",
        crlf=True,
    )
    + sse(
        {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}},
        "content_block_delta",
    )
    + sse({"type": "message_delta", "usage": {"output_tokens": 44}}, "message_delta")
    + sse({"type": "message_stop"}, "message_stop")
)
EXPECTED: dict[Api, tuple[bytes, Usage]] = {
    "openai-chat": (CHAT_STREAM, Usage(70, 7, 30, 0)),
    "openai-responses": (RESPONSES_STREAM, Usage(30, 9, 20, 0)),
    "anthropic-messages": (ANTHROPIC_STREAM, Usage(12, 44, 1000, 200)),
}


def metered(api: Api, chunks: list[bytes]) -> StreamMeter:
    meter = StreamMeter(api)
    for chunk in chunks:
        meter.feed(chunk)
    meter.finish()
    return meter


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


@settings(max_examples=150, deadline=None)
@given(
    api=st.sampled_from(list(EXPECTED)),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=40),
)
def test_the_meter_reads_the_same_usage_wherever_chunks_split(api: Api, cuts: list[int]) -> None:
    stream, expected = EXPECTED[api]
    meter = metered(api, split(stream, cuts))
    assert meter.complete
    assert meter.usage() == expected


def test_byte_by_byte() -> None:
    for api, (stream, expected) in EXPECTED.items():
        meter = metered(api, [stream[i : i + 1] for i in range(len(stream))])
        assert meter.usage() == expected, api


def test_a_stream_without_a_trailing_newline_is_read_to_its_end() -> None:
    meter = metered("openai-chat", [CHAT_STREAM.rstrip(b"\n").rsplit(b"\n\n", 1)[0]])
    assert meter.usage() == Usage(70, 7, 30, 0)


def test_a_stream_cut_short_is_estimated() -> None:
    cut = CHAT_STREAM[: CHAT_STREAM.index(b'data: {"choices": [], "usage"')]  # no usage event
    meter = metered("openai-chat", [cut])
    usage = meter.usage()
    assert usage is not None and usage.estimated
    assert usage.output_tokens == 3  # one token per delta event received
    assert not meter.input_known
    # Anthropic tells its input at the start
    start_only = ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(b"event: message_delta")]
    meter = metered("anthropic-messages", [start_only])
    usage = meter.usage()
    assert usage is not None and usage.estimated and meter.input_known
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (
        12,
        1000,
        200,
    )
    assert usage.output_tokens >= 1
    assert StreamMeter("openai-chat").usage() is None  # nothing received


def test_an_over_long_line_is_dropped_not_held() -> None:
    meter = StreamMeter("openai-chat")
    meter.feed(b"data: " + b"x" * (MAX_LINE_BYTES + 10))
    assert len(meter._tail) == 0  # not kept
    meter.feed(b"y" * 1000 + b"\n\n")  # the rest of that line is skipped too
    meter.feed(CHAT_STREAM)
    meter.finish()
    assert meter.usage() == Usage(70, 7, 30, 0)


def test_non_streamed_bodies() -> None:
    chat = {"usage": {"prompt_tokens": 10, "completion_tokens": 5}}
    assert usage_from_body("openai-chat", json.dumps(chat).encode()) == Usage(10, 5)
    responses = {"usage": {"input_tokens": 8, "output_tokens": 3}}
    assert usage_from_body("openai-responses", json.dumps(responses).encode()) == Usage(8, 3)
    anthropic = {"usage": {"input_tokens": 4, "output_tokens": 2, "cache_read_input_tokens": 6}}
    assert usage_from_body("anthropic-messages", json.dumps(anthropic).encode()) == Usage(4, 2, 6)
    for bad in (b"not json", b"[]", b'{"error": {}}', b'{"usage": 3}'):
        assert usage_from_body("openai-chat", bad) is None


def test_odd_counts_are_ignored() -> None:
    body = {"usage": {"prompt_tokens": -4, "completion_tokens": "7", "prompt_tokens_details": None}}
    assert usage_from_body("openai-chat", json.dumps(body).encode()) == Usage()
    cached_over = {"usage": {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}}}
    assert usage_from_body("openai-chat", json.dumps(cached_over).encode()) == Usage(0, 0, 5)
