"""The model gateway's bad input and faults, each answered in the caller's API shape.

Proves: a missing, unknown or revoked token is 401; an unknown model 404; a malformed
body 400; a body over the gateway's own cap 413; a budget refusal 429 with the message an
agent prints and ``x-should-retry: false``; the upstream's own 429/500 pass through with
their bodies and headers; an unreachable upstream is 502, a silent one 504, one that
breaks off mid-stream ends the stream with an error event; a caller that goes away
mid-stream cancels the upstream request and still has what it received recorded; no
prompt, completion or key reaches a log line; the metrics count tokens and cost by model.
"""

from __future__ import annotations

import json
import socket
import time
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from openova_sandbox.services.gateway_ledger import BudgetKey

from .conftest import ANTHROPIC_KEY, IDENTITY, OPENAI_KEY, Gateway
from .test_gateway_proxy import CHAT, MESSAGES, chat_body

ANTHROPIC_BODY = {
    "model": "claude-test",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi"}],
}


def openai_error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def anthropic_error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    return body["error"]


# --- credentials ------------------------------------------------------------------------


def test_missing_unknown_and_revoked_tokens_are_401_in_each_shape(gw: Gateway) -> None:
    missing = gw.http.post(CHAT, json=chat_body())
    assert missing.status_code == 401
    error = openai_error(missing)
    assert error["code"] == "invalid_api_key"
    assert "token is required" in error["message"]

    unknown = gw.http.post(MESSAGES, json=ANTHROPIC_BODY, headers=gw.anthropic("sk-sandbox-nope"))
    assert unknown.status_code == 401
    assert anthropic_error(unknown)["type"] == "authentication_error"

    gw.run(gw.ledger.revoke(IDENTITY.namespace, IDENTITY.sandbox))
    revoked = gw.http.post(CHAT, json=chat_body(), headers=gw.openai())
    assert revoked.status_code == 401
    assert "unknown or revoked" in openai_error(revoked)["message"]
    models = gw.http.get("/llm/openai/v1/models", headers=gw.openai())
    assert models.status_code == 401
    assert gw.upstream.completions() == []  # nothing reached the provider


def test_a_provider_key_is_not_a_gateway_token(gw: Gateway) -> None:
    response = gw.http.post(CHAT, json=chat_body(), headers=gw.openai(OPENAI_KEY))
    assert response.status_code == 401


def test_a_new_token_for_the_sandbox_replaces_the_old_one(gw: Gateway) -> None:
    old = gw.token
    new = gw.issue(IDENTITY)
    assert gw.http.post(CHAT, json=chat_body(), headers=gw.openai(old)).status_code == 401
    assert gw.http.post(CHAT, json=chat_body(), headers=gw.openai(new)).status_code == 200


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"messages": []}', "model"),
        (b'{"model": "gpt-test", "stream": "yes"}', "stream"),
        (b'{"model": "gpt-test", "max_tokens": -5}', "max_tokens"),
        (b'{"model": "gpt-test", "stream": true, "stream_options": 3}', "stream_options"),
    ],
)
def test_malformed_bodies_are_400(gw: Gateway, body: bytes, needle: str) -> None:
    response = gw.http.post(
        CHAT, content=body, headers={**gw.openai(), "content-type": "application/json"}
    )
    assert response.status_code == 400
    error = openai_error(response)
    assert error["type"] == "invalid_request_error"
    assert needle in error["message"]
    assert gw.ledger.records == []


def test_unknown_models_are_404_in_each_shape(gw: Gateway) -> None:
    # the Anthropic side has no pass-through provider in this config
    response = gw.http.post(
        MESSAGES, json={**ANTHROPIC_BODY, "model": "claude-nope"}, headers=gw.anthropic()
    )
    assert response.status_code == 404
    error = anthropic_error(response)
    assert error["type"] == "not_found_error"
    assert "claude-nope" in error["message"]
    assert "claude-test" in error["message"]  # what is served
    # an OpenAI alias asked on the Anthropic API is not served there either
    wrong = gw.http.post(
        MESSAGES, json={**ANTHROPIC_BODY, "model": "gpt-test"}, headers=gw.anthropic()
    )
    assert wrong.status_code == 404


def test_unknown_gateway_paths_are_404_in_the_shape(gw: Gateway) -> None:
    response = gw.http.post("/llm/openai/v1/embeddings", json={}, headers=gw.openai())
    assert response.status_code == 404
    assert openai_error(response)["code"] == "not_found"


