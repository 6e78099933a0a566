"""Personal access tokens through the real app (SQLite store) under uvicorn, with real
JWTs from the app's issuer (issue 11): shown once, stored hashed, usable as Bearer (and
on a WebSocket), scoped to owner and org, expiring, revocable, last use recorded."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import websockets

from openova_sandbox.domain.access_tokens import AccessToken, hash_token
from openova_sandbox.domain.model import utcnow
from openova_sandbox.store.sql_accounts import SqlAccounts

if TYPE_CHECKING:
    from conftest import Api

TOKENS = "/api/v1/sandbox/tokens"
SESSIONS = "/api/v1/sandbox/sessions"
DEV = {"sub": "sub-dev-0001", "email": "dev@acme.com", "org": "acme"}
OPS = {"sub": "sub-ops-0001", "email": "ops@acme.com", "org": "acme"}
ADMIN = {"sub": "sub-admin-01", "email": "admin@acme.com", "org": "acme", "roles": ("org-admin",)}
GLOBEX_ADMIN = {
    "sub": "sub-globex-1",
    "email": "boss@globex.com",
    "org": "globex",
    "roles": ("org-admin",),
}


@pytest.fixture
def sql_api(make_api: Any) -> Api:
    api: Api = make_api(store="sql")
    return api


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create(api: Api, who: dict[str, Any], **body: Any) -> dict[str, Any]:
    made = api.http.post(TOKENS, headers=api.auth(**who), json={"name": "ci", **body})
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    created: dict[str, Any] = made.json()
    return created


def database(api: Api) -> sqlite3.Connection:
    url = api.deps.settings.effective_database_url
    return sqlite3.connect(url.split("///", 1)[1])


def test_a_token_is_shown_once_stored_hashed_and_works_as_bearer(sql_api: Api) -> None:
    created = create(sql_api, DEV, expiresInDays=7)
    token = created["token"]
    assert token.startswith("osb_pat_") and len(token) == len("osb_pat_") + 43
    assert created["name"] == "ci" and created["owner"] == "dev@acme.com"
    assert created["lastUsedAt"] is None and created["expired"] is False
    # the table holds the SHA-256 only
    with database(sql_api) as db:
        rows = db.execute("SELECT id, token_sha256 FROM sandbox_access_tokens").fetchall()
        dump = "\n".join(db.iterdump())
    assert rows == [(created["id"], hashlib.sha256(token.encode()).hexdigest())]
    assert token not in dump and token[8:] not in dump
    # the token acts as its owner: create and list sandboxes
    made = sql_api.http.post(
        SESSIONS, headers=bearer(token), json={"agent": "shell", "name": "pat"}
    )
    assert made.status_code == 201, made.text
    listed = sql_api.http.get(SESSIONS, headers=bearer(token)).json()["sandboxes"]
    assert [s["id"] for s in listed] == ["pat"]
    mine = sql_api.http.get(SESSIONS, headers=sql_api.auth(**DEV)).json()["sandboxes"]
    assert [s["id"] for s in mine] == ["pat"]  # the JWT of the same user sees it as theirs
    # listing never shows the token again; the use is recorded
    tokens = sql_api.http.get(TOKENS, headers=sql_api.auth(**DEV)).json()["tokens"]
    assert len(tokens) == 1 and "token" not in tokens[0]
    assert tokens[0]["lastUsedAt"] is not None
    assert token not in sql_api.http.get(TOKENS, headers=sql_api.auth(**DEV)).text


def test_revoked_unknown_malformed_and_expired_tokens_are_401(sql_api: Api) -> None:
    created = create(sql_api, DEV)
    token = created["token"]
    assert sql_api.http.get(SESSIONS, headers=bearer(token)).status_code == 200
    gone = sql_api.http.delete(f"{TOKENS}/{created['id']}", headers=sql_api.auth(**DEV))
    assert gone.status_code == 204
    refused = sql_api.http.get(SESSIONS, headers=bearer(token))
    assert refused.status_code == 401 and refused.json() == {"error": "unauthenticated"}
    for other in ("osb_pat_" + "A" * 43, "osb_pat_short", "osb_pat_" + "é" * 43):
        raw = {"Authorization": f"Bearer {other}".encode()}
        assert sql_api.http.get(SESSIONS, headers=raw).status_code == 401
        by_query = sql_api.http.get(SESSIONS, params={"access_token": other})
        assert by_query.status_code == 401
    # a token past its expiry (written as another process would, with a known secret)
    secret = "osb_pat_" + "x" * 43
    now = utcnow()
    record = AccessToken(
        id="00000000000000aa",
        name="old",
        owner_sub=DEV["sub"],
        owner_email=DEV["email"],
        org="acme",
        identity={},
        created_at=now - timedelta(days=2),
        expires_at=now - timedelta(seconds=1),
    )

    async def add() -> None:
        accounts = SqlAccounts(sql_api.deps.settings.effective_database_url)
        await accounts.start()
        try:
            assert await accounts.add_token(record, hash_token(secret), max_active=50)
        finally:
            await accounts.close()

    asyncio.run(add())
    assert sql_api.http.get(SESSIONS, headers=bearer(secret)).status_code == 401
    listed = sql_api.http.get(TOKENS, headers=sql_api.auth(**DEV)).json()["tokens"]
    assert [(t["id"], t["expired"]) for t in listed] == [("00000000000000aa", True)]


def test_tokens_are_scoped_to_their_owner_and_org(sql_api: Api) -> None:
    dev = create(sql_api, DEV)
    ops = create(sql_api, OPS, name="ops-script")
    # each lists their own
    for who, expected in ((DEV, dev), (OPS, ops)):
        listed = sql_api.http.get(TOKENS, headers=sql_api.auth(**who)).json()["tokens"]
        assert [t["id"] for t in listed] == [expected["id"]]
    # a colleague cannot revoke dev's (not found, not forbidden: existence does not leak)
    refused = sql_api.http.delete(f"{TOKENS}/{dev['id']}", headers=sql_api.auth(**OPS))
    assert refused.status_code == 404 and refused.json()["error"] == "token-not-found"
    # nor can another org's admin
    refused = sql_api.http.delete(f"{TOKENS}/{dev['id']}", headers=sql_api.auth(**GLOBEX_ADMIN))
    assert refused.status_code == 404
    assert sql_api.http.get(SESSIONS, headers=bearer(dev["token"])).status_code == 200
    # the org's admin sees every token of the org and may revoke any
    org = sql_api.http.get(TOKENS, params={"scope": "org"}, headers=sql_api.auth(**ADMIN))
    assert sorted(t["owner"] for t in org.json()["tokens"]) == ["dev@acme.com", "ops@acme.com"]
    other_org = sql_api.http.get(
        TOKENS, params={"scope": "org"}, headers=sql_api.auth(**GLOBEX_ADMIN)
    )
    assert other_org.json()["tokens"] == []
    forbidden = sql_api.http.get(TOKENS, params={"scope": "org"}, headers=sql_api.auth(**DEV))
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "org-admin-required"
    revoked = sql_api.http.delete(f"{TOKENS}/{ops['id']}", headers=sql_api.auth(**ADMIN))
    assert revoked.status_code == 204
    assert sql_api.http.get(SESSIONS, headers=bearer(ops["token"])).status_code == 401
    # a token sees only its owner's sandboxes, as the owner's JWT does
    sql_api.http.post(SESSIONS, headers=sql_api.auth(**OPS), json={"agent": "shell", "name": "o"})
    assert sql_api.http.get(SESSIONS, headers=bearer(dev["token"])).json()["sandboxes"] == []
    assert sql_api.http.get(f"{SESSIONS}/o", headers=bearer(dev["token"])).status_code == 404


def test_a_token_cannot_create_tokens_but_can_list_and_revoke_its_owners(sql_api: Api) -> None:
    created = create(sql_api, DEV)
    refused = sql_api.http.post(TOKENS, headers=bearer(created["token"]), json={"name": "more"})
    assert refused.status_code == 403 and refused.json()["error"] == "token-not-allowed"
    listed = sql_api.http.get(TOKENS, headers=bearer(created["token"]))
    assert [t["id"] for t in listed.json()["tokens"]] == [created["id"]]
    own = sql_api.http.delete(f"{TOKENS}/{created['id']}", headers=bearer(created["token"]))
    assert own.status_code == 204


def test_an_admins_token_keeps_the_admin_role_it_was_made_with(sql_api: Api) -> None:
    created = create(sql_api, ADMIN)
    org = sql_api.http.get(SESSIONS, params={"scope": "org"}, headers=bearer(created["token"]))
    assert org.status_code == 200
    tokens = sql_api.http.get(TOKENS, params={"scope": "org"}, headers=bearer(created["token"]))
    assert tokens.status_code == 200


@pytest.mark.parametrize(
    ("body", "error", "said"),
    [
        (b"", "empty-body", "request body required"),
        (b"{", "invalid-json", ""),
        (b"[1]", "invalid-json", "JSON object"),
        (b'"ci"', "invalid-json", "JSON object"),
        (b"{}", "invalid-name", "name is required"),
        (b'{"name": "   "}', "invalid-name", "name is required"),
        (b'{"name": 5}', "invalid-name", "name is required"),
        (b'{"name": "' + b"x" * 101 + b'"}', "invalid-name", "at most 100"),
        (b'{"name": "a\\u0000b"}', "invalid-name", "printable"),
        (b'{"name": "\\ud800"}', "invalid-json", "not valid Unicode"),
        (b'{"name": "ci", "expiresInDays": 0}', "invalid-expiry", "from 1 to 365"),
        (b'{"name": "ci", "expiresInDays": 366}', "invalid-expiry", "from 1 to 365"),
        (b'{"name": "ci", "expiresInDays": "7"}', "invalid-expiry", "whole number"),
        (b'{"name": "ci", "expiresInDays": 1.5}', "invalid-expiry", "whole number"),
        (b'{"name": "ci", "expiresInDays": true}', "invalid-expiry", "whole number"),
        (b'{"name": "ci", "scopes": ["all"]}', "invalid-field", "scopes"),
    ],
)
def test_malformed_bodies_are_400_with_a_detail(
    api: Api, body: bytes, error: str, said: str
) -> None:
    answer = api.http.post(
        TOKENS, headers={**api.auth(), "Content-Type": "application/json"}, content=body
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == error
    assert said in answer.json()["detail"]


def test_bad_ids_and_scopes_are_answered_not_500(api: Api) -> None:
    for bad in ("nope", "x" * 300, "%F0%9F%98%80", "..", "0000000000000000"):
        answer = api.http.delete(f"{TOKENS}/{bad}", headers=api.auth())
        assert answer.status_code == 404, (bad, answer.text)
    answer = api.http.get(TOKENS, params={"scope": "everyone"}, headers=api.auth())
    assert answer.status_code == 400 and answer.json()["error"] == "invalid-scope"
    assert api.http.get(TOKENS).status_code == 401
    assert api.http.post(TOKENS, json={"name": "x"}).status_code == 401


def test_expiry_defaults_and_is_capped_by_the_settings(make_api: Any) -> None:
    api = make_api(store="memory", pat_default_days=3, pat_max_days=10)
    created = create(api, DEV)
    made = time.time()
    expires = created["expiresAt"]
    from openova_sandbox.domain.model import parse_time

    left = parse_time(expires).timestamp() - made
    assert 3 * 86400 - 60 < left <= 3 * 86400 + 1
    too_long = api.http.post(TOKENS, headers=api.auth(), json={"name": "x", "expiresInDays": 11})
    assert too_long.status_code == 400 and "from 1 to 10" in too_long.json()["detail"]


def test_a_user_holds_at_most_fifty_usable_tokens(api: Api) -> None:
    for i in range(50):
        answer = api.http.post(TOKENS, headers=api.auth(**DEV), json={"name": f"t{i}"})
        assert answer.status_code == 201
    refused = api.http.post(TOKENS, headers=api.auth(**DEV), json={"name": "one-more"})
    assert refused.status_code == 429 and refused.json()["error"] == "quota-exceeded"
    assert "50" in refused.json()["detail"]
    # another user is not affected
    assert api.http.post(TOKENS, headers=api.auth(**OPS), json={"name": "x"}).status_code == 201


def test_a_token_opens_a_terminal_websocket_and_ends_there_at_its_expiry(sql_api: Api) -> None:
    created = create(sql_api, DEV)
    token = created["token"]
    made = sql_api.http.post(SESSIONS, headers=bearer(token), json={"agent": "shell", "name": "ws"})
    assert made.status_code == 201
    deadline = time.monotonic() + 20
    while sql_api.http.get(f"{SESSIONS}/ws", headers=bearer(token)).json().get("phase") != "Ready":
        assert time.monotonic() < deadline, "sandbox not ready"
        time.sleep(0.05)

    async def attach() -> bytes:
        url = f"{sql_api.server.ws_url}{SESSIONS}/ws/attach?access_token={token}"
        seen = b""
        async with asyncio.timeout(15), websockets.connect(url) as ws:
            await ws.send(b"echo pat-$((6*7))\n")
            while b"pat-42" not in seen:
                frame = await ws.recv()
                seen += frame if isinstance(frame, bytes) else frame.encode()
        return seen

    assert b"pat-42" in asyncio.run(attach())

    # the same token in the Authorization header of the handshake
    async def attach_with_header() -> None:
        url = f"{sql_api.server.ws_url}{SESSIONS}/ws/attach"
        async with (
            asyncio.timeout(15),
            websockets.connect(url, additional_headers=bearer(token)) as ws,
        ):
            await ws.send(b"echo hdr-$((2*3))\n")
            seen = b""
            while b"hdr-6" not in seen:
                frame = await ws.recv()
                seen += frame if isinstance(frame, bytes) else frame.encode()

    asyncio.run(attach_with_header())


def test_a_token_cannot_make_a_sign_in_link(sql_api: Api) -> None:
    """A browser session made from a token would outlive the token's revocation."""
    created = create(sql_api, DEV)
    refused = sql_api.http.post(
        "/api/v1/sandbox/login-links", headers=bearer(created["token"]), json={}
    )
    assert refused.status_code == 403 and refused.json()["error"] == "token-not-allowed"
    allowed = sql_api.http.post("/api/v1/sandbox/login-links", headers=sql_api.auth(**DEV), json={})
    assert allowed.status_code == 201


