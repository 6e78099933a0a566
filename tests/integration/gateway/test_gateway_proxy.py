"""The model gateway under `sandbox serve`'s app, against a fake provider over loopback.

Proves: each API shape (OpenAI chat and responses, Anthropic messages, streamed and not)
comes back byte for byte with the provider's key swapped in for the sandbox's token;
streams pass chunk by chunk (the caller reads the first event while the upstream still
holds the rest); usage and cost are recorded from the answer itself; aliases are
rewritten, everything else in the body passes untouched.
"""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any

import httpx

from .conftest import ANTHROPIC_KEY, IDENTITY, OPENAI_KEY, Gateway
from .fake_upstream import ANTHROPIC_FINAL_OUTPUT, WORDS

CHAT = "/llm/openai/v1/chat/completions"
RESPONSES = "/llm/openai/v1/responses"
MESSAGES = "/llm/anthropic/v1/messages"

TOOLS = [
    {
        "type": "function",
        "function": {"name": "read_file", "parameters": {"type": "object", "properties": {}}},
    }
]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def chat_body(model: str = "gpt-test", *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, IMAGE]}],
        "tools": TOOLS,
        "x_unknown_field": {"kept": [1, 2, 3]},
        **extra,
    }


def test_openai_chat_non_streamed_is_passed_byte_for_byte_and_metered(gw: Gateway) -> None:
    response = gw.http.post(CHAT, json=chat_body(), headers=gw.openai())
    assert response.status_code == 200
    assert response.content == gw.upstream.sent[-1]  # the provider's exact bytes
    assert response.headers["x-upstream-request-id"] == "req_upstream_123"
    assert response.headers["x-request-id"] != "req_upstream_123"  # ours
    assert "set-cookie" not in response.headers
    assert "openai-organization" not in response.headers

    seen = gw.upstream.completions()[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert gw.token not in json.dumps(seen.headers)
    sent = seen.json
    assert sent["model"] == "up-gpt"  # the alias resolved to the upstream's name
    assert sent["tools"] == TOOLS
    assert sent["messages"][0]["content"][1] == IMAGE
    assert sent["x_unknown_field"] == {"kept": [1, 2, 3]}
    assert "stream_options" not in sent  # only streams need it

    [record] = gw.wait_records(1)
    assert record.identity == IDENTITY
    assert (record.model, record.provider, record.api) == ("gpt-test", "fake-openai", "openai-chat")
    # prompt 100 of which 40 cached; 20 out
    assert (record.input_tokens, record.cache_read_tokens, record.output_tokens) == (60, 40, 20)
    assert record.cost_usd == Decimal("0.0003")  # (60*2 + 40*0.5 + 20*8) / 1e6
    assert record.status == 200
    assert record.stream is False
    assert record.latency_ms > 0


def test_openai_chat_stream_arrives_chunk_by_chunk_with_usage_requested(gw: Gateway) -> None:
    got_first = threading.Event()
    received = bytearray()

    def read() -> None:
        with gw.http.stream(
            "POST", CHAT, json=chat_body("hold", stream=True), headers=gw.openai()
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for chunk in response.iter_raw():
                received.extend(chunk)
                got_first.set()

    reader = threading.Thread(target=read)
    reader.start()
    gw.upstream.wait_held()
    # the upstream holds everything after its first event: the caller already has it
    assert got_first.wait(10), "the first event was not passed on while the stream was open"
    assert b"chat.completion.chunk" in received
    assert b"[DONE]" not in received
    gw.upstream.release()
    reader.join(20)
    assert bytes(received) == gw.upstream.sent[-1]
    sent = gw.upstream.completions()[-1].json
    assert sent["model"] == "hold"  # pass-through: unlisted names go unchanged
    assert sent["stream_options"] == {"include_usage": True}
    [record] = gw.wait_records(1)
    assert (record.input_tokens, record.cache_read_tokens, record.output_tokens) == (60, 40, 20)
    assert record.stream is True
    assert record.cost_usd == 0  # pass-through model, no default price


def test_a_client_asking_usage_itself_keeps_its_stream_options(gw: Gateway) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True, "other": 1})
    response = gw.http.post(CHAT, json=body, headers=gw.openai())
    assert response.status_code == 200
    assert gw.upstream.completions()[-1].json["stream_options"] == {
        "include_usage": True,
        "other": 1,
    }


