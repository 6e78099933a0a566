"""What the gateway changes in a request (only the model name of an alias, and OpenAI
chat streams' ``stream_options.include_usage``), what it checks, and the headers it
passes each way."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from openova_sandbox.domain.errors import Invalid
from openova_sandbox.gateway.config import ModelRoute, Price, Provider
from openova_sandbox.services.gateway import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    prepare,
    response_headers,
    upstream_headers,
)

OPENAI = Provider("o", "openai", "http://o/v1", api_key="sk-o")
ANTHROPIC = Provider("a", "anthropic", "http://a", api_key="sk-a")


def route(name: str, upstream: str | None = None, provider: Provider = OPENAI) -> ModelRoute:
    return ModelRoute(name, provider, upstream or name, Price(Decimal(1), Decimal(1)), 4096)


def test_an_unchanged_request_is_forwarded_as_its_own_bytes() -> None:
    raw = b'{ "model" : "m",  "messages": [], "weird": 1.50 }'
    prepared = prepare(OPENAI_CHAT, lambda name: route(name), raw)
    assert prepared.body is raw
    assert (prepared.stream, prepared.output_limit) == (False, 4096)


def test_an_alias_is_rewritten_and_everything_else_kept() -> None:
    body = {"model": "nice", "messages": [{"role": "user", "content": "é"}], "x": {"y": [1]}}
    prepared = prepare(
        OPENAI_RESPONSES, lambda name: route(name, "up-model"), json.dumps(body).encode()
    )
    assert json.loads(prepared.body) == {**body, "model": "up-model"}
    assert "é".encode() in prepared.body  # not escaped


def test_chat_streams_ask_for_usage() -> None:
    raw = json.dumps({"model": "m", "stream": True, "stream_options": {"foo": 1}}).encode()
    sent = json.loads(prepare(OPENAI_CHAT, route, raw).body)
    assert sent["stream_options"] == {"foo": 1, "include_usage": True}
    # not the other APIs: their streams always carry usage
    raw = json.dumps({"model": "m", "stream": True, "max_tokens": 10}).encode()
    assert prepare(ANTHROPIC_MESSAGES, route, raw).body == raw


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        (OPENAI_CHAT, "max_completion_tokens"),
        (OPENAI_CHAT, "max_tokens"),
        (OPENAI_RESPONSES, "max_output_tokens"),
        (ANTHROPIC_MESSAGES, "max_tokens"),
    ],
)
def test_the_output_limit_is_the_requests_own(endpoint: object, field: str) -> None:
    raw = json.dumps({"model": "m", field: 77}).encode()
    assert prepare(endpoint, route, raw).output_limit == 77  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b'"model"',
        b'{"model": ""}',
        b'{"model": 3}',
        b'{"model": "m", "stream": 1}',
        b'{"model": "m", "max_tokens": 1.5}',
        b'{"model": "m", "max_tokens": true}',
        b'{"model": "m", "max_tokens": 0}',
        b"\xff\xfe",
    ],
)
def test_what_is_checked(raw: bytes) -> None:
    with pytest.raises(Invalid):
        prepare(OPENAI_CHAT, route, raw)


def test_request_headers_carry_the_providers_key_and_nothing_of_the_callers() -> None:
    caller = {
        "authorization": "Bearer sk-sandbox-x",
        "x-api-key": "sk-sandbox-x",
        "cookie": "a=b",
        "openai-organization": "other-org",
        "openai-project": "other-project",
        "host": "gateway",
        "content-length": "12",
        "content-type": "application/json",
        "accept": "text/event-stream",
        "x-stainless-lang": "js",
        "anthropic-beta": "tools-2024",
        "x-forwarded-for": "1.2.3.4",
    }
    sent = dict(upstream_headers(OPENAI, caller))
    assert sent == {
        "content-type": "application/json",
        "accept": "text/event-stream",
        "x-stainless-lang": "js",
        "anthropic-beta": "tools-2024",
        "accept-encoding": "identity",
        "authorization": "Bearer sk-o",
    }
    anthropic = dict(upstream_headers(ANTHROPIC, {"anthropic-version": "2099-01-01"}))
    assert anthropic == {
        "anthropic-version": "2099-01-01",
        "accept-encoding": "identity",
        "x-api-key": "sk-a",
    }
    keyless = dict(upstream_headers(Provider("l", "openai", "http://l/v1"), {}))
    assert "authorization" not in keyless


def test_response_headers_drop_hop_by_hop_cookies_and_account_names() -> None:
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", b"10"),
        (b"connection", b"keep-alive"),
        (b"set-cookie", b"__cf_bm=1"),
        (b"openai-organization", b"operator"),
        (b"date", b"x"),
        (b"x-request-id", b"req_1"),
        (b"retry-after", b"3"),
        (b"x-ratelimit-remaining-requests", b"99"),
    ]
    assert response_headers(raw) == [
        (b"content-type", b"application/json"),
        (b"content-length", b"10"),
        (b"x-upstream-request-id", b"req_1"),
        (b"retry-after", b"3"),
        (b"x-ratelimit-remaining-requests", b"99"),
    ]
