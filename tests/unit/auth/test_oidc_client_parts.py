"""The I/O-free parts of the OIDC client (auth/oidc_client.py) and of `sandbox login`'s
credentials file (cli/login.py)."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from openova_sandbox.auth.oidc import FetchFailed
from openova_sandbox.auth.oidc_client import (
    Provider,
    TokenError,
    TokenSet,
    new_secret,
    pkce_challenge,
)
from openova_sandbox.cli import login


def test_pkce_s256_matches_rfc_7636_appendix_b():
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert len(new_secret()) == 43 and new_secret() != new_secret()


def test_discovery_document_fields():
    doc = {
        "issuer": "https://id.test",
        "authorization_endpoint": "https://id.test/auth",
        "token_endpoint": "https://id.test/token",
        "end_session_endpoint": "javascript:alert(1)",  # not a URL: as if absent
        "device_authorization_endpoint": "https://id.test/device",
        "code_challenge_methods_supported": ["S256", 3],
    }
    provider = Provider.from_document(doc, where="d")
    assert provider.end_session_endpoint == ""
    assert provider.device_authorization_endpoint == "https://id.test/device"
    assert provider.revocation_endpoint == ""
    assert provider.code_challenge_methods == ("S256",)
    with pytest.raises(FetchFailed, match="token_endpoint"):
        Provider.from_document({**doc, "token_endpoint": None}, where="d")


def test_token_response_and_which_token_is_presented():
    tokens = TokenSet.from_response(
        {"access_token": "opaque", "expires_in": 300, "id_token": "a.b.c", "refresh_token": "r"},
        now=1000.0,
    )
    assert tokens.expires_at == 1300.0
    assert tokens.bearer() == "a.b.c"  # an opaque access token: the ID token is checked here
    jwt_access = TokenSet(access_token="x.y.z", expires_at=None, id_token="a.b.c")
    assert jwt_access.bearer() == "x.y.z"
    assert "opaque" not in repr(tokens) and "r'" not in repr(tokens)
    with pytest.raises(TokenError, match="no access_token"):
        TokenSet.from_response({"id_token": "a.b.c"}, now=0)
    no_expiry = TokenSet.from_response({"access_token": "t", "expires_in": True}, now=0)
    assert no_expiry.expires_at is None


def test_credentials_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    path = login.credentials_path()
    assert path == tmp_path / "cfg" / "openova-sandbox" / "credentials.json"
    stored = login.Stored(
        issuer="https://id.test",
        client_id="cli",
        scopes="openid",
        access_token="x.eyJleHAiOjEyMzR9.z",
        refresh_token="r",
        id_token="",
        expires_at=1234.0,
        org="acme",
    )
    login.save("http://s1/", stored)
    login.save("http://s2", stored)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert login.load("http://s1") == stored  # the URL's trailing slash does not matter
    assert "refresh_token=" not in repr(stored)
    assert login.forget("http://s1") and path.exists()
    assert login.forget("http://s2") and not path.exists()  # the last one takes the file
    assert not login.forget("http://s2")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert login.load("http://s1") is None  # a damaged file is no sign-in, not a crash
    path.write_text(json.dumps({"servers": {"http://s1": {"issuer": "only"}}}))
    assert login.load("http://s1") is None


def test_a_token_that_is_not_due_is_not_refreshed(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    stored = login.Stored(
        issuer="https://unreachable.invalid",
        client_id="cli",
        scopes="openid",
        access_token="t",
        refresh_token="",
        id_token="",
        expires_at=time.time() + 120,
    )
    assert login.fresh("http://s", stored) is stored  # no request made
    due = login.Stored(**{**stored.__dict__, "expires_at": time.time() + 5})
    with pytest.raises(Exception, match="no refresh token: run `sandbox login`"):
        login.fresh("http://s", due)


def test_expiry_of_the_presented_token_is_its_exp():
    # header {"alg":"none"} . {"exp":1234} . sig — read, not verified (the server verifies)
    token = TokenSet(access_token="e30.eyJleHAiOjEyMzR9.c2ln", expires_at=99.0)
    assert login._bearer_expiry(token) == 1234.0
    assert login._bearer_expiry(TokenSet(access_token="opaque", expires_at=99.0)) == 99.0


async def test_a_session_ended_by_another_process_ends_its_connections_here():
    """Two processes on one backend: one ends the session, the other's live
    connections notice at their next look (here every 50 ms)."""
    import asyncio

    from openova_sandbox.auth.claims import ClaimMapping
    from openova_sandbox.auth.oidc_client import OidcClient
    from openova_sandbox.auth.oidc_sessions import (
        MemorySessionBackend,
        OidcSessions,
        SessionRecord,
    )

    backend = MemorySessionBackend()

    def process() -> OidcSessions:
        client = OidcClient(issuer="https://id.invalid", client_id="c")
        return OidcSessions(
            backend,
            cookie_secret="s",
            client=client,
            mapping=ClaimMapping(),
            validate_bearer=None,  # type: ignore[arg-type]
        )

    here, there = process(), process()
    now = time.time()
    record = SessionRecord(
        sub="u",
        org="",
        claims={"sub": "u"},
        access_token="a",
        refresh_token="",
        id_token="",
        access_expires_at=now + 300,
        obtained_at=now,
        created_at=now,
        expires_at=now + 3600,
    )
    await here._write("sid-1", record)
    waiting = asyncio.create_task(here.wait_ended("sid-1", check_every=0.05))
    await asyncio.sleep(0)  # let it start waiting
    assert not waiting.done()
    assert (await there.end("sid-1")) is not None  # signed out through the other process
    await asyncio.wait_for(waiting, timeout=5)
    assert here._ended == {} and here._waiters == {}  # nothing left behind
