"""Secrets never reach a log line, whatever field or message carries them."""

from __future__ import annotations

import pytest

from openova_sandbox.logs import REDACTED, redact, scrub

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQ"


def test_secret_named_fields_are_replaced():
    event = redact(
        None,
        "info",
        {
            "event": "x",
            "authorization": "Bearer abc",
            "api_key": "sk-1",
            "nested": {"cookie_secret": "s", "fine": "ok"},
            "token_source": "cookie",
        },
    )
    assert event["authorization"] == REDACTED
    assert event["api_key"] == REDACTED
    assert event["nested"] == {"cookie_secret": REDACTED, "fine": "ok"}
    assert event["token_source"] == "cookie"


def test_token_shapes_are_masked_anywhere():
    text = scrub(f"failed for {JWT} at https://user:pa55@git.example/x?access_token=abc&x=1")
    assert JWT not in text
    assert "pa55" not in text
    assert "access_token=abc" not in text
    assert "x=1" in text
    assert "https://***@git.example/x" in text


def test_lists_and_messages():
    event = redact(None, "info", {"event": f"login with {JWT}", "args": [JWT, 3]})
    assert JWT not in event["event"]
    assert event["args"] == [REDACTED, 3]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer sk-ant-opaque-1234567890", "sk-ant-opaque-1234567890"),
        ('{"access_token": "opaque-abc-123"}', "opaque-abc-123"),
        ("password=hunter22 and more", "hunter22"),
        ("code_verifier=verifier-value-xyz", "verifier-value-xyz"),
        ("x-api-key: sk-live-0987654321", "sk-live-0987654321"),
    ],
)
def test_opaque_credentials_in_text_are_masked(text, secret):
    assert secret not in scrub(text)


def test_bytes_and_exceptions_are_scrubbed_too():
    event = {
        "event": "x",
        "raw": b"Authorization: Bearer sk-ant-opaque-1234567890",
        "error": ValueError("bad token=abcdefghijk in request"),
    }
    out = redact(None, "info", event)
    assert "sk-ant-opaque" not in str(out["raw"])
    assert "abcdefghijk" not in str(out["error"]) and "ValueError" in str(out["error"])


def test_ordinary_words_are_left_alone():
    assert scrub("token_source=cookie; exit code 42") == "token_source=cookie; exit code 42"