def test_openai_responses_streamed_and_not(gw: Gateway) -> None:
    body = {"model": "gpt-test", "input": "hi", "max_output_tokens": 64}
    plain = gw.http.post(RESPONSES, json=body, headers=gw.openai())
    assert plain.status_code == 200
    assert plain.content == gw.upstream.sent[-1]
    streamed = gw.http.post(RESPONSES, json={**body, "stream": True}, headers=gw.openai())
    assert streamed.status_code == 200
    assert streamed.content == gw.upstream.sent[-1]
    assert b"response.completed" in streamed.content
    assert gw.upstream.completions()[-1].path == "/v1/responses"
    records = gw.wait_records(2)
    for record in records:
        assert record.api == "openai-responses"
        assert (record.input_tokens, record.output_tokens) == (80, 12)
    assert [r.stream for r in records] == [False, True]


def test_anthropic_messages_streamed_and_not(gw: Gateway) -> None:
    body = {
        "model": "claude-test",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"user_id": "x"},
    }
    plain = gw.http.post(MESSAGES, json=body, headers=gw.anthropic())
    assert plain.status_code == 200
    assert plain.content == gw.upstream.sent[-1]
    # claude-code sends its token as a bearer (ANTHROPIC_AUTH_TOKEN)
    bearer = {"Authorization": f"Bearer {gw.token}"}
    streamed = gw.http.post(MESSAGES, json={**body, "stream": True}, headers=bearer)
    assert streamed.status_code == 200
    assert streamed.content == gw.upstream.sent[-1]
    assert "".join(WORDS).encode() not in streamed.content  # deltas, not one text
    seen = gw.upstream.completions()[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in seen.headers
    assert seen.headers["anthropic-version"] == "2023-06-01"  # added when absent
    assert seen.json["model"] == "up-claude"
    assert seen.json["metadata"] == {"user_id": "x"}
    records = gw.wait_records(2)
    for record in records:
        assert record.api == "anthropic-messages"
        assert (record.input_tokens, record.cache_read_tokens, record.cache_write_tokens) == (
            50,
            10,
            5,
        )
        assert record.output_tokens == ANTHROPIC_FINAL_OUTPUT
        # (50*3 + 10*0.3 + 5*3.75 + 30*15) / 1e6
        assert record.cost_usd == Decimal("0.00062175")


def test_anthropic_count_tokens_is_forwarded_and_not_metered(gw: Gateway) -> None:
    response = gw.http.post(
        MESSAGES + "/count_tokens",
        json={"model": "claude-test", "messages": [{"role": "user", "content": "hi"}]},
        headers=gw.anthropic(),
    )
    assert response.status_code == 200
    assert response.json() == {"input_tokens": 42}
    assert gw.upstream.requests[-1].path == "/v1/messages/count_tokens"
    assert gw.upstream.requests[-1].json["model"] == "up-claude"
    assert gw.ledger.records == []


def test_models_lists_aliases_and_what_the_passthrough_upstream_offers(gw: Gateway) -> None:
    response = gw.http.get("/llm/openai/v1/models", headers=gw.openai())
    assert response.status_code == 200
    ids = [m["id"] for m in response.json()["data"]]
    # the OpenAI-protocol aliases, then the pass-through provider's own list
    assert sorted(ids[:2]) == ["gone", "gpt-test"]
    assert ids[2:] == ["up-model-a", "up-model-b"]
    assert gw.upstream.requests[-1].headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_a_body_larger_than_the_api_cap_is_fine_under_the_gateways_own(gw: Gateway) -> None:
    big = "x" * 100_000  # over the sessions API's 64 KiB, under this config's 200 kB
    body = chat_body(messages=[{"role": "user", "content": big}])
    response = gw.http.post(CHAT, json=body, headers=gw.openai())
    assert response.status_code == 200
    assert gw.upstream.completions()[-1].json["messages"][0]["content"] == big


def test_the_routes_are_not_in_the_openapi_document(gw: Gateway) -> None:
    paths = gw.http.get("/api/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/llm")]


def test_http_client_sdk_shape_errors_are_json(gw: Gateway) -> None:
    # a sanity check that the test client and server agree on content types
    response = httpx.post(gw.url + CHAT, content=b"{}", headers=gw.openai())
    assert response.headers["content-type"] == "application/json"
