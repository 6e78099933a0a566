"""Personal access tokens never reach a log line, wherever they appear in it."""

from __future__ import annotations

from openova_sandbox.domain.access_tokens import new_token
from openova_sandbox.logs import REDACTED, redact, scrub


def test_a_token_is_redacted_in_any_text() -> None:
    _, token = new_token()
    for text in (
        token,
        f"failed for {token} at noon",
        f"GET /x?access_token={token}",
        f"Authorization: Bearer {token}",
        f'{{"credential": "{token}"}}',
    ):
        cleaned = scrub(text)
        assert token not in cleaned and token[8:] not in cleaned, text
        assert REDACTED in cleaned
    event = redact(None, "info", {"event": "x", "detail": f"bad {token}", "id": "0a1b"})
    assert token not in str(event) and event["id"] == "0a1b"
    assert scrub("token 0123456789abcdef revoked") == "token 0123456789abcdef revoked"