def test_bodies_over_the_gateways_cap_are_413(gw: Gateway) -> None:
    body = chat_body(messages=[{"role": "user", "content": "x" * 250_000}])
    response = gw.http.post(CHAT, json=body, headers=gw.openai())
    assert response.status_code == 413
    assert "200000 bytes" in openai_error(response)["message"]

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(30):
            yield b"x" * 10_000

    chunked = gw.http.post(
        MESSAGES, content=chunks(), headers={**gw.anthropic(), "content-type": "application/json"}
    )
    assert chunked.status_code == 413
    assert anthropic_error(chunked)["type"] == "request_too_large"


# --- budgets ----------------------------------------------------------------------------


def test_over_budget_is_429_with_the_message_an_agent_prints(gw: Gateway) -> None:
    key = BudgetKey("user", IDENTITY.namespace, "dev@acme.com")
    gw.run(gw.ledger.set_budget(key, Decimal("0.001"), by="admin@acme.com"))
    # worst case: max_tokens 100 at $15/M (+ input) is more than a tenth of a cent? no:
    # 100 * 15 / 1e6 = $0.0015 > $0.001, refused before anything is sent
    response = gw.http.post(MESSAGES, json=ANTHROPIC_BODY, headers=gw.anthropic())
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"
    error = anthropic_error(response)
    assert error["type"] == "rate_limit_error"
    assert error["message"].startswith("monthly budget of $0.001 for user dev@acme.com reached")
    openai = gw.http.post(CHAT, json=chat_body(max_tokens=1000), headers=gw.openai())
    assert openai.status_code == 429
    assert openai_error(openai)["code"] == "budget_exceeded"
    assert gw.upstream.completions() == []
    # a request whose worst case fits still goes
    small = gw.http.post(
        MESSAGES, json={**ANTHROPIC_BODY, "max_tokens": 10}, headers=gw.anthropic()
    )
    assert small.status_code == 200


# --- the upstream's own answers and faults -----------------------------------------------


def test_upstream_429_and_500_pass_through_with_their_bodies(gw: Gateway) -> None:
    limited = gw.http.post(CHAT, json=chat_body("rate-429"), headers=gw.openai())
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "7"
    assert limited.content == gw.upstream.sent[-1]
    failed = gw.http.post(
        MESSAGES, json={**ANTHROPIC_BODY, "model": "claude-fail"}, headers=gw.anthropic()
    )
    assert failed.status_code == 500
    assert failed.content == gw.upstream.sent[-1]
    records = gw.wait_records(2)
    assert [(r.status, r.cost_usd, r.input_tokens, r.output_tokens) for r in records] == [
        (429, 0, 0, 0),
        (500, 0, 0, 0),
    ]


def test_an_unreachable_upstream_is_502(gw: Gateway) -> None:
    response = gw.http.post(CHAT, json=chat_body("gone"), headers=gw.openai())
    assert response.status_code == 502
    error = openai_error(response)
    assert error["type"] == "server_error"
    assert error["code"] == "upstream_unreachable"
    assert "'down' is unreachable" in error["message"]
    [record] = gw.wait_records(1)
    assert (record.status, record.cost_usd) == (502, 0)
    # the reservation was released
    spent, reserved = gw.ledger.spend_of(
        IDENTITY.budget_keys()[2], record.started_at.strftime("%Y-%m")
    )
    assert (spent, reserved) == (0, 0)


def test_an_upstream_that_does_not_answer_in_time_is_504(gw: Gateway) -> None:
    # the fake waits 5 s before its headers; this config's read timeout is 1.5 s
    started = time.monotonic()
    response = gw.http.post(CHAT, json=chat_body("slow"), headers=gw.openai())
    assert response.status_code == 504
    error = openai_error(response)
    assert error["code"] == "upstream_timeout"
    assert "did not answer in time" in error["message"]
    assert time.monotonic() - started < 4.5
    [record] = gw.wait_records(1)
    assert (record.status, record.cost_usd) == (504, 0)