def test_token_and_quota_changes_are_audited(sql_api: Api) -> None:
    created = create(sql_api, DEV)
    sql_api.http.delete(f"{TOKENS}/{created['id']}", headers=sql_api.auth(**DEV))
    refused = sql_api.http.post(TOKENS, headers=bearer(created["token"]), json={"name": "x"})
    assert refused.status_code == 401  # revoked: nobody to record
    denied = sql_api.http.delete(f"{TOKENS}/{created['id']}", headers=sql_api.auth(**OPS))
    assert denied.status_code == 404
    put = sql_api.http.put(
        "/api/v1/sandbox/quotas/user/dev@acme.com",
        headers=sql_api.auth(**ADMIN),
        json={"sandboxes": 3, "terminals": None},
    )
    assert put.status_code == 200
    page = sql_api.http.get("/api/v1/sandbox/audit", headers=sql_api.auth(**ADMIN)).json()
    seen = [
        (r["action"], r["target"], r["outcome"], r["actor"]["email"], r["detail"])
        for r in reversed(page["items"])
        if r["action"].startswith(("token.", "quota."))
    ]
    assert seen == [
        (
            "token.create",
            f"token/{created['id']}",
            "success",
            "dev@acme.com",
            {"name": "ci", "expiresAt": created["expiresAt"]},
        ),
        ("token.revoke", f"token/{created['id']}", "success", "dev@acme.com", {}),
        (
            "token.revoke",
            f"token/{created['id']}",
            "failure",
            "ops@acme.com",
            {"error": "token-not-found"},
        ),
        (
            "quota.set",
            "quota/user/dev@acme.com",
            "success",
            "admin@acme.com",
            {"sandboxes": 3, "terminals": None},
        ),
    ]
    assert (
        created["token"]
        not in sql_api.http.get(
            "/api/v1/sandbox/audit", params={"format": "jsonl"}, headers=sql_api.auth(**ADMIN)
        ).text
    )


