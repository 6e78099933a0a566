"""Preview grants (domain/preview_grant.py): what a grant says round-trips, and every
grant that is not exactly one this key signed for this sandbox and port, unexpired, is
refused with the code that says why and a detail that never repeats it."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from openova_sandbox.domain.preview_grant import (
    EXPIRED,
    INVALID,
    VIA_JWT,
    VIA_SESSION,
    VIA_TOKEN,
    GrantRefused,
    PreviewGrant,
    credential,
    mint_grant,
    read_grant,
)

KEY = b"k" * 32
GRANT = PreviewGrant(
    namespace="acme",
    sandbox="shell-1",
    port=5173,
    instance="run-1",
    sub="sub-ada",
    email="ada@acme.com",
    org="acme",
    roles=("org-admin",),
    tier="",
    expires_at=2_000,
)


VALID = {
    "n": "acme",
    "s": "shell-1",
    "p": 5173,
    "i": "r",
    "u": "u",
    "e": "",
    "o": "",
    "r": [],
    "t": "",
    "x": 2000,
    "c": "t:pat_1",
}


def read(
    text: str, *, sandbox: str = "shell-1", port: int = 5173, now: float = 1_000
) -> PreviewGrant:
    return read_grant(KEY, text, sandbox=sandbox, port=port, now=now)


def refused(text: str, code: str, **where: object) -> None:
    with pytest.raises(GrantRefused) as caught:
        read(text, **where)  # type: ignore[arg-type]
    assert caught.value.code == code
    assert len(text) < 8 or text not in caught.value.detail


def test_a_grant_says_what_it_was_minted_with() -> None:
    text = mint_grant(KEY, GRANT)
    assert read(text) == GRANT
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert len(text) < 400  # a path segment


def test_a_grant_opens_only_its_sandbox_and_port_until_it_expires() -> None:
    text = mint_grant(KEY, GRANT)
    refused(text, INVALID, sandbox="shell-2")
    refused(text, INVALID, port=5174)
    refused(text, EXPIRED, now=2_000)
    assert read(text, now=1_999) == GRANT


def test_forged_and_malformed_grants_are_refused() -> None:
    text = mint_grant(KEY, GRANT)
    payload, signature = text.split(".")
    refused(mint_grant(b"x" * 32, GRANT), INVALID)  # another key
    other = json.loads(base64.urlsafe_b64decode(payload + "=="))
    other["u"] = "sub-eve"
    forged = base64.urlsafe_b64encode(json.dumps(other).encode()).rstrip(b"=").decode()
    refused(f"{forged}.{signature}", INVALID)  # a payload changed, its signature kept
    for bad in ("", ".", "a", "a.b.c", f"{payload}.", f".{signature}", f"{payload}é.{signature}"):
        refused(bad, INVALID)
    refused("a" * 3000 + "." + signature, INVALID)


@pytest.mark.parametrize(
    "claims",
    [
        [],
        {"n": "acme"},
        {
            "n": 1,
            "s": "shell-1",
            "p": 5173,
            "i": "r",
            "u": "u",
            "e": "",
            "o": "",
            "r": [],
            "t": "",
            "x": 2000,
            "c": "",
        },
        {
            "n": "acme",
            "s": "shell-1",
            "p": True,
            "i": "r",
            "u": "u",
            "e": "",
            "o": "",
            "r": [],
            "t": "",
            "x": 2000,
            "c": "",
        },
        {
            "n": "acme",
            "s": "shell-1",
            "p": 5173,
            "i": "r",
            "u": "u",
            "e": "",
            "o": "",
            "r": "admin",
            "t": "",
            "x": 2000,
            "c": "",
        },
        {
            "n": "acme",
            "s": "shell-1",
            "p": 5173,
            "i": "r",
            "u": "u",
            "e": "",
            "o": "",
            "r": [],
            "t": "",
            "x": "2000",
            "c": "",
        },
        # the sign-in it came from: required, a string, of a kind this server knows
        {**VALID, "c": None},
        {k: v for k, v in VALID.items() if k != "c"},
        {**VALID, "c": 5},
        {**VALID, "c": "x:sub-ada"},
        {**VALID, "c": "session:abc"},
    ],
)
def test_a_signed_grant_with_claims_of_the_wrong_shape_is_refused(claims: object) -> None:
    """Signed with the right key (as only a bug could make it): still checked field by field."""
    refused(signed(claims), INVALID)


def signed(claims: object) -> str:
    import hashlib
    import hmac

    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    digest = hmac.new(KEY, payload.encode(), hashlib.sha256).digest()
    signature = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return f"{payload}.{signature}"


def test_a_grant_says_the_sign_in_it_came_from() -> None:
    """The credential round-trips for each kind, and a JWT without an id binds to none."""
    for kind, ident in ((VIA_SESSION, "ab" * 32), (VIA_TOKEN, "pat_x1"), (VIA_JWT, "j-1")):
        bound = replace(GRANT, credential=credential(kind, ident))
        got = read(mint_grant(KEY, bound))
        assert got == bound and got.via == (kind, ident)
    assert credential(VIA_JWT, "") == "" and read(mint_grant(KEY, GRANT)).via == ("", "")
    assert mint_grant(KEY, GRANT) != mint_grant(KEY, replace(GRANT, credential="t:pat_x1"))
    # the well-shaped claims the refused shapes above differ from: read
    assert read(signed(VALID), sandbox="shell-1").via == (VIA_TOKEN, "pat_1")


def test_a_changed_field_changes_the_grant() -> None:
    assert mint_grant(KEY, GRANT) != mint_grant(KEY, replace(GRANT, instance="run-2"))