def test_a_stream_the_upstream_breaks_off_ends_with_an_error_event(gw: Gateway) -> None:
    response = gw.http.post(CHAT, json=chat_body("break", stream=True), headers=gw.openai())
    assert response.status_code == 200
    assert response.content.startswith(gw.upstream.sent[-1])  # what came, then the error
    tail = response.content[len(gw.upstream.sent[-1]) :]
    assert tail.startswith(b"data: ")
    event = json.loads(tail[len(b"data: ") :])
    assert event["error"]["code"] == "upstream_unreachable"
    [record] = gw.wait_records(1)
    assert record.status == 200
    assert record.output_tokens >= 1  # estimated from what was received
    assert record.input_tokens > 0


# --- the caller going away ------------------------------------------------------------------


def test_a_caller_leaving_mid_stream_cancels_the_upstream_and_is_metered(gw: Gateway) -> None:
    body = json.dumps({**ANTHROPIC_BODY, "model": "claude-hold", "stream": True}).encode()
    host, port = gw.server.host, gw.server.port
    with socket.create_connection((host, port)) as sock:
        head = (
            f"POST {MESSAGES} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"x-api-key: {gw.token}\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body)
        got = b""
        while b"message_start" not in got:
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
        gw.upstream.wait_held()
    # the socket is closed: the gateway cancels the upstream request
    deadline = time.monotonic() + 10
    while gw.upstream.disconnects == 0:
        assert time.monotonic() < deadline, "the upstream request was not cancelled"
        time.sleep(0.02)
    [record] = gw.wait_records(1)
    assert record.status == 200
    assert record.input_tokens == 50  # told by message_start
    assert record.cache_read_tokens == 10
    assert record.output_tokens >= 1  # estimated: the stream never said
    assert record.cost_usd > 0
    month = record.started_at.strftime("%Y-%m")
    spent, reserved = gw.ledger.spend_of(IDENTITY.budget_keys()[2], month)
    assert (spent, reserved) == (record.cost_usd, 0)


def test_a_caller_leaving_before_a_non_streamed_answer_cancels_it(gw: Gateway) -> None:
    body = json.dumps(chat_body("slow")).encode()
    host, port = gw.server.host, gw.server.port
    with socket.create_connection((host, port)) as sock:
        head = (
            f"POST {CHAT} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {gw.token}\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body)
        deadline = time.monotonic() + 10
        while not gw.upstream.completions():
            assert time.monotonic() < deadline
            time.sleep(0.02)
    [record] = gw.wait_records(1, timeout=1.2)  # well before the 1.5 s timeout
    assert record.status == 0  # the caller got nothing
    assert record.cost_usd == 0


# --- logs and metrics -----------------------------------------------------------------------


def test_no_prompt_completion_or_key_reaches_the_log(gw: Gateway) -> None:
    secret_prompt = "the-secret-prompt-7f3a"
    with capture_logs() as logs:
        body = chat_body(messages=[{"role": "user", "content": secret_prompt}])
        assert gw.http.post(CHAT, json=body, headers=gw.openai()).status_code == 200
        streamed = {**ANTHROPIC_BODY, "stream": True, "system": secret_prompt}
        assert gw.http.post(MESSAGES, json=streamed, headers=gw.anthropic()).status_code == 200
        assert gw.http.post(CHAT, json=chat_body("gone"), headers=gw.openai()).status_code == 502
        gw.wait_records(3)
    text = json.dumps(logs, default=str)
    assert "llm_request" in text
    for needle in (secret_prompt, "Hello", "wor", OPENAI_KEY, ANTHROPIC_KEY, gw.token):
        assert needle not in text, needle


def test_metrics_count_tokens_and_cost_by_model(gw: Gateway) -> None:
    assert gw.http.post(CHAT, json=chat_body(), headers=gw.openai()).status_code == 200
    assert (
        gw.http.post(CHAT, json=chat_body("whatever-upstream"), headers=gw.openai()).status_code
        == 200
    )
    gw.wait_records(2)
    text = gw.http.get("/metrics").text
    assert 'sandbox_llm_tokens_total{kind="output",model="gpt-test"} 20.0' in text
    assert 'sandbox_llm_tokens_total{kind="cache_read",model="gpt-test"} 40.0' in text
    assert 'sandbox_llm_cost_usd_total{model="gpt-test"} 0.0003' in text
    assert 'sandbox_llm_requests_total{api="openai-chat",model="gpt-test",status="200"} 1.0' in text
    assert 'sandbox_llm_upstream_first_byte_seconds_count{model="gpt-test"} 1.0' in text
    # a pass-through name the upstream accepted is its own label
    assert 'model="whatever-upstream"' in text
    assert "sb-one" not in text and "dev@acme.com" not in text