def test_a_terminal_opened_with_a_token_closes_when_it_is_revoked(sql_api: Api) -> None:
    created = create(sql_api, DEV)
    token = created["token"]
    made = sql_api.http.post(SESSIONS, headers=bearer(token), json={"agent": "shell", "name": "rv"})
    assert made.status_code == 201
    deadline = time.monotonic() + 20
    while sql_api.http.get(f"{SESSIONS}/rv", headers=bearer(token)).json().get("phase") != "Ready":
        assert time.monotonic() < deadline, "sandbox not ready"
        time.sleep(0.05)

    async def attach_then_revoke() -> tuple[int | None, str, float]:
        url = f"{sql_api.server.ws_url}{SESSIONS}/rv/attach?access_token={token}"
        async with asyncio.timeout(20), websockets.connect(url) as ws:
            await ws.send(b"echo live-$((4*4))\n")
            seen = b""
            while b"live-16" not in seen:
                frame = await ws.recv()
                seen += frame if isinstance(frame, bytes) else frame.encode()
            async with httpx.AsyncClient(base_url=sql_api.url) as client:
                gone = await client.delete(f"{TOKENS}/{created['id']}", headers=sql_api.auth(**DEV))
            assert gone.status_code == 204
            revoked = time.monotonic()
            with contextlib.suppress(websockets.ConnectionClosed):
                async for _ in ws:
                    pass
            return ws.close_code, ws.close_reason or "", time.monotonic() - revoked

    code, reason, after = asyncio.run(attach_then_revoke())
    assert (code, reason) == (1008, "token-revoked")
    assert after < 5  # at once, not at the next look at the store


async def test_wait_revoked_sees_another_replicas_revocation() -> None:
    """Revoked through another process: noticed at the next look at the store."""
    from openova_sandbox.domain.principal import Principal
    from openova_sandbox.services.tokens import MemoryTokens, TokensService

    store = MemoryTokens()
    here, there = TokensService(store), TokensService(store)
    owner = Principal(sub="s", email="s@acme.com", org="acme")
    made = await here.create(owner, {"name": "ci"})
    waiting = asyncio.ensure_future(here.wait_revoked(made["id"], check_every=0.05))
    await asyncio.sleep(0)
    assert not waiting.done()
    await there.revoke(owner, made["id"])
    async with asyncio.timeout(5):
        await waiting
